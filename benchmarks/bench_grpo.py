"""GRPO cost: one update against one rollout, measured side by side, and each one's peak memory.

On the tiny preset (random weights, procedural clips at 80x48, G rollouts of one condition, F latent
frames, 3 steps):

- **rollout**: ``GRPOStage.collect``: the G rollouts frame by frame with the KV cache (one SDE step per
  frame), the VAE decode, both rewards (opencv tracking, CLIP aesthetic), the advantages and the
  reference policy's replay;
- **update**: the policy's replay with gradients, the loss, backward and the AdamW step, on those
  rollouts.

The two alternate R times (after a warm-up pair); medians are reported and their ratio. Peak memory:
each phase runs once more in a fresh subprocess, the resident set sampled every 0.2 ms during it; the
figure is its peak over the resident set just before the phase (CPU has no allocator statistics like
CUDA's; a fresh process keeps freed memory of earlier phases from hiding the growth).

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py [--group 4 --frames 3 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from ardrag.data.loader import collate
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.presets import TINY
from ardrag.training.grpo import GRPOStage
from ardrag.training.run import build_models, resolve_config


def setup(group: int, frames: int, seed: int = 0) -> tuple[GRPOStage, object]:
    pixel = 1 + 4 * (frames - 1)
    config = resolve_config("grpo", preset=TINY, overrides={
        "data": {"max_frames": pixel}, "grpo": {"group_size": group, "latent_frames": frames},
    })  # fmt: skip
    torch.manual_seed(config.seed)
    pipe, start = build_models(config)
    stage = GRPOStage(config, pipe, start)
    clips = ProceduralSource(ProceduralConfig(num_clips=1, seed=seed, num_frames=pixel, buckets=["640x368"]))
    batch = stage.batch(collate(list(clips.samples())), [0])
    return stage, batch


def rollout(stage: GRPOStage, batch: object, step: int) -> dict:
    return stage.collect(batch, step)


def update(stage: GRPOStage, batch: object, step: int, collected: dict) -> None:
    opt = stage.optimizers()["policy"]
    opt.zero_grad(set_to_none=True)
    loss, _ = stage.policy_loss(batch, collected)
    loss.backward()
    opt.step()


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS(threading.Thread):
    """Samples the resident set every 0.2 ms while running; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._stop_event = rss_mib(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.0002)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_mib())


def child(phase: str, group: int, frames: int) -> None:
    """Run one phase once in this fresh process (the update after one rollout to work on) and print
    the peak resident set growth during it, over the resident set just before it."""
    torch.set_num_threads(1)
    stage, batch = setup(group, frames)
    collected = rollout(stage, batch, 0) if phase == "update" else None
    base = rss_mib()
    sampler = PeakRSS()
    sampler.start()
    if phase == "rollout":
        rollout(stage, batch, 1)
    else:
        update(stage, batch, 1, collected)
    peak = sampler.stop()
    print(json.dumps({"phase": phase, "peak_growth_mib": peak - base, "peak_mib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=int, default=4, help="G, rollouts per condition")
    ap.add_argument("--frames", type=int, default=3, help="latent frames per rollout")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", choices=["rollout", "update"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.group, args.frames)
        return
    torch.set_num_threads(1)
    wall = time.perf_counter()
    stage, batch = setup(args.group, args.frames)
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"tiny preset, G = {args.group}, {args.frames} latent frames, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={omp}")  # fmt: skip
    update(stage, batch, 0, rollout(stage, batch, 0))  # warm-up
    times: dict[str, list[float]] = {"rollout": [], "update": []}
    for k in range(args.repeats):
        t0 = time.perf_counter()
        collected = rollout(stage, batch, k + 1)
        t1 = time.perf_counter()
        update(stage, batch, k + 1, collected)
        t2 = time.perf_counter()
        times["rollout"].append(t1 - t0)
        times["update"].append(t2 - t1)
    r, u = (1000 * statistics.median(times[p]) for p in ("rollout", "update"))
    print(f"\nmedian of {args.repeats} (ms): rollout {r:.1f}, update {u:.1f}")
    print(f"  update / rollout = {u / r:.3f}")
    spread = {p: f"{1000 * min(v):.1f}-{1000 * max(v):.1f}" for p, v in times.items()}
    print(f"  min-max (ms): rollout {spread['rollout']}, update {spread['update']}")
    print("\npeak resident memory growth during one phase, fresh process each (MiB)")
    for phase in ("rollout", "update"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            phase,
            "--group",
            str(args.group),
            "--frames",
            str(args.frames),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {phase:8s} +{got['peak_growth_mib']:.1f}  (process peak {got['peak_mib']:.0f})")
    print(f"\nwall time of the run: {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
