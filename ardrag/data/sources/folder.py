"""Videos from a folder: each file is an input, decoded safely, resampled, bucketed, cut into clips.

Decisions, so that a folder of untrusted files from anywhere curates the same way every time:

* **Inputs** are the files under ``folder`` (recursively; hidden files and folders, whose names start
  with ".", are left out) whose extension is in ``extensions`` (case-insensitive), in sorted order of their
  relative path. Every other file is listed by :meth:`FolderSource.skipped` with its reason
  (``unsupported-extension``), except the prompt files (sidecars and the prompts file). An input is keyed by
  content: the id is ``safe_id(stem, sha256 of the bytes)``, so renaming a file keeps it, and
  ``content_hash`` covers the bytes and the input's prompt text, so editing a prompt redoes that input
  alone. Two files with the same name and bytes in different folders get ids of their own.
* **Prompts** (:mod:`ardrag.data.sources.prompts`): a sidecar ``NAME.txt``, else a row of the prompts
  file (``prompts.jsonl`` / ``prompts.csv`` in the folder, or the ``prompts`` setting), else the
  ``captioner`` (a vision-language model, :mod:`ardrag.data.captioners`) captions each clip, else the
  prompt is empty and curation routes the clip to a person (``no-prompt``). Where each prompt came from
  goes into the clip's ``prompt_info`` and from there into the sample's provenance.
* **Decoding** runs in a child process with a timeout (:mod:`ardrag.data.probe`): a crash or a hang
  rejects that input, never the run. Frames come out upright (rotation metadata applied), at a
  constant ``fps`` (source frames picked by presentation time, so variable frame rates work) and at
  the nearest bucket (scale to cover, centre crop).
* **Scene cuts** (on by default) follow PySceneDetect's AdaptiveDetector, a simple method that has held
  up in public curation pipelines: the score of an output frame that shows a new source frame is the
  mean absolute HSV difference to the previous output frame (0-255 scale, on a quarter-size copy); it
  is a cut when the score is at least ``scene_threshold`` (15) and at least ``scene_ratio`` (3) times
  the mean score of its ``scene_window`` (2) neighbours on each side. The ratio keeps fast motion and
  camera pans from reading as cuts; gradual transitions (fades) are not detected. No clip spans a cut.
* **Clips**: within each scene, windows of ``clip_frames`` start every ``stride`` frames. Clip lengths
  are 4k+1 frames from 17 to 81 (:data:`CLIP_LENGTHS`: the Wan VAE encodes 1 + 4k frames), 81 by default
  (5.1 s at 16 fps). A window shorter than ``clip_frames`` (a scene's end, or a scene shorter than a
  clip) becomes a clip of the longest allowed length that fits, when that is at least ``min_clip_frames``
  (17 by default, 1.1 s); so an ordinary 5 s phone clip (80 frames) gives a 77-frame clip instead of
  nothing. Frames left out are recorded in every clip's ``extra["input"]``. An input that gives no clip
  is rejected ``"too-short"``, with its duration.
* **Damage**: decoding stops at the first decoder error; the frames before it are used when they make a
  clip, and ``truncated: true`` is recorded in the clip's source params. Nothing decodes:
  ``"unreadable"``.
* **Limits**: a frame over ``max_pixels`` (default 8192x4320: 8K decodes in bounded memory, larger
  claims are more likely damage than footage) is ``"too-large"``; a side under ``min_side`` (64 px: the
  smallest bucket side is 368, and a 16x16 video would be upscaled 25 times) is ``"too-small"``; longer
  than ``max_duration_s`` (600 s, which bounds the spooled frames on disk) is ``"too-long"``.
* **Temporary folders**: decoded frames are spooled in ``ardrag-probe-<pid>-*`` folders; a run's start
  (:meth:`FolderSource.recover`) removes those whose process is gone (a killed run's).

Rejection reasons (:class:`~ardrag.data.clip.InputRejected`): ``empty-file``, ``not-a-video``,
``no-video-stream``, ``unreadable``, ``decode-timeout``, ``decoder-crashed``, ``too-short``,
``too-large``, ``too-small``, ``too-long``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ardrag.config import Config
from ardrag.data.buckets import Bucket, resolve_buckets
from ardrag.data.clip import Clip, InputRejected, SourceInput, file_digest, safe_id
from ardrag.data.probe import ProbeRequest, clean_stale_workdirs, decode_video
from ardrag.data.sample import PromptInfo, SourceInfo
from ardrag.data.sources.prompts import FolderPrompts
from ardrag.errors import ArdragError, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("mp4", "mov", "webm", "avi", "mkv", "m4v", "mpg", "mpeg")
CLIP_LENGTHS = tuple(range(17, 82, 4))  # 4k+1 frames: what the Wan VAE encodes (1 + 4 per latent frame)


def _check_clip_length(name: str, value: int) -> int:
    if value not in CLIP_LENGTHS:
        below = max((n for n in CLIP_LENGTHS if n < value), default=None)
        above = min((n for n in CLIP_LENGTHS if n > value), default=None)
        near = " or ".join(str(n) for n in (below, above) if n is not None)
        raise ValueError(f"{name} = {value}: expected 4k+1 frames from 17 to 81 (e.g. {near})")
    return value


def fitting_length(frames: int) -> int:
    """The longest allowed clip length that fits in ``frames`` (0 when none does)."""
    return max((n for n in CLIP_LENGTHS if n <= frames), default=0)


class FolderConfig(Config):
    """Where the videos are and how they become clips; only ``folder`` is required."""

    folder: str = Field(min_length=1)  # searched recursively
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))  # case-insensitive
    prompts: str | None = None  # JSONL, CSV, JSON or YAML file; None: prompts.jsonl / .csv in the folder
    captioner: str | None = None  # name in ardrag.data.captioners.CAPTIONERS, for clips without a prompt
    captioner_config: dict[str, Any] = Field(default_factory=dict)  # that captioner's settings
    fps: float = Field(16.0, gt=0, le=240)  # output frame rate (constant)
    clip_frames: int = 81  # 4k+1 from 17 to 81
    min_clip_frames: int = 17  # shortest clip kept (4k+1 from 17 to clip_frames)
    stride: int | None = Field(None, ge=1)  # frames between clip starts; None: clip_frames (no overlap)
    scene_cuts: bool = True
    scene_threshold: float = Field(15.0, ge=0, le=255)  # least HSV difference (0-255) for a cut
    scene_ratio: float = Field(3.0, ge=1)  # ... and least ratio to the neighbouring frames' mean
    scene_window: int = Field(2, ge=1)  # neighbours on each side for that mean
    buckets: list[str] = Field(default_factory=list)  # "WxH" names; empty: all of datasets/buckets.yaml
    decode_timeout_s: float = Field(120.0, gt=0)  # kill the decoder after this long without progress
    decode_timeout_per_s: float = Field(1.0, ge=0)  # total limit: timeout + this x video duration
    decode_threads: int = Field(2, ge=0, le=64)  # FFmpeg threads per decoder; 0: FFmpeg decides
    max_pixels: int = Field(8192 * 4320, ge=1)
    min_side: int = Field(64, ge=1)
    max_duration_s: float = Field(600.0, gt=0)
    tmp_dir: str | None = None  # where decoded frames are spooled; None: the system's temporary folder

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, exts: list[str]) -> list[str]:
        out = sorted({e.lower().lstrip(".") for e in exts})
        if not out or not all(out):
            raise ValueError(f"extensions = {exts!r}; expected names like 'mp4'")
        return out

    @field_validator("buckets")
    @classmethod
    def _parse_buckets(cls, names: list[str]) -> list[str]:
        for name in names:
            Bucket.parse(name)
        return names

    @field_validator("clip_frames", "min_clip_frames")
    @classmethod
    def _clip_length(cls, value: int, info: Any) -> int:
        return _check_clip_length(info.field_name, value)

    @field_validator("captioner")
    @classmethod
    def _known_captioner(cls, name: str | None) -> str | None:
        if name is None:
            return name
        from ardrag.data.captioners import CAPTIONERS

        if name not in CAPTIONERS:
            raise ValueError(f"expected one of {sorted(CAPTIONERS)} or null")
        return name

    @model_validator(mode="after")
    def _check_clip_lengths(self) -> FolderConfig:
        if self.min_clip_frames > self.clip_frames:
            raise ValueError(
                f"min_clip_frames = {self.min_clip_frames} is larger than clip_frames = {self.clip_frames}"
            )
        return self


def detect_cuts(
    scores: np.ndarray, src_index: np.ndarray, threshold: float, ratio: float, window: int
) -> list[int]:
    """Output frames that start a new scene (see the module docstring for the rule).

    Only frames that show a new source frame are candidates and neighbours, so the repeats that
    upsampling (10 fps to 16 fps) inserts neither hide nor fake a cut.
    """
    cand = np.flatnonzero(np.diff(src_index) != 0) + 1
    s = scores[cand].astype(np.float64)
    cuts = []
    for j, k in enumerate(cand):
        if s[j] < threshold:
            continue
        neighbours = np.concatenate([s[max(0, j - window) : j], s[j + 1 : j + 1 + window]])
        base = float(neighbours.mean()) if neighbours.size else 0.0
        if base == 0.0 or s[j] >= ratio * base:
            cuts.append(int(k))
    return cuts


def plan_clips(
    scenes: list[tuple[int, int]], clip_frames: int, stride: int, min_frames: int
) -> tuple[list[tuple[int, int, int]], list[dict[str, int]]]:
    """Clip windows ``(start, end, scene)`` inside each scene, and the frames left out at scene ends.

    A window cut short by its scene's end keeps the longest allowed length (:data:`CLIP_LENGTHS`) that
    fits, when that is at least ``min_frames``."""
    clips, dropped = [], []
    for index, (a, b) in enumerate(scenes):
        covered, start = a, a
        while start < b:
            end = min(start + clip_frames, b)
            if end - start < clip_frames:
                end = start + fitting_length(end - start)
                if end - start < min_frames:
                    break
            clips.append((start, end, index))
            covered = max(covered, end)
            if end == b or start + clip_frames >= b:
                break
            start += stride
        if covered < b:
            dropped.append({"scene": index, "start": covered, "frames": b - covered})
    return clips, dropped


class FolderSource:
    """A :class:`~ardrag.data.sources.VideoSource` over a folder of video files."""

    name = "folder"

    def __init__(self, config: FolderConfig):
        self.config = config
        self.root = Path(config.folder)
        if not self.root.is_dir():
            raise ConfigError(f"folder = {config.folder!r} is not a directory")
        self.prompts = FolderPrompts(self.root, config.prompts)
        self.buckets = [b.name for b in resolve_buckets(config.buckets)]
        self._listing: tuple[list[SourceInput], list[dict[str, str]]] | None = None
        self._captioner: Any = None
        self._captioner_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # workers build their own captioner and lock
        return {**self.__dict__, "_captioner": None, "_captioner_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._captioner_lock = threading.Lock()

    def settings_digest(self) -> str:
        """What the clips depend on: the config less where inputs are and how decoding is run (the
        prompts are in each input's ``content_hash``: editing one redoes that input alone)."""
        runtime = {
            "folder",
            "tmp_dir",
            "prompts",
            "decode_timeout_s",
            "decode_timeout_per_s",
            "decode_threads",
        }
        kept = {k: v for k, v in self.config.to_dict().items() if k not in runtime}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def setup(self) -> None:
        """Nothing to load up front: decoding happens in a child process per input, and the captioner
        (when set) loads on the first clip that needs it."""

    def recover(self) -> list[str]:
        """Remove the temporary folders that killed runs left behind; returns their paths."""
        return clean_stale_workdirs(self.config.tmp_dir)

    # -- listing ------------------------------------------------------------------------------
    def _walk(self) -> tuple[list[Path], list[Path]]:
        """(video files, other files), sorted by relative path; hidden files and folders left out."""
        exts = set(self.config.extensions)
        videos, others = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                if Path(name).suffix.lower().lstrip(".") not in exts:
                    others.append(path)
                elif path.is_file():  # follows links; FIFOs, devices and dangling links are not inputs
                    videos.append(path)
                else:
                    logger.warning("skipping %s: not a regular file (a pipe, device or broken link)", path)
                    others.append(path)
        key = lambda p: p.relative_to(self.root).as_posix()  # noqa: E731
        return sorted(videos, key=key), sorted(others, key=key)

    def listing(self) -> tuple[list[SourceInput], list[dict[str, str]]]:
        """Every video file as an input (keyed by content; each file read once to hash it), and every
        other file as a skipped entry ``{"path", "reason", "detail"}``."""
        if self._listing is not None:
            return self._listing
        videos, others = self._walk()
        items, seen = [], {}
        for path in videos:
            rel = path.relative_to(self.root).as_posix()
            digest = file_digest(path)
            item_id = safe_id(path.stem, digest)
            if item_id in seen:  # same name and bytes in another folder: still an input of its own
                first = seen[item_id]
                item_id = safe_id(
                    rel.rsplit(".", 1)[0], hashlib.sha256(f"{rel}:{digest}".encode()).hexdigest()
                )
                logger.info("%s has the same name and bytes as %s: id %s", rel, first, item_id)
            seen[item_id] = rel
            prompt, info = self.prompts.lookup(rel)
            content = digest if not prompt else hashlib.sha256(f"{digest}\n{prompt}".encode()).hexdigest()
            items.append(
                SourceInput(
                    id=item_id,
                    content_hash=content,
                    kind="folder",
                    description=str(path),
                    params={"path": rel, "sha256": digest, "prompt": prompt, "prompt_info": info.to_dict()},
                )
            )
        rels = list(seen.values())
        sidecars = {self.prompts.sidecar(r).resolve() for r in rels}
        prompts_file = self.prompts.file.resolve() if self.prompts.file is not None else None
        skipped = []
        for path in others:
            if path.resolve() in sidecars or path.resolve() == prompts_file:
                continue
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file():
                skipped.append(
                    {"path": rel, "reason": "not-a-file", "detail": "a pipe, device or broken link"}
                )
                continue
            suffix = path.suffix.lower() or "(none)"
            allowed = ", ".join(self.config.extensions)
            detail = f"extension {suffix} is not one of {allowed} (setting: extensions)"
            skipped.append({"path": rel, "reason": "unsupported-extension", "detail": detail})
        if unused := self.prompts.unused(rels):
            logger.warning("%d prompt(s) match no input file, e.g. %r", len(unused), unused[0])
        if skipped:
            logger.info(
                "%d file(s) skipped, e.g. %s (%s)", len(skipped), skipped[0]["path"], skipped[0]["reason"]
            )
        self._listing = (items, skipped)
        return self._listing

    def inputs(self) -> list[SourceInput]:
        return self.listing()[0]

    def skipped(self) -> list[dict[str, str]]:
        """Files in the folder that are not inputs, each with its reason (see :meth:`listing`)."""
        return self.listing()[1]

    # -- prompts ------------------------------------------------------------------------------
    def _caption(self, video: np.ndarray) -> tuple[str, PromptInfo]:
        """The captioner's prompt for a clip (loaded once, used by one thread at a time)."""
        cfg = self.config
        with self._captioner_lock:
            if self._captioner is None:
                self._captioner = _captioner(cfg.captioner, json.dumps(cfg.captioner_config, sort_keys=True))
            text = " ".join(self._captioner.caption(video).split())
            version = self._captioner.version
        if not text:
            return "", PromptInfo(source="none", detail=f"captioner {version} gave an empty caption")
        return text, PromptInfo(source="captioner", detail=version)

    # -- clips --------------------------------------------------------------------------------
    def clips(self, item: SourceInput) -> Iterator[Clip]:
        """Decode one file in a child process and yield its clips; or raise :class:`InputRejected`."""
        cfg = self.config
        if item.kind != "folder" or "path" not in item.params:
            raise ValueError(
                f"input {item.id!r} is of kind {item.kind!r}; expected a 'folder' input with a path"
            )
        rel = item.params["path"]
        path = self.root / rel
        if not path.is_file():
            raise FileNotFoundError(f"input {item.id!r}: {path} no longer exists")
        if path.stat().st_size == 0:
            raise InputRejected("empty-file", f"{path}: 0 bytes")
        if file_digest(path) != item.params.get("sha256", item.content_hash):
            raise ArdragError(f"input {item.id!r}: {path} changed since it was listed; list the inputs again")
        request = ProbeRequest(
            path=str(path),
            fps=cfg.fps,
            buckets=self.buckets,
            max_pixels=cfg.max_pixels,
            min_side=cfg.min_side,
            max_duration_s=cfg.max_duration_s,
            threads=cfg.decode_threads,
        )
        with decode_video(
            request,
            timeout_s=cfg.decode_timeout_s,
            timeout_per_s=cfg.decode_timeout_per_s,
            tmp_dir=cfg.tmp_dir,
        ) as video:
            n = len(video.frames)
            cuts = (
                detect_cuts(
                    video.scores, video.src_index, cfg.scene_threshold, cfg.scene_ratio, cfg.scene_window
                )
                if cfg.scene_cuts
                else []
            )
            bounds = [0, *cuts, n]
            scenes = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
            windows, dropped = plan_clips(
                scenes, cfg.clip_frames, cfg.stride or cfg.clip_frames, cfg.min_clip_frames
            )
            if not windows:
                longest = max((b - a for a, b in scenes), default=0)
                raise InputRejected(
                    "too-short",
                    f"{path}: {n / cfg.fps:.2f} s ({n} frames at {cfg.fps:g} fps, {len(scenes)} scene(s), "
                    f"longest {longest} frames); a clip needs {cfg.min_clip_frames} frames (min_clip_frames)",
                )
            meta = video.meta
            summary = {
                "frames": n,
                "scenes": [list(s) for s in scenes],
                "dropped": dropped,
                "clips": len(windows),
                "source": meta,
            }
            prompt = item.params.get("prompt", "")
            info = PromptInfo.model_validate(item.params.get("prompt_info", {"source": "none"}))
            for index, (start, end, scene) in enumerate(windows):
                frames = np.array(video.frames[start:end])
                params: dict[str, Any] = {
                    "path": rel,
                    "source_fps": meta["source_fps"],
                    "vfr": meta["vfr"],
                    "rotation": meta["rotation"],
                    "size": meta["size"],
                    "clip_start_frame": start,
                    "scene": scene,
                    "truncated": meta["truncated"],
                }
                clip_prompt, clip_info = prompt, info
                if not prompt and cfg.captioner is not None:
                    clip_prompt, clip_info = self._caption(frames)
                yield Clip(
                    key=f"{item.id}-c{index:03d}",
                    input_id=item.id,
                    video=frames,
                    fps=cfg.fps,
                    prompt=clip_prompt,
                    prompt_info=clip_info,
                    source=SourceInfo(kind="folder", params=params, seed=None),
                    bucket=video.bucket,
                    extra={"input": summary},
                )


@functools.cache
def _captioner(name: str, config_json: str) -> Any:
    """One captioner per process and settings (its model loads on first use, under its own lock)."""
    from ardrag.data.captioners import get_captioner

    return get_captioner(name, json.loads(config_json))
