"""Control-heatmap rendering speed on one core: windowed renderer vs the full-frame reference.

Prints frames/s for both at 640x368 with 8 points, side by side in one run, then how the windowed
renderer scales with spot size and with frame area (its cost should follow points x spot area).

    python benchmarks/bench_heatmap.py [--frames 81] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ardrag.data.heatmap import HeatmapConfig, render_heatmaps, render_heatmaps_naive  # noqa: E402


def smooth_tracks(frames: int, points: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.uniform([0, 0], [width, height], size=(points, 2))
    vel = rng.normal(0, 3, size=(points, 2))
    t = np.arange(frames)[:, None, None]
    return (start + vel * t + 10 * np.sin(t / 7 + rng.uniform(0, 6, (points, 1)))).astype(np.float32)


def frames_per_second(fn, frames: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return frames / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--naive-frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    w, h, n = 640, 368, 8
    cfg = HeatmapConfig()
    tracks = smooth_tracks(args.frames, n, w, h)
    vis = np.ones((args.frames, n), bool)
    inten = np.random.default_rng(1).uniform(0.3, 1.0, (args.frames, n)).astype(np.float32)
    buf = np.empty((args.frames, h, w), np.float32)
    fast = frames_per_second(
        lambda: render_heatmaps(tracks, vis, inten, h, w, cfg), args.frames, args.repeats
    )
    reuse = frames_per_second(
        lambda: render_heatmaps(tracks, vis, inten, h, w, cfg, out=buf), args.frames, args.repeats
    )
    k = args.naive_frames
    naive = frames_per_second(
        lambda: render_heatmaps_naive(tracks[:k], vis[:k], inten[:k], h, w, cfg), k, max(2, args.repeats // 3)
    )
    print(f"heatmap rendering, {w}x{h}, {n} points, sigma {cfg.sigma}, one core")
    print(f"  windowed (new buffer)   {fast:10.0f} frames/s")
    print(f"  windowed (reused buffer){reuse:10.0f} frames/s")
    print(f"  full-frame reference    {naive:10.0f} frames/s")
    print(f"  speed-up                {fast / naive:10.1f} x")
    print("scaling of the windowed renderer (reused buffer):")
    for sigma in (2.0, 6.0, 12.0):
        c = HeatmapConfig(sigma=sigma)
        fps = frames_per_second(
            lambda c=c: render_heatmaps(tracks, vis, inten, h, w, c, out=buf), args.frames, args.repeats
        )
        print(f"  sigma {sigma:4.1f} at {w}x{h}:   {fps:10.0f} frames/s")
    for scale in (1, 2):
        big = np.empty((args.frames, h * scale, w * scale), np.float32)
        fps = frames_per_second(
            lambda s=scale, b=big: render_heatmaps(tracks * s, vis, inten, h * s, w * s, cfg, out=b),
            args.frames,
            args.repeats,
        )
        print(f"  sigma {cfg.sigma:4.1f} at {w * scale}x{h * scale}: {fps:10.0f} frames/s")


if __name__ == "__main__":
    main()
