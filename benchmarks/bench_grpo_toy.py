"""Toy-scale GRPO on CPU: does the motion reward rise, starting from issue 6's toy student?

Input: the output folder of ``benchmarks/bench_train_toy.py`` (--toy): its fitted VAE, the student it
distilled with ``self_rollout`` and its settings (``figures.json``: size, frames, procedural data, heatmap
spots). The ``grpo`` stage (``GRPOStage`` under ``Trainer``, bounded by ``time_limit_minutes``, or by
--steps) is built here (``common.build_grpo``), not by ``run.train``: its models come from
``run.build_models`` with the student as the transformer override (causal, as saved) and ``model.vae``
the toy's VAE folder; the pipeline then generates at the toy's size with its heatmap spots, and the
motion reward gets the evaluation's tracker.

- **Data:** the first --clips (4) of the toy run's training clips, drawn again by ``ToySource`` with the toy
  run's settings (clip i depends only on the seed and i) and written as a sharded dataset. By default each
  step takes the whole pool (--batch 4) with G = 8: 32 rollouts per update. The motion reward's gradient is
  mostly noise at this scale (``bench_grpo_signal.py``), and AdamW moves every weight by about the learning
  rate whatever the gradient's noise, so fewer, better-averaged updates are what lets it rise (one clip per
  step with G = 4 or 8 did not, RESULTS.md); the whole pool per step also makes every step see the same
  clips, so that the reward curve's trend is not which clips came when.
- **Rewards:** the library's: motion (opencv tracker on the decoded frames, lambda 100, --motion-alpha 0.04: 4
  is a perfect frame, 0 any frame whose points are off by a fifth of the frame or more (root mean square, in
  fractions of width and height: 16 px in x or 9.6 in y at 80x48); the library's default 0.01, half that
  distance, scores 0 for most of the toy student's frames, and the advantages are then noise) and aesthetic
  (the tiny preset's random CLIP and LAION-format head: a number that must not collapse, not a judgement of
  beauty). The motion reward's tracker is the evaluation's (the library's
  ``ardrag.data.trackers.scaled.metric_tracker``: opencv on the frames upscaled to about 320 px wide,
  with settings for soft frames; the opencv defaults lose nearly every point on the toy VAE's blurry
  frames). --aesthetic-weight 0 (the default) keeps the random head's score out of the advantages (it is
  still logged): a random head's differences are not a signal to train on.
  --brightness trains on a control reward instead, each frame's mean intensity (``common.brightness_reward``),
  which is smooth in the frames and rises within minutes: it shows what the loop does with a learnable
  reward.
- **Figures** from the run's ``losses.jsonl``: the motion and aesthetic rewards (means over the G rollouts and
  the latent frames after the reference, the frames the loss covers, of each step) averaged over the first
  and the last 10 % of the steps, raw and EMA-smoothed
  (TensorBoard's debiased EMA, the curves of ``rewards.png``), the KL to the starting student and the clip
  fraction. Since a step's reward depends mostly on which clip it drew, two figures take the clip out: per
  clip, its last-tenth mean minus its first-tenth mean, averaged over the clips (with its standard error);
  and the trend within clips over the whole run (least squares with one intercept per clip; the change
  it gives spans the whole run, while the tenths' means lie 0.9 of a run apart). The clip of each step
  is recorded as the trainer takes it (``clip_order`` in figures.json); with --batch > 1 a step's "clip"
  is its set of clips, so these figures mean something only when sets recur (e.g. --batch = --clips).
  Then the before/after check, through ``ardrag eval``'s code path (``ardrag.evaluation.run.evaluate``:
  ``StreamSession`` with the deployed sampler, seed 0, the metric tracker): the starting student and the
  final policy on the training pool and on --eval-clips held-out clips drawn with --eval-seed (default
  9100 + --seed: other seeds give other held-out clips; the toy trains on seed 0 and holds out seed 1),
  paired by clip, with bootstrap 95 % intervals of each mean, of the difference after - before and of the
  ratio (``compare_eval.compare``). Held-out clips are never used to choose settings.

Writes ``figures.json`` and copies ``rewards.png`` to --out.

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo_toy.py --toy /tmp/toy --out /tmp/grpo_toy
        [--minutes 20 --clips 4 --group 8 --batch 4 --lr 1e-4 --aesthetic-weight 0 --brightness]
    # a repeatable check (fixed steps): --minutes 30 --steps 4 --clips 2 --group 2 --batch 2 --eval-clips 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import add_grpo_arguments, build_grpo, evaluate_models, loader, toy_benchmark
from compare_eval import compare

from ardrag import console
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.training.grpo import debiased_ema, plot_rewards
from ardrag.training.run import export_model
from ardrag.training.trainer import Trainer


def tenth(values: list[float], last: bool) -> float:
    k = max(1, len(values) // 10)
    return statistics.mean(values[-k:] if last else values[:k])


def paired_tenths(values: list[float], keys: list[str]) -> dict[str, float]:
    """Per clip, the mean of its steps in the last 10 % minus that in the first 10 %; the mean of these
    differences over the clips seen in both, and its standard error: the change with the clip mix of the
    two tenths taken out."""
    k = max(1, len(values) // 10)
    first: dict[str, list[float]] = {}
    last: dict[str, list[float]] = {}
    for v, key in zip(values[:k], keys[:k], strict=True):
        first.setdefault(key, []).append(v)
    for v, key in zip(values[-k:], keys[-k:], strict=True):
        last.setdefault(key, []).append(v)
    d = [statistics.mean(last[c]) - statistics.mean(first[c]) for c in first if c in last]
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return {"change": statistics.mean(d) if d else float("nan"), "se": se, "clips": len(d)}


def within_clip_trend(values: list[float], keys: list[str]) -> dict[str, float]:
    """Least-squares slope of the reward on the step with one intercept per clip (both centred per clip),
    times the run's length: the change over the run that the trend within clips gives, and its standard
    error (from the residuals, steps taken as independent given the trend)."""
    y, x = np.asarray(values, np.float64), np.arange(len(values), dtype=np.float64)
    groups = np.unique(np.asarray(keys), return_inverse=True)[1]
    for g in np.unique(groups):
        sel = groups == g
        y[sel] -= y[sel].mean()
        x[sel] -= x[sel].mean()
    sxx = float((x * x).sum())
    if sxx == 0:  # no clip drawn twice
        return {"change": float("nan"), "se": float("nan"), "steps": len(values)}
    slope = float((x * y).sum()) / sxx
    resid = y - slope * x
    dof = max(1, len(y) - len(np.unique(groups)) - 1)
    se = float(np.sqrt((resid * resid).sum() / dof / sxx))
    n = len(values) - 1
    return {"change": slope * n, "se": se * n, "steps": len(values)}


def before_after(built: Any, final: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The starting student and the final policy through ``ardrag eval``'s code path on the training pool
    and on --eval-clips held-out clips drawn with --eval-seed; per clip set, both runs' results and their
    paired comparison (``compare_eval.compare``: bootstrap intervals over the clips)."""
    models = {"starting student": built.start, "after GRPO": final}
    sets = {"training pool": (args.clips, built.toy_args.seed), "held-out": (args.eval_clips, args.eval_seed)}
    check = {}
    for where, (num, seed) in sets.items():
        bench = toy_benchmark(built.toy_args, built.size, num, seed, out / "eval" / where.replace(" ", "_"))
        results = evaluate_models(built.pipe, models, bench, out / "eval" / where.replace(" ", "_"))
        before, after = results["starting student"], results["after GRPO"]
        check[where] = {"clips": num, "seed": seed, "before": before["consistency_error_px"],
                        "after": after["consistency_error_px"],
                        "compare": compare(before, after, args.resamples, 0)}  # fmt: skip
    return check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grpo_arguments(ap)
    ap.add_argument("--out", default="/tmp/bench_grpo_toy")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--steps", type=int, help="a cap besides --minutes")
    ap.add_argument("--eval-clips", type=int, default=16, help="held-out clips of the before/after check")
    ap.add_argument("--eval-seed", type=int, help="their seed (default 9100 + --seed; the toy trains on 0)")
    ap.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples of the intervals")
    args = ap.parse_args()
    if args.eval_seed is None:
        args.eval_seed = 9100 + args.seed
    console.setup()  # the trainer's progress and time-limit lines
    torch.set_num_threads(1)
    out = Path(args.out)
    built = build_grpo(args, out, args.minutes, steps=args.steps)
    stage, config = built.stage, built.config
    student, latent = built.student, built.latent
    toy = Path(args.toy)

    order: list[str] = []  # the clip of each step, in the order the trainer takes them

    print(f"GRPO from {student}: {args.clips} clips, G = {args.group}, {latent} latent frames, lr {args.lr}, "
          f"clip range {args.clip_range}, KL {args.kl_beta}, "
          f"{args.updates_per_rollout} updates per rollout, {args.minutes} min, "
          f"{'own' if args.own_noise else 'shared'} starting noise, aesthetic weight "
          f"{args.aesthetic_weight}{', trained on brightness' if args.brightness else ''}",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer(config, stage, loader(config, config.data.root, order))
    trainer.run(progress=True)
    seconds = time.perf_counter() - t0
    export = export_model(config, trainer)
    plot = plot_rewards(out / "run" / "losses.jsonl", out / "run" / "rewards.png", config.grpo.smoothing)

    rows = [json.loads(x) for x in (out / "run" / "losses.jsonl").read_text().splitlines()]
    figures: dict[str, Any] = {"steps": len(rows), "seconds": seconds, "args": vars(args), "toy": str(toy)}
    print(f"\n{len(rows)} steps in {seconds / 60:.1f} min ({seconds / max(1, len(rows)):.1f} s/step)")
    head = ["first 10 %", "last 10 %", "smoothed first", "smoothed last"]
    print(f"  {'reward':10s} " + " ".join(f"{h:>14s}" for h in head))
    for name in ("motion", "aesthetic", "brightness", "total"):
        if f"grpo/reward_{name}" not in rows[0]:
            continue
        raw = [r[f"grpo/reward_{name}"] for r in rows]
        smooth = debiased_ema(raw, config.grpo.smoothing)
        f = {"first": tenth(raw, False), "last": tenth(raw, True),
             "smoothed_first": tenth(smooth, False), "smoothed_last": tenth(smooth, True)}  # fmt: skip
        figures[name] = f
        print(f"  {name:10s} " + " ".join(f"{v:14.4f}" for v in f.values()))
    keys = order[: len(rows)]
    figures["clip_order"] = keys
    for name in [n for n in ("motion", "brightness") if f"grpo/reward_{n}" in rows[0]]:
        values = [r[f"grpo/reward_{name}"] for r in rows]
        figures[f"{name}_paired_tenths"] = paired = paired_tenths(values, keys)
        figures[f"{name}_within_clip_trend"] = trend = within_clip_trend(values, keys)
        print(f"  {name}, per clip, last 10 % - first 10 %: {paired['change']:+.4f} +- {paired['se']:.4f} "
              f"(standard error, {paired['clips']} clips in both)")  # fmt: skip
        print(f"  {name}, trend within clips over the run: {trend['change']:+.4f} +- {trend['se']:.4f}")
    for key in ("grpo/kl", "grpo/clip_fraction", "grpo_update1/clip_fraction", "grpo_update1/ratio_max_dev"):
        values = [r[key] for r in rows if key in r]
        if values:
            figures[key] = {"first": tenth(values, False), "last": tenth(values, True)}
            print(f"  {key:28s} first 10 % {tenth(values, False):.3g}, last 10 % {tenth(values, True):.3g}")
    if plot is not None:
        shutil.copy(plot, out / "rewards.png")
        print(f"\nreward curves: {out / 'rewards.png'}")

    # before / after: ardrag eval's code path, paired by clip, with bootstrap intervals
    final = CausalARDragTransformer.from_pretrained(export).eval()
    figures["before_after"] = check = before_after(built, final, args, out)
    print("\nbefore / after (ardrag eval's code path: StreamSession, the deployed sampler, seed 0): tracking "
          "error (px), mean [95 % interval]")  # fmt: skip
    for where, res in check.items():
        c = res["compare"].get("consistency_error_px")
        if c is None:
            print(f"  {where}: fewer than 2 clips with a tracking error")
            continue
        b, a, d = c["before"], c["after"], c["after - before"]
        print(f"  {where:14s} ({res['clips']} clips, seed {res['seed']}): {b.estimate:.2f} [{b.low:.2f}, "
              f"{b.high:.2f}] -> {a.estimate:.2f} [{a.low:.2f}, {a.high:.2f}]; after - before "
              f"{d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}]: {c['change']}")  # fmt: skip
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=dataclasses.asdict))


if __name__ == "__main__":
    main()
