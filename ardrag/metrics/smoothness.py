"""Acceleration smoothness: how steadily tracked points move, in [0, 1] (1 = perfectly smooth).

**Not VBench's motion smoothness.** VBench scores a video by how well a frame-interpolation network
(AMT) predicts every odd frame from its neighbours; that needs AMT's weights. This module measures the
same property, the absence of jerks and jitter, from point tracks instead, hence its own name (it is what
``METRICS["smoothness"]`` refers to); the numbers are not comparable with VBench's.

**Definition.** Points are tracked through the video from frame 0 (by default up to 256 Shi-Tomasi
corners of frame 0, followed with the ``opencv`` tracker of :mod:`ardrag.data.trackers`; or tracks the
caller already has, e.g. from the consistency metric). For each point and each frame t with the point
visible at t - 1, t and t + 1, the acceleration is the second difference

    a = p[t + 1] - 2 p[t] + p[t - 1]   (pixels per frame^2, at the video's own frame rate),

``A`` is the mean of ``|a|`` over all such (point, frame) pairs divided by the frame diagonal, and

    smoothness = exp(-A / tau),   tau = 0.002 (0.2 % of the diagonal, ~1.9 px/frame^2 at 832x480).

Constant-velocity motion (any speed, any direction) scores 1, as does a static video; jitter of a few
pixels per frame scores near 0; tracker noise on clean footage costs a few hundredths (~0.1 px of noise
at 480p). A set's score is the mean over its videos.

**Extremes.** A static video scores exactly 1 (no acceleration), the top of the scale: smoothness says
nothing about *whether* anything moves, so read it next to a motion metric (consistency here). A video
where nothing can be tracked (a flat colour) or with no point visible in three consecutive frames also
scores 1 (no observable motion); a video needs at least 3 frames.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ardrag.data.trackers.scaled import metric_tracker
from ardrag.errors import describe
from ardrag.metrics.inputs import as_videos

TAU = 0.002
MAX_POINTS = 256


def _check_tracks(tracks: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
    tr, vis = np.asarray(tracks, np.float64), np.asarray(visible, bool)
    if tr.ndim != 3 or tr.shape[-1] != 2 or vis.shape != tr.shape[:2]:
        raise ValueError(
            f"tracks {describe(tr)} and visible {describe(vis)} do not fit; expected tracks (T, N, 2) "
            "pixels and visible (T, N)"
        )
    if tr.shape[0] < 3:
        raise ValueError(f"tracks {describe(tr)} cover {tr.shape[0]} frames; expected at least 3")
    return tr, vis


def mean_acceleration_px(tracks: Any, visible: Any) -> float:
    """Mean |second difference| (px / frame^2) over points visible in three consecutive frames; NaN when
    there is no such triple."""
    tr, vis = _check_tracks(tracks, visible)
    acc = np.linalg.norm(tr[2:] - 2 * tr[1:-1] + tr[:-2], axis=-1)
    valid = vis[2:] & vis[1:-1] & vis[:-2] & np.isfinite(acc)
    return float(acc[valid].mean()) if valid.any() else float("nan")


def acceleration_smoothness_from_tracks(tracks: Any, visible: Any, frame_size: tuple[int, int], *,
                                        tau: float = TAU) -> float:  # fmt: skip
    """exp(-A / tau) for tracks (T, N, 2) in pixels of a ``frame_size`` = (width, height) video."""
    if not (isinstance(tau, int | float) and tau > 0):
        raise ValueError(f"tau = {tau!r}; expected a positive fraction of the frame diagonal")
    w, h = frame_size
    if not (w > 0 and h > 0):
        raise ValueError(f"frame_size = {frame_size!r}; expected (width, height) > 0")
    acc = mean_acceleration_px(tracks, visible)
    if np.isnan(acc):
        return 1.0
    return float(np.exp(-acc / np.hypot(w, h) / tau))


def corner_queries(frame: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Up to ``max_points`` Shi-Tomasi corners of an RGB frame as tracker queries (N, 3) = (0, x, y)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    spacing = max(2, min(gray.shape) // 32)
    pts = cv2.goodFeaturesToTrack(gray, maxCorners=max_points, qualityLevel=0.01, minDistance=spacing,
                                  blockSize=7)  # fmt: skip
    xy = np.zeros((0, 2), np.float32) if pts is None else pts.reshape(-1, 2).astype(np.float32)
    return np.concatenate([np.zeros((len(xy), 1), np.float32), xy], axis=1)


def acceleration_smoothness_scores(videos: Any, tracker: Any = None, *, max_points: int = MAX_POINTS,
                                   tau: float = TAU) -> np.ndarray:  # fmt: skip
    """Per-video smoothness, float64 (N,). ``tracker``: a set-up tracker (default: ``opencv``)."""
    clips = as_videos(videos)
    for i, v in enumerate(clips):
        if len(v) < 3:
            raise ValueError(f"videos[{i}] is {describe(v)}; expected at least 3 frames (acceleration)")
    if tracker is None:
        tracker = metric_tracker("opencv")
        tracker.setup()
    out = []
    for v in clips:
        queries = corner_queries(v[0], max_points)
        if len(queries) == 0:
            out.append(1.0)
            continue
        res = tracker.track(v, queries)
        size = (v.shape[2], v.shape[1])
        out.append(acceleration_smoothness_from_tracks(res.tracks, res.visible, size, tau=tau))
    return np.array(out, np.float64)


def acceleration_smoothness(videos: Any, tracker: Any = None, *, max_points: int = MAX_POINTS,
                            tau: float = TAU) -> float:  # fmt: skip
    """Mean of :func:`acceleration_smoothness_scores` over the videos, in [0, 1]."""
    return float(acceleration_smoothness_scores(videos, tracker, max_points=max_points, tau=tau).mean())
