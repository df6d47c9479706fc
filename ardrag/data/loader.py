"""A torch ``IterableDataset`` over a sharded dataset: bucketed batches, each sample once per epoch.

- Shards are split over distributed ranks and DataLoader workers (consumer ``rank * workers + id``
  takes every ``consumers``-th shard of one shuffled order that all consumers agree on), so over all
  of them every sample is read exactly once per epoch. Fewer shards than consumers leaves some idle:
  write smaller shards (``shard_samples``) for wide runs.
- Shuffling: the shard order is shuffled per epoch, and samples pass through a shuffle buffer that
  spans shard boundaries.
- Batches never mix buckets: samples wait in one pending list per (bucket, frame count) until a
  batch is full. Tracks are padded to the batch's largest point count (``num_points`` says how many
  are real; padded points are not visible and have zero intensity).
- Damage never stops an epoch: a shard whose size differs from the manifest, an unreadable tar, an
  incomplete or undecodable sample is skipped with a :class:`ShardWarning`, and so are samples the
  manifest lists that a shard turned out not to hold.

Call :meth:`ShardedVideoDataset.set_epoch` before each epoch (as with ``DistributedSampler``); the epoch
lives in shared memory, so persistent workers see it too. Rank and world size are read when the dataset
is built (in the training process), not in workers, which a spawn start method leaves without a process
group. Ranks may get different numbers of batches (shards hold different counts): a DDP loop must agree
on a step count across ranks (:meth:`ShardedVideoDataset.samples_for`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tarfile
import warnings
from collections.abc import Iterator
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ardrag.config import Config
from ardrag.data.codec import get_decoder
from ardrag.data.sample import Sample
from ardrag.data.shards import decode_sample, iter_tar_groups, missing_members, read_manifest
from ardrag.errors import ArdragError

log = logging.getLogger(__name__)


class ShardWarning(UserWarning):
    """A shard or sample was skipped because it is damaged."""


class LoaderConfig(Config):
    batch_size: int = Field(default=1, ge=1)
    shuffle: bool = True
    shuffle_buffer: int = Field(default=32, ge=1, description="samples held (undecoded) for shuffling")
    seed: int = Field(default=0, ge=0)
    decoder: Literal["decord", "pyav"] = "decord"
    fallback_decoder: Literal["decord", "pyav"] | None = Field(
        default="pyav", description="used when the decoder fails on a sample (None: skip the sample)"
    )
    drop_last: bool = False
    buckets: list[str] = Field(default_factory=list, description="read only these buckets; empty = all")


def _skip(message: str) -> None:
    log.warning(message)
    warnings.warn(message, ShardWarning, stacklevel=3)


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Stack same-bucket samples into tensors, padding the point axis to the largest N."""
    n_max = max(s.num_points for s in samples)
    b, t = len(samples), samples[0].num_frames
    tracks = np.zeros((b, t, n_max, 2), np.float32)
    visible = np.zeros((b, t, n_max), bool)
    intensity = np.zeros((b, t, n_max), np.float32)
    for i, s in enumerate(samples):
        tracks[i, :, : s.num_points] = s.tracks
        visible[i, :, : s.num_points] = s.visible
        intensity[i, :, : s.num_points] = s.intensity
    if b == 1:  # no copy: a worker's batch is copied into shared memory once more anyway
        video, reference = samples[0].video[None], samples[0].reference[None]
    else:
        video, reference = np.stack([s.video for s in samples]), np.stack([s.reference for s in samples])
    return {
        "key": [s.key for s in samples],
        "bucket": samples[0].bucket,
        "video": torch.from_numpy(video),
        "reference": torch.from_numpy(reference),
        "tracks": torch.from_numpy(tracks),
        "visible": torch.from_numpy(visible),
        "intensity": torch.from_numpy(intensity),
        "num_points": torch.tensor([s.num_points for s in samples], dtype=torch.long),
        "fps": torch.tensor([s.fps for s in samples], dtype=torch.float32),
        "prompt": [s.prompt for s in samples],
        "negative_prompt": [s.negative_prompt for s in samples],
        "provenance": [s.provenance.to_dict() for s in samples],
    }


class ShardedVideoDataset(IterableDataset):
    def __init__(
        self,
        root: str | os.PathLike[str],
        config: LoaderConfig | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.root = Path(root)
        self.config = config or LoaderConfig()
        self.manifest = read_manifest(self.root)
        wanted = set(self.config.buckets)
        if unknown := wanted - set(self.manifest.get("buckets", {})):
            raise ArdragError(
                f"buckets {sorted(unknown)} are not in the dataset at {self.root}; "
                f"it has {sorted(self.manifest.get('buckets', {}))}"
            )
        self.shards = sorted(
            (s for s in self.manifest["shards"] if not wanted or s["bucket"] in wanted),
            key=lambda s: s["path"],
        )
        dist = torch.distributed
        ready = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if ready else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if ready else 1)
        if not 0 <= self.rank < self.world_size:
            raise ArdragError(f"rank {self.rank} is outside world size {self.world_size}")
        self._epoch = mp.RawValue("q", 0)  # shared with workers, persistent ones included

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if get_spawning_popen() is None:  # plain pickling, not a worker start: carry the value
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = mp.RawValue("q", state["_epoch"])
        self.__dict__.update(state)

    @property
    def num_samples(self) -> int:
        return sum(s["samples"] for s in self.shards)

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * nworkers + wid, self.world_size * nworkers

    def shards_for(self, consumer: int, consumers: int) -> list[dict[str, Any]]:
        """This consumer's shards for the current epoch (all consumers agree on one order)."""
        order = list(self.shards)
        if self.config.shuffle:
            perm = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(order))
            order = [order[i] for i in perm]
        return order[consumer::consumers]

    def samples_for(self, rank: int, num_workers: int) -> int:
        """How many samples ``rank`` reads this epoch with ``num_workers`` workers (from the manifest)."""
        per_rank = max(1, num_workers)
        consumers = self.world_size * per_rank
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        return sum(s["samples"] for c in mine for s in self.shards_for(c, consumers))

    def _groups(self, shards: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, bytes]]]:
        for entry in shards:
            path = self.root / entry["path"]
            try:
                size = path.stat().st_size
            except OSError as err:
                _skip(f"skipping shard {entry['path']}: {err}")
                continue
            if size != entry["bytes"]:
                _skip(
                    f"skipping shard {entry['path']}: {size} bytes, manifest says {entry['bytes']} "
                    "(truncated?)"
                )
                continue
            seen: set[str] = set()
            try:
                for key, members in iter_tar_groups(path):
                    seen.add(key)
                    if missing := missing_members(members):
                        _skip(f"skipping sample {key!r} in {entry['path']}: missing {missing}")
                        continue
                    yield key, members
            except (tarfile.TarError, EOFError, OSError) as err:
                _skip(f"skipping the rest of shard {entry['path']}: {err}")
                continue
            if lost := [k for k in entry.get("keys", []) if k not in seen]:
                _skip(
                    f"shard {entry['path']} ended early: {len(lost)} listed samples missing, e.g. {lost[0]!r}"
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.config
        consumer, consumers = self._consumer()
        if consumers > len(self.shards) and consumer == 0:
            log.warning("%d shards for %d consumers: some will idle", len(self.shards), consumers)
        rng = np.random.default_rng([cfg.seed, self.epoch, consumer])
        decoder = get_decoder(cfg.decoder, fallback=cfg.fallback_decoder)
        pending: dict[tuple[str, int], list[Sample]] = {}

        def add(key: str, members: dict[str, bytes]) -> Iterator[dict[str, Any]]:
            try:
                sample = decode_sample(key, members, decoder)
            except Exception as err:  # one bad sample never stops the epoch; it is reported
                _skip(f"skipping sample {key!r}: {type(err).__name__}: {err}")
                return
            group = pending.setdefault((sample.bucket, sample.num_frames), [])
            group.append(sample)
            if len(group) == cfg.batch_size:
                yield collate(group)
                group.clear()

        buffer: list[tuple[str, dict[str, bytes]]] = []
        for item in self._groups(self.shards_for(consumer, consumers)):
            if not cfg.shuffle:
                yield from add(*item)
                continue
            buffer.append(item)
            if len(buffer) >= cfg.shuffle_buffer:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield from add(*buffer.pop())
        order = rng.permutation(len(buffer)) if cfg.shuffle else range(len(buffer))
        for j in order:
            yield from add(*buffer[j])
        if not cfg.drop_last:
            for group in pending.values():
                if group:
                    yield collate(group)


def make_loader(
    root: str | os.PathLike[str],
    config: LoaderConfig | None = None,
    *,
    num_workers: int = 2,
    rank: int | None = None,
    world_size: int | None = None,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader over :class:`ShardedVideoDataset` (batching happens in the dataset)."""
    dataset = ShardedVideoDataset(root, config, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, **kwargs)
