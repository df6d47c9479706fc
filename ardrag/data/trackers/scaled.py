"""Tracking in small videos: upscale them first, with settings for soft frames.

The opencv tracker's defaults suit sharp 368-640 px video. On small, soft frames (a toy model's 80x48
output through a VAE fitted for minutes) they lose nearly every point: the 15-px window sees too little,
and the appearance and 1.5-px forward-backward checks reject what blur changes. :class:`ScaledTracker`
tracks a video narrower than ``min_width`` on its frames upscaled (bicubic, an integer factor to about
``min_width`` wide) with :data:`SMALL_VIDEO_OPENCV` (a 31-px window, no appearance check, a 4-px
forward-backward threshold, no motion prediction for lost points), and returns the tracks in the video's
own pixels; wider videos go to the plain tracker. Those settings were chosen among five on VAE
reconstructions of real toy clips, never on generated ones (``benchmarks/bench_train_toy.py``, item 5 of
its docstring).

The evaluation's motion consistency (``ardrag eval``) and GRPO's motion reward both track through
:func:`metric_tracker`, so that a small model is measured and rewarded the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from ardrag.data.trackers.base import Tracker, TrackResult

SMALL_VIDEO_WIDTH = 320  # px: narrower videos are upscaled to about this width before tracking
SMALL_VIDEO_OPENCV = {
    "win_size": 31,
    "appearance_threshold": None,
    "fb_threshold_px": 4.0,
    "predict_motion": False,
}


class ScaledTracker:
    """``small`` on videos narrower than ``min_width``, upscaled by ``up`` (default: an integer factor, at
    least 2, to about ``min_width``); ``tracker`` on the others."""

    def __init__(self, tracker: Tracker, small: Tracker | None = None, min_width: int = SMALL_VIDEO_WIDTH,
                 up: int | None = None):  # fmt: skip
        self.tracker, self.small, self.min_width, self.up = tracker, small or tracker, min_width, up

    def setup(self) -> None:
        self.tracker.setup()
        if self.small is not self.tracker:
            self.small.setup()

    def track(self, video: np.ndarray, queries: np.ndarray) -> TrackResult:
        h, w = video.shape[1:3]
        if w >= self.min_width and self.up is None:
            return self.tracker.track(video, queries)
        up = self.up or max(2, round(self.min_width / w))
        big = np.stack([cv2.resize(f, (w * up, h * up), interpolation=cv2.INTER_CUBIC) for f in video])
        q = np.asarray(queries, np.float32).copy()
        q[:, 1:] = (q[:, 1:] + 0.5) * up - 0.5
        result = self.small.track(big, q)
        return dataclasses.replace(result, tracks=((result.tracks + 0.5) / up - 0.5).astype(np.float32))


def metric_tracker(name: str = "opencv", config: dict[str, Any] | None = None) -> ScaledTracker:
    """The tracker that metrics and rewards use (not yet set up): ``name`` with ``config`` on videos at
    least :data:`SMALL_VIDEO_WIDTH` wide; on narrower ones, upscaled, opencv with
    :data:`SMALL_VIDEO_OPENCV` (another tracker keeps its own config)."""
    from ardrag.data.trackers import get_tracker

    small = get_tracker("opencv", SMALL_VIDEO_OPENCV) if name == "opencv" else None
    return ScaledTracker(get_tracker(name, config), small)
