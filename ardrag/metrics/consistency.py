"""Motion consistency: do the dragged points follow their target trajectories in the generated video?

Tracker-based, as in the paper: the target points visible at frame 0 are tracked through the generated
video, starting from their target positions at frame 0 (a tracker of :mod:`ardrag.data.trackers`:
``opencv`` by default, CoTracker in the paper; videos narrower than 320 px are upscaled first, see
:mod:`ardrag.data.trackers.scaled`), and the tracked positions are compared with the targets.
The tracker's own visibility flags are not used: a point the video loses or mangles should count as
wrong, not be excused, so its predicted position is compared like any other.

**Counted pairs.** Every (frame t >= 1, point) with the point target-visible at frame 0 and at t.
Frame 0 is left out: the tracker starts there from the target itself, so it would always be exact.

**Numbers.**

- ``mean_error_px``: the mean Euclidean distance (pixels of the video) between tracked and target
  positions over the counted pairs.
- ``score`` on a 1-5 scale (the paper reports 4.37 without giving a formula, so this is our own,
  stated mapping). Per frame, ``e_t`` is the mean over counted points of the squared distance with x
  divided by the width and y by the height (fractions of the frame, independent of the resolution), and
  ``r_t = max(0, 1 - e_t / alpha)`` with ``alpha = 0.01``: exactly the GRPO motion reward of
  :func:`ardrag.rewards.motion_reward` (Eq. 16) divided by its ``lambda * alpha``, so 1 for a perfect
  frame and 0 once points are 10 % of the frame off. ``score = 1 + 4 * mean_t r_t`` over the frames with
  a counted pair: 5 = perfect, 1 = everything 10 % of the frame off or worse (a uniform 5 % offset
  gives 4.0).

A video with no counted pair (one frame, or no target point visible at frame 0 and later) has NaN for
both numbers; :func:`mean_consistency` averages over videos leaving NaNs out. Targets are in pixels of
the generated video: rescale them first when it is generated at another size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ardrag.data.trackers.scaled import metric_tracker
from ardrag.errors import describe
from ardrag.rewards import check_video

ALPHA = 0.01


@dataclass(frozen=True)
class ConsistencyResult:
    mean_error_px: float  # mean distance over counted pairs; NaN when none
    score: float  # 1..5 (5: perfect); NaN when no pair counts
    frame_error_px: np.ndarray  # float64 (T,): per-frame mean distance; NaN for frame 0 and uncounted frames
    num_points: int  # target points visible at frame 0


def _check_targets(tracks: Any, visible: Any, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets as float64 (T, N, 2) and bool (T, N); T must be ``num_frames`` when given."""
    tr, vis = np.asarray(tracks, np.float64), np.asarray(visible, bool)
    fits = tr.ndim == 3 and tr.shape[0] > 0 and tr.shape[2] == 2 and vis.shape == tr.shape[:2]
    if not fits or (num_frames is not None and tr.shape[0] != num_frames):
        frames = "T" if num_frames is None else str(num_frames)
        raise ValueError(
            f"target tracks {describe(tr)} and visible {describe(vis)} do not fit; expected tracks "
            f"({frames}, N, 2) pixels and visible ({frames}, N), one row per video frame"
        )
    if not np.all(np.isfinite(tr[vis])):
        raise ValueError("target tracks hold NaN or inf where visible; expected finite pixel positions")
    return tr, vis


def consistency_from_tracks(
    tracked: Any,
    target_tracks: Any,
    target_visible: Any,
    frame_size: tuple[int, int],
    *,
    alpha: float = ALPHA,
) -> ConsistencyResult:
    """Compare tracked positions (T, N, 2) with targets (T, N, 2) and their visibility (T, N) in a video
    of ``frame_size`` = (width, height); points not target-visible at frame 0 are not counted."""
    target, vis = _check_targets(target_tracks, target_visible)
    found = np.asarray(tracked, np.float64)
    if found.shape != target.shape:
        raise ValueError(f"tracked is {describe(found)}; expected the target tracks' shape {target.shape}")
    if not (isinstance(alpha, int | float) and alpha > 0):
        raise ValueError(f"alpha = {alpha!r}; expected a positive squared fraction of the frame")
    w, h = frame_size
    if not (w > 0 and h > 0):
        raise ValueError(f"frame_size = {frame_size!r}; expected (width, height) > 0")
    t = vis.shape[0]
    counted = vis & vis[:1]
    counted[0] = False
    diff = found - target
    dist = np.linalg.norm(diff, axis=-1)
    sq = ((diff / np.array([w, h], np.float64)) ** 2).sum(-1)
    frame_err = np.full(t, np.nan)
    rewards = []
    for i in np.flatnonzero(counted.any(axis=1)):
        pts = counted[i]
        frame_err[i] = dist[i, pts].mean()
        rewards.append(max(0.0, 1.0 - float(sq[i, pts].mean()) / alpha))
    if not rewards:
        return ConsistencyResult(float("nan"), float("nan"), frame_err, int(vis[0].sum()))
    return ConsistencyResult(
        float(dist[counted].mean()), 1.0 + 4.0 * float(np.mean(rewards)), frame_err, int(vis[0].sum())
    )


def motion_consistency(video: np.ndarray, target_tracks: Any, target_visible: Any, tracker: Any = None,
                       *, alpha: float = ALPHA) -> ConsistencyResult:  # fmt: skip
    """Track the targets visible at frame 0 through ``video`` and compare (see the module docstring).
    ``tracker``: a set-up tracker (default: ``metric_tracker("opencv")``)."""
    video = check_video(video)
    t, h, w = video.shape[:3]
    target, vis = _check_targets(target_tracks, target_visible, t)
    start = np.flatnonzero(vis[0])
    target, vis = target[:, start], vis[:, start]
    if len(start) == 0 or t == 1:
        return consistency_from_tracks(target, target, vis, (w, h), alpha=alpha)
    if tracker is None:
        tracker = metric_tracker("opencv")
        tracker.setup()
    queries = np.concatenate([np.zeros((len(start), 1), np.float32), target[0].astype(np.float32)], axis=1)
    found = tracker.track(video, queries).tracks
    return consistency_from_tracks(found, target, vis, (w, h), alpha=alpha)


def mean_consistency(results: list[ConsistencyResult]) -> tuple[float, float]:
    """(mean error px, mean score) over videos, leaving out those without counted pairs (NaN if none)."""
    errors = np.array([r.mean_error_px for r in results], np.float64)
    scores = np.array([r.score for r in results], np.float64)
    if not np.isfinite(scores).any():
        return float("nan"), float("nan")
    return float(np.nanmean(errors)), float(np.nanmean(scores))
