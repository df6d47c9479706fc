"""The point-tracker interface: every tracker takes a clip and query points, returns tracks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class TrackResult:
    tracks: np.ndarray  # float32 (T, N, 2): (x, y) pixels, pixel centres at integers
    visible: np.ndarray  # bool (T, N)
    confidence: np.ndarray  # float32 (T, N) in [0, 1]


@runtime_checkable
class Tracker(Protocol):
    """A point tracker. ``setup()`` loads models (not at import or construction, so trackers pickle
    to workers); ``track`` follows each query (t, x, y) through the whole clip, before and after t."""

    name: str
    version: str

    def setup(self) -> None: ...

    def track(self, video: np.ndarray, queries: np.ndarray) -> TrackResult:
        """video: uint8 (T, H, W, 3) RGB; queries: float32 (N, 3) as (t, x, y) pixels."""
        ...
