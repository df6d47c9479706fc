"""The OpenCV Lucas-Kanade tracker (ardrag.data.trackers.opencv) against procedural ground truth:
accuracy, occlusion, tracking backward from a later query, points leaving the frame, speed."""

from __future__ import annotations

import time

import numpy as np

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers import OpenCVTracker
from ardrag.data.trackers.metrics import tapvid_metrics


def procedural(n: int, **overrides) -> list:
    cfg = {"num_frames": 17, "buckets": ["640x368"], "leave_frame_prob": 0.0, "fast_prob": 0.0, **overrides}
    src = ProceduralSource(ProceduralConfig(num_clips=n, **cfg))
    return [src.make_clip(i) for i in range(n)]


def frame0_queries(sample) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth queries at frame 0 for the points visible there, and which points those are."""
    keep = sample.visible[0]
    queries = np.concatenate([np.zeros((keep.sum(), 1)), sample.tracks[0, keep]], axis=1)
    return queries.astype(np.float32), keep


def test_opencv_is_accurate_without_occlusion():
    tracker = OpenCVTracker()
    scores = []
    for sample in procedural(5, occlusion_prob=0.0):
        queries, keep = frame0_queries(sample)
        r = tracker.track(sample.video, queries)
        m = tapvid_metrics(
            r.tracks, r.visible, sample.tracks[:, keep], sample.visible[:, keep], query_frames=queries[:, 0]
        )
        scores.append(m["position_accuracy"])
        assert m["occlusion_accuracy"] >= 0.95
    assert np.mean(scores) >= 0.95, scores  # measured: 1.0 on every clip


def test_opencv_detects_occlusion():
    tracker = OpenCVTracker()
    hidden = detected = 0
    positions = []
    for sample in procedural(10, occlusion_prob=1.0):
        queries, keep = frame0_queries(sample)
        gt_tracks, gt_visible = sample.tracks[:, keep], sample.visible[:, keep]
        r = tracker.track(sample.video, queries)
        hidden += int((~gt_visible).sum())
        detected += int((~r.visible & ~gt_visible).sum())
        positions.append(tapvid_metrics(r.tracks, r.visible, gt_tracks, gt_visible)["position_accuracy"])
    assert hidden >= 20  # the clips do occlude tracked points
    assert detected / hidden >= 0.8, (detected, hidden)  # measured: 50 of 50
    assert np.mean(positions) >= 0.9, positions  # measured: 0.99


def test_opencv_tracks_backward_from_a_later_query():
    sample = procedural(1, occlusion_prob=0.0)[0]
    t = 8
    queries = np.concatenate([np.full((sample.num_points, 1), t), sample.tracks[t]], axis=1).astype(
        np.float32
    )
    r = OpenCVTracker().track(sample.video, queries)
    m = tapvid_metrics(r.tracks, r.visible, sample.tracks, sample.visible, query_frames=queries[:, 0])
    assert m["position_accuracy"] >= 0.95 and m["occlusion_accuracy"] >= 0.95


def test_opencv_points_leaving_the_frame_are_not_visible():
    sample = next(
        s
        for s in procedural(6, occlusion_prob=0.0, leave_frame_prob=1.0, num_frames=25)
        if (~s.visible).any()
    )
    queries, keep = frame0_queries(sample)
    r = OpenCVTracker().track(sample.video, queries)
    outside = ~sample.visible[:, keep]
    assert not r.visible[outside].any()
    h, w = sample.video.shape[1:3]
    # a lost point is never extrapolated out of the frame: it is held inside it, invisible
    assert (r.tracks[..., 0] >= 0).all() and (r.tracks[..., 0] <= w - 1).all()
    assert (r.tracks[..., 1] >= 0).all() and (r.tracks[..., 1] <= h - 1).all()


def test_opencv_is_fast_enough():
    sample = procedural(1, num_frames=33, occlusion_prob=0.0)[0]
    queries = np.concatenate([np.zeros((8, 1)), np.tile(sample.tracks[0], (8, 1))[:8]], axis=1)
    queries = queries.astype(np.float32)
    tracker = OpenCVTracker()
    tracker.track(sample.video, queries)
    start = time.perf_counter()
    tracker.track(sample.video, queries)
    assert time.perf_counter() - start < 1.0  # measured ~0.03 s on one core; a loose guard
