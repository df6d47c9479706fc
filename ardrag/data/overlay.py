"""Control points drawn over a video, so a person can see what drove it (annotation previews, ``--overlay``).

Every point's whole path is drawn in blue on every frame and its current position as a red disc, hollow
while the point is hidden, labelled ``p<i>``. Coordinates are pixels with pixel centres at integers,
which is OpenCV's drawing convention too; positions are drawn with 4 fractional bits so sub-pixel
motion does not jitter.
"""

from __future__ import annotations

import cv2
import numpy as np

from ardrag.data.codec import EncodeConfig, encode_mp4
from ardrag.data.sample import Sample
from ardrag.errors import SampleValidationError

PATH_COLOUR = (40, 110, 255)  # RGB blue: the whole path
POINT_COLOUR = (255, 30, 30)  # RGB red: where the point is now
_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV


def draw_tracks(video: np.ndarray, tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Frames with every point's whole path (blue) and its current position (red; hollow when hidden)."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise SampleValidationError("video", video, "a uint8 (T, H, W, 3) array")
    if tracks.ndim != 3 or tracks.shape[0] != len(video) or tracks.shape[2] != 2:
        raise SampleValidationError("tracks", tracks, f"a ({len(video)}, N, 2) array, one row per frame")
    if visible.shape != tracks.shape[:2]:
        raise SampleValidationError("visible", visible, f"an array of shape {tracks.shape[:2]}")
    out = video.copy()
    scale = max(1, round(min(video.shape[1:3]) / 240))
    fixed = np.round(tracks * (1 << _SHIFT)).astype(np.int32)  # (T, N, 2)
    radius = (3 * scale) << _SHIFT
    for t in range(len(out)):
        frame = np.ascontiguousarray(out[t])
        for i in range(tracks.shape[1]):
            for a, b in zip(fixed[:-1, i], fixed[1:, i], strict=True):
                cv2.line(frame, tuple(a), tuple(b), PATH_COLOUR, scale, cv2.LINE_AA, shift=_SHIFT)
        for i in range(tracks.shape[1]):
            thickness = -1 if visible[t, i] else scale
            cv2.circle(frame, tuple(fixed[t, i]), radius, POINT_COLOUR, thickness, cv2.LINE_AA, shift=_SHIFT)
            label_at = (int(tracks[t, i, 0]) + 4 * scale, int(tracks[t, i, 1]) - 4 * scale)
            cv2.putText(frame, f"p{i}", label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale, POINT_COLOUR, scale)
        out[t] = frame
    return out


def overlay_mp4(sample: Sample, encode: EncodeConfig | None = None) -> bytes:
    """The sample's clip with its control points drawn (:func:`draw_tracks`), as mp4 bytes: the
    annotation preview and curation's ``--previews``."""
    return encode_mp4(draw_tracks(sample.video, sample.tracks, sample.visible), sample.fps, encode)
