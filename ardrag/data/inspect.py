"""Inspect a sharded dataset: what it holds, and which shards are damaged and why."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from ardrag.data.shards import (
    MANIFEST,
    PARTIAL_SUFFIX,
    iter_tar_groups,
    missing_members,
    read_manifest,
)
from ardrag.errors import ShardError
from ardrag.fsutil import file_sha256


def _read_tar(path: Path) -> tuple[list[str], str | None]:
    """Keys of the complete samples in a tar, and the reason it is damaged (None when intact)."""
    keys: list[str] = []
    try:
        for key, members in iter_tar_groups(path):
            if missing := missing_members(members):
                return keys, f"sample {key!r} is incomplete (missing {', '.join(missing)})"
            keys.append(key)
    except (tarfile.TarError, EOFError, OSError) as err:
        return keys, f"unreadable tar: {err}"
    return keys, None


def inspect_dataset(root: str | os.PathLike[str], verify_hashes: bool = True) -> dict[str, Any]:
    """Read every shard of a dataset and report counts per bucket and the problems found.

    ``samples`` and ``buckets`` count complete samples in intact shards; ``manifest_samples`` is what
    the manifest claims. Each problem names the file and the reason.
    """
    root = Path(root)
    problems: list[dict[str, str]] = []
    try:
        manifest: dict[str, Any] | None = read_manifest(root)
    except ShardError as err:
        manifest = None
        problems.append({"shard": MANIFEST, "reason": str(err)})

    shard_dir = root / "shards"
    on_disk = {str(p.relative_to(root)) for p in shard_dir.rglob("*.tar")} if shard_dir.exists() else set()
    for p in sorted(shard_dir.rglob(f"*{PARTIAL_SUFFIX}") if shard_dir.exists() else []):
        problems.append(
            {"shard": str(p.relative_to(root)), "reason": "temporary file of an interrupted write"}
        )

    if manifest is not None:
        listed = {s["path"]: s for s in manifest["shards"]}
        for extra in sorted(on_disk - set(listed)):
            problems.append({"shard": extra, "reason": "not listed in the manifest"})
    else:  # no manifest: look at whatever tars are there
        listed = {p: {"path": p, "bucket": Path(p).parent.name} for p in sorted(on_disk)}

    samples, buckets = 0, {}
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append({"shard": rel, "reason": "missing file"})
            continue
        if "bytes" in entry:
            digest, size = file_sha256(path) if verify_hashes else (None, path.stat().st_size)
            if size != entry["bytes"]:
                problems.append(
                    {
                        "shard": rel,
                        "reason": f"truncated or altered: {size} bytes, manifest says {entry['bytes']}",
                    }
                )
                continue
            if digest is not None and digest != entry["sha256"]:
                problems.append({"shard": rel, "reason": "content differs from the manifest's sha256"})
                continue
        keys, reason = _read_tar(path)
        if reason is None and "keys" in entry and keys != entry["keys"]:
            reason = f"holds {len(keys)} samples, manifest lists {len(entry['keys'])}"
        if reason is not None:
            problems.append({"shard": rel, "reason": reason})
            continue
        samples += len(keys)
        buckets[entry["bucket"]] = buckets.get(entry["bucket"], 0) + len(keys)

    return {
        "root": str(root),
        "name": manifest.get("name") if manifest else None,
        "version": manifest.get("version") if manifest else None,
        "samples": samples,
        "manifest_samples": manifest.get("samples") if manifest else None,
        "buckets": dict(sorted(buckets.items())),
        "shards": len(listed),
        "problems": problems,
    }
