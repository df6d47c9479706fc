"""The default point tracker: pyramidal Lucas-Kanade with a forward-backward check (OpenCV, no model).

Each query is followed from its query frame to the last frame (forward sweep) and to frame 0 (backward
sweep, only for queries after frame 0). Frames are converted to gray and lightly blurred (steadier LK on
fine texture). One LK step moves every active point from frame ``a`` to the next frame ``b`` at once,
starting from the point's last velocity (which keeps fast motion inside the pyramid's capture range),
then tracks the result back from ``b`` to ``a``. The step is accepted, and the point visible in ``b``,
when

- LK converged both ways and the forward-backward (FB) error is at most ``fb_threshold_px``;
- the point lies inside the frame;
- its patch still looks like its *anchor* (the patch at the query frame, renewed every
  ``anchor_refresh_frames`` while the match is good): mean |difference| of the mean-free patches at most
  ``appearance_threshold`` gray levels. FB alone misses an occluder that covers a point gradually, since
  LK then follows the occluder consistently both ways.

Confidence is ``exp(-fb / fb_scale_px) * exp(-appearance / appearance_scale)``; 0 where not visible.

A point that fails is *lost* (invisible): its position is predicted with its last velocity, which decays
by ``lost_velocity_decay`` per frame, and is held inside the frame (a lost point is never extrapolated
out of it: it stays where it was last seen, near the border, until it is found again). In every later
frame it is re-acquired by matching the patch where it was last seen directly against the new frame,
starting from the prediction with few pyramid levels (coarse levels would mix in the surroundings and
undo a good prediction), under the same FB, frame and appearance checks. Matching the last good
appearance rather than chaining from the prediction keeps a point from latching onto its occluder.
After ``max_lost_frames`` frames a lost point is no longer searched for; it keeps the prediction.
Visible points always lie inside the frame (the frame check is part of every acceptance).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import cv2
import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.data.trackers.base import TrackResult, check_track_inputs

logger = logging.getLogger(__name__)


class OpenCVConfig(Config):
    """Lucas-Kanade parameters; the defaults suit 368-640 px clips at 16 fps."""

    win_size: int = Field(15, ge=5, le=101)  # LK window (px, square)
    max_level: int = Field(3, ge=0, le=8)  # pyramid levels above the full resolution
    blur_sigma: float = Field(1.0, ge=0)  # Gaussian pre-blur (px): steadier LK on fine texture and noise
    max_iterations: int = Field(30, ge=1)  # LK iterations per level
    epsilon: float = Field(0.01, gt=0)  # LK stops when an update is smaller (px)
    min_eig_threshold: float = Field(1e-5, ge=0)  # OpenCV's textureless-patch cut-off
    fb_threshold_px: float = Field(1.5, gt=0)  # visible iff the forward-backward error is at most this
    fb_scale_px: float = Field(1.5, gt=0)  # confidence factor exp(-fb / fb_scale_px)
    appearance_threshold: float | None = Field(10.0, gt=0)  # max mean |patch - anchor| (0..255); None: off
    appearance_scale: float = Field(10.0, gt=0)  # confidence factor exp(-appearance error / this)
    anchor_refresh_frames: int = Field(8, ge=0)  # renew a point's anchor patch this often (0: never)
    predict_motion: bool = True  # start each LK step from the last velocity
    reacquire: bool = True  # search for lost points again (see the module docstring)
    reacquire_max_level: int = Field(1, ge=0, le=8)  # pyramid levels when re-acquiring from a prediction
    max_lost_frames: int = Field(32, ge=1)  # stop searching for a point lost this many frames ago
    lost_velocity_decay: float = Field(0.8, ge=0, le=1)  # a lost point's predicted velocity, per frame


class _Frames:
    """Grayscale frames, converted on first use and kept for the frames a sweep may still look back to
    (OpenCV's Python binding cannot take prebuilt pyramids, so LK builds them per call)."""

    def __init__(self, video: np.ndarray, keep: int, blur_sigma: float):
        self.video, self.keep, self.sigma = video, keep, blur_sigma
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getitem__(self, t: int) -> np.ndarray:
        gray = self.cache.get(t)
        if gray is None:
            gray = cv2.cvtColor(self.video[t], cv2.COLOR_RGB2GRAY)
            if self.sigma > 0:
                gray = cv2.GaussianBlur(gray, (0, 0), self.sigma)
            self.cache[t] = gray
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(t)
        return gray


class OpenCVTracker:
    """Pyramidal Lucas-Kanade with a forward-backward consistency check; see the module docstring."""

    name = "opencv"

    def __init__(self, config: OpenCVConfig | None = None):
        self.config = config or OpenCVConfig()
        self.version = f"lk-{cv2.__version__}"

    def setup(self) -> None:
        """Nothing to load: LK has no model."""

    def track(self, video: np.ndarray, queries: np.ndarray) -> TrackResult:
        video, queries, qt = check_track_inputs(video, queries)
        T, H, W = video.shape[:3]
        N = len(queries)
        c = self.config
        tracks = np.repeat(queries[None, :, 1:], T, axis=0).astype(np.float32)
        visible = np.zeros((T, N), bool)
        confidence = np.zeros((T, N), np.float32)
        visible[qt, np.arange(N)] = True
        confidence[qt, np.arange(N)] = 1.0
        if N == 0 or T == 1:
            return TrackResult(tracks, visible, confidence)
        keep = (c.max_lost_frames + 2) if c.reacquire else 2
        frames = _Frames(video, keep, c.blur_sigma)
        fwd = qt < T - 1
        if fwd.any():
            self._sweep(
                frames, np.arange(T), queries[fwd, 1:], qt[fwd], (W, H), fwd, tracks, visible, confidence
            )
        bwd = qt > 0
        if bwd.any():
            order = np.arange(T)[::-1]
            start = (T - 1) - qt[bwd]
            self._sweep(frames, order, queries[bwd, 1:], start, (W, H), bwd, tracks, visible, confidence)
        return TrackResult(tracks, visible, confidence)

    # -- internals ------------------------------------------------------------------------------
    def _lk(
        self, img_a: np.ndarray, img_b: np.ndarray, pts: np.ndarray, guess: np.ndarray, levels: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """LK from a to b starting at ``guess``, then back from b to a starting at ``pts``: returns the
        new points, ok (converged both ways), the FB error and LK's patch error."""
        c = self.config
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, c.max_iterations, c.epsilon)
        kw = {
            "winSize": (c.win_size, c.win_size),
            "maxLevel": levels,
            "criteria": crit,
            "flags": cv2.OPTFLOW_USE_INITIAL_FLOW,
            "minEigThreshold": c.min_eig_threshold,
        }
        p0 = np.array(pts, np.float32).reshape(-1, 1, 2)  # copies: OpenCV writes into nextPts
        p1, st1, err1 = cv2.calcOpticalFlowPyrLK(
            img_a, img_b, p0, np.array(guess, np.float32).reshape(-1, 1, 2), **kw
        )
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(img_b, img_a, p1, p0.copy(), **kw)
        p1 = p1.reshape(-1, 2)
        fb = np.linalg.norm(p0b.reshape(-1, 2) - p0.reshape(-1, 2), axis=1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & np.isfinite(p1).all(axis=1)
        return p1, ok, fb, err1.ravel()

    def _patches(self, img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Mean-free (n, win, win) patches of ``img`` around ``pts`` (bilinear, border replicated),
        extracted for all points in one ``remap`` call."""
        w = self.config.win_size
        off = np.arange(w, dtype=np.float32) - (w - 1) / 2
        n = len(pts)
        mx = (pts[:, 0, None, None] + off[None, None, :]).repeat(w, axis=1).reshape(n * w, w)
        my = (pts[:, 1, None, None] + off[None, :, None]).repeat(w, axis=2).reshape(n * w, w)
        out = cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        patches = out.reshape(n, w, w).astype(np.float32)
        return patches - patches.mean(axis=(1, 2), keepdims=True)

    def _sweep(
        self,
        frames: _Frames,
        order: np.ndarray,
        start_xy: np.ndarray,
        start_step: np.ndarray,
        size: tuple[int, int],
        columns: np.ndarray,
        tracks: np.ndarray,
        visible: np.ndarray,
        confidence: np.ndarray,
    ) -> None:
        """Follow points through ``order`` (frame indices), point i from step ``start_step[i]`` on,
        writing into the columns ``columns`` (a mask over all queries) of the output arrays."""
        c = self.config
        W, H = size
        cols = np.flatnonzero(columns)
        n, w = len(cols), c.win_size
        pos = start_xy.astype(np.float32).copy()  # position at the current frame
        vel = np.zeros((n, 2), np.float32)  # per step, in sweep direction
        vis = np.ones(n, bool)  # visible at the current frame
        last_step = start_step.copy()  # step at which each point was last visible
        last_pos = pos.copy()
        anchor = np.zeros((n, w, w), np.float32)  # the appearance a point must keep to stay visible
        anchor_step = start_step.copy()
        app_thr = np.inf if c.appearance_threshold is None else c.appearance_threshold
        lo = np.array([-0.5, -0.5], np.float32)
        hi = np.array([W - 0.5, H - 0.5], np.float32)

        def inside(p: np.ndarray) -> np.ndarray:
            return np.all((p >= lo) & (p <= hi), axis=1)

        half = np.float32(w // 2)

        def inner(p: np.ndarray) -> np.ndarray:
            """Whether the whole window around p lies in the frame (its appearance is all real pixels)."""
            return np.all((p >= lo + 0.5 + half) & (p <= hi - 0.5 - half), axis=1)

        def accept(
            idx: np.ndarray, p1: np.ndarray, ok: np.ndarray, fb: np.ndarray, img_b: np.ndarray, k1: int
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Check LK results for points ``idx`` against FB, frame and appearance; update the state of
            those that pass and return them with their positions and confidences."""
            cand = ok & (fb <= c.fb_threshold_px) & inside(p1)
            app = np.full(len(idx), np.inf, np.float32)
            patches = None
            if cand.any():
                patches = self._patches(img_b, p1[cand])
                app[cand] = np.abs(patches - anchor[idx[cand]]).mean(axis=(1, 2))
            good = cand & (app <= app_thr)
            g = idx[good]
            conf = np.exp(-fb[good] / c.fb_scale_px) * np.exp(-app[good] / c.appearance_scale)
            last_step[g], last_pos[g] = k1, p1[good]
            if c.anchor_refresh_frames and patches is not None:
                fresh = good[cand] & (k1 - anchor_step[idx[cand]] >= c.anchor_refresh_frames)
                fresh &= app[cand] <= app_thr / 2
                anchor[idx[cand][fresh]] = patches[fresh]
                anchor_step[idx[cand][fresh]] = k1
            return g, p1[good], conf

        for k in range(int(start_step.min()), len(order) - 1):
            a, b = int(order[k]), int(order[k + 1])
            starting = np.flatnonzero(start_step == k)
            if starting.size:
                anchor[starting] = self._patches(frames[a], pos[starting])
            active = start_step <= k
            new_pos = pos.copy()
            new_vis = np.zeros(n, bool)
            new_conf = np.zeros(n, np.float32)

            run = np.flatnonzero(active & vis)
            if run.size:
                guess = pos[run] + vel[run] if c.predict_motion else pos[run]
                p1, ok, fb, _ = self._lk(frames[a], frames[b], pos[run], guess, c.max_level)
                g, pg, conf = accept(run, p1, ok, fb, frames[b], k + 1)
                lost = np.setdiff1d(run, g)
                vel[g] = pg - pos[g]
                new_pos[lost] = pos[lost] + vel[lost]  # last_step, last_pos stay at frame a
                vel[lost] *= c.lost_velocity_decay
                new_pos[g], new_vis[g], new_conf[g] = pg, True, conf

            gone = np.flatnonzero(active & ~vis)
            if gone.size:
                new_pos[gone] = pos[gone] + vel[gone]
                vel[gone] *= c.lost_velocity_decay
                if c.reacquire:
                    gap = (k + 1) - last_step[gone]
                    # only away from the border: a window half outside matches too easily
                    near = inner(new_pos[gone]) & inner(last_pos[gone])
                    search = gone[(gap <= c.max_lost_frames) & near]
                    for s in np.unique(last_step[search]):
                        grp = search[last_step[search] == s]
                        start_pos = last_pos[grp].copy()
                        p1, ok, fb, _ = self._lk(
                            frames[int(order[s])], frames[b], start_pos, new_pos[grp], c.reacquire_max_level
                        )
                        g, pg, conf = accept(grp, p1, ok & inner(p1), fb, frames[b], k + 1)
                        vel[g] = (pg - start_pos[np.isin(grp, g)]) / ((k + 1) - s)
                        new_pos[g], new_vis[g], new_conf[g] = pg, True, conf

            np.clip(new_pos, lo + 0.5, hi - 0.5, out=new_pos)  # a lost point stays in the frame
            idx = np.flatnonzero(active)
            tracks[b, cols[idx]] = new_pos[idx]
            visible[b, cols[idx]] = new_vis[idx]
            confidence[b, cols[idx]] = new_conf[idx]
            pos = np.where(active[:, None], new_pos, pos)
            vis = np.where(active, new_vis, vis)
        logger.debug("LK sweep over %d frames, %d points", len(order), n)
