"""Resolution buckets: pick the nearest one for a clip, resize the clip and map its tracks alike.

Decision: **scale to cover, then centre-crop** (no padding). Padding would put black bars into the
training data that the model would learn to generate; the nearest bucket differs from the clip's aspect
ratio by little, so a crop loses little. Points that the crop cuts off keep their (out-of-frame)
coordinates and become not visible.

Coordinates are pixels with pixel centres at integers (pixel (row i, column j) is at x=j, y=i), the
convention of OpenCV and CoTracker. A resize by factor s maps x -> (x + 0.5) * s - 0.5.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ardrag.config import datasets_dir
from ardrag.errors import ConfigError, SampleValidationError


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @classmethod
    def parse(cls, name: str) -> Bucket:
        try:
            w, h = (int(v) for v in name.lower().split("x"))
        except ValueError:
            raise ConfigError(f"bucket {name!r} is not of the form WIDTHxHEIGHT, e.g. '640x368'") from None
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ConfigError(f"bucket {name!r}: expected positive, even width and height (H.264 4:2:0)")
        return cls(w, h)


@functools.cache
def _load_buckets(path: Path) -> tuple[Bucket, ...]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = data.get("buckets")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'buckets'")
    out = []
    for i, e in enumerate(entries):
        try:
            w, h = int(e["width"]), int(e["height"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: buckets[{i}] = {e!r}; expected {{width: W, height: H}}") from None
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ConfigError(f"{path}: buckets[{i}] = {w}x{h}; expected positive even sizes (H.264 4:2:0)")
        out.append(Bucket(w, h))
    return tuple(out)


def default_buckets() -> tuple[Bucket, ...]:
    """The buckets defined in ``datasets/buckets.yaml`` (the paper's five)."""
    return _load_buckets(datasets_dir() / "buckets.yaml")


def resolve_buckets(names: list[str] | None) -> tuple[Bucket, ...]:
    """Buckets by name, or all default buckets when ``names`` is empty or None."""
    if not names:
        return default_buckets()
    return tuple(Bucket.parse(n) for n in names)


def nearest_bucket(width: int, height: int, buckets: tuple[Bucket, ...] | None = None) -> Bucket:
    """The bucket nearest in aspect ratio (log scale), ties broken by nearest area (log scale)."""
    if width <= 0 or height <= 0:
        raise SampleValidationError("size", (width, height), "a positive width and height")
    buckets = buckets or default_buckets()
    ar = math.log(width / height)
    area = math.log(width * height)

    def score(b: Bucket) -> tuple[float, float]:
        return (round(abs(ar - math.log(b.aspect)), 9), abs(area - math.log(b.width * b.height)))

    return min(buckets, key=score)


@dataclass(frozen=True)
class ResizeCrop:
    """Scale by ``scale`` then crop the window starting at (``x0``, ``y0``) of the bucket's size."""

    src_width: int
    src_height: int
    bucket: Bucket
    scale: float
    x0: int
    y0: int

    @classmethod
    def fit(cls, width: int, height: int, bucket: Bucket) -> ResizeCrop:
        scale = max(bucket.width / width, bucket.height / height)
        sw, sh = max(bucket.width, round(width * scale)), max(bucket.height, round(height * scale))
        return cls(width, height, bucket, scale, (sw - bucket.width) // 2, (sh - bucket.height) // 2)

    @property
    def scaled_size(self) -> tuple[int, int]:
        w = max(self.bucket.width, round(self.src_width * self.scale))
        h = max(self.bucket.height, round(self.src_height * self.scale))
        return w, h

    def apply_frames(self, video: np.ndarray) -> np.ndarray:
        """Resize-and-crop a (T, H, W, C) or (H, W, C) uint8 array."""
        single = video.ndim == 3
        frames = video[None] if single else video
        sw, sh = self.scaled_size
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_CUBIC
        b = self.bucket
        out = np.empty((frames.shape[0], b.height, b.width, frames.shape[3]), dtype=frames.dtype)
        for i, f in enumerate(frames):
            scaled = cv2.resize(f, (sw, sh), interpolation=interp) if (sw, sh) != f.shape[1::-1] else f
            if scaled.ndim == 2:
                scaled = scaled[..., None]
            out[i] = scaled[self.y0 : self.y0 + b.height, self.x0 : self.x0 + b.width]
        return out[0] if single else out

    def apply_points(self, tracks: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (..., 2) pixel coordinates; points that leave the crop become not visible."""
        sw, sh = self.scaled_size
        sx, sy = sw / self.src_width, sh / self.src_height
        out = np.empty_like(tracks, dtype=np.float32)
        out[..., 0] = (tracks[..., 0] + 0.5) * sx - 0.5 - self.x0
        out[..., 1] = (tracks[..., 1] + 0.5) * sy - 0.5 - self.y0
        inside = (
            (out[..., 0] >= -0.5)
            & (out[..., 0] <= self.bucket.width - 0.5)
            & (out[..., 1] >= -0.5)
            & (out[..., 1] <= self.bucket.height - 0.5)
        )
        return out, visible & inside


def fit_to_bucket(
    video: np.ndarray,
    tracks: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    buckets: tuple[Bucket, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, Bucket]:
    """Resize a (T, H, W, 3) clip to its nearest bucket and map its (T, N, 2) tracks the same way."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise SampleValidationError("video", video, "a non-empty (T, H, W, 3) array")
    h, w = video.shape[1:3]
    bucket = nearest_bucket(w, h, buckets)
    tf = ResizeCrop.fit(w, h, bucket)
    out = tf.apply_frames(video)
    if tracks is None:
        return out, None, None, bucket
    if visible is None:
        visible = np.ones(tracks.shape[:-1], dtype=bool)
    new_tracks, new_visible = tf.apply_points(tracks, visible)
    return out, new_tracks, new_visible, bucket


def resize_frames(video: Any, size: tuple[int, int]) -> Any:
    """Frames at a model's size: (N, H, W, 3) uint8 tensor -> (N, 3, h, w) float in [-1, 1], antialiased
    bilinear (torch's, as training prepares its inputs; not the curation resize above)."""
    import torch.nn.functional as F

    x = video.permute(0, 3, 1, 2).float() / 127.5 - 1
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)
