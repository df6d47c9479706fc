"""The curated sample: the one record that curation writes, annotators correct, training reads.

A :class:`Sample` holds a clip at its bucket resolution, its motion controls (point tracks, visibility,
"touch force" intensity), its text and where it came from. Construction validates everything and
raises :class:`~ardrag.errors.SampleValidationError` naming the field, the value and what was expected.

Conventions: ``tracks`` are (x, y) pixels with pixel centres at integers; a point that is not visible
still has finite coordinates (its estimated or last position); the negative prompt is not copied into
each sample but referenced by name (``datasets/prompts/negative/<name>.txt``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ardrag.config import Config, datasets_dir
from ardrag.errors import ConfigError, SampleValidationError

# USTAR tar member names hold 100 characters; the longest member suffix is ".intensity.npy" (14).
MAX_KEY_LENGTH = 86
KEY_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_KEY_LENGTH}}}")
DEFAULT_FPS = 16.0
AnnotationStatus = Literal["auto", "human-verified", "human-annotated", "auto-annotated"]


class SourceInfo(Config):
    kind: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None


class TrackerInfo(Config):
    name: str = Field(min_length=1)
    version: str = ""


class AnnotationInfo(Config):
    status: AnnotationStatus = "auto"
    annotator: str | None = None
    time: str | None = None


class PromptInfo(Config):
    """Where a sample's prompt came from: a ``sidecar`` text file or a ``prompts-file`` beside the video
    (``detail``: the file), a ``captioner`` (``detail``: the model), a synthesis ``job``, a ``person``
    (an annotator's correction), or ``none`` (no prompt yet)."""

    source: Literal["sidecar", "prompts-file", "captioner", "job", "person", "none"]
    detail: str = ""


class Provenance(Config):
    """Where a sample came from; ``hashes`` is filled by :meth:`Sample.with_hashes`."""

    source: SourceInfo
    tracker: TrackerInfo | None = None
    annotation: AnnotationInfo = AnnotationInfo()
    prompt: PromptInfo | None = None  # None: the source does not say (procedural clips, older samples)
    hashes: dict[str, str] = Field(default_factory=dict)


@functools.cache
def negative_prompt(name: str = "default") -> str:
    """The shared negative prompt template ``datasets/prompts/negative/<name>.txt``."""
    if not KEY_PATTERN.fullmatch(name):
        raise ConfigError(f"negative prompt name {name!r} must be letters, digits, '-' or '_'")
    path = datasets_dir() / "prompts" / "negative" / f"{name}.txt"
    if not path.is_file():
        raise ConfigError(f"negative prompt {name!r} not found at {path}")
    return path.read_text(encoding="utf-8").strip()


def _array_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


@dataclass(eq=False)
class Sample:
    key: str
    video: np.ndarray  # uint8 (T, H, W, 3)
    tracks: np.ndarray  # float32 (T, N, 2), pixels (x, y)
    visible: np.ndarray  # bool (T, N)
    intensity: np.ndarray  # float32 (T, N) in [0, 1]
    prompt: str
    provenance: Provenance
    bucket: str = ""  # "WxH"; filled from the video size when empty
    fps: float = DEFAULT_FPS
    reference: np.ndarray | None = None  # uint8 (H, W, 3); frame 0 when None
    negative_prompt: str = "default"  # name of the shared template
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, source specific

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def _fail(self, name: str, value: Any, expected: str) -> None:
        raise SampleValidationError(
            name, value, expected, key=self.key if isinstance(self.key, str) else None
        )

    def validate(self) -> None:
        if not isinstance(self.key, str) or not KEY_PATTERN.fullmatch(self.key):
            raise SampleValidationError(
                "key", self.key, f"1-{MAX_KEY_LENGTH} letters, digits, '-' or '_' (no dots, no slashes)"
            )
        v = self.video
        if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
            self._fail("video", v, "a uint8 array of shape (T, H, W, 3)")
        t, h, w = v.shape[:3]
        if t == 0 or h == 0 or w == 0:
            self._fail("video", v, "at least one frame of non-zero size")
        if isinstance(self.fps, bool) or not isinstance(self.fps, numbers.Real) or not (0 < self.fps <= 240):
            self._fail("fps", self.fps, "a frame rate in (0, 240]")
        self.fps = float(self.fps)
        expected_bucket = f"{w}x{h}"
        if not self.bucket:
            self.bucket = expected_bucket
        elif self.bucket != expected_bucket:
            self._fail("bucket", self.bucket, f"'{expected_bucket}', the size of the video (WxH)")
        if self.reference is None:
            self.reference = v[0].copy()
        r = self.reference
        if not isinstance(r, np.ndarray) or r.dtype != np.uint8 or r.shape != (h, w, 3):
            self._fail("reference", r, f"a uint8 image of shape ({h}, {w}, 3)")

        tr = self.tracks
        if not isinstance(tr, np.ndarray) or tr.ndim != 3 or tr.shape[0] != t or tr.shape[2] != 2:
            self._fail("tracks", tr, f"an array of shape ({t}, N, 2): one (x, y) per frame and point")
        if tr.shape[1] == 0:
            self._fail("tracks", tr, "at least one control point (N >= 1)")
        if not np.issubdtype(tr.dtype, np.floating) and not np.issubdtype(tr.dtype, np.integer):
            self._fail("tracks", tr, "a numeric array")
        with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
            tr32 = tr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(tr32)):
            bad = np.argwhere(~np.isfinite(tr32))[0]
            self._fail(
                "tracks", tr, f"finite float32 coordinates (not finite at frame {bad[0]}, point {bad[1]})"
            )
        self.tracks = tr32
        n = tr.shape[1]

        vis = self.visible
        if not isinstance(vis, np.ndarray) or vis.shape != (t, n):
            self._fail("visible", vis, f"an array of shape ({t}, {n})")
        if vis.dtype != np.bool_:
            if not np.all((vis == 0) | (vis == 1)):
                self._fail("visible", vis, "booleans (or 0/1)")
            self.visible = vis.astype(bool)

        it = self.intensity
        if not isinstance(it, np.ndarray) or it.shape != (t, n):
            self._fail("intensity", it, f"an array of shape ({t}, {n})")
        if not np.issubdtype(it.dtype, np.floating) and not np.issubdtype(it.dtype, np.integer):
            self._fail("intensity", it, "a numeric array")
        if not np.all(np.isfinite(it)) or it.min() < 0 or it.max() > 1:
            lo, hi = float(np.nanmin(it)), float(np.nanmax(it))
            self._fail(
                "intensity",
                f"values in [{lo}, {hi}]" + (" with NaN" if np.isnan(it).any() else ""),
                "values in [0, 1]",
            )
        self.intensity = it.astype(np.float32, copy=False)

        if not isinstance(self.prompt, str):
            self._fail("prompt", self.prompt, "a string")
        if not isinstance(self.negative_prompt, str) or not KEY_PATTERN.fullmatch(self.negative_prompt):
            self._fail(
                "negative_prompt",
                self.negative_prompt,
                "the name of a template in datasets/prompts/negative/",
            )
        if not isinstance(self.provenance, Provenance):
            self._fail("provenance", self.provenance, "an ardrag.data.sample.Provenance")
        if not isinstance(self.extra, dict):
            self._fail("extra", self.extra, "a JSON-serialisable dict")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as err:
            self._fail("extra", self.extra, f"a JSON-serialisable dict ({err})")

    # -- derived ------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[1])

    @property
    def height(self) -> int:
        return int(self.video.shape[1])

    @property
    def width(self) -> int:
        return int(self.video.shape[2])

    def content_hashes(self) -> dict[str, str]:
        """sha256 of the raw frames and of the motion controls (stable across encodings)."""
        return {
            "video": _array_hash(self.video),
            "controls": _array_hash(self.tracks, self.visible, self.intensity),
            "text": hashlib.sha256(self.prompt.encode("utf-8")).hexdigest(),
        }

    def with_hashes(self) -> Sample:
        """This sample with ``provenance.hashes`` set from its content."""
        self.provenance = self.provenance.model_copy(update={"hashes": self.content_hashes()})
        return self

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-serialisable data (the ``.json`` member of a shard)."""
        return {
            "key": self.key,
            "bucket": self.bucket,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "num_points": self.num_points,
            "negative_prompt": self.negative_prompt,
            "provenance": self.provenance.to_dict(),
            "extra": self.extra,
        }
