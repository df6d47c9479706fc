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
