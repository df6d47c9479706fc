"""Which points to track and which tracks to keep as motion controls.

Curation tracks a handful of points per clip and keeps at most 8 trajectories as drag controls, so
both ends are selective:

- :func:`query_points` picks corners of frame 0 that sit on *moving* content (a static background
  point makes a useless control): Shi-Tomasi corners (at least ``min_distance`` apart) where frame 0
  differs from a frame ``motion_frames`` later, kept when a short Lucas-Kanade run (forward-backward
  checked) moves the corner and four neighbours ``min_distance / 2`` around it alike, by at least
  ``min_motion_px`` (a corner on a moving outline, half on the static background, fails); then spread
  out by farthest-point sampling.
- :func:`reseed_queries` adds queries on later frames (every ``stride`` frames) where moving content
  exists but no visible track is nearby: content that enters the frame, or a sprite whose points were
  all lost. Motion there is measured over the next frames (the previous ones near the clip's end).
- :func:`select_trajectories` keeps up to ``k`` tracks that carry the motion: it discards static,
  erratic and mostly invisible tracks, ranks the rest by how far they move and skips a track that
  runs too close to one already chosen. Every discarded track gets a reason (for logs and tests).

:func:`~ardrag.data.trackers.base.check_track_inputs` validates the ``(video, queries)`` pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.data.trackers.base import TrackResult, check_track_inputs

logger = logging.getLogger(__name__)

_LK = {
    "winSize": (11, 11),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),
}


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _motion(video: np.ndarray, t: int, pts: np.ndarray, frames: int, fb_px: float) -> np.ndarray:
    """Displacement (n, 2) of each point of frame t over the next ``frames`` frames (the previous ones
    when fewer follow), chaining LK frame by frame; NaN where tracking is inconsistent."""
    T = video.shape[0]
    step = 1 if t + frames <= T - 1 or T - 1 - t >= t else -1
    end = int(np.clip(t + step * frames, 0, T - 1))
    p = pts.reshape(-1, 1, 2).astype(np.float32)
    ok = np.ones(len(pts), bool)
    prev = _gray(video[t])
    for u in range(t + step, end + step, step):
        nxt = _gray(video[u])
        p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p, None, **_LK)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, p1, None, **_LK)
        fb = np.linalg.norm((back - p).reshape(-1, 2), axis=1)
        ok &= (st.ravel() == 1) & (st2.ravel() == 1) & (fb <= fb_px)
        p, prev = p1, nxt
    return np.where(ok[:, None], p.reshape(-1, 2) - pts, np.nan)


def _corners(
    frame: np.ndarray, count: int, min_distance: float, quality: float, mask: np.ndarray | None = None
) -> np.ndarray:
    c = cv2.goodFeaturesToTrack(
        _gray(frame), maxCorners=count, qualityLevel=quality, minDistance=min_distance, mask=mask
    )
    return np.zeros((0, 2), np.float32) if c is None else c.reshape(-1, 2).astype(np.float32)


def _changed(video: np.ndarray, t: int, frames: int, threshold: float = 10.0) -> np.ndarray:
    """uint8 mask of where frame t differs from the frame ``frames`` later (earlier near the end) by
    more than ``threshold`` gray levels after a light blur, dilated: where corners may move."""
    T = video.shape[0]
    u = t + frames if t + frames <= T - 1 or T - 1 - t >= t else t - frames
    u = int(np.clip(u, 0, T - 1))
    a, b = (cv2.GaussianBlur(_gray(video[i]), (0, 0), 1.5).astype(np.int16) for i in (t, u))
    mask = (np.abs(a - b) > threshold).astype(np.uint8) * 255
    return cv2.dilate(mask, np.ones((5, 5), np.uint8))


def _farthest(xy: np.ndarray, k: int, first: int) -> np.ndarray:
    """Indices of ``k`` points of ``xy`` picked by farthest-point sampling from ``first``."""
    chosen = [first]
    dist = np.linalg.norm(xy - xy[first], axis=1)
    while len(chosen) < min(k, len(xy)):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(xy - xy[i], axis=1))
    return np.array(chosen, np.int64)


def _moving_corners(
    video: np.ndarray,
    t: int,
    *,
    min_motion_px: float,
    min_distance: float,
    motion_frames: int,
    quality: float,
) -> np.ndarray:
    """Corners of frame t inside moving regions: among the corners where the frame changes over the
    next frames, those that move at least ``min_motion_px`` together with four neighbours
    ``min_distance / 2`` away (a corner on a moving object's outline, half on the static background,
    fails)."""
    if video.shape[0] < 2:
        return np.zeros((0, 2), np.float32)
    cand = _corners(video[t], 500, min_distance, quality, mask=_changed(video, t, motion_frames))
    if len(cand) == 0:
        return cand
    r = min_distance / 2
    offsets = np.array([[0, 0], [r, 0], [-r, 0], [0, r], [0, -r]], np.float32)
    pts = (cand[:, None] + offsets[None]).reshape(-1, 2)
    disp = _motion(video, t, pts, motion_frames, fb_px=1.5).reshape(len(cand), 5, 2)
    norm = np.linalg.norm(disp, axis=-1)  # NaN where inconsistent: compares False below
    alike = np.linalg.norm(disp - disp[:, :1], axis=-1) <= 1.0 + 0.25 * norm[:, :1]
    moving = np.all((norm >= min_motion_px) & alike, axis=1)
    return cand[moving]


def query_points(
    video: np.ndarray,
    max_points: int,
    *,
    min_motion_px: float = 2.0,
    min_distance: float = 16.0,
    motion_frames: int = 4,
    quality: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """Up to ``max_points`` queries (t=0, x, y) on moving content of frame 0, spread out; float32 (N, 3).

    Farthest-point sampling starts from a seeded random pick among the moving corners, so a different
    ``seed`` gives a different spread when there are more candidates than ``max_points``."""
    check_track_inputs(video, np.zeros((0, 3), np.float32))
    moving = _moving_corners(
        video, 0, min_motion_px=min_motion_px, min_distance=min_distance, motion_frames=motion_frames,
        quality=quality,
    )  # fmt: skip
    if len(moving) == 0 or max_points <= 0:
        return np.zeros((0, 3), np.float32)
    first = int(np.random.default_rng(seed).integers(len(moving)))
    xy = moving[_farthest(moving, max_points, first)]
    logger.debug("query_points: %d moving corners, %d chosen", len(moving), len(xy))
    return np.concatenate([np.zeros((len(xy), 1), np.float32), xy], axis=1)


def reseed_queries(
    video: np.ndarray,
    result: TrackResult,
    max_new: int,
    *,
    stride: int = 8,
    min_motion_px: float = 2.0,
    min_distance: float = 16.0,
    motion_frames: int = 4,
    quality: float = 0.01,
) -> np.ndarray:
    """Extra queries (t>0, x, y) on moving content that no visible track covers; float32 (M, 3).

    Every ``stride`` frames, moving corners farther than ``min_distance`` from every track visible in
    that frame (and from the queries already added there) become new queries, at most ``max_new``."""
    check_track_inputs(video, np.zeros((0, 3), np.float32))
    T = video.shape[0]
    if result.tracks.shape[0] != T or result.visible.shape[0] != T:
        raise ValueError(f"result has {result.tracks.shape[0]} frames; expected {T}, as the video")
    new: list[np.ndarray] = []
    count = 0
    for t in range(stride, T - 1, stride):
        if count >= max_new:
            break
        moving = _moving_corners(
            video, t, min_motion_px=min_motion_px, min_distance=min_distance, motion_frames=motion_frames,
            quality=quality,
        )  # fmt: skip
        covered = result.tracks[t][result.visible[t]]
        for xy in moving:
            if count >= max_new:
                break
            if len(covered) and np.min(np.linalg.norm(covered - xy, axis=1)) < min_distance:
                continue
            new.append(np.array([t, xy[0], xy[1]], np.float32))
            covered = np.concatenate([covered, xy[None]], axis=0)
            count += 1
    logger.debug("reseed_queries: %d new queries", count)
    return np.stack(new) if new else np.zeros((0, 3), np.float32)


# -- choosing the control trajectories -------------------------------------------------------------
class SelectionConfig(Config):
    """Thresholds for :func:`select_trajectories` (pixels at the clip's resolution)."""

    max_trajectories: int = Field(8, ge=1, le=8)  # k when the caller gives none
    min_displacement_px: float = Field(6.0, ge=0)  # below this peak displacement a track is static
    max_jitter_px: float = Field(2.0, gt=0)  # above this median |second difference| a track is erratic
    min_visible_fraction: float = Field(0.5, ge=0, le=1)
    min_separation_px: float = Field(24.0, ge=0)  # mean distance to every chosen track, where both visible


@dataclass
class Selection:
    """Chosen track indices (best first) and, for every other track, why it was not chosen."""

    indices: np.ndarray  # int64 (K,)
    reasons: dict[int, str] = field(default_factory=dict)
    displacement: np.ndarray | None = None  # float (N,), peak displacement over visible frames
    jitter: np.ndarray | None = None  # float (N,)


def track_stats(tracks: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track: visible fraction, peak displacement from its first visible position, and jitter (the
    median norm of second differences over runs of three visible frames; 0 without such a run)."""
    T, N = visible.shape
    frac = visible.mean(axis=0)
    first = np.argmax(visible, axis=0)
    origin = tracks[first, np.arange(N)]
    dist = np.linalg.norm(tracks - origin[None], axis=-1)
    disp = np.where(visible, dist, 0.0).max(axis=0) if T else np.zeros(N)
    jitter = np.zeros(N)
    if T >= 3:
        acc = np.linalg.norm(tracks[2:] - 2 * tracks[1:-1] + tracks[:-2], axis=-1)
        run = visible[2:] & visible[1:-1] & visible[:-2]
        for i in range(N):
            if run[:, i].any():
                jitter[i] = float(np.median(acc[run[:, i], i]))
    return frac, disp, jitter


def select_trajectories(
    result: TrackResult, k: int | None = None, *, config: SelectionConfig | None = None
) -> Selection:
    """Up to ``k`` (default ``config.max_trajectories``) tracks that carry the clip's motion."""
    c = config or SelectionConfig()
    k = c.max_trajectories if k is None else k
    if not 1 <= k <= 8:
        raise ValueError(f"k = {k}; expected 1 to 8 control trajectories")
    tracks, visible = np.asarray(result.tracks, np.float64), np.asarray(result.visible, bool)
    frac, disp, jitter = track_stats(tracks, visible)
    reasons: dict[int, str] = {}
    candidates = []
    for i in range(visible.shape[1]):
        if frac[i] < c.min_visible_fraction:
            reasons[i] = f"mostly invisible: visible {frac[i]:.0%} < {c.min_visible_fraction:.0%}"
        elif disp[i] < c.min_displacement_px:
            reasons[i] = f"static: peak displacement {disp[i]:.1f} px < {c.min_displacement_px} px"
        elif jitter[i] > c.max_jitter_px:
            reasons[i] = f"erratic: jitter {jitter[i]:.2f} px > {c.max_jitter_px} px"
        else:
            candidates.append(i)
    chosen: list[int] = []
    for i in sorted(candidates, key=lambda j: (-disp[j], j)):
        if len(chosen) == k:
            reasons[i] = f"not chosen: {k} trajectories already chosen"
            continue
        near = None
        for j in chosen:
            both = visible[:, i] & visible[:, j]
            if not both.any():
                continue
            d = float(np.linalg.norm(tracks[both, i] - tracks[both, j], axis=-1).mean())
            if d < c.min_separation_px:
                near = (j, d)
                break
        if near is not None:
            reasons[i] = (
                f"too close to track {near[0]}: mean distance {near[1]:.1f} px < {c.min_separation_px} px"
            )
            continue
        chosen.append(i)
    logger.debug("select_trajectories: chose %s; %s", chosen, reasons)
    return Selection(np.array(chosen, np.int64), reasons, disp, jitter)
