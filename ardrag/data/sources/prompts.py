"""Prompts for the videos of a folder, from the files people put beside them.

A clip's prompt comes from the first of these that has one (the folder source then asks a captioner, and
failing that the clip waits for a person with the reason ``no-prompt``):

1. a **sidecar** text file with the video's name and ``.txt`` (``walk.mp4`` -> ``walk.txt``, in the same
   folder): its whole text, stripped;
2. a **prompts file**: ``prompts.jsonl`` or ``prompts.csv`` in the input folder (the first found, in that
   order), or the file named by the ``prompts`` setting, which may also be a JSON or YAML mapping.
   Rows name a video by its path relative to the input folder or by its file name:

   - JSONL: one object per line, ``{"file": "walk.mp4", "prompt": "a man walks a dog"}``;
   - CSV: a header row with the columns ``file`` and ``prompt`` (others are ignored);
   - JSON / YAML: a mapping ``{"walk.mp4": "a man walks a dog"}``.

   A relative path wins over a bare file name when both match.

Every prompt keeps where it came from (:class:`~ardrag.data.sample.PromptInfo`), which curation stores in
the sample's provenance. Errors name the file, the line or row, and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml

from ardrag.data.sample import PromptInfo
from ardrag.errors import ConfigError

FOLDER_FILES = ("prompts.jsonl", "prompts.csv")  # looked for in the input folder, in this order
SIDECAR_SUFFIX = ".txt"


def _rows_jsonl(path: Path, text: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ConfigError(f"prompts file {str(path)!r}, line {n}: not JSON ({err})") from None
        if not (
            isinstance(row, dict) and isinstance(row.get("file"), str) and isinstance(row.get("prompt"), str)
        ):
            raise ConfigError(
                f"prompts file {str(path)!r}, line {n} = {line.strip()[:80]!r}: expected an object with "
                'string fields "file" and "prompt"'
            )
        out[row["file"]] = row["prompt"]
    return out


def _rows_csv(path: Path, text: str) -> dict[str, str]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"file", "prompt"} <= set(reader.fieldnames):
        raise ConfigError(
            f"prompts file {str(path)!r} has the columns {reader.fieldnames}; expected a header row with "
            "'file' and 'prompt'"
        )
    out = {}
    for row in reader:
        if row["file"] is None or row["prompt"] is None:
            raise ConfigError(
                f"prompts file {str(path)!r}, row {reader.line_num}: missing 'file' or 'prompt'"
            )
        out[row["file"]] = row["prompt"]
    return out


def _rows_mapping(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"prompts file {str(path)!r} does not parse: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(
            f"prompts file {str(path)!r}: expected a mapping of file name to prompt text (strings)"
        )
    return data


def read_prompts_file(path: str | Path) -> dict[str, str]:
    """Video (relative path or file name) -> prompt, from a JSONL, CSV, JSON or YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts = {str(p)!r}: file not found (expected a JSONL, CSV, JSON or YAML file)")
    text = p.read_text(encoding="utf-8-sig")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = _rows_jsonl(p, text)
    elif suffix == ".csv":
        rows = _rows_csv(p, text)
    else:
        rows = _rows_mapping(p, text)
    return {k: v.strip() for k, v in rows.items()}


class FolderPrompts:
    """The prompts of one input folder: sidecars, then the prompts file (see the module docstring)."""

    def __init__(self, root: Path, prompts_file: str | None = None):
        self.root = root
        if prompts_file is not None:
            self.file: Path | None = Path(prompts_file)
        else:
            self.file = next((root / n for n in FOLDER_FILES if (root / n).is_file()), None)
        self.table = read_prompts_file(self.file) if self.file is not None else {}

    def sidecar(self, rel: str) -> Path:
        return (self.root / rel).with_suffix(SIDECAR_SUFFIX)

    def lookup(self, rel: str) -> tuple[str, PromptInfo]:
        """The prompt of the video ``rel`` and where it came from; ``("", source "none")`` when none."""
        side = self.sidecar(rel)
        if side.is_file():
            text = " ".join(side.read_text(encoding="utf-8-sig").split())
            if text:
                return text, PromptInfo(source="sidecar", detail=side.relative_to(self.root).as_posix())
        for key in (rel, Path(rel).name):
            text = " ".join(self.table.get(key, "").split())
            if text:
                return text, PromptInfo(source="prompts-file", detail=self.file.name if self.file else "")
        return "", PromptInfo(source="none")

    def unused(self, inputs: list[str]) -> list[str]:
        """Rows of the prompts file that name no input (a typo, a file moved away)."""
        names = set(inputs) | {Path(r).name for r in inputs}
        return sorted(set(self.table) - names)
