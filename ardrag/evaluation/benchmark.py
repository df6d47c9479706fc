"""Evaluation benchmarks: a list of clips to generate and score.

**List format** (``benchmark.jsonl``, one JSON object per line; paths relative to the list's folder)::

    {"id": "kite-001", "reference": "kite-001.png", "trajectory": "kite-001.json",
     "prompt": "a red kite climbs into the wind", "reference_video": "kite-001.mp4"}

- ``id``: unique; ``reference``: the first frame (an image file); ``trajectory``: the drag in the format
  of ``ardrag generate`` (:mod:`ardrag.inference.trajectory`; as many frames as the clip should have);
  ``prompt``: the text; ``reference_video`` (optional): the real clip, for FID and FVD, whose frames
  follow the trajectory's.
- ``prompts`` (optional): step-wise prompts, ``[{"frame": 5, "text": "...", "mode": "keep"}]``, the
  format of a trajectory's ``prompts`` (:func:`~ardrag.inference.trajectory.parse_prompts`): from that
  pixel frame on the clip follows ``text`` instead of ``prompt``. A clip's schedule is the entry's
  ``prompts`` or its trajectory file's ``prompts``, never both: an entry with ``prompts`` whose trajectory
  has its own is refused (one clip, two schedules, and no telling which was meant), so one drag file
  can serve entries with different schedules only when it carries none itself. The entry's switches are
  checked when the list is read; their frames against the drag's length when the clip is evaluated
  (:func:`clip_schedule`), since the list is read without opening any file.
- Blank lines and lines starting with ``#`` are skipped. A line that is not a valid entry becomes an
  :class:`EntryError` with its line number and reason: the evaluation reports it per clip and goes on.

**Procedural sets.** ``datasets/eval/procedural.yaml`` (a :class:`ProceduralConfig`) defines a set with
ground truth: :func:`write_procedural_benchmark` renders it into the list format (reference frame PNG,
trajectory JSON from the exact tracks, the clip as the reference video). It is what ``ardrag eval``
uses when no ``--benchmark`` is given, unless the model preset names its own set (``eval_set`` in
:mod:`ardrag.presets`): ``datasets/eval/toy.yaml`` (a :class:`ToyConfig`) holds clips that look like
the toy model's training data, at its size, from a seed it never trained on. A user's own benchmark
(the paper's has 206 clips) is any folder with a ``benchmark.jsonl`` in this format: ``ardrag eval
--benchmark DIR_OR_FILE``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ardrag.config import datasets_dir, load_config
from ardrag.data.codec import encode_mp4
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.sources.toy import ToyConfig, ToySource
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.inference.trajectory import Trajectory, parse_prompts

LIST_NAME = "benchmark.jsonl"
_KEYS = {"id", "reference", "trajectory", "prompt", "reference_video", "prompts"}


@dataclass(frozen=True)
class BenchmarkEntry:
    id: str
    reference: Path
    trajectory: Path
    prompt: str
    reference_video: Path | None = None
    prompts: list[Any] | None = None  # the entry's schedule as written, checked but for its frames' range
    line: int = field(default=0, compare=False)  # in the list, for the errors found when the clip is run


@dataclass(frozen=True)
class EntryError:
    """A list line that could not be used: reported with the results, never fatal."""

    id: str
    line: int
    reason: str


def _entry(obj: Any, line: int, root: Path) -> BenchmarkEntry | EntryError:
    label = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else f"line-{line}"
    if not isinstance(obj, dict):
        return EntryError(label, line, f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        return EntryError(label, line, f"unknown keys {unknown}; expected some of {sorted(_KEYS)}")
    for key in ("id", "reference", "trajectory", "prompt"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            return EntryError(label, line, f"{key!r} is {obj.get(key)!r}; expected a non-empty string")
    video = obj.get("reference_video")
    if video is not None and (not isinstance(video, str) or not video.strip()):
        return EntryError(label, line, f"'reference_video' is {video!r}; expected a path or no key")
    if "prompts" in obj:
        try:  # everything but the frames' range, which needs the drag
            parse_prompts(obj["prompts"], None, f"line {line}")
        except ConfigError as err:
            return EntryError(label, line, str(err))
    return BenchmarkEntry(
        id=obj["id"], reference=root / obj["reference"], trajectory=root / obj["trajectory"],
        prompt=obj["prompt"], reference_video=None if video is None else root / video,
        prompts=obj.get("prompts"), line=line,
    )  # fmt: skip


def clip_schedule(entry: BenchmarkEntry, trajectory: Trajectory) -> tuple[Trajectory, str | None]:
    """The clip's drag under its prompt schedule, and where the schedule came from ("entry", "trajectory",
    or None for none): the entry's ``prompts`` parsed against the drag's frames, or the trajectory file's
    own. Both at once is a :class:`ConfigError` (the rule in the module docstring)."""
    if entry.prompts is None:
        return trajectory, "trajectory" if trajectory.prompts else None
    source = f"line {entry.line}"
    if trajectory.prompts:
        raise ConfigError(
            f"{source}: the entry has 'prompts' and so does its trajectory '{entry.trajectory}'; expected "
            "one schedule per clip (drop the entry's 'prompts' or the trajectory's)"
        )
    switches = parse_prompts(entry.prompts, trajectory.num_frames, source)
    return dataclasses.replace(trajectory, prompts=switches), "entry" if switches else None


def load_benchmark(path: str | os.PathLike[str]) -> list[BenchmarkEntry | EntryError]:
    """The entries of a benchmark list (a ``benchmark.jsonl`` or the folder holding one). Files are not
    opened here: a missing image or a bad trajectory is found, per clip, when the clip is evaluated."""
    path = Path(path)
    if path.is_dir():
        path = path / LIST_NAME
    if not path.is_file():
        raise ConfigError(f"benchmark {str(path)!r} does not exist; expected a {LIST_NAME} or its folder")
    out: list[BenchmarkEntry | EntryError] = []
    seen: set[str] = set()
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            item = _entry(json.loads(text), number, path.parent)
        except json.JSONDecodeError as err:
            item = EntryError(f"line-{number}", number, f"not valid JSON: {err.msg}")
        if isinstance(item, BenchmarkEntry):
            if item.id in seen:
                item = EntryError(item.id, number, f"id {item.id!r} appears twice")
            seen.add(item.id)
        out.append(item)
    if not out:
        raise ConfigError(f"benchmark {str(path)!r} lists no clip")
    return out


# the evaluation sets of datasets/eval/: file stem -> the config class its YAML parses into
EVAL_SETS: dict[str, type[ProceduralConfig]] = {"procedural": ProceduralConfig, "toy": ToyConfig}


def procedural_config(path: str | os.PathLike[str] | None = None) -> ProceduralConfig:
    """The procedural evaluation set's definition (default ``datasets/eval/procedural.yaml``)."""
    path = Path(path) if path is not None else datasets_dir() / "eval" / "procedural.yaml"
    if not path.is_file():
        raise ConfigError(f"procedural evaluation set {str(path)!r} does not exist")
    return load_config(ProceduralConfig, path)


def eval_set_config(model_preset: str | None = None) -> ProceduralConfig:
    """The evaluation set used without a benchmark: the one model preset ``model_preset`` names
    (``eval_set``), else ``datasets/eval/procedural.yaml``."""
    from ardrag.presets import PRESETS

    name = PRESETS["model"].get(model_preset or "", {}).get("eval_set", "procedural")
    if name not in EVAL_SETS:
        raise ConfigError(f"evaluation set {name!r} is unknown; expected one of {sorted(EVAL_SETS)}")
    path = datasets_dir() / "eval" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"evaluation set {str(path)!r} does not exist")
    return load_config(EVAL_SETS[name], path)


def write_procedural_benchmark(config: ProceduralConfig, out: str | os.PathLike[str]) -> Path:
    """Render a procedural set (a :class:`ToyConfig` one with the toy's look) into ``out`` in the list
    format; returns the list's path. Idempotent: an existing list written from the same config is
    reused."""
    out = Path(out)
    listing, stamp = out / LIST_NAME, out / ".config-digest"
    if listing.is_file() and stamp.is_file() and stamp.read_text() == config.digest():
        return listing
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    source = ToySource(config) if isinstance(config, ToyConfig) else ProceduralSource(config)
    for sample in source.samples():
        t, h, w = sample.video.shape[:3]
        name = sample.key
        ok, png = cv2.imencode(".png", cv2.cvtColor(sample.video[0], cv2.COLOR_RGB2BGR))
        assert ok
        atomic_write(out / f"{name}.png", png.tobytes())
        points = [
            {"x": sample.tracks[:, i, 0].tolist(), "y": sample.tracks[:, i, 1].tolist(),
             "visible": sample.visible[:, i].tolist(), "intensity": sample.intensity[:, i].tolist()}
            for i in range(sample.tracks.shape[1])
        ]  # fmt: skip
        trajectory = {"width": w, "height": h, "fps": sample.fps, "points": points}
        atomic_write(out / f"{name}.json", json.dumps(trajectory))
        atomic_write(out / f"{name}.mp4", encode_mp4(sample.video, sample.fps))
        lines.append(json.dumps({"id": name, "reference": f"{name}.png", "trajectory": f"{name}.json",
                                 "prompt": sample.prompt, "reference_video": f"{name}.mp4"}))  # fmt: skip
        assert t == len(points[0]["x"])
    atomic_write(listing, "".join(line + "\n" for line in lines))
    atomic_write(stamp, config.digest())
    return listing


def clip_frames(video: np.ndarray, frames: int) -> np.ndarray:
    """The first ``frames`` frames (a reference video may be longer than the trajectory)."""
    return video[:frames]
