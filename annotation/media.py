"""What the browser plays: the clip itself (``annotate``) and a preview with the tracks drawn (``verify``).

Both are H.264 mp4 at the clip's constant frame rate with the first frame at time 0, so the editor's
frame = time x frame rate matches ardrag's frame index (plus one). Files are named by sample key and
version and written atomically into the media directory, the only folder Label Studio serves.
"""

from __future__ import annotations

import os
from pathlib import Path

from ardrag.data.overlay import overlay_mp4
from ardrag.data.sample import Sample
from ardrag.fsutil import atomic_write


def media_name(key: str, version: str, kind: str) -> str:
    return f"{key}-{version[:12]}.{kind}.mp4"


def write_media(directory: str | os.PathLike[str], name: str, data: bytes) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    return path


def preview_bytes(sample: Sample) -> bytes:
    return overlay_mp4(sample)
