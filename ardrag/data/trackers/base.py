"""The point-tracker interface: every tracker takes a clip and query points, returns tracks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ardrag.errors import describe


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


def check_track_inputs(video: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a tracker's inputs before any compute: returns the video, the queries as float32
    (N, 3) and their frame indices as int64 (the t column must hold whole frame numbers)."""
    if (
        not isinstance(video, np.ndarray)
        or video.dtype != np.uint8
        or video.ndim != 4
        or video.shape[-1] != 3
    ):
        raise ValueError(f"video is {describe(video)}; expected a uint8 RGB array of shape (T, H, W, 3)")
    T = video.shape[0]
    if T == 0 or video.shape[1] == 0 or video.shape[2] == 0:
        raise ValueError(f"video is {describe(video)}; expected at least one frame of non-zero size")
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != 3 or not np.issubdtype(q.dtype, np.number):
        raise ValueError(f"queries is {describe(q)}; expected a float array of shape (N, 3) as (t, x, y)")
    q = q.astype(np.float32)
    if not np.all(np.isfinite(q)):
        raise ValueError("queries hold NaN or inf; expected finite (t, x, y) values")
    qt = np.rint(q[:, 0]).astype(np.int64)
    bad = np.flatnonzero((np.abs(q[:, 0] - qt) > 1e-3) | (qt < 0) | (qt >= T))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"queries[{i}] has frame t={float(q[i, 0])}; expected a whole frame index in [0, {T - 1}]"
        )
    q[:, 0] = qt
    return video, q, qt
