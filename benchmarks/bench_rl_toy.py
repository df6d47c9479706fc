"""AR-CoPO against GRPO on the toy model: the same student, the same wall-clock budget, held-out clips.

Input: the output folder of ``benchmarks/bench_train_toy.py`` (--toy): its fitted VAE, its ``self_rollout``
student and its settings (``figures.json``). For each seed of --seeds, the ``grpo`` stage (``GRPOStage``)
and the ``copo`` stage (``CoPOStage``, ``ardrag.training.copo``) are built from that same student by
``common.build_rl`` (the stage registry's class, ``run.build_models`` with the student as the transformer
override, the toy's VAE and heatmap spots, as ``bench_grpo_toy.py`` builds GRPO) and trained under
``Trainer`` with the same ``time_limit_minutes`` (--minutes). The trainer checks the limit after each
step, so each run overshoots it by at most one step; the seconds each took are reported.

**Load.** The two methods of one seed train side by side, as two processes of this script
(``--train METHOD``) with ``OMP_NUM_THREADS=1`` and one torch thread each, on the 2 cores: the same budget
under the same load, and half the wall-clock of running them one after the other. The seeds run one after
the other. --one-at-a-time runs each method alone instead (a fair comparison too: each then has a core to
itself, with the other idle).

**Settings** (none chosen on held-out clips; none tuned here):

- Both: the first --clips 4 of the toy run's training clips (the same pool for every run), --batch 4
  conditions per step (the whole pool), G = --group 8 rollouts (GRPO) or neighbours (AR-CoPO) per condition,
  lr 1e-4 (AdamW, the tiny preset's betas, weight decay and no warm-up), KL weight 0.04 to the starting
  student, 2 updates per rollout, the library's rewards: motion (the evaluation's tracker, lambda 100,
  --motion-alpha 0.04, ``bench_grpo_toy.py``'s default) with weight 1 and the aesthetic reward (the tiny
  preset's random network, seeded by the run's seed) with weight 0: logged, not trained on. The training
  seed (``TrainConfig.seed``: every rollout draw) is the seed of --seeds.
- GRPO: ``bench_grpo_toy.py``'s defaults: clip range 1e-3, shared noise (a condition's rollouts differ
  only by their actions, one re-noising draw per latent frame after the first).
- AR-CoPO: ``CoPOConfig``'s defaults, the paper's at toy size: G 8 (the paper's 12), 4 anchors, sigma 0.5,
  clip range 1e-4, chunks of one latent frame, the continuation to the clip's end, tau ``auto``, z-score
  advantages, no LoRA; the replay buffer: 1 group per on-policy condition and update (--replay-groups),
  from the reference (the starting student; --replay-source), 100 groups at most (--replay-size). Its
  KL (to the starting student, on the clean predictions, ``kl_beta`` 0.04 as GRPO's) is the library's
  addition: the paper has none. A step of AR-CoPO therefore makes 4 optimizer updates (on-policy and
  replay, twice) where GRPO makes 2, and rolls out the reference's groups for the buffer until it is full.

**Figures.** From each run's ``losses.jsonl``: its steps, training seconds, and the reward curve's start
and end: the mean of the logged motion (and aesthetic) reward over the first and the last quarter of its
steps (at least one step each). GRPO's reward is the mean over its G rollouts and the latent frames after
the reference; AR-CoPO's the mean over its G candidates and the frames from the forked chunk to the end,
so only their changes compare, not their levels.
Then the held-out check, through ``ardrag eval``'s code path (``common.evaluate_models``:
``ardrag.evaluation.run.evaluate``, ``StreamSession`` with the deployed sampler, seed 0's draws, the
metric tracker): the starting student and every final student (``export_model``'s folder) on --eval-clips
clips drawn with --eval-seed (default 9200: clips that no run trains on, and that chose nothing). Per
model the mean tracking error of the dragged points (px) and the aesthetic score that ``evaluate``
reports, from the tiny preset's random CLIP and LAION-format head (seed 0, the same network for every
model): **a random network's number, not a judgement of beauty**; it shows whether RL moves the frames'
statistics, nothing more. Per method, the mean over seeds and clips of (final - start), and copo - grpo
paired by seed and clip, each with a 95 % percentile bootstrap interval that resamples the seeds and the
clips independently (``common.crossed_mean_interval``; with 3 seeds the seeds' resampling is coarse).
Per seed, the same differences with intervals over the clips alone (``ardrag.metrics.bootstrap``).

Writes ``figures.json`` (and each run under ``seedS/METHOD``, its log beside it) to --out; prints the
tables.

    PYTHONUNBUFFERED=1 python benchmarks/bench_rl_toy.py --toy /tmp/toy --out /tmp/rl_toy \\
        --minutes 3 --seeds 0 1 2 --eval-clips 16
    # a quick end-to-end check: --minutes 0.5 --seeds 0 --eval-clips 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    add_copo_arguments,
    add_grpo_arguments,
    build_rl,
    crossed_mean_interval,
    evaluate_models,
    loader,
    toy_benchmark,
    toy_pipe,
)

from ardrag import console
from ardrag.metrics.bootstrap import Interval, difference_interval, mean_interval
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.training.run import export_model
from ardrag.training.trainer import Trainer

METHODS = ("grpo", "copo")
FIGURES = {"consistency_error_px": "tracking error (px)", "aesthetic": "aesthetic (random head)"}
START = "starting student"


def run_dir(out: Path, seed: int, method: str) -> Path:
    return out / f"seed{seed}" / method


# -- one training run (a child process) ----------------------------------------------------------
def train_one(args: argparse.Namespace) -> None:
    """Train ``args.train`` from the toy student for --minutes with --seed; export it and write
    ``train.json`` (steps, seconds) beside its run folder."""
    console.setup()  # the trainer's time-limit line
    torch.set_num_threads(1)
    out = run_dir(Path(args.out), args.seed, args.train)
    t0 = time.perf_counter()
    built = build_rl(args, out, args.train, args.minutes, steps=args.steps)
    built_s = time.perf_counter() - t0
    trainer = Trainer(built.config, built.stage, loader(built.config, built.config.data.root))
    t1 = time.perf_counter()
    history = trainer.run(progress=False)
    seconds = time.perf_counter() - t1
    export = export_model(built.config, trainer)
    info = {"method": args.train, "seed": args.seed, "steps": len(history), "seconds": seconds,
            "build_seconds": built_s, "stopped_early": trainer.stopped_early, "export": export}  # fmt: skip
    (out / "train.json").write_text(json.dumps(info, indent=1))
    print(f"{args.train} seed {args.seed}: {len(history)} steps in {seconds / 60:.2f} min -> {export}")


def train_seed(args: argparse.Namespace, out: Path, seed: int) -> None:
    """Both methods for ``seed``: side by side as two processes (one thread each), or one at a time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    script = str(Path(__file__).resolve())
    jobs = []
    for method in args.methods:
        log = run_dir(out, seed, method).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, script, *sys.argv[1:], "--train", method, "--seed", str(seed)]
        f = open(log, "w")  # noqa: SIM115 (closed below, once the process ends)
        jobs.append((method, log, f, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)))
        if args.one_at_a_time:
            jobs[-1][3].wait()
    for method, log, f, proc in jobs:
        proc.wait()
        f.close()
        if proc.returncode != 0:
            sys.exit(f"{method} seed {seed} failed (exit {proc.returncode}); {log}:\n"
                     f"{log.read_text()[-3000:]}")  # fmt: skip


# -- figures -------------------------------------------------------------------------------------
def quarter(values: list[float], last: bool) -> float:
    k = max(1, len(values) // 4)
    return statistics.mean(values[-k:] if last else values[:k])


def curve(run: Path, method: str) -> dict[str, Any]:
    """A run's steps, seconds, optimizer updates per step, its reward curves' first / last quarter, its KL's
    and the mean clipped fraction of each phase."""
    info = json.loads((run / "train.json").read_text())
    rows = [json.loads(x) for x in (run / "run" / "losses.jsonl").read_text().splitlines() if x.strip()]
    info["updates_per_step"] = sum(k.endswith("/grad_norm") for k in rows[0]) if rows else 0
    for name in ("motion", "aesthetic", "total"):
        values = [r[f"{method}/reward_{name}"] for r in rows if f"{method}/reward_{name}" in r]
        if values:
            info[f"reward_{name}"] = {"first": quarter(values, False), "last": quarter(values, True)}
    kl = [r[f"{method}/kl"] for r in rows if f"{method}/kl" in r]
    if kl:
        info["kl"] = {"first": quarter(kl, False), "last": quarter(kl, True)}
    # per phase (an update, or AR-CoPO's replay branch), the fraction of clipped ratios, mean over the steps
    phases = [k for k in (rows[0] if rows else {}) if k.endswith("/clip_fraction")]
    info["clip_fraction"] = {k.split("/")[0]: statistics.mean(r[k] for r in rows if k in r) for k in phases}
    return info


def per_clip(results: dict[str, Any], figure: str) -> dict[str, float]:
    return {c["id"]: c[figure] for c in results["clips"]
            if isinstance(c.get(figure), int | float) and math.isfinite(c[figure])}  # fmt: skip


def held_out(results: dict[str, dict[str, Any]], seeds: list[int], methods: list[str], resamples: int,
             ) -> dict[str, Any]:  # fmt: skip
    """Per figure: the start's mean, each method's final and (final - start), copo - grpo; over seeds and
    clips (two-way bootstrap) and per seed (over clips). Clips missing a figure in any model are left
    out of that figure."""
    out: dict[str, Any] = {}
    for figure in FIGURES:
        values = {name: per_clip(r, figure) for name, r in results.items()}
        ids = sorted(set.intersection(*(set(v) for v in values.values())))
        if len(ids) < 2:
            out[figure] = {"clips": len(ids)}
            continue
        start = np.array([values[START][i] for i in ids])
        final = {m: np.array([[values[f"{m} seed {s}"][i] for i in ids] for s in seeds]) for m in methods}
        f: dict[str, Any] = {"clips": len(ids), "left_out": len(values[START]) - len(ids),
                             START: mean_interval(start, resamples, 0)}  # fmt: skip
        for m in methods:
            f[m] = crossed_mean_interval(final[m], resamples, 0)
            f[f"{m} - start"] = crossed_mean_interval(final[m] - start, resamples, 0)
            f[f"{m} - start, per seed"] = [difference_interval(start, row, resamples, 0) for row in final[m]]
        if len(methods) == 2:
            a, b = methods[1], methods[0]
            f[f"{a} - {b}"] = crossed_mean_interval(final[a] - final[b], resamples, 0)
            f[f"{a} - {b}, per seed"] = [difference_interval(x, y, resamples, 0)
                                         for x, y in zip(final[b], final[a], strict=True)]  # fmt: skip
        out[figure] = f
    return out


def fmt(i: Interval, sign: bool = False, digits: int = 2) -> str:
    s = "+" if sign else ""
    return f"{i.estimate:{s}.{digits}f} [{i.low:{s}.{digits}f}, {i.high:{s}.{digits}f}]"


def print_tables(train: dict[str, dict[int, Any]], check: dict[str, Any], seeds: list[int],
                 methods: list[str]) -> None:  # fmt: skip
    print("\ntraining (reward: mean of the first -> last quarter of the steps; clipped fraction: mean over "
          "the steps, per update in the order they run)")  # fmt: skip
    print("| method | seed | steps | train min | s/step | updates/step | motion reward | aesthetic reward "
          "| clipped fraction per update |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for m in methods:
        for s in seeds:
            t = train[m][s]
            rew = [f"{t[k]['first']:.3f} -> {t[k]['last']:.3f}" if k in t else "-"
                   for k in ("reward_motion", "reward_aesthetic")]  # fmt: skip
            per_step = t["seconds"] / max(1, t["steps"])
            print(f"| {m} | {s} | {t['steps']} | {t['seconds'] / 60:.2f} | {per_step:.1f} "
                  f"| {t['updates_per_step']} | {rew[0]} | {rew[1]} "
                  f"| {' / '.join(f'{v:.2f}' for v in t['clip_fraction'].values())} |")  # fmt: skip
    clips = {f: c.get("clips", 0) for f, c in check.items()}
    print(f"\nheld out ({len(seeds)} seeds x {clips['consistency_error_px']} clips; mean [95 % interval], "
          "bootstrap over seeds and clips)")  # fmt: skip
    print("| | " + " | ".join(FIGURES.values()) + " |")
    print("| --- | " + " | ".join("---:" for _ in FIGURES) + " |")
    keys = [(START, False), *[(m, False) for m in methods], *[(f"{m} - start", True) for m in methods]]
    if len(methods) == 2:
        keys.append((f"{methods[1]} - {methods[0]}", True))
    for key, sign in keys:
        cells = [fmt(check[f][key], sign, 2 if f == "consistency_error_px" else 4) if key in check[f] else "-"
                 for f in FIGURES]  # fmt: skip
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\nper seed (bootstrap over clips)")
    per = [f"{m} - start" for m in methods] + ([f"{methods[1]} - {methods[0]}"] if len(methods) == 2 else [])
    print("| seed | " + " | ".join(f"{p}, {n}" for n in ("error", "aesthetic") for p in per) + " |")
    print("| ---: | " + " | ".join("---:" for _ in range(2 * len(per))) + " |")
    for j, s in enumerate(seeds):
        cells = [fmt(check[f][f"{p}, per seed"][j], True, 2 if f == "consistency_error_px" else 4)
                 if f"{p}, per seed" in check[f] else "-" for f in FIGURES for p in per]  # fmt: skip
        print(f"| {s} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grpo_arguments(ap)
    add_copo_arguments(ap)
    ap.add_argument("--out", default="/tmp/bench_rl_toy")
    ap.add_argument("--minutes", type=float, default=3.0, help="each run's time_limit_minutes")
    ap.add_argument("--steps", type=int, help="a cap besides --minutes")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--one-at-a-time", action="store_true", help="each run alone, not side by side")
    ap.add_argument("--eval-clips", type=int, default=16, help="held-out clips")
    ap.add_argument("--eval-seed", type=int, default=9200, help="their seed (the toy trains on seed 0)")
    ap.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples of the intervals")
    ap.add_argument("--train", choices=METHODS, help=argparse.SUPPRESS)  # a child process: one run
    args = ap.parse_args()
    if args.train:
        train_one(args)
        return
    out, toy = Path(args.out), Path(args.toy)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{' and '.join(args.methods)} from {toy / 'self_rollout' / 'student'}: {args.minutes} min each, "
          f"seeds {args.seeds}, {'one at a time' if args.one_at_a_time else 'side by side'}; held out: "
          f"{args.eval_clips} clips of seed {args.eval_seed}")  # fmt: skip
    t0 = time.perf_counter()
    train: dict[str, dict[int, Any]] = {m: {} for m in args.methods}
    for seed in args.seeds:
        t = time.perf_counter()
        train_seed(args, out, seed)
        for m in args.methods:
            train[m][seed] = curve(run_dir(out, seed, m), m)
        print(f"seed {seed}: " + ", ".join(f"{m} {train[m][seed]['steps']} steps" for m in args.methods)
              + f" ({(time.perf_counter() - t) / 60:.1f} min)")  # fmt: skip
    train_s = time.perf_counter() - t0

    # held out: ardrag eval's code path for the start and every final student, the same clips and draws
    t1 = time.perf_counter()
    pipe, targs, size, _ = toy_pipe(toy)
    bench = toy_benchmark(targs, size, args.eval_clips, args.eval_seed, out / "eval" / "benchmark")
    models = {START: CausalARDragTransformer.from_pretrained(str(toy / "self_rollout" / "student"))}
    for m in args.methods:
        for s in args.seeds:
            models[f"{m} seed {s}"] = CausalARDragTransformer.from_pretrained(train[m][s]["export"])
    results = evaluate_models(pipe, models, bench, out / "eval")
    check = held_out(results, args.seeds, args.methods, args.resamples)
    eval_s = time.perf_counter() - t1

    print_tables(train, check, args.seeds, args.methods)
    print(f"\nwall time: training {train_s / 60:.1f} min, evaluation {eval_s / 60:.1f} min")
    figures = {"args": vars(args), "toy": str(toy), "train": train, "held_out": check,
               "means": {name: {f: r.get(f) if f == "consistency_error_px" else r["columns"].get(f)
                                for f in FIGURES} for name, r in results.items()},
               "train_seconds": train_s, "eval_seconds": eval_s}  # fmt: skip
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=dataclasses.asdict))
    print(f"figures: {out / 'figures.json'}")


if __name__ == "__main__":
    main()
