"""Which points to track and which tracks to keep as motion controls.

Curation tracks a handful of points per clip and keeps at most 8 trajectories as drag controls, so
both ends are selective:

- :func:`query_points` spreads queries over the keyframes where something moves apart from the camera
  (:func:`~ardrag.data.trackers.foreground.find_foreground`: every 0.5 s across the whole clip), by
  farthest-point sampling within each keyframe; :func:`corner_queries` is for a clip where only the
  camera moves.
- :func:`reseed_queries` adds queries at keyframes where moving content exists but no visible track is
  nearby: content that enters the frame or starts moving late, or an object whose points were all lost.
- :func:`select_trajectories` keeps up to ``k`` tracks that carry the clip's motion: it discards mostly
  invisible, static (apart from the camera, when it is given), erratic (jitter) and jumping tracks
  (:func:`abrupt_jumps`), then those that move much less than the most trusted one; tracks followed
  (nearly) throughout come first, then by how far they move, and a track that runs too close to one
  already chosen is skipped. Every discarded track gets a reason (for logs and tests).

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
from ardrag.data.trackers.camera import CameraMotion, independent_paths
from ardrag.data.trackers.foreground import Foreground, find_foreground

logger = logging.getLogger(__name__)


def _farthest(xy: np.ndarray, k: int, first: int) -> np.ndarray:
    """Indices of ``k`` points of ``xy`` picked by farthest-point sampling from ``first``."""
    chosen = [first]
    dist = np.linalg.norm(xy - xy[first], axis=1)
    while len(chosen) < min(k, len(xy)):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(xy - xy[i], axis=1))
    return np.array(chosen, np.int64)


def query_points(
    video: np.ndarray,
    max_points: int,
    *,
    foreground: Foreground | None = None,
    fps: float = 16.0,
    seed: int = 0,
) -> np.ndarray:
    """Up to ``max_points`` queries (t, x, y) on moving content across the whole clip; float32 (N, 3).

    The budget is shared between the keyframes where something moves apart from the camera (an object
    that starts moving late, or enters late, gets queries of its own), and within a keyframe the points
    are spread by farthest-point sampling from a seeded random pick (a different ``seed`` gives a
    different spread when there are more candidates than places). ``foreground`` (from
    :func:`~ardrag.data.trackers.foreground.find_foreground`, at ``fps``) is computed when not given."""
    check_track_inputs(video, np.zeros((0, 3), np.float32))
    fg = foreground if foreground is not None else find_foreground(video, fps)
    moving = [t for t in fg.keyframes if len(fg.points.get(t, ())) > 0]
    if not moving or max_points <= 0:
        return np.zeros((0, 3), np.float32)
    rng = np.random.default_rng(seed)
    out, left = [], max_points
    for j, t in enumerate(moving):
        share = -(-left // (len(moving) - j))  # the rest, spread evenly over the keyframes to come
        pts = fg.points[t][:, :2]
        xy = pts[_farthest(pts, share, int(rng.integers(len(pts))))]
        out.append(np.concatenate([np.full((len(xy), 1), t, np.float32), xy], axis=1))
        left -= len(xy)
    queries = np.concatenate(out).astype(np.float32)
    logger.debug("query_points: %d queries over %d keyframes", len(queries), len(moving))
    return queries


def corner_queries(
    video: np.ndarray, max_points: int, *, min_distance: float = 16.0, seed: int = 0
) -> np.ndarray:
    """Up to ``max_points`` queries (0, x, y) on Shi-Tomasi corners of frame 0, spread out: for a clip
    where only the camera moves, whose tracks then show the camera's motion."""
    check_track_inputs(video, np.zeros((0, 3), np.float32))
    corners = cv2.goodFeaturesToTrack(
        cv2.cvtColor(video[0], cv2.COLOR_RGB2GRAY),
        maxCorners=500,
        qualityLevel=0.01,
        minDistance=min_distance,
    )
    if corners is None or max_points <= 0:
        return np.zeros((0, 3), np.float32)
    xy = corners.reshape(-1, 2)
    first = int(np.random.default_rng(seed).integers(len(xy)))
    xy = xy[_farthest(xy, max_points, first)]
    return np.concatenate([np.zeros((len(xy), 1), np.float32), xy], axis=1)


def reseed_queries(
    video: np.ndarray,
    result: TrackResult,
    max_new: int,
    *,
    foreground: Foreground | None = None,
    fps: float = 16.0,
    min_distance: float = 16.0,
) -> np.ndarray:
    """Extra queries (t, x, y) on moving content that no visible track covers; float32 (M, 3).

    At every keyframe, foreground points farther than ``min_distance`` from every track visible in that
    frame (and from the queries already added there) become new queries, at most ``max_new``: content
    that enters the frame, starts moving later, or whose points were all lost."""
    check_track_inputs(video, np.zeros((0, 3), np.float32))
    T = video.shape[0]
    if result.tracks.shape[0] != T or result.visible.shape[0] != T:
        raise ValueError(f"result has {result.tracks.shape[0]} frames; expected {T}, as the video")
    fg = foreground if foreground is not None else find_foreground(video, fps)
    new: list[np.ndarray] = []
    for t in fg.keyframes:
        if len(new) >= max_new:
            break
        covered = result.tracks[t][result.visible[t]]
        for x, y, _ in fg.points.get(t, ()):
            if len(new) >= max_new:
                break
            if len(covered) and np.min(np.linalg.norm(covered - (x, y), axis=1)) < min_distance:
                continue
            new.append(np.array([t, x, y], np.float32))
            covered = np.concatenate([covered, [[x, y]]], axis=0)
    logger.debug("reseed_queries: %d new queries", len(new))
    return np.stack(new) if new else np.zeros((0, 3), np.float32)


# -- choosing the control trajectories -------------------------------------------------------------
class SelectionConfig(Config):
    """Thresholds for :func:`select_trajectories` (pixels at the clip's resolution)."""

    max_trajectories: int = Field(8, ge=1, le=8)  # k when the caller gives none
    min_displacement_px: float = Field(6.0, ge=0)  # below this displacement a track is static
    motion_quantile: float = Field(0.9, gt=0, le=1)  # of a track's displacement over its visible frames
    main_motion_fraction: float = Field(0.5, ge=0, le=1)  # tracks moving less than this x the most: minor
    max_jitter_px: float = Field(2.0, gt=0)  # above this median |second difference| a track is erratic
    min_visible_fraction: float = Field(0.5, ge=0, le=1)
    switch_still_px: float = Field(0.5, ge=0)  # a track still (px/frame) in one frame ...
    switch_moving_px: float = Field(3.0, gt=0)  # ... and this fast in the next (or back) switched objects
    slip_px: float = Field(6.0, gt=0)  # a one-frame spike in velocity this large: slipped to another feature
    complete_fraction: float = Field(0.9, ge=0, le=1)  # tracks visible this much come first
    complete_only: bool = True  # ... and when there are some, the others are left out (unless they
    # move more than twice as far: a fast object that the tracker loses now and then)
    min_separation_px: float = Field(24.0, ge=0)  # mean distance to every chosen track, where both visible


@dataclass
class Selection:
    """Chosen track indices (best first) and, for every other track, why it was not chosen."""

    indices: np.ndarray  # int64 (K,)
    reasons: dict[int, str] = field(default_factory=dict)
    displacement: np.ndarray | None = None  # float (N,), peak motion the ranking used (see ``kind``)
    jitter: np.ndarray | None = None  # float (N,)
    kind: str = "pixels"  # "objects": motion apart from the camera; "camera": the camera's own; "pixels"


def track_stats(
    tracks: np.ndarray, visible: np.ndarray, quantile: float = 1.0, frames: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track: visible fraction, displacement from its first visible position (its ``quantile`` over
    the visible frames: 1 is the peak; 0.9 ignores a brief slip), and jitter (the median norm of second
    differences over runs of three visible frames, per output frame; 0 without such a run).

    ``frames``: the frames that show a new source frame (frame-rate upsampling repeats the others);
    jitter is measured between those, so a repeat's stutter (still, then a double step) is not jitter."""
    T, N = visible.shape
    frac = visible.mean(axis=0)
    first = np.argmax(visible, axis=0)
    origin = tracks[first, np.arange(N)]
    dist = np.linalg.norm(tracks - origin[None], axis=-1)
    disp = np.zeros(N)
    for i in range(N):
        if T and visible[:, i].any():
            disp[i] = float(np.quantile(dist[visible[:, i], i], quantile))
    jitter = np.zeros(N)
    keep = np.arange(T) if frames is None else np.asarray(frames, np.int64)
    if len(keep) >= 3:
        dt = (keep[-1] - keep[0]) / (len(keep) - 1)  # consecutive source frames, per output frame
        acc = np.linalg.norm(np.diff(np.diff(tracks[keep], axis=0) / dt, axis=0), axis=-1)
        vk = visible[keep]
        run = vk[2:] & vk[1:-1] & vk[:-2]
        for i in range(N):
            if run[:, i].any():
                jitter[i] = float(np.median(acc[run[:, i], i]))
    return frac, disp, jitter


def abrupt_jumps(
    tracks: np.ndarray,
    visible: np.ndarray,
    frames: np.ndarray | None,
    still_px: float,
    moving_px: float,
    slip_px: float,
) -> np.ndarray:
    """Per track, whether it shows the marks of a tracker that jumped to something else (speeds in px per
    output frame, between new source frames, across gaps too):

    - from standing still (at most ``still_px``) to moving (at least ``moving_px``) from one source frame
      to the next, or back: a point that a passing object picked up or dropped (an object that starts
      to move takes a few frames to speed up);
    - a one-frame spike: the velocity changes by at least ``slip_px`` and changes back (to within half of
      that) at the next frame: a point that slipped onto another feature of its object and went on."""
    T, N = visible.shape
    keep = np.arange(T) if frames is None else np.asarray(frames, np.int64)
    out = np.zeros(N, bool)
    if len(keep) < 3:
        return out
    dt = (keep[-1] - keep[0]) / (len(keep) - 1)  # output frames per source frame
    for i in range(N):
        seen = keep[visible[keep, i]]
        if len(seen) < 3:
            continue
        vel = np.diff(tracks[seen, i], axis=0) / (np.diff(np.searchsorted(keep, seen)) * dt)[:, None]
        speed = np.linalg.norm(vel, axis=-1)
        a, b = speed[:-1], speed[1:]
        switch = ((a <= still_px) & (b >= moving_px)) | ((a >= moving_px) & (b <= still_px))
        change = np.linalg.norm(np.diff(vel, axis=0), axis=-1)
        spike = (change[:-1] >= slip_px) & (change[1:] >= slip_px)
        spike &= np.linalg.norm(vel[2:] - vel[:-2], axis=-1) < slip_px / 2
        out[i] = bool(switch.any() or spike.any())
    return out


def select_trajectories(
    result: TrackResult,
    k: int | None = None,
    *,
    config: SelectionConfig | None = None,
    camera: CameraMotion | None = None,
    frames: np.ndarray | None = None,
) -> Selection:
    """Up to ``k`` (default ``config.max_trajectories``) tracks that carry the clip's motion.

    With ``camera`` (:func:`~ardrag.data.trackers.camera.camera_motion` of the clip), motion and jitter are
    measured apart from the camera's: a background point in a pan is static, the animal crossing it is
    not. When nothing moves apart from a moving camera, the tracks that show the camera's motion are
    ranked by their displacement in the frame instead (``kind`` says which). ``frames``: see
    :func:`track_stats` (the frames that show a new source frame)."""
    c = config or SelectionConfig()
    k = c.max_trajectories if k is None else k
    if not 1 <= k <= 8:
        raise ValueError(f"k = {k}; expected 1 to 8 control trajectories")
    tracks, visible = np.asarray(result.tracks, np.float64), np.asarray(result.visible, bool)
    frac, disp, jitter = track_stats(tracks, visible, c.motion_quantile, frames)
    kind, what = "pixels", "displacement"
    own = independent_paths(tracks, visible, camera) if camera is not None else tracks
    if camera is not None:
        _, own_disp, own_jitter = track_stats(own, visible, c.motion_quantile, frames)
        moving = (frac >= c.min_visible_fraction) & (own_disp >= c.min_displacement_px)
        if moving.any() or not camera.moving:
            disp, jitter, kind, what = own_disp, own_jitter, "objects", "motion apart from the camera"
        else:
            kind, what = "camera", "displacement (the camera's motion)"
    jumped = abrupt_jumps(own, visible, frames, c.switch_still_px, c.switch_moving_px, c.slip_px)
    reasons: dict[int, str] = {}
    sound = []
    for i in range(visible.shape[1]):
        if frac[i] < c.min_visible_fraction:
            reasons[i] = f"mostly invisible: visible {frac[i]:.0%} < {c.min_visible_fraction:.0%}"
        elif disp[i] < c.min_displacement_px:
            reasons[i] = f"static: {what} {disp[i]:.1f} px < {c.min_displacement_px} px"
        elif jitter[i] > c.max_jitter_px:
            reasons[i] = f"erratic: jitter {jitter[i]:.2f} px > {c.max_jitter_px} px"
        elif jumped[i]:
            reasons[i] = "erratic: jumps (picked up or dropped by something passing, or slipped)"
        else:
            sound.append(i)
    # the main motion, among the tracks that can be trusted: a point the wind sways is not a control
    # when the animal beside it walks
    main = c.main_motion_fraction * max((float(disp[i]) for i in sound), default=0.0)
    candidates = []
    for i in sound:
        if disp[i] < main:
            reasons[i] = (
                f"minor motion: {what} {disp[i]:.1f} px < {main:.1f} px ({c.main_motion_fraction:g} x most)"
            )
        else:
            candidates.append(i)
    chosen: list[int] = []
    # tracks followed (nearly) throughout first, a person verifies them at a glance; then by motion
    for i in sorted(candidates, key=lambda j: (frac[j] < c.complete_fraction, -disp[j], j)):
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
    complete = [i for i in chosen if frac[i] >= c.complete_fraction]
    if c.complete_only and complete:
        # an incomplete track stays when it carries motion the complete ones do not: an object moving
        # much faster, which the tracker loses now and then, is the clip's motion all the same
        most = max(float(disp[i]) for i in complete)
        for i in [i for i in chosen if frac[i] < c.complete_fraction and disp[i] <= 2 * most]:
            chosen.remove(i)
            reasons[i] = (
                f"incomplete: visible {frac[i]:.0%} < {c.complete_fraction:.0%}, and complete tracks "
                f"move as far ({most:.1f} px)"
            )
    logger.debug("select_trajectories (%s): chose %s; %s", kind, chosen, reasons)
    return Selection(np.array(chosen, np.int64), reasons, disp, jitter, kind)
