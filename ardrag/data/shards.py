"""Samples as WebDataset tars: one shard set per bucket, a JSON manifest per dataset.

Layout of a dataset directory::

    manifest.json                       written last: the dataset is complete when it exists
    shards/<bucket>/shard-000000.tar    WebDataset tars, deterministic names, one set per bucket

Members of a sample ``<key>`` (WebDataset groups members by the name before the first dot, hence no
dots in keys): ``<key>.json`` (metadata and provenance), ``<key>.mp4`` (H.264, constant frame rate),
``<key>.ref.png`` (reference image, lossless), ``<key>.tracks.npy``, ``<key>.visible.npy``,
``<key>.intensity.npy`` (``allow_pickle=False``), ``<key>.prompt.txt``. No pickle anywhere. The
``.json`` member holds the sha256 of every other member, checked before anything is decoded.

A shard is written under a temporary name (``.shard-000000.tar.partial``) and renamed when complete,
so a killed writer never leaves an incomplete file under a final name. Tar headers carry fixed
mtime/owner so the same samples give the same bytes, and the dataset version is a hash of the shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ardrag.data.codec import EncodeConfig, VideoDecoder, encode_mp4, get_decoder
from ardrag.data.sample import Provenance, Sample
from ardrag.errors import DecodeError, ShardError
from ardrag.fsutil import atomic_write, file_sha256, publish

log = logging.getLogger(__name__)

FORMAT = "ardrag-shards"
FORMAT_VERSION = 2  # 2: per-member sha256 in the .json member
MANIFEST = "manifest.json"
MEMBERS = ("json", "mp4", "ref.png", "tracks.npy", "visible.npy", "intensity.npy", "prompt.txt")
PARTIAL_SUFFIX = ".partial"


# -- sample <-> members ------------------------------------------------------------------------
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_sample(sample: Sample, encode: EncodeConfig | None = None) -> dict[str, bytes]:
    """The members of one sample, extension -> bytes."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(sample.reference, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 encodes any valid uint8 image
        raise ShardError(f"sample {sample.key!r}: PNG encoding of the reference image failed")
    return _with_metadata(sample, encode_mp4(sample.video, sample.fps, encode), png.tobytes())


def _with_metadata(sample: Sample, mp4: bytes, png: bytes) -> dict[str, bytes]:
    members = {
        "mp4": mp4,
        "ref.png": png,
        "tracks.npy": _npy(sample.tracks),
        "visible.npy": _npy(sample.visible),
        "intensity.npy": _npy(sample.intensity),
        "prompt.txt": sample.prompt.encode("utf-8"),
    }
    meta = sample.metadata()
    meta["format_version"] = FORMAT_VERSION
    meta["checksums"] = {ext: hashlib.sha256(data).hexdigest() for ext, data in members.items()}
    return {"json": json.dumps(meta, sort_keys=True).encode("utf-8"), **members}


def revise_members(
    key: str, members: dict[str, bytes], decoder: VideoDecoder, **changes: Any
) -> tuple[Sample, dict[str, bytes]]:
    """A sample with some fields changed (``tracks``, ``visible``, ``prompt``, ``provenance``, ...), and
    its members: the video and reference bytes are kept as they were (no second lossy encode), the rest
    is validated and written anew, with the content hashes of the changed fields."""
    sample = decode_sample(key, members, decoder)
    video_hash = sample.provenance.hashes.get("video")
    revised = dataclasses.replace(sample, **changes).with_hashes()  # replace() validates
    if video_hash is not None:  # the hash of the frames before encoding, not of the decoded ones
        hashes = {**revised.provenance.hashes, "video": video_hash}
        revised.provenance = revised.provenance.model_copy(update={"hashes": hashes})
    return revised, _with_metadata(revised, members["mp4"], members["ref.png"])


def missing_members(members: dict[str, bytes]) -> list[str]:
    return [m for m in MEMBERS if m not in members]


def decode_sample(key: str, members: dict[str, bytes], decoder: VideoDecoder) -> Sample:
    """Rebuild (and validate) a sample from its members."""
    if missing := missing_members(members):
        raise ShardError(f"sample {key!r} is incomplete: missing members {missing}")
    meta = json.loads(members["json"])
    # Verified before decoding: decord 0.6 can crash the process (segfault) on damaged mp4 bytes.
    for ext, digest in meta["checksums"].items():
        if hashlib.sha256(members[ext]).hexdigest() != digest:
            raise ShardError(f"sample {key!r}: member {ext!r} does not match its sha256 (damaged)")
    video = decoder.decode(members["mp4"])
    if video.shape[0] != meta["num_frames"]:
        raise DecodeError(
            f"sample {key!r}: decoded {video.shape[0]} frames with {decoder.name}, metadata says "
            f"{meta['num_frames']}"
        )
    ref = cv2.imdecode(np.frombuffer(members["ref.png"], np.uint8), cv2.IMREAD_COLOR)
    if ref is None:
        raise ShardError(f"sample {key!r}: reference PNG cannot be decoded")

    def arr(name: str) -> np.ndarray:
        return np.load(io.BytesIO(members[name]), allow_pickle=False)

    return Sample(
        key=meta["key"],
        video=video,
        tracks=arr("tracks.npy"),
        visible=arr("visible.npy"),
        intensity=arr("intensity.npy"),
        prompt=members["prompt.txt"].decode("utf-8"),
        provenance=Provenance.model_validate(meta["provenance"]),
        bucket=meta["bucket"],
        fps=meta["fps"],
        reference=cv2.cvtColor(ref, cv2.COLOR_BGR2RGB),
        negative_prompt=meta["negative_prompt"],
        extra=meta.get("extra", {}),
    )


# -- tar reading -------------------------------------------------------------------------------
def iter_tar_groups(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, {extension: bytes}) groups from a tar, WebDataset-style.

    Raises ``tarfile.ReadError``/``EOFError``/``OSError`` on a damaged file; a group cut short by
    the end of the file is yielded as it is (the caller checks completeness).
    """
    current: str | None = None
    group: dict[str, bytes] = {}
    with tarfile.open(path, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            if len(data) != info.size:
                raise tarfile.ReadError(f"member {info.name!r} is truncated")
            if key != current:
                if current is not None:
                    yield current, group
                current, group = key, {}
            group[ext] = data
    if current is not None:
        yield current, group


def read_shard(path: str | os.PathLike[str], decoder: VideoDecoder | None = None) -> Iterator[Sample]:
    """Decoded samples of one shard (raises on any damage; see the loader for skipping)."""
    decoder = decoder or get_decoder()
    for key, members in iter_tar_groups(path):
        yield decode_sample(key, members, decoder)


# -- writing -----------------------------------------------------------------------------------
@dataclass
class ShardInfo:
    path: str  # relative to the dataset root
    bucket: str
    samples: int
    bytes: int
    sha256: str
    keys: list[str] = field(default_factory=list)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _BucketShardWriter:
    """Writes one bucket's shard set, each shard under a temporary name until it is complete."""

    def __init__(self, root: Path, bucket: str, max_samples: int, max_bytes: int):
        self.root, self.bucket = root, bucket
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.dir = root / "shards" / bucket
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = 0
        self.done: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._keys: list[str] = []
        self._bytes = 0

    def _names(self) -> tuple[Path, Path]:
        final = self.dir / f"shard-{self.index:06d}.tar"
        return final, self.dir / f".{final.name}{PARTIAL_SUFFIX}"

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._tar is None:
            self._tar = tarfile.open(self._names()[1], mode="w", format=tarfile.USTAR_FORMAT)
        for ext in MEMBERS:
            data = members[ext]
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
            self._bytes += len(data)
        self._keys.append(key)
        if len(self._keys) >= self.max_samples or self._bytes >= self.max_bytes:
            self.finish_shard()

    def finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final, partial = self._names()
        digest, size = file_sha256(partial)
        publish(partial, final)
        self.done.append(
            ShardInfo(
                str(final.relative_to(self.root)), self.bucket, len(self._keys), size, digest, self._keys
            )
        )
        self._tar, self._keys, self._bytes = None, [], 0
        self.index += 1

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._names()[1].unlink(missing_ok=True)
            self._tar = None


def dataset_version(shards: list[ShardInfo] | list[dict[str, Any]]) -> str:
    """Content hash of a dataset: its shards' paths and sha256 digests."""
    rows = sorted((s["path"], s["sha256"]) if isinstance(s, dict) else (s.path, s.sha256) for s in shards)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


class DatasetWriter:
    """Writes samples into per-bucket shard sets; :meth:`close` writes the manifest, last.

    A directory that already holds a manifest is refused unless ``overwrite``; leftovers of an
    interrupted writer (temporary files, shards without a manifest) are removed first, since no
    manifest accounts for them.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        name: str = "dataset",
        shard_samples: int = 64,
        shard_bytes: int = 1 << 30,
        encode: EncodeConfig | None = None,
        overwrite: bool = False,
    ):
        if shard_samples < 1:
            raise ShardError(f"shard_samples = {shard_samples}; expected at least 1")
        self.root = Path(root)
        finished = (self.root / MANIFEST).exists()
        if finished:
            if not overwrite:
                raise ShardError(f"{self.root} already holds a dataset ({MANIFEST}); pass overwrite=True")
            (self.root / MANIFEST).unlink()
        self._clear_leftovers(replacing=finished)
        self.root.mkdir(parents=True, exist_ok=True)
        self.name, self.encode = name, encode or EncodeConfig()
        self.shard_samples, self.shard_bytes = shard_samples, shard_bytes
        self._writers: dict[str, _BucketShardWriter] = {}
        self._keys: set[str] = set()
        self.manifest: dict[str, Any] | None = None

    def _clear_leftovers(self, replacing: bool = False) -> None:
        shard_dir = self.root / "shards"
        if not shard_dir.exists():
            return
        stale = [
            p
            for p in shard_dir.rglob("*")
            if p.is_file() and (p.suffix == ".tar" or p.name.endswith(PARTIAL_SUFFIX))
        ]
        if stale and not replacing:
            log.warning(
                "removing %d shard files of an earlier, unfinished write in %s", len(stale), shard_dir
            )
        for p in stale:
            p.unlink()

    def write(self, sample: Sample) -> None:
        self.write_encoded(sample.key, sample.bucket, encode_sample(sample, self.encode))

    def write_encoded(self, key: str, bucket: str, members: dict[str, bytes]) -> None:
        """Add a sample already encoded (e.g. from a sample file): its video is not re-encoded."""
        if key in self._keys:
            raise ShardError(f"duplicate sample key {key!r} in dataset {self.name!r}")
        if missing := missing_members(members):
            raise ShardError(f"sample {key!r} is incomplete: missing members {missing}")
        writer = self._writers.get(bucket)
        if writer is None:
            writer = self._writers[bucket] = _BucketShardWriter(
                self.root, bucket, self.shard_samples, self.shard_bytes
            )
        writer.write(key, members)
        self._keys.add(key)

    def close(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish every shard, then write ``manifest.json`` atomically; returns the manifest.

        Closing again returns the same manifest."""
        if self.manifest is not None:
            return self.manifest
        for w in self._writers.values():
            w.finish_shard()
        shards = sorted((s for w in self._writers.values() for s in w.done), key=lambda s: s.path)
        buckets: dict[str, int] = {}
        for s in shards:
            buckets[s.bucket] = buckets.get(s.bucket, 0) + s.samples
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": dataset_version(shards),
            "samples": sum(buckets.values()),
            "buckets": dict(sorted(buckets.items())),
            "encode": self.encode.to_dict(),
            "shards": [s.__dict__ for s in shards],
            **(extra or {}),
        }
        atomic_write(self.root / MANIFEST, json.dumps(manifest, indent=1))
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        for w in self._writers.values():
            w.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def sample_file_bytes(key: str, members: dict[str, bytes]) -> bytes:
    """One sample as a small tar of its members (the format of a one-sample shard)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for ext in MEMBERS:
            tar.addfile(_tarinfo(f"{key}.{ext}", len(members[ext])), io.BytesIO(members[ext]))
    return buf.getvalue()


def write_sample_file(
    path: str | os.PathLike[str], sample: Sample, encode: EncodeConfig | None = None
) -> tuple[Path, str]:
    """Store one sample on its own, atomically: where samples wait for people or for sharding.
    Returns the path and the sha256 of the bytes written."""
    data = sample_file_bytes(sample.key, encode_sample(sample, encode))
    return atomic_write(path, data), hashlib.sha256(data).hexdigest()


def read_sample_file(path: str | os.PathLike[str]) -> tuple[str, dict[str, bytes]]:
    """The key and members of a one-sample file (raises ShardError when damaged or incomplete)."""
    try:
        groups = list(iter_tar_groups(path))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(f"sample file {path} is unreadable: {err}") from None
    if len(groups) != 1 or missing_members(groups[0][1]):
        raise ShardError(f"sample file {path} does not hold exactly one complete sample")
    return groups[0]


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{root} is not a finished dataset: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ShardError(f"{path}: format is {found!r}; expected a JSON object with format {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: written in shard format version {manifest.get('format_version')}, this ardrag reads "
            f"version {FORMAT_VERSION}; rewrite the dataset (e.g. with --overwrite)"
        )
    if not isinstance(manifest.get("shards"), list):
        raise ShardError(f"{path}: 'shards' is missing or not a list")
    return manifest
