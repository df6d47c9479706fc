"""What the browser plays: the clip itself (``annotate``) and a preview with the tracks drawn (``verify``).

Both are H.264 mp4 at the clip's constant frame rate with the first frame at time 0, so the editor's
frame = time x frame rate matches ardrag's frame index (plus one). Files are named by sample key and
version and written atomically into the media directory, the only folder Label Studio serves.

That folder holds folders and regular files only: a symlink there would let Label Studio serve
whatever it points at (its own local-files view follows links), so writing refuses one, and
:func:`check_media_folder` finds any before push publishes tasks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ardrag.data.overlay import overlay_mp4
from ardrag.data.sample import Sample
from ardrag.errors import ArdragError
from ardrag.fsutil import atomic_write


class MediaError(ArdragError):
    """The media folder holds something other than folders and regular files (a symlink, a device)."""


def media_name(key: str, version: str, kind: str) -> str:
    return f"{key}-{version[:12]}.{kind}.mp4"


def _refuse(path: Path, st: os.stat_result, expected: str) -> MediaError:
    if stat.S_ISLNK(st.st_mode):
        what = f"a symlink to {os.readlink(path)}"
    else:
        what = f"not a {expected} (mode {stat.filemode(st.st_mode)})"
    return MediaError(
        f"{path} is {what}; the media folder Label Studio serves holds only {expected}s that ardrag "
        "writes (a link would serve whatever it points at): remove it and push again"
    )


def media_folder(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root/parts...``, created when missing; refuses a symlink (or any non-folder) below ``root``."""
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(exist_ok=True)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise _refuse(path, st, "folder")
    return path


def check_media_folder(directory: str | os.PathLike[str]) -> int:
    """Raise :class:`MediaError` naming the first entry under ``directory`` that is neither a folder nor
    a regular file (links are not followed); returns the number of regular files."""
    files = 0
    for parent, dirs, names in os.walk(directory):  # os.walk does not descend into linked folders
        for name in sorted(dirs + names):
            path = Path(parent) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                files += 1
            elif not stat.S_ISDIR(st.st_mode):
                raise _refuse(path, st, "regular file")
    return files


def write_media(directory: str | os.PathLike[str], name: str, data: bytes) -> Path:
    """``directory/name`` with ``data``, written once (atomically); refuses a symlink already there."""
    path = Path(directory) / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, st, "regular file")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, data)  # never writes through a link at its temporary name


def preview_bytes(sample: Sample) -> bytes:
    return overlay_mp4(sample)
