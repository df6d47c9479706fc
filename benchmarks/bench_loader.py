"""Loader throughput vs raw decoding of the same videos, measured side by side in one run.

Writes (or reuses) a procedural dataset, then decodes every clip's mp4 bytes (already in memory) with
the same decoder in 1 and in 2 processes (raw decode), and iterates the loader with ``num_workers=2``
(tar reading, decoding, validation, batching and the copy into shared memory included): the first
epoch with worker start-up, then steady-state epochs with persistent workers.

    python benchmarks/bench_loader.py [--clips 48] [--epochs 3] [--dir runs/bench-loader]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import torch

from ardrag.config import build_config
from ardrag.data.build import ShardConfig, existing_dataset, write_dataset
from ardrag.data.codec import get_decoder
from ardrag.data.loader import LoaderConfig, make_loader
from ardrag.data.shards import iter_tar_groups, read_manifest
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource


def _decode_frames(data: bytes) -> int:
    return get_decoder("decord").decode(data).shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dir", default="runs/bench-loader")
    ap.add_argument("--shard-samples", type=int, default=4)
    args = ap.parse_args()
    root = Path(args.dir)
    config = build_config(ProceduralConfig, {"num_clips": args.clips, "seed": 7})
    if existing_dataset(root, config, ShardConfig(shard_samples=args.shard_samples)) is None:
        source = ProceduralSource(config)
        write_dataset(
            source.samples(),
            root,
            config,
            shards=ShardConfig(shard_samples=args.shard_samples),
            name="bench",
            total=len(source),
        )
    manifest = read_manifest(root)
    videos = [m["mp4"] for s in manifest["shards"] for _, m in iter_tar_groups(root / s["path"])]

    t0 = time.perf_counter()
    frames = sum(_decode_frames(v) for v in videos)
    raw1 = frames / (time.perf_counter() - t0)

    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_decode_frames, videos[:2])  # start the workers outside the timing
        t0 = time.perf_counter()
        frames2 = sum(pool.map(_decode_frames, videos, chunksize=1))
        raw2 = frames2 / (time.perf_counter() - t0)

    loader = make_loader(root, LoaderConfig(batch_size=1, seed=0), num_workers=2, persistent_workers=True)
    rates = []
    for epoch in range(args.epochs):
        loader.dataset.set_epoch(epoch)
        t0 = time.perf_counter()
        seen = sum(batch["video"].shape[0] * batch["video"].shape[1] for batch in loader)
        rates.append(seen / (time.perf_counter() - t0))
    first, steady = rates[0], sum(rates[1:]) / max(1, len(rates) - 1)

    # What a worker pays beyond decoding: DataLoader copies each batch into fresh shared memory.
    clip = torch.from_numpy(get_decoder("decord").decode(videos[0]))
    t0 = time.perf_counter()
    for _ in range(10):
        clip.clone().share_memory_()
    shm_ms = (time.perf_counter() - t0) * 100
    decode_ms = 1000 * clip.shape[0] / raw1

    shards = len(manifest["shards"])
    print(f"{len(videos)} clips, {frames} frames, {shards} shards, buckets {manifest['buckets']}")
    print(f"  raw decode, 1 process                {raw1:8.0f} frames/s")
    print(f"  raw decode, 2 processes              {raw2:8.0f} frames/s")
    print(f"  loader, num_workers=2, first epoch   {first:8.0f} frames/s (worker start-up included)")
    print(f"  loader, num_workers=2, steady state  {steady:8.0f} frames/s")
    print(f"  loader steady / raw 1 process        {steady / raw1:8.2f}")
    print(f"  loader steady / raw 2 processes      {steady / raw2:8.2f}")
    print(f"  per {tuple(clip.shape)} clip: decode {decode_ms:.1f} ms, into shared memory {shm_ms:.1f} ms")


if __name__ == "__main__":
    main()
