"""Toy-scale GRPO on CPU: does the motion reward rise, starting from issue 6's toy student?

Input: the output folder of ``benchmarks/bench_train_toy.py`` (--toy): its fitted VAE, the student it
distilled with ``self_rollout`` and its settings (``figures.json``: size, frames, procedural data, heatmap
spots). The ``grpo`` stage (``GRPOStage`` under ``Trainer``, bounded by ``time_limit_minutes``) is built
here, not by ``run.train``, as ``bench_train_toy.py`` builds its stages: ``run.build_models`` checks
``model.init`` against the tiny preset's transformer (2 layers, 2 heads x 12), which the toy's wider
student does not fit, and it cannot take the toy's heatmap spot size.

- **Data:** the first --clips (4) of the toy run's training clips, drawn again by the toy script's own
  code (clip i depends only on the seed and i) and written as a sharded dataset. By default each step
  takes the whole pool (--batch 4) with G = 8: 32 rollouts per update. The motion reward's gradient is
  mostly noise at this scale (``bench_grpo_signal.py``), and AdamW moves every weight by about the
  learning rate whatever the gradient's noise, so fewer, better-averaged updates are what lets it rise
  (one clip per step with G = 4 or 8 did not, RESULTS.md); the whole pool per step also makes every step
  see the same clips, so that the reward curve's trend is not which clips came when.
- **Rewards:** the library's: motion (opencv tracker on the decoded frames, lambda 100, --motion-alpha 0.04: 4
  is a perfect frame, 0 any frame whose points are off by a fifth of the frame or more (root mean square, in
  fractions of width and height: 16 px in x or 9.6 in y at 80x48); the library's default 0.01, half that
  distance, scores 0 for most of the toy student's frames, and the advantages are then noise) and aesthetic
  (the tiny preset's random CLIP and LAION-format head: a number that must not collapse, not a judgement of
  beauty). With --reward-tracker toy (the default) the motion reward's tracker is the evaluation's:
  ``bench_train_toy.TRACKER``'s settings, on the frames upscaled to about 320 px wide
  (``bench_train_toy.UpscaledTracker``; the opencv defaults lose nearly every point on the toy VAE's blurry
  frames); ``GRPOConfig.tracker`` takes only a name. --aesthetic-weight 0 (the default) keeps the random
  head's score out of the advantages (it is still logged): in frame 0, where the motion reward is
  constant, the per-frame normalisation would otherwise turn its tiny differences into unit advantages.
  --brightness trains on a control reward instead, each frame's mean intensity (``brightness_reward``),
  which is smooth in the frames and rises within minutes: it shows what the loop does with a learnable
  reward.
- **Figures** from the run's ``losses.jsonl``: the motion and aesthetic rewards (means over the G rollouts and
  the latent frames of each step) averaged over the first and the last 10 % of the steps, raw and EMA-smoothed
  (TensorBoard's debiased EMA, the curves of ``rewards.png``), the KL to the starting student and the clip
  fraction. Since a step's reward depends mostly on which clip it drew, two figures take the clip out: per
  clip, its last-tenth mean minus its first-tenth mean, averaged over the clips (with its standard error);
  and the trend within clips over the whole run (least squares with one intercept per clip; the change
  it gives spans the whole run, while the tenths' means lie 0.9 of a run apart). The clip of each step
  is recorded as the trainer takes it (``clip_order`` in figures.json); with --batch > 1 a step's "clip"
  is its set of clips, so these figures mean something only when sets recur (e.g. --batch = --clips).
  Then a seeded before/after check: the starting student and the final policy generate (``StreamSession``,
  3 steps, same seeds) each clip of the pool and the toy's held-out clips; their mean motion reward and
  tracking error (``bench_train_toy``'s measure) are compared.

Writes ``figures.json`` and copies ``rewards.png`` to --out.

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo_toy.py --toy /tmp/toy --out /tmp/grpo_toy
        [--minutes 20 --clips 4 --group 8 --batch 4 --lr 1e-4 --aesthetic-weight 0 --brightness]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan

sys.path.insert(0, str(Path(__file__).parent))
import bench_train_toy as toy_bench  # noqa: E402

from ardrag.data.build import ShardConfig, write_dataset  # noqa: E402
from ardrag.data.codec import EncodeConfig  # noqa: E402
from ardrag.data.loader import ShardedVideoDataset  # noqa: E402
from ardrag.data.trackers import get_tracker  # noqa: E402
from ardrag.model.pipeline import ARDragPipeline  # noqa: E402
from ardrag.model.transformer_ardrag import CausalARDragTransformer  # noqa: E402
from ardrag.rewards import latent_frame_rewards, motion_reward, register  # noqa: E402
from ardrag.training.grpo import GRPOStage, debiased_ema, plot_rewards  # noqa: E402
from ardrag.training.run import export_model, resolve_config  # noqa: E402
from ardrag.training.trainer import Trainer  # noqa: E402


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


def as_clip(s: Any) -> dict[str, Any]:
    return {"video": s.video, "reference": s.reference, "tracks": s.tracks, "visible": s.visible,
            "intensity": s.intensity, "prompt": s.prompt}  # fmt: skip


def before_after(
    pipe: Any,
    models: dict[str, Any],
    clips: list[dict[str, Any]],
    reward_tracker: Any,
    eval_tracker: Any,
    alpha: float,
) -> dict[str, dict[str, float]]:
    """Per model: mean motion reward (as in training: mean over latent frames) and mean tracking error."""
    out = {}
    for name, model in models.items():
        rewards, errors = [], []
        for i, clip in enumerate(clips):
            video = toy_bench.stream(pipe, model, clip, seed=i)
            per = motion_reward(video, tracks=clip["tracks"], visible=clip["visible"], tracker=reward_tracker,
                                alpha=alpha)  # fmt: skip
            rewards.append(float(latent_frame_rewards(per).mean()))
            errors.append(toy_bench.tracking_errors(video, clip, eval_tracker))
        out[name] = {
            "motion_reward": statistics.mean(rewards),
            "track_error_px": float(np.concatenate(errors).mean()),
        }
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The toy GRPO's settings (shared with ``bench_grpo_signal.py``)."""
    ap.add_argument("--toy", required=True, help="output folder of bench_train_toy.py")
    ap.add_argument("--clips", type=int, default=4, help="the first N of the toy's training clips")
    ap.add_argument("--group", type=int, default=8, help="G, rollouts per condition")
    ap.add_argument("--batch", type=int, default=4, help="conditions (clips) per step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--noise-level", type=float, default=0.7)
    ap.add_argument("--clip-range", type=float, default=1e-3, help="epsilon of the clipped ratio")
    ap.add_argument("--kl-beta", type=float, default=0.04)
    ap.add_argument("--updates-per-rollout", type=int, default=2)
    ap.add_argument("--reward-tracker", choices=("toy", "default"), default="toy",
                    help="toy: the motion reward's tracker gets bench_train_toy's TRACKER")  # fmt: skip
    ap.add_argument(
        "--motion-alpha",
        type=float,
        default=0.04,
        help="GRPOConfig.motion_alpha, in squared fractions of the frame (library default 0.01)",
    )
    ap.add_argument("--own-noise", action="store_true",
                    help="shared_noise off: each rollout draws its own starting noise")  # fmt: skip
    ap.add_argument("--aesthetic-weight", type=float, default=0.0,
                    help="its weight in the advantages (0: logged, not trained on)")  # fmt: skip
    ap.add_argument("--brightness", action="store_true",
                    help="train on the control reward alone (motion, aesthetic logged only)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)


@register("brightness")
def brightness_reward(video: np.ndarray, **_: Any) -> np.ndarray:
    """Each frame's mean intensity in [0, 1]: a control reward of these benchmarks, smooth in the frames."""
    return video.reshape(len(video), -1).mean(1) / 255.0


def build(args: argparse.Namespace, out: Path, minutes: float | None = None, eval_clips: int = 0,
          grpo: dict[str, Any] | None = None) -> argparse.Namespace:  # fmt: skip
    """The pool's dataset under ``out / "data"``, the toy's models, the GRPO stage (``grpo``: more
    ``GRPOConfig`` overrides) and the trackers; ``eval_clips`` held-out clips."""
    toy = Path(args.toy)
    student = toy / "self_rollout" / "student"
    for path in (toy / "figures.json", toy / "vae", student):
        if not path.exists():
            sys.exit(f"{path} is missing: run benchmarks/bench_train_toy.py --out {toy} first")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    toy_figures = json.loads((toy / "figures.json").read_text())
    targs = argparse.Namespace(**toy_figures["args"])
    size = tuple(toy_figures["size"])
    frames = targs.frames
    latent = 1 + (frames - 1) // 4

    # data: the first --clips training clips of the toy run
    cfg = toy_bench.procedural(args.clips, targs.seed, targs)
    source = toy_bench.ToySource(cfg, targs.background, toy_bench.sprite_look(targs))
    samples = [toy_bench.shrink(s, size) for s in source.samples()]
    shards = ShardConfig(shard_samples=max(1, args.clips // 2), encode=EncodeConfig(threads=1))
    write_dataset(samples, out / "data", cfg, shards=shards, name="procedural", progress=False)
    targs.eval_clips = eval_clips
    held = toy_bench.eval_clips(targs, size) if eval_clips else []

    # models: the toy's encoders, VAE and heatmap spots, its self_rollout student
    pipe = ARDragPipeline.tiny(
        targs.seed, height=size[0], width=size[1], heatmap={"sigma": targs.heatmap_sigma}
    )
    pipe.wan.vae = AutoencoderKLWan.from_pretrained(str(toy / "vae")).eval()
    start = CausalARDragTransformer.from_pretrained(str(student)).eval()
    weights = {"aesthetic": args.aesthetic_weight, "motion": 1.0}
    if args.brightness:
        weights = {"aesthetic": 0.0, "motion": 0.0, "brightness": 1.0}
    config = resolve_config("grpo", preset="tiny", overrides={
        "run_dir": str(out / "run"), "seed": args.seed, "batch_size": args.batch, "steps": 100_000,
        "save_every": 10**8, "keep_checkpoints": 1, "time_limit_minutes": minutes, "optim": {"lr": args.lr},
        "data": {"root": str(out / "data"), "procedural_clips": 0, "scale": 1.0, "max_frames": frames},
        "model": {"preset": "tiny", "init": str(student), "vae": str(toy / "vae")},
        "grpo": {"group_size": args.group, "latent_frames": latent, "cache_window": start.config.cache_window,
                 "noise_level": args.noise_level, "kl_beta": args.kl_beta, "clip_range": args.clip_range,
                 "updates_per_rollout": args.updates_per_rollout, "motion_alpha": args.motion_alpha,
                 "shared_noise": not args.own_noise,
                 "reward_weights": weights, **(grpo or {})},
    })  # fmt: skip
    torch.manual_seed(args.seed)
    stage = GRPOStage(config, pipe, start)
    eval_tracker = get_tracker("opencv", toy_bench.TRACKER)
    eval_tracker.setup()
    if args.reward_tracker == "toy":
        stage.tracker = toy_bench.UpscaledTracker(eval_tracker)
    loader_cfg = config.data.loader.model_copy(update={"batch_size": config.batch_size})
    dataset = ShardedVideoDataset(str(out / "data"), loader_cfg)
    return argparse.Namespace(
        pipe=pipe, start=start, stage=stage, config=config, pool=[as_clip(x) for x in samples], held=held,
        dataset=dataset, tracker=eval_tracker, student=student, latent=latent,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--out", default="/tmp/bench_grpo_toy")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--eval-clips", type=int, default=8, help="held-out clips of the before/after check")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    built = build(args, out, args.minutes, args.eval_clips)
    pipe, start, stage, config, dataset = built.pipe, built.start, built.stage, built.config, built.dataset
    student, latent, pool, held = built.student, built.latent, built.pool, built.held
    eval_tracker = built.tracker
    toy = Path(args.toy)
    reward_tracker = stage.tracker

    order: list[str] = []  # the clip of each step, in the order the trainer takes them

    def batches(epoch: int) -> Iterator[Any]:
        dataset.set_epoch(epoch)
        for raw in torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0):
            order.append("|".join(sorted(raw["key"])))
            yield raw

    print(f"GRPO from {student}: {args.clips} clips, G = {args.group}, {latent} latent frames, lr {args.lr}, "
          f"noise level {args.noise_level}, clip range {args.clip_range}, KL {args.kl_beta}, "
          f"{args.updates_per_rollout} updates per rollout, {args.minutes} min, reward tracker "
          f"{args.reward_tracker}, {'own' if args.own_noise else 'shared'} starting noise, aesthetic weight "
          f"{args.aesthetic_weight}{', trained on brightness' if args.brightness else ''}",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer(config, stage, batches)
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

    # before / after, same seeds
    final = CausalARDragTransformer.from_pretrained(export).eval()
    models = {"starting student": start.eval(), "after GRPO": final}
    scoring = (reward_tracker, eval_tracker, args.motion_alpha)
    check = {"training pool": before_after(pipe, models, pool, *scoring),
             "held-out": before_after(pipe, models, held, *scoring)}  # fmt: skip
    figures["before_after"] = check
    print("\nbefore / after (StreamSession, 3 steps, same seeds): mean motion reward, tracking error (px)")
    for where, res in check.items():
        for name, r in res.items():
            print(
                f"  {where:14s} {name:18s} reward {r['motion_reward']:.4f}  error {r['track_error_px']:.2f}"
            )
    (out / "figures.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
