"""Small synthetic samples built in memory (no network, no assets to download)."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from ardrag.data.sample import Provenance, Sample, SourceInfo


def make_sample(
    key: str = "clip-000",
    *,
    frames: int = 9,
    width: int = 64,
    height: int = 48,
    points: int = 3,
    seed: int = 0,
    prompt: str = "a square moves right",
) -> Sample:
    """A photo background (scikit-image's astronaut) with a textured square moving right 2 px per
    frame; the points ride on the square."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    patch = cv2.resize(skimage.data.coffee()[100:300, 200:400], (10, 10), interpolation=cv2.INTER_AREA)
    video = np.empty((frames, height, width, 3), np.uint8)
    tracks = np.empty((frames, points, 2), np.float32)
    offsets = rng.uniform(2, 8, size=(points, 2))
    for t in range(frames):
        video[t] = base
        x0, y0 = 4 + 2 * t, height // 3
        video[t, y0 : y0 + 10, x0 : x0 + 10] = patch
        tracks[t] = np.array([x0, y0]) + offsets
    visible = np.ones((frames, points), bool)
    visible[frames // 2, 0] = False
    intensity = np.tile(rng.uniform(0.2, 1.0, size=points).astype(np.float32), (frames, 1))
    return Sample(
        key=key,
        video=video,
        tracks=tracks,
        visible=visible,
        intensity=intensity,
        prompt=prompt,
        provenance=Provenance(source=SourceInfo(kind="test", params={"seed": seed}, seed=seed)),
    ).with_hashes()


# Procedural settings whose clips include hard cases for the annotation tests: a sprite that bursts at
# 24-32 px a frame in most clips, past what routing leaves to a quick check (``hard_speed_px``, 20).
# (The generator's default bursts, 10-18 px a frame, are tracked well enough to be verified.)
HARD_CASES = {"fast_prob": 0.8, "min_fast_speed": 24.0, "max_fast_speed": 32.0}


def three_samples() -> list[Sample]:
    """Two 640x368 samples and one 400x400 (two buckets), one with a non-ASCII prompt."""
    return [
        make_sample("a-0", width=640, height=368, frames=9, points=2, seed=0),
        make_sample("a-1", width=640, height=368, frames=9, points=3, seed=1, prompt="ünïcode prompt ✓"),
        make_sample("b-0", width=400, height=400, frames=9, points=1, seed=2),
    ]


def write_samples(root, samples, **kw) -> dict:
    """``samples`` written by one ``DatasetWriter`` into ``root``; its manifest."""
    from ardrag.data.shards import DatasetWriter, read_manifest

    with DatasetWriter(root, **kw) as w:
        for s in samples:
            w.write(s)
    return read_manifest(root)


def folder_source(folder, clip_frames: int, **overrides):
    """A ``FolderSource`` over ``folder``."""
    from ardrag.data.sources.folder import FolderConfig, FolderSource

    return FolderSource(FolderConfig(folder=str(folder), clip_frames=clip_frames, **overrides))


def folder_clips(folder, clip_frames: int, name: str | None = None, **overrides) -> list:
    """The clips the folder source cuts from its one input (``name``: the one with that path)."""
    src = folder_source(folder, clip_frames, **overrides)
    items = [i for i in src.inputs() if name is None or i.params["path"] == name]
    assert len(items) == 1, [i.params["path"] for i in items]
    return list(src.clips(items[0]))


def toy_model_folder(path, seed: int = 0):
    """A model folder (``ardrag.model.model_folder``) of the toy model preset's shape with random weights,
    at the toy's size and heatmap spots: what ``benchmarks/make_toy_model.py --ship`` writes, untrained.
    Returns its pipeline."""
    from ardrag.data.heatmap import HeatmapConfig
    from ardrag.model.model_folder import save_model_folder
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.presets import TOY

    pipe = ARDragPipeline.tiny(seed, TOY, height=48, width=80, heatmap=HeatmapConfig(sigma=3.0))
    save_model_folder(path, pipe, {"preset": TOY, "made_by": "tests/factories.py (random weights)"})
    return pipe
