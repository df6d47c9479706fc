"""Videos from a folder: each file is an input, decoded safely, resampled, bucketed, cut into clips.

Decisions, so that a folder of untrusted files from anywhere curates the same way every time:

* **Inputs** are the files under ``folder`` (recursively; hidden files and folders, whose names start
  with ".", are skipped) whose extension is in ``extensions`` (case-insensitive), in sorted order of their
  relative path. An input is keyed by content: ``content_hash`` is the sha256 of the bytes and the id is
  ``safe_id(stem, sha256)``; renaming a file keeps its hash. Two files with the same stem and the same
  bytes would share an id: the second is skipped (with a warning), since it would give the same clips.
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
* **Clips**: within each scene, windows of ``clip_frames`` start every ``stride`` frames. A final window
  shorter than ``clip_frames`` becomes a clip when it has at least ``min_clip_frames`` (by default equal
  to ``clip_frames``: dropped); dropped frames are recorded in every clip's ``extra["input"]``. An input
  that gives no clip is rejected ``"too-short"``, with its duration.
* **Damage**: decoding stops at the first decoder error; the frames before it are used when they make a
  clip, and ``truncated: true`` is recorded in the clip's source params. Nothing decodes:
  ``"unreadable"``.
* **Limits**: a frame over ``max_pixels`` (default 8192x4320: 8K decodes in bounded memory, larger
  claims are more likely damage than footage) is ``"too-large"``; a side under ``min_side`` (16) is
  ``"too-small"``; longer than ``max_duration_s`` (600 s, which bounds the spooled frames on disk) is
  ``"too-long"``.

Rejection reasons (:class:`~ardrag.data.clip.InputRejected`): ``empty-file``, ``not-a-video``,
``no-video-stream``, ``unreadable``, ``decode-timeout``, ``decoder-crashed``, ``too-short``,
``too-large``, ``too-small``, ``too-long``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from ardrag.config import Config
from ardrag.data.buckets import Bucket, resolve_buckets
from ardrag.data.clip import Clip, InputRejected, SourceInput, file_digest, safe_id
from ardrag.data.probe import ProbeRequest, decode_video
from ardrag.data.sample import SourceInfo
from ardrag.errors import ArdragError, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("mp4", "mov", "webm", "avi", "mkv")


class FolderConfig(Config):
    """Where the videos are and how they become clips; only ``folder`` is required."""

    folder: str = Field(min_length=1)  # searched recursively
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))  # case-insensitive
    prompts: str | None = None  # JSON or YAML file: {file name or relative path: prompt}; else prompt ""
    fps: float = Field(16.0, gt=0, le=240)  # output frame rate (constant)
    clip_frames: int = Field(81, ge=2)
    min_clip_frames: int | None = Field(None, ge=2)  # shortest final window kept; None: clip_frames
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
    min_side: int = Field(16, ge=1)
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

    @model_validator(mode="after")
    def _check_clip_lengths(self) -> FolderConfig:
        if self.min_clip_frames is not None and self.min_clip_frames > self.clip_frames:
            raise ValueError(
                f"min_clip_frames = {self.min_clip_frames} is larger than clip_frames = {self.clip_frames}"
            )
        return self

    @property
    def shortest_clip(self) -> int:
        return self.min_clip_frames or self.clip_frames


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
    """Clip windows ``(start, end, scene)`` inside each scene, and the frames left out at scene ends."""
    clips, dropped = [], []
    for index, (a, b) in enumerate(scenes):
        covered, start = a, a
        while start < b:
            end = min(start + clip_frames, b)
            if end - start < min(clip_frames, min_frames):
                break
            clips.append((start, end, index))
            covered = end
            if end == b:
                break
            start += stride
        if covered < b:
            dropped.append({"scene": index, "start": covered, "frames": b - covered})
    return clips, dropped


def load_prompts(path: str | os.PathLike[str]) -> dict[str, str]:
    """A JSON or YAML mapping from file name (or path relative to the folder) to prompt."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts = {str(p)!r}: file not found (expected a JSON or YAML mapping)")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"prompts = {str(p)!r} does not parse: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"prompts = {str(p)!r}: expected a mapping of file name to prompt text (strings)")
    return data


class FolderSource:
    """A :class:`~ardrag.data.sources.VideoSource` over a folder of video files."""

    name = "folder"

    def settings_digest(self) -> str:
        """What the clips depend on: the config less where inputs are and how decoding is run, plus
        the prompts themselves (editing a prompt redoes its clips; moving the file does not)."""
        runtime = {
            "folder",
            "tmp_dir",
            "prompts",
            "decode_timeout_s",
            "decode_timeout_per_s",
            "decode_threads",
        }
        kept = {k: v for k, v in self.config.to_dict().items() if k not in runtime}
        kept["prompts"] = self.prompts
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def __init__(self, config: FolderConfig):
        self.config = config
        self.root = Path(config.folder)
        if not self.root.is_dir():
            raise ConfigError(f"folder = {config.folder!r} is not a directory")
        self.prompts = load_prompts(config.prompts) if config.prompts else {}
        self.buckets = [b.name for b in resolve_buckets(config.buckets)]

    def setup(self) -> None:
        """Nothing to load: decoding happens in a child process per input."""

    def _files(self) -> list[Path]:
        exts = set(self.config.extensions)
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower().lstrip(".") in exts:
                    path = Path(dirpath, name)
                    if path.is_file():  # follows links; FIFOs, devices and dangling links are not inputs
                        found.append(path)
                    else:
                        logger.warning(
                            "skipping %s: not a regular file (a pipe, device or broken link)", path
                        )
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix())

    def inputs(self) -> list[SourceInput]:
        """Every video file, keyed by its content; reads each file once to hash it."""
        items, seen = [], {}
        for path in self._files():
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
            items.append(
                SourceInput(
                    id=item_id,
                    content_hash=digest,
                    kind="folder",
                    description=str(path),
                    params={"path": rel},
                )
            )
        unused = set(self.prompts) - set(seen.values()) - {Path(r).name for r in seen.values()}
        if unused:
            logger.warning("%d prompt(s) match no input file, e.g. %r", len(unused), sorted(unused)[0])
        return items

    def prompt_for(self, rel: str) -> str:
        return self.prompts.get(rel, self.prompts.get(Path(rel).name, ""))

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
        if file_digest(path) != item.content_hash:
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
                scenes, cfg.clip_frames, cfg.stride or cfg.clip_frames, cfg.shortest_clip
            )
            if not windows:
                longest = max((b - a for a, b in scenes), default=0)
                raise InputRejected(
                    "too-short",
                    f"{path}: {n / cfg.fps:.2f} s ({n} frames at {cfg.fps:g} fps, {len(scenes)} scene(s), "
                    f"longest {longest} frames); a clip needs {cfg.shortest_clip} frames",
                )
            meta = video.meta
            summary = {
                "frames": n,
                "scenes": [list(s) for s in scenes],
                "dropped": dropped,
                "clips": len(windows),
                "source": meta,
            }
            prompt = self.prompt_for(rel)
            for index, (start, end, scene) in enumerate(windows):
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
                yield Clip(
                    key=f"{item.id}-c{index:03d}",
                    input_id=item.id,
                    video=np.array(video.frames[start:end]),
                    fps=cfg.fps,
                    prompt=prompt,
                    source=SourceInfo(kind="folder", params=params, seed=None),
                    bucket=video.bucket,
                    extra={"input": summary},
                )
