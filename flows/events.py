"""The Prefect event ardrag emits when a curated dataset gets a new version.

``ardrag.dataset.version.created`` is emitted by the flows that reshard a curation folder (``curate``
and ``annotation-pull``) when the version of its ``dataset/`` changed, and by the retrain flow's dataset
stage (producer ``retrain``). The retrain deployment in ``prefect.yaml`` has a trigger on it that
matches the producers ``curate`` and ``annotation-pull`` only: a retrain run that curates new data does
not start another retrain run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DATASET_EVENT = "ardrag.dataset.version.created"


def dataset_resource(dataset_dir: str | os.PathLike[str], version: str, producer: str) -> dict[str, str]:
    """The event's resource: the dataset folder is its identity; version and producer are labels."""
    path = str(Path(dataset_dir).resolve())
    return {
        "prefect.resource.id": f"ardrag.dataset.{path}",
        "prefect.resource.name": Path(path).parent.name,
        "ardrag.dataset.path": path,
        "ardrag.dataset.version": version,
        "ardrag.producer": producer,
    }


def emit_dataset_version(dataset_dir: str | os.PathLike[str], manifest: dict[str, Any], producer: str) -> Any:
    """Emit the event for a dataset's manifest (its version, sample count and buckets as payload)."""
    from prefect.events import emit_event

    return emit_event(
        DATASET_EVENT,
        resource=dataset_resource(dataset_dir, manifest["version"], producer),
        payload={"samples": manifest.get("samples"), "buckets": manifest.get("buckets")},
    )


def dataset_version(dataset_dir: str | os.PathLike[str]) -> str | None:
    """The version of the dataset in a folder, or None when it has none (yet)."""
    from ardrag.data.shards import ShardError, read_manifest

    try:
        return read_manifest(Path(dataset_dir))["version"]
    except (ShardError, OSError, KeyError):
        return None
