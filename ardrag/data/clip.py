"""What curation sources hand over: inputs (files, synthesis jobs) and the clips cut from them.

An :class:`SourceInput` is the unit of accounting: every input ends in the curation manifest with one
row (kept, quarantined with its reason, or waiting for a person). A :class:`Clip` is a bucketed,
constant-frame-rate clip before tracking; the curation pipeline tracks it and turns it into a
:class:`~ardrag.data.sample.Sample`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ardrag.data.sample import KEY_PATTERN, MAX_KEY_LENGTH, PromptInfo, SourceInfo
from ardrag.errors import SampleValidationError
from ardrag.fsutil import file_sha256


class InputRejected(Exception):  # noqa: N818 - a verdict, not a failure
    """Raised by a source for an input that cannot give any clip (quarantined, with ``reason``).

    ``reason`` is a short stable label for counting (``"empty-file"``, ``"not-a-video"``,
    ``"too-short"``, ...); ``detail`` says what exactly was found.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def safe_id(text: str, digest: str, limit: int = 40) -> str:
    """A key-safe id from free text (e.g. a file name) plus a content digest, unique and readable."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:limit] or "input"
    return f"{stem}-{digest[:12]}"


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (inputs are keyed by content, not by name)."""
    return file_sha256(path)[0]


@dataclass(frozen=True)
class SourceInput:
    """One input of a source: a video file, a synthesis job, a procedural index."""

    id: str  # key-safe, unique within a run, stable across runs for the same content
    content_hash: str
    kind: str  # "folder", "wan", "procedural"
    description: str = ""  # file path or job summary, for people
    params: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, enough to redo the work


@dataclass(eq=False)
class Clip:
    """A bucketed clip before tracking. ``truth`` carries ground truth where a source knows it."""

    key: str
    input_id: str
    video: np.ndarray  # uint8 (T, H, W, 3) at the bucket's size
    fps: float
    prompt: str
    source: SourceInfo
    bucket: str = ""
    truth: dict[str, Any] | None = None  # procedural: {"tracks", "visible", "intensity", "labels"}
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_info: PromptInfo | None = None  # where ``prompt`` came from, when the source says

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not KEY_PATTERN.fullmatch(self.key):
            raise SampleValidationError("key", self.key, f"1-{MAX_KEY_LENGTH} letters, digits, '-' or '_'")
        v = self.video
        if (
            not isinstance(v, np.ndarray)
            or v.dtype != np.uint8
            or v.ndim != 4
            or v.shape[-1] != 3
            or not v.size
        ):
            raise SampleValidationError("video", v, "a non-empty uint8 array of shape (T, H, W, 3)", self.key)
        expected = f"{v.shape[2]}x{v.shape[1]}"
        if not self.bucket:
            self.bucket = expected
        elif self.bucket != expected:
            raise SampleValidationError("bucket", self.bucket, f"'{expected}', the video's size", self.key)
