"""A stream far past the 81 frames of a clip: per-frame latency and resident memory over 2,000 pixel frames
of one session, with the attention sink on (the streaming fast path's fixed-size caches).

Measured per latent frame (4 pixel frames after the first): the wall time of ``StreamSession.step`` and
the process's resident set size after it (``/proc/self/statm``). Reported: for pixel frames 50-150 and for
the last 100, the median latency per pixel frame and the peak RSS, and their ratios (last / early;
target: each at most 1.1).

    OMP_NUM_THREADS=2 python benchmarks/bench_long_stream.py [--preset tiny --pixel-frames 2000 --sink 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ardrag.console import Progress
from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.model.pipeline import ARDragPipeline
from ardrag.presets import TINY

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def drag(m: int, n: int, w: int, h: int) -> np.ndarray:
    """One point circling the frame's centre (a period of 200 pixel frames), one pinned."""
    start = 0 if m == 0 else 1 + 4 * (m - 1)
    t = np.arange(start, start + n, dtype=np.float32) * (2 * np.pi / 200)
    moving = np.stack([w / 2 + 0.3 * w * np.cos(t), h / 2 + 0.3 * h * np.sin(t)], -1)
    pinned = np.tile(np.array([0.2 * w, 0.8 * h], np.float32), (n, 1))
    return np.stack([moving, pinned], 1).astype(np.float32)


def window(rows: list[dict[str, float]], first: int, last: int) -> dict[str, float]:
    """Median latency per pixel frame and peak RSS over the steps whose pixel frames lie in [first, last)."""
    picked = [r for r in rows if first <= r["pixel_start"] < last]
    return {
        "steps": len(picked),
        "ms_per_pixel_frame": statistics.median(1000 * r["seconds"] / r["pixel_frames"] for r in picked),
        "peak_rss_mb": max(r["rss_mb"] for r in picked),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=TINY, help="a random model preset (tiny, small, ...)")
    parser.add_argument("--pixel-frames", type=int, default=2000)
    parser.add_argument("--sink", type=int, default=1, help="attention-sink frames")
    parser.add_argument("--device", help="cpu, cuda (default: CUDA when present)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16")
    parser.add_argument("--out", help="JSON file for the results and the per-step rows")
    args = parser.parse_args(argv)
    if args.pixel_frames < 400:
        parser.error(
            f"--pixel-frames {args.pixel_frames}: expected at least 400 (two 100-frame windows apart)"
        )

    pipe = ARDragPipeline.tiny(0, args.preset, device=args.device, dtype=args.dtype)
    w, h = pipe.config.width, pipe.config.height
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 60, 40)
    session = StreamSession(
        pipe, image, "a kite loops in the wind", options=StreamOptions(attention_sink=args.sink)
    )
    rows, done, m = [], 0, 0
    steps = 1 + -(-(args.pixel_frames - 1) // 4)
    for m in Progress(range(steps), desc="streaming", unit="latent frame"):
        n = session.pixel_frames_next
        t0 = time.perf_counter()
        session.step(drag(m, n, w, h))
        rows.append(
            {"pixel_start": done, "pixel_frames": n, "seconds": time.perf_counter() - t0, "rss_mb": rss_mb()}
        )
        done += n
    early, late = window(rows, 50, 150), window(rows, done - 100, done)
    result = {
        "preset": args.preset, "device": str(pipe.device), "res": f"{w}x{h}", "sink": args.sink,
        "window": session.caches[0].window, "pixel_frames": done, "latent_frames": len(rows),
        "frames_50_150": early, "last_100": late,
        "latency_ratio": late["ms_per_pixel_frame"] / early["ms_per_pixel_frame"],
        "rss_ratio": late["peak_rss_mb"] / early["peak_rss_mb"],
        "cache_mb": sum(c.nbytes() for c in session.caches) / 2**20,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    ratios = result["latency_ratio"], result["rss_ratio"]
    verdict = "within" if max(ratios) <= 1.1 else "NOT within"
    print(f"last 100 / frames 50-150: latency x{ratios[0]:.3f}, peak RSS x{ratios[1]:.3f} ({verdict} 1.1)")
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "rows": rows}, indent=1))
    return result


if __name__ == "__main__":
    main()
