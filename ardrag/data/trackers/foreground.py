"""Where a clip's content moves apart from the camera, over the whole clip, in seconds of source time.

Curation seeds its query points on moving objects, not on the background, and calls a clip static only
when nothing in it moves. Both come from :func:`find_foreground`, which looks at **keyframes** every
``keyframe_s`` seconds across the whole clip (not only its first frames) and measures motion over a
window of ``window_s`` seconds, whatever the source's frame rate (a 10 fps source upsampled to 16 fps
repeats frames; seconds mean the same on any source). At each keyframe t, with e = t + window (t - window
near the clip's end) and the camera's motion from :mod:`~ardrag.data.trackers.camera`:

1. **Where it changes**: frame e is warped back onto frame t by the camera's homography, and pixels whose
   blurred grey levels differ by more than ``diff_levels`` make the motion mask (opened to drop noise,
   dilated to take in the moving objects' outlines).
2. **Candidates in the mask**: Shi-Tomasi corners, and points on Canny edges at least ``min_distance``
   apart, so that an object without texture (a black cup on a white wall) still gets points on its
   outline. Points closer than ``border_px`` to the frame's edge are left out.
3. **What moves**: each candidate is followed frame by frame to e (forward-backward checked), and its
   patch at e must still look like its patch at t (``max_patch_change``): a background point that a
   passing object dragged along ends on that object, which looks different. It is foreground when its
   displacement beyond the camera's is at least ``min_motion_px`` over the window, and none of its four
   neighbours ``neighbour_px`` away that can be followed moves differently (a background point beside a
   passing object is dragged along while its neighbours stay; the outline of a plain cup on a plain
   wall has no followable neighbour to object).

The clip is **static** when no keyframe has ``min_moving_points`` foreground points and the camera does not
move (:attr:`Foreground.static`); :meth:`Foreground.summary` gives the measured figures behind that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.data.trackers.camera import CameraConfig, CameraMotion, camera_motion, gray, residual_motion


class ForegroundConfig(Config):
    """How moving content is found (pixels at the clip's resolution, times in seconds)."""

    keyframe_s: float = Field(0.5, gt=0)  # look every this often across the clip
    window_s: float = Field(0.5, gt=0)  # measure motion over this long
    min_motion_px: float = Field(3.0, ge=0)  # independent motion over the window that makes a point move
    min_moving_points: int = Field(3, ge=1)  # foreground points a keyframe needs for the clip to move
    diff_levels: float = Field(12.0, gt=0)  # grey-level change that marks a pixel as changing
    min_distance: float = Field(16.0, gt=0)  # between candidate points (px)
    max_candidates: int = Field(300, ge=8, le=4000)  # per keyframe, corners and edge points together
    border_px: float = Field(8.0, ge=0)
    patch_px: int = Field(11, ge=3)  # side of the patch compared at the window's two ends
    neighbour_px: float = Field(6.0, gt=0)  # distance of the 4 neighbours whose motion must not differ
    max_patch_change: float = Field(12.0, gt=0)  # mean |difference| (grey levels) a followed point may show
    camera: CameraConfig = CameraConfig()


@dataclass
class Foreground:
    """Foreground points per keyframe, with the figures that decide whether the clip moves."""

    camera: CameraMotion
    fps: float
    window: int  # frames
    keyframes: list[int]
    points: dict[int, np.ndarray] = field(default_factory=dict)  # keyframe -> float32 (n, 3): x, y, motion px
    peak_px: dict[int, float] = field(default_factory=dict)  # keyframe -> largest followed motion (px)
    min_moving_points: int = 3

    @property
    def moving_points(self) -> int:
        """Foreground points at the busiest keyframe."""
        return max((len(p) for p in self.points.values()), default=0)

    @property
    def static(self) -> bool:
        return self.moving_points < self.min_moving_points and not self.camera.moving

    def first_moving_keyframe(self) -> int | None:
        return next((t for t in self.keyframes if len(self.points.get(t, ())) > 0), None)

    def summary(self) -> dict[str, Any]:
        """The measured values behind the static / moving decision (JSON-serialisable)."""
        busiest = (
            max(self.keyframes, key=lambda t: (len(self.points.get(t, ())), -t)) if self.keyframes else 0
        )
        peak_t = max(self.peak_px, key=lambda t: (self.peak_px[t], -t)) if self.peak_px else 0
        speed = self.camera.speed()
        return {
            "moving_points": self.moving_points,
            "busiest_keyframe_s": round(busiest / self.fps, 3),
            "peak_motion_px": round(float(self.peak_px.get(peak_t, 0.0)), 3),
            "peak_motion_s": round(peak_t / self.fps, 3),
            "window_s": round(self.window / self.fps, 3),
            "camera_moving": self.camera.moving,
            "camera_px_per_s": round(float(speed.mean() * self.fps), 3) if len(speed) else 0.0,
            "keyframes": len(self.keyframes),
        }


def _motion_mask(video: np.ndarray, camera: CameraMotion, t: int, e: int, c: ForegroundConfig) -> np.ndarray:
    H, W = video.shape[1:3]
    h = camera.between(t, e)
    a = cv2.GaussianBlur(gray(video[t]), (0, 0), 1.5)
    b = cv2.GaussianBlur(gray(video[e]), (0, 0), 1.5)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(b, h, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(np.full((H, W), 255, np.uint8), h, (W, H), flags=flags) == 255
    mask = ((np.abs(a.astype(np.int16) - warped.astype(np.int16)) > c.diff_levels) & valid).astype(np.uint8)
    mask = cv2.morphologyEx(mask * 255, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.dilate(mask, np.ones((9, 9), np.uint8))


def _edge_points(img: np.ndarray, mask: np.ndarray, spacing: float, limit: int) -> np.ndarray:
    """Points on Canny edges inside ``mask``, at most one per ``spacing``-sized cell."""
    edges = cv2.Canny(img, 50, 150) & mask
    ys, xs = np.nonzero(edges)
    if xs.size == 0:
        return np.zeros((0, 2), np.float32)
    cell = (ys // int(spacing)) * (img.shape[1] // int(spacing) + 1) + xs // int(spacing)
    _, first = np.unique(cell, return_index=True)
    pts = np.stack([xs[first], ys[first]], 1).astype(np.float32)
    return pts[:limit]


def _candidates(img: np.ndarray, mask: np.ndarray, c: ForegroundConfig) -> np.ndarray:
    corners = cv2.goodFeaturesToTrack(
        img, maxCorners=c.max_candidates, qualityLevel=0.01, minDistance=c.min_distance / 2, mask=mask
    )
    pts = np.zeros((0, 2), np.float32) if corners is None else corners.reshape(-1, 2)
    edge = _edge_points(img, mask, c.min_distance, c.max_candidates)
    if len(pts) and len(edge):  # edge points only where no corner is near
        d = np.linalg.norm(edge[:, None] - pts[None], axis=-1).min(1)
        edge = edge[d >= c.min_distance / 2]
    pts = np.concatenate([pts, edge])[: c.max_candidates]
    W, H = img.shape[1], img.shape[0]
    m = c.border_px
    keep = (pts[:, 0] >= m) & (pts[:, 0] <= W - 1 - m) & (pts[:, 1] >= m) & (pts[:, 1] <= H - 1 - m)
    return pts[keep]


def _same_look(
    a: np.ndarray, b: np.ndarray, pa: np.ndarray, pb: np.ndarray, c: ForegroundConfig
) -> np.ndarray:
    """Mean |difference| (grey levels) of the mean-free patches around each point in ``a`` and where it
    ended in ``b``: a background point that a passing object dragged along ends on the object, which
    looks different."""
    size = (c.patch_px, c.patch_px)
    out = np.empty(len(pa), np.float32)
    for k, (p, q) in enumerate(zip(pa, pb, strict=True)):
        u = cv2.getRectSubPix(a, size, (float(p[0]), float(p[1]))).astype(np.float32)
        v = cv2.getRectSubPix(b, size, (float(q[0]), float(q[1]))).astype(np.float32)
        out[k] = np.abs((u - u.mean()) - (v - v.mean())).mean()
    return out


def _neighbours_agree(
    video: np.ndarray,
    camera: CameraMotion,
    t: int,
    e: int,
    pts: np.ndarray,
    disp: np.ndarray,
    c: ForegroundConfig,
) -> np.ndarray:
    """Whether no neighbour ``neighbour_px`` away (4 of them) that can be followed moves differently
    (by more than 2 px and half the point's own motion): a background point beside a passing object,
    whose window reaches onto the object, is dragged along while its followed neighbours stay; a point
    on the outline of a plain object against a plain wall has no followable neighbour to contradict it."""
    r = c.neighbour_px
    offsets = np.array([[r, 0], [-r, 0], [0, r], [0, -r]], np.float32)
    around = (pts[:, None] + offsets[None]).reshape(-1, 2)
    nd, nok, _ = residual_motion(video, camera, t, e, around)
    nd, nok = nd.reshape(len(pts), 4, 2), nok.reshape(len(pts), 4)
    limit = np.maximum(2.0, 0.5 * np.linalg.norm(disp, axis=1))
    differs = np.linalg.norm(nd - disp[:, None], axis=-1) > limit[:, None]
    return ~(nok & differs).any(axis=1)


def find_foreground(
    video: np.ndarray, fps: float, config: ForegroundConfig | None = None, camera: CameraMotion | None = None
) -> Foreground:
    """Foreground points at keyframes across the whole clip (see the module docstring)."""
    c = config or ForegroundConfig()
    T = video.shape[0]
    camera = camera if camera is not None else camera_motion(video, c.camera)
    window = max(1, round(c.window_s * fps))
    stride = max(1, round(c.keyframe_s * fps))
    keyframes = list(range(0, max(T - 1, 1), stride)) if T > 1 else []
    fg = Foreground(camera, fps, window, keyframes, min_moving_points=c.min_moving_points)
    for t in keyframes:
        e = t + window if t + window <= T - 1 else max(0, t - window)
        if e == t:
            continue
        mask = _motion_mask(video, camera, t, e, c)
        pts = _candidates(gray(video[t]), mask, c) if mask.any() else np.zeros((0, 2), np.float32)
        if len(pts) == 0:
            fg.points[t], fg.peak_px[t] = np.zeros((0, 3), np.float32), 0.0
            continue
        disp, ok, ends = residual_motion(video, camera, t, e, pts)
        ok &= _same_look(gray(video[t]), gray(video[e]), pts, ends, c) <= c.max_patch_change
        motion = np.where(ok, np.linalg.norm(disp, axis=1), 0.0)
        fg.peak_px[t] = float(motion.max())
        keep = ok & (motion >= c.min_motion_px)
        if keep.any():
            keep[keep] = _neighbours_agree(video, camera, t, e, pts[keep], disp[keep], c)
        fg.points[t] = np.concatenate([pts[keep], motion[keep, None]], 1).astype(np.float32)
    return fg
