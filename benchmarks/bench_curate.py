"""Curation throughput and the Prefect flow's overhead, measured side by side in one run.

1. The library calls in a plain loop (``ardrag.curation.pipeline.run_local``) over N procedural clips.
2. The same inputs through the Prefect flow (``flows.curate.run``, thread runner with 2 workers, the
   default, and with 1 worker, which isolates the flow's own overhead), on a temporary local API
   started by a warm-up run first (its start-up, ~10 s, is reported apart).

Prints clips per minute and the ratios flow / loop (target <= 1.25 for 24 clips).

    python benchmarks/bench_curate.py [--clips 24] [--dir runs/bench-curate]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--dir", default="runs/bench-curate")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from ardrag.curation.pipeline import CurationConfig, run_local
    from ardrag.data.sources import build_source
    from flows.curate import run

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    source_cfg = {"num_clips": args.clips, "num_frames": args.frames, "seed": 11}
    config = CurationConfig()

    t0 = time.perf_counter()
    loop_summary = run_local(build_source("procedural", source_cfg), root / "loop", config, progress=False)
    loop = time.perf_counter() - t0

    t0 = time.perf_counter()
    run("procedural", {**source_cfg, "num_clips": 1, "seed": 99}, str(root / "warmup"), config.to_dict())
    startup = time.perf_counter() - t0

    t0 = time.perf_counter()
    flow_summary = run("procedural", source_cfg, str(root / "flow"), config.to_dict())
    flow = time.perf_counter() - t0

    t0 = time.perf_counter()
    one_summary = run("procedural", source_cfg, str(root / "flow1"), config.to_dict(), workers=1)
    flow1 = time.perf_counter() - t0
    assert one_summary["states"] == loop_summary["states"]

    assert flow_summary["states"] == loop_summary["states"], (flow_summary["states"], loop_summary["states"])
    print(f"{args.clips} procedural clips of {args.frames} frames, opencv tracker")
    print(f"  states {loop_summary['states']}")
    print(f"  plain loop                  {loop:7.1f} s  {60 * args.clips / loop:6.1f} clips/min")
    print(f"  Prefect flow (2 threads)    {flow:7.1f} s  {60 * args.clips / flow:6.1f} clips/min")
    print(f"  Prefect flow (1 thread)     {flow1:7.1f} s  {60 * args.clips / flow1:6.1f} clips/min")
    print(f"  flow / loop (2 threads)     {flow / loop:7.2f}")
    print(f"  flow / loop (1 thread)      {flow1 / loop:7.2f}   <- the flow's own overhead")
    print(f"  API start-up + 1-clip warm-up run (not in the ratio): {startup:.1f} s")


if __name__ == "__main__":
    main()
