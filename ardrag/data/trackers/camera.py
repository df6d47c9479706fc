"""The camera's motion through a clip, and what moves apart from it.

Real footage is filmed by cameras that pan, shake and zoom; a point that merely follows the camera is
background, whatever its displacement in pixels. This module estimates the background's motion between
consecutive frames as a homography and measures, for any point, how far it moves *apart* from it.

:func:`camera_motion`, for each pair of consecutive frames ``t -> t+1``:

- an exact repeat (frame-rate upsampling repeats source frames) is the identity, ``"repeat"``;
- otherwise up to ``max_corners`` Shi-Tomasi corners of frame t are followed into frame t+1 with
  Lucas-Kanade, kept when the forward-backward error is under ``fb_px``;
- the points are corners of the **border band** (the outer ``border_fraction`` of the frame on each side),
  where background usually is: an object in the middle of the frame, however large and textured, does
  not pass for the camera (its corners would also outrank a plain background's, since Shi-Tomasi's
  quality is relative to the strongest corner);
- two models of the background compete: the **identity** (a still camera; a point is explained when it
  moved at most ``still_px``) and a **similarity** (shift, rotation, zoom; kept as a 3x3 homography)
  fitted with RANSAC (``ransac_px``). A full homography's 8 degrees of freedom can fit two objects that
  move differently at once; a similarity cannot, and a camera's motion between two frames is one to
  first order. The similarity is
  chosen only when it explains ``homography_margin`` times more of the points *and* wins that many more
  cells of a 4x4 grid (each cell votes for the model that explains more of its points), and when the
  moving points it explains lie on two opposite sides of the band, or on three sides. A pan chooses it;
  a still camera with an arm reaching in from one side keeps the identity;
- a still camera keeps the similarity fitted to its still points: a slow pan or drift under ``still_px``
  a frame adds up over a clip, and this measures it;
- with fewer than ``min_points`` followed corners (a plain background) the step is ``"unknown"`` and taken
  as the identity: small shakes then count as motion of everything, which ranks below real motion.

:meth:`CameraMotion.between` chains steps; :func:`residual_motion` follows points over a window and
returns how far each moved beyond what the camera explains (its *independent* motion);
:func:`independent_paths` does the same for whole tracks. Pixels are at the clip's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from ardrag.config import Config

_LK = {
    "winSize": (15, 15),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),
}


class CameraConfig(Config):
    """How the background's motion is estimated (see the module docstring)."""

    max_corners: int = Field(300, ge=16, le=4000)
    min_distance: float = Field(12.0, gt=0)  # between corners (px)
    fb_px: float = Field(1.0, gt=0)  # forward-backward error a followed corner may have
    still_px: float = Field(0.75, gt=0)  # a point that moved less is explained by a still camera
    ransac_px: float = Field(1.5, gt=0)  # RANSAC reprojection threshold of the homography
    border_fraction: float = Field(0.2, gt=0, le=0.5)  # width of the border band, per side
    min_points: int = Field(12, ge=4)
    homography_margin: float = Field(1.25, ge=1)


def gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


@dataclass
class CameraMotion:
    """Per step ``t -> t+1``: the background homography, the model chosen and the share it explains."""

    steps: np.ndarray  # float64 (T-1, 3, 3)
    models: list[str]  # "repeat", "still", "homography" or "unknown"
    explained: np.ndarray  # float (T-1,): share of the scored points the chosen model explains
    size: tuple[int, int]  # (W, H)

    def between(self, a: int, b: int) -> np.ndarray:
        """The homography taking frame ``a``'s background to frame ``b`` (either order)."""
        h = np.eye(3)
        if b >= a:
            for t in range(a, b):
                h = self.steps[t] @ h
            return h
        for t in range(b, a):
            h = h @ self.steps[t]
        return np.linalg.inv(h)

    def speed(self) -> np.ndarray:
        """Per step, the mean displacement (px) the camera gives to a 5x5 grid over the frame."""
        w, h = self.size
        gx, gy = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
        grid = np.stack([gx.ravel(), gy.ravel()], 1)
        return np.array([np.linalg.norm(apply(s, grid) - grid, axis=1).mean() for s in self.steps])

    def new_frames(self) -> np.ndarray:
        """The frames that show a new source frame: frame 0 and every frame that is not a repeat."""
        return np.array([0] + [t + 1 for t, m in enumerate(self.models) if m != "repeat"], np.int64)

    @property
    def moving(self) -> bool:
        return any(m == "homography" for m in self.models)


def apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (n, 2) mapped by the homography ``h``."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((len(p), 1))], 1) @ h.T
    z = np.where(np.abs(q[:, 2:]) < 1e-9, 1e-9, q[:, 2:])
    return q[:, :2] / z


def follow(
    img_a: np.ndarray, img_b: np.ndarray, pts: np.ndarray, fb_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade from a to b, checked back from b to a: new points (n, 2) and which are trustworthy."""
    if len(pts) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    p0 = np.asarray(pts, np.float32).reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(img_a, img_b, p0, None, **_LK)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(img_b, img_a, p1, None, **_LK)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= fb_px) & np.isfinite(p1.reshape(-1, 2)).all(1)
    return p1.reshape(-1, 2), ok


def _band_mask(size: tuple[int, int], fraction: float) -> np.ndarray:
    w, h = size
    bx, by = round(fraction * w), round(fraction * h)
    mask = np.full((h, w), 255, np.uint8)
    mask[by : h - by, bx : w - bx] = 0
    return mask


def _step(a: np.ndarray, b: np.ndarray, band: np.ndarray, c: CameraConfig) -> tuple[np.ndarray, str, float]:
    # corners of the border band alone: a textured object in the middle would otherwise outrank a
    # plain background's weaker corners (qualityLevel is relative to the strongest corner)
    corners = cv2.goodFeaturesToTrack(
        a, maxCorners=c.max_corners, qualityLevel=0.01, minDistance=c.min_distance, mask=band
    )
    if corners is None or len(corners) < c.min_points:
        return np.eye(3), "unknown", 0.0
    p0 = corners.reshape(-1, 2)
    p1, ok = follow(a, b, p0, c.fb_px)
    p0, p1 = p0[ok], p1[ok]
    if len(p0) < c.min_points:
        return np.eye(3), "unknown", 0.0
    still = np.linalg.norm(p1 - p0, axis=1) <= c.still_px
    m, _ = cv2.estimateAffinePartial2D(p0, p1, method=cv2.RANSAC, ransacReprojThreshold=c.ransac_px)
    if m is None or not np.all(np.isfinite(m)):
        return np.eye(3), "still", float(still.mean())
    h = np.vstack([m, [0.0, 0.0, 1.0]])
    explained = np.linalg.norm(apply(h, p0) - p1, axis=1) <= c.ransac_px
    # Each cell of a 4x4 grid over the frame votes for the model that explains more of its points, so an
    # arm reaching in from one side, however many corners it has, is outvoted by the rest of the border.
    w, hgt = band.shape[1], band.shape[0]
    cell = np.minimum((p0[:, 0] * 4 // w), 3) * 4 + np.minimum((p0[:, 1] * 4 // hgt), 3)
    votes_h = votes_still = 0
    for k in np.unique(cell):
        m = cell == k
        n_h, n_s = int(explained[m].sum()), int(still[m].sum())
        votes_h += n_h > n_s
        votes_still += n_s >= n_h
    # ... and the moving points it explains must lie on opposite sides of the border band (or on three
    # sides): a camera moves the whole border, an object only its own part of it.
    moving = explained & ~still
    bx, by = c.border_fraction * w, c.border_fraction * hgt
    x, y = p0[moving, 0], p0[moving, 1]
    sides = [int(np.sum(x < bx)) >= 2, int(np.sum(x > w - 1 - bx)) >= 2,
             int(np.sum(y < by)) >= 2, int(np.sum(y > hgt - 1 - by)) >= 2]  # fmt: skip
    spread = (sides[0] and sides[1]) or (sides[2] and sides[3]) or sum(sides) >= 3
    wins = votes_h > c.homography_margin * votes_still and explained.sum() > c.homography_margin * still.sum()
    if wins and spread:
        return h, "homography", float(explained.mean())
    # A still camera, or one drifting by less than still_px a frame (a slow pan: 12 px over 5 s is
    # 0.15 px a frame, yet all of it over the clip). The similarity fitted to the still points themselves
    # measures that drift; summed over the clip it keeps the background still, where the identity would
    # give every background point the drift as motion of its own.
    if still.sum() >= c.min_points:
        m, _ = cv2.estimateAffinePartial2D(p0[still], p1[still], method=cv2.LMEDS)
        if m is not None and np.all(np.isfinite(m)):
            return np.vstack([m, [0.0, 0.0, 1.0]]), "still", float(still.mean())
    return np.eye(3), "still", float(still.mean())


def camera_motion(video: np.ndarray, config: CameraConfig | None = None) -> CameraMotion:
    """The background's motion between every pair of consecutive frames (see the module docstring)."""
    c = config or CameraConfig()
    T, H, W = video.shape[:3]
    steps = np.repeat(np.eye(3)[None], max(T - 1, 0), axis=0)
    models: list[str] = []
    explained = np.zeros(max(T - 1, 0))
    prev = gray(video[0]) if T else None
    band = _band_mask((W, H), c.border_fraction)
    for t in range(T - 1):
        cur = gray(video[t + 1])
        if np.array_equal(video[t], video[t + 1]):
            models.append("repeat")
            explained[t] = 1.0
        else:
            steps[t], model, explained[t] = _step(prev, cur, band, c)
            models.append(model)
        prev = cur
    return CameraMotion(steps, models, explained, (W, H))


def residual_motion(
    video: np.ndarray, camera: CameraMotion, t: int, end: int, pts: np.ndarray, fb_px: float = 1.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Follow points of frame ``t`` to frame ``end`` (either way), frame by frame; returns their
    displacement beyond the camera's (n, 2), which were followed consistently throughout (n,), and
    where they ended (n, 2)."""
    step = 1 if end >= t else -1
    p = np.asarray(pts, np.float32).reshape(-1, 2)
    ok = np.ones(len(p), bool)
    prev = gray(video[t])
    cur_p = p.copy()
    for u in range(t + step, end + step, step):
        nxt = gray(video[u])
        if np.array_equal(video[u], video[u - step]):
            continue
        moved, good = follow(prev, nxt, cur_p, fb_px)
        ok &= good
        cur_p = np.where(good[:, None], moved, cur_p)
        prev = nxt
    expected = apply(camera.between(t, end), p)
    return (cur_p - expected).astype(np.float32), ok, cur_p


def independent_paths(tracks: np.ndarray, visible: np.ndarray, camera: CameraMotion) -> np.ndarray:
    """Each track's position relative to the background, accumulated from its first visible frame:
    float (T, N, 2) offsets (0 before the first visible frame; held over invisible frames)."""
    T, N = visible.shape
    out = np.zeros((T, N, 2), np.float64)
    acc = np.zeros((N, 2))
    for t in range(T - 1):
        both = visible[t] & visible[t + 1]
        if both.any():
            expected = apply(camera.steps[t], tracks[t, both])
            acc[both] += tracks[t + 1, both] - expected
        out[t + 1] = acc
    return out
