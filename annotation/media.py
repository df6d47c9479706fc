"""What the browser plays: the clip itself (``annotate``) and a preview with the tracks drawn (``verify``).

Both are H.264 mp4 at the clip's constant frame rate with the first frame at time 0, so the editor's
frame = time x frame rate matches ardrag's frame index (plus one). Files are named by sample key and
version and written atomically into the media directory, the only folder Label Studio serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ardrag.data.codec import encode_mp4
from ardrag.data.sample import Sample
from ardrag.fsutil import atomic_write

PATH_COLOUR = (40, 110, 255)  # RGB blue: the whole path
POINT_COLOUR = (255, 30, 30)  # RGB red: where the point is now


def draw_tracks(video: np.ndarray, tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Frames with every point's whole path (blue) and its current position (red; hollow when hidden)."""
    out = video.copy()
    scale = max(1, round(min(video.shape[1:3]) / 240))
    for t in range(len(out)):
        frame = np.ascontiguousarray(out[t])
        for i in range(tracks.shape[1]):
            pts = np.round(tracks[:, i] * 16).astype(np.int32)  # 4 fractional bits
            for a, b in zip(pts[:-1], pts[1:], strict=True):
                cv2.line(frame, tuple(a), tuple(b), PATH_COLOUR, scale, cv2.LINE_AA, shift=4)
        for i in range(tracks.shape[1]):
            centre = tuple(np.round(tracks[t, i] * 16).astype(np.int32))
            thickness = -1 if visible[t, i] else scale
            cv2.circle(frame, centre, (3 * scale) << 4, POINT_COLOUR, thickness, cv2.LINE_AA, shift=4)
            label_at = (int(tracks[t, i, 0]) + 4 * scale, int(tracks[t, i, 1]) - 4 * scale)
            cv2.putText(frame, f"p{i}", label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale, POINT_COLOUR, scale)
        out[t] = frame
    return out


def media_name(key: str, version: str, kind: str) -> str:
    return f"{key}-{version[:12]}.{kind}.mp4"


def write_media(directory: str | os.PathLike[str], name: str, data: bytes) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    return path


def preview_bytes(sample: Sample) -> bytes:
    return encode_mp4(draw_tracks(sample.video, sample.tracks, sample.visible), sample.fps)
