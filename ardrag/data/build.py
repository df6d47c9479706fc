"""Write a dataset from any iterable of samples: the one function the CLI and the flows both call."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ardrag.config import Config, write_resolved_config
from ardrag.data.codec import EncodeConfig
from ardrag.data.sample import Sample
from ardrag.data.shards import MANIFEST, DatasetWriter
from ardrag.errors import ShardError

log = logging.getLogger(__name__)


class ShardConfig(Config):
    shard_samples: int = 64
    shard_bytes: int = 1 << 30
    encode: EncodeConfig = EncodeConfig()


def existing_dataset(out: str | os.PathLike[str], config: Config) -> dict[str, Any] | None:
    """The manifest of a finished dataset in ``out`` built from the same config, else None.

    Raises when ``out`` holds a finished dataset built from a different config.
    """
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("config_digest") == config.digest():
        return manifest
    raise ShardError(
        f"{out} already holds a dataset built from another config (digest {manifest.get('config_digest')}, "
        f"now {config.digest()}); choose another --out or pass --overwrite"
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
    """Shard ``samples`` into ``out``; ``config`` (what made them) is written beside and hashed into
    the manifest so that a rerun with the same config can skip the work."""
    shards = shards or ShardConfig()
    writer = DatasetWriter(
        out,
        name=name,
        shard_samples=shards.shard_samples,
        shard_bytes=shards.shard_bytes,
        encode=shards.encode,
        overwrite=overwrite,
    )
    write_resolved_config(config, out)
    try:
        for sample in tqdm(samples, total=total, desc=f"writing {name}", unit="clip", disable=not progress):
            writer.write(sample)
    except BaseException:
        writer.abort()
        raise
    manifest = writer.close({"config": config.to_dict(), "config_digest": config.digest()})
    log.info(
        "wrote %d samples in %d shards to %s (version %s)",
        manifest["samples"],
        len(manifest["shards"]),
        out,
        manifest["version"],
    )
    return manifest
