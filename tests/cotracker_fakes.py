"""A stand-in for the CoTracker3 predictors, shared by the tracker contract test and the CoTracker tests.

CoTracker itself cannot be installed here (it is not on PyPI and the tests run offline), so the stand-ins
follow the published API of ``cotracker.predictor`` instead: the constructor arguments, the offline call
``model(video, queries=..., backward_tracking=...)``, the online calls ``model(video_chunk=...,
is_first_step=True, queries=...)`` then ``model(video_chunk=...)``, the input contract (float
(B, T, 3, H, W) in 0..255, queries (B, N, 3) as (t, x, y)) and the outputs. Their motion is a known
constant velocity, so results can be checked exactly; they record what they receive.
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest
import torch

from ardrag.data.trackers import cotracker as cotracker_module

VELOCITY = torch.tensor([1.5, -0.5])  # px per frame of the stand-in's motion


def stamped_video(frames: int = 20, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Random frames whose pixel (0, 0), red, holds 1 + the frame index: the stand-in reads it to know
    which frame of the original clip it sees, also when the adapter reverses the clip."""
    assert frames <= 255, "the frame stamp is one uint8"
    video = np.random.default_rng(seed).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    video[:, 0, 0, 0] = np.arange(frames) + 1
    return video


def expected_tracks(queries: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in reports: constant velocity through the query, hidden where (t + x) % 7 == 3
    (x: the query's integer x) except at the query frame."""
    t = np.arange(frames, dtype=np.float32)[:, None]
    tracks = queries[None, :, 1:] + (t - queries[None, :, 0])[..., None] * VELOCITY.numpy()
    visible = (t + np.floor(queries[None, :, 1])) % 7 != 3
    visible[queries[:, 0].astype(int), np.arange(len(queries))] = True
    return tracks.astype(np.float32), visible


def _check_inputs(video: torch.Tensor, queries: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The published input contract: float (B, T, 3, H, W) in 0..255, queries (B, N, 3) as (t, x, y)."""
    assert video.ndim == 5 and video.shape[2] == 3, video.shape
    assert video.dtype == torch.float32
    assert video.max() > 1 and video.max() <= 255 and video.min() >= 0
    H, W = video.shape[3], video.shape[4]
    assert queries is not None and queries.ndim == 3 and queries.shape[0] == video.shape[0]
    assert queries.shape[2] == 3 and queries.dtype == torch.float32
    t = queries[..., 0]
    assert torch.all(t == t.round()) and t.min() >= 0
    assert torch.all((queries[..., 1] >= 0) & (queries[..., 1] <= W - 1))
    assert torch.all((queries[..., 2] >= 0) & (queries[..., 2] <= H - 1))
    stamps = video[:, :, 0, 0, 0] - 1  # (B, T): original frame numbers
    return stamps, t


def _predict(stamps: torch.Tensor, queries: torch.Tensor, frames: range, forward_only: bool):
    """Tracks (B, len(frames), N, 2) and visibility of the stand-in's motion model; a query whose frame
    is not among ``frames`` yet stays at its position, hidden."""
    qt = queries[..., 0].long()
    f = torch.tensor(list(frames))
    q_stamp = torch.gather(stamps, 1, qt.clamp(max=len(f) - 1))  # (B, N) original frame of each query
    dt = stamps[:, f][..., None] - q_stamp[:, None]  # (B, F, N), in original frames
    tracks = queries[:, None, :, 1:] + dt[..., None] * VELOCITY
    visible = (stamps[:, f][..., None] + queries[:, None, :, 1].floor()) % 7 != 3
    visible |= f[None, :, None] == qt[:, None]
    if forward_only:  # a causal model knows nothing before the query frame
        before = f[None, :, None] < qt[:, None]
        tracks = torch.where(before[..., None], queries[:, None, :, 1:], tracks)
        visible &= ~before
    return tracks.float(), visible


class StandInPredictor(torch.nn.Module):
    """Offline: ``tracks, visibility = model(video, queries=..., backward_tracking=...)``."""

    calls: list = []
    built: list = []  # one entry per construction
    build_delay = 0.0  # seconds a construction takes (widens the window of a loading race)

    def __init__(self, checkpoint=None, offline=True, window_len=60, v2=False):
        super().__init__()
        time.sleep(type(self).build_delay)
        type(self).built.append(checkpoint)
        self.checkpoint, self.window_len = checkpoint, window_len
        self.weight = torch.nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def forward(
        self, video, queries=None, segm_mask=None, grid_size=0, grid_query_frame=0, backward_tracking=False
    ):
        stamps, t = _check_inputs(video, queries)
        assert t.max() < video.shape[1]
        type(self).calls.append({"frames": video.shape[1], "backward_tracking": backward_tracking})
        return _predict(stamps, queries, range(video.shape[1]), forward_only=not backward_tracking)


class StandInOnlinePredictor(torch.nn.Module):
    """Online: first ``model(video_chunk=..., is_first_step=True, queries=...)``, then chunks of at most
    ``window_len`` frames advancing by ``step``; each call returns all frames seen so far, as the
    published model accumulates them. It keeps that state on the instance, as the real one does."""

    calls: list = []
    built: list = []
    build_delay = 0.0
    call_delay = 0.0  # seconds each call takes (lets concurrent callers interleave)

    def __init__(self, checkpoint=None, offline=False, window_len=16, v2=False):
        super().__init__()
        time.sleep(type(self).build_delay)
        type(self).built.append(checkpoint)
        self.checkpoint, self.window_len, self.step = checkpoint, window_len, window_len // 2
        self.weight = torch.nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def forward(self, video_chunk, is_first_step=False, queries=None, grid_size=5, grid_query_frame=0):
        time.sleep(type(self).call_delay)
        record = {
            "first": is_first_step,
            "frames": video_chunk.shape[1],
            "shape": tuple(video_chunk.shape),
            "stamps": (video_chunk[0, :, 0, 0, 0] - 1).long().tolist(),
        }
        if is_first_step:
            _check_inputs(video_chunk, queries)
            self.queries, self.seen, self.stamps = queries.clone(), 0, None
            type(self).calls.append(record)
            return None, None
        assert video_chunk.shape[1] <= self.window_len
        stamps, _ = _check_inputs(video_chunk, self.queries)
        record["start"] = 0 if self.stamps is None else self.seen - self.step
        type(self).calls.append(record)
        if self.stamps is None:
            self.stamps, self.seen = stamps, video_chunk.shape[1]
        else:
            grow = min(self.step, video_chunk.shape[1] - self.step)
            self.stamps = torch.cat([self.stamps, stamps[:, self.step : self.step + grow]], dim=1)
            self.seen += grow
        return _predict(self.stamps, self.queries, range(self.seen), forward_only=True)


def install_fake_cotracker(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Install a ``cotracker`` package whose ``predictor`` holds the stand-ins, reset their records and
    start from an empty process-wide model cache (restored when the test ends)."""
    package = types.ModuleType("cotracker")
    predictor = types.ModuleType("cotracker.predictor")
    predictor.CoTrackerPredictor = StandInPredictor
    predictor.CoTrackerOnlinePredictor = StandInOnlinePredictor
    package.predictor = predictor
    monkeypatch.setitem(sys.modules, "cotracker", package)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", predictor)
    for cls in (StandInPredictor, StandInOnlinePredictor):
        monkeypatch.setattr(cls, "calls", [])
        monkeypatch.setattr(cls, "built", [])
    monkeypatch.setattr(cotracker_module, "_MODELS", {})
    return package
