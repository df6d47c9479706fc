"""The keys that decide which stages rerun, and the ledger of finished stages
(``<out>/stages/<stage>.json``)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ardrag.fsutil import atomic_write, file_sha256


def digest(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def files_digest(folder: str | os.PathLike[str]) -> str:
    """A digest of a folder's files (relative names and sha256s): the identity of an exported model.
    Computed once, when the stage that exported it finishes, and kept in its ledger entry."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return digest([(str(p.relative_to(root)), file_sha256(p)[0]) for p in files])


class Ledger:
    """One JSON file per finished stage: its key, outputs and figures. Written last, so an entry means
    the stage's outputs are complete."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root) / "stages"

    def get(self, stage: str) -> dict[str, Any] | None:
        path = self.root / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def fresh(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stage's entry when it was made from the same inputs (``key``), else None."""
        entry = self.get(stage)
        return entry if entry is not None and entry.get("key") == key else None

    def put(self, stage: str, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {**entry, "stage": stage, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / f"{stage}.json", json.dumps(entry, indent=1, sort_keys=True))
        return entry


def stage_key(config: Any, upstream: str) -> str:
    """A training stage's key: the upstream result and the config less where it runs."""
    fields = config.to_dict()
    fields.pop("run_dir")
    fields["data"].pop("root")  # stands in the key as the dataset version
    fields["model"].pop("init")  # ... or as the upstream weights' digest
    return digest(upstream, fields)
