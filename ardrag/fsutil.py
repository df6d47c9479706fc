"""Durable writes: write a temporary file, fsync it, rename it into place, fsync the directory.

A reader then sees either the old file or the whole new one, also after a crash or a power loss.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Flush ``tmp`` to disk and rename it to ``final`` (same directory), durably."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (through ``.<name>.partial`` beside it). A link left at the
    temporary name is replaced, never written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)  # a leftover, or a link (unlink removes the link, not its target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    publish(tmp, path)
    return path


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
