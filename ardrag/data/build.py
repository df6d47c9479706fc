"""Write a dataset from any iterable of samples: the one function the CLI and the flows both call."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from ardrag.config import Config, write_resolved_config
from ardrag.console import Progress
from ardrag.data.codec import EncodeConfig
from ardrag.data.sample import Sample
from ardrag.data.shards import MANIFEST, DatasetWriter, read_manifest
from ardrag.errors import ShardError

log = logging.getLogger(__name__)


class ShardConfig(Config):
    shard_samples: int = Field(default=64, ge=1)
    shard_bytes: int = Field(default=1 << 30, ge=1 << 20)
    encode: EncodeConfig = EncodeConfig()


def _digest(config: Config, shards: ShardConfig) -> str:
    return f"{config.digest()}-{shards.digest()}"


def dataset_writer(
    out: str | os.PathLike[str], shards: ShardConfig, *, name: str, overwrite: bool = False
) -> DatasetWriter:
    """A :class:`DatasetWriter` with the shard settings of ``shards``."""
    return DatasetWriter(
        out,
        name=name,
        shard_samples=shards.shard_samples,
        shard_bytes=shards.shard_bytes,
        encode=shards.encode,
        overwrite=overwrite,
    )


def existing_dataset(
    out: str | os.PathLike[str], config: Config, shards: ShardConfig | None = None
) -> dict[str, Any] | None:
    """The manifest of a finished dataset in ``out`` built with the same settings, else None.

    Raises when ``out`` holds a finished dataset built with other settings (source or sharding).
    """
    if not (Path(out) / MANIFEST).is_file():
        return None
    manifest = read_manifest(out)
    if manifest.get("config_digest") == _digest(config, shards or ShardConfig()):
        return manifest
    raise ShardError(
        f"{out} already holds a dataset built with other settings (digest {manifest.get('config_digest')}, "
        f"now {_digest(config, shards or ShardConfig())}); choose another --out or pass --overwrite"
    )


def write_dataset(
    samples: Iterable[Sample],
    out: str | os.PathLike[str],
    config: Config,
    *,
    shards: ShardConfig | None = None,
    name: str = "dataset",
    total: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Shard ``samples`` into ``out``; ``config`` (what made them) is written beside and hashed, with
    the shard settings, into the manifest so that a rerun with the same settings can skip the work."""
    shards = shards or ShardConfig()
    writer = dataset_writer(out, shards, name=name, overwrite=overwrite)
    write_resolved_config(config, out)
    with writer:  # an exception aborts: no manifest, temporary shards removed
        for sample in Progress(samples, total=total, desc=f"writing {name}", unit="clip", enabled=progress):
            writer.write(sample)
        manifest = writer.close({"config": config.to_dict(), "config_digest": _digest(config, shards)})
    log.info(
        "wrote %d samples in %d shards to %s (version %s)",
        manifest["samples"],
        len(manifest["shards"]),
        out,
        manifest["version"],
    )
    return manifest
