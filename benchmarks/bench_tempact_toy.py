"""TempAct's executor RL on the shipped toy model: the step-following reward after a prompt switch, before
and after training, for several seeds, on held-out clips.

**Model and data.** The shipped toy model (``ardrag/assets/toy``, ``model.wan: toy``: its encoders, VAE
and trained student) is the starting student. The training pool is the first --clips clips of the toy
run's kind (its recorded ``ToyConfig`` settings, drawn with the toy run's seed, 9 frames = 3 latent
frames); the held-out clips are --eval-clips clips drawn with --eval-seed (no run trains on them, nothing
was chosen on them).

**Training** (per seed of --seeds; ``TrainConfig.seed`` is every draw of the run, and the seed of the
tiny random CLIP that the ``step_following`` reward uses): the ``tempact`` stage
(``ardrag.training.tempact``, through ``ardrag.training.run.train``) for --steps steps, --batch
conditions per step, --plans plans per condition (default 1) from the ``fixed`` planner (two steps:
--first over pixel frames 0 .. --switch - 1, --second from --switch on), E = --group continuations per
plan, lr --lr, ``TempActConfig``'s defaults otherwise (switch mode --mode, ``keep``; clip range 1e-3, KL
5e-4, reward weights step_following 1 and aesthetic 0.1, the aesthetic network random too). The fixed
planner gives every plan the same steps, and the plans of a condition share their noise, so a second
plan would only repeat the first's execution group: one plan per condition; planner credit is off.

**Figures.** Each model (the starting student, and every seed's final student) streams every held-out clip
through ``StreamSession`` (the deployed sampler, draws of seed 0) under --first, switched with
``set_prompt(--second, mode)`` before the latent frame that holds pixel frame --switch. The step-following
reward of the frames after the switch: the mean over those pixel frames of the cosine similarity between the
frame and --second, by the seed's random CLIP (the network that seed trained against; the starting student is
scored by every seed's network). Also the frames before the switch against --first, and the after-switch
margin: those frames' similarity to --second minus their similarity to --first (whether they follow the new
step rather than score higher for any text). Per seed: final - start per clip, with a 95 % bootstrap interval
over the clips (``ardrag.metrics.bootstrap``); over seeds: the mean of (final - start) with an interval that
resamples the seeds and the clips (``common.crossed_mean_interval``). **A random network's similarity, not a
judgement of whether the video follows the text**: it shows whether the executor RL moves what it is trained
on, on clips it never saw.

    PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 python benchmarks/bench_tempact_toy.py --out /tmp/tempact_toy200 \\
        --seeds 0 1 2 --steps 200 --eval-clips 16   # and --steps 40
    # a quick end-to-end check: --seeds 0 --steps 1 --eval-clips 2 --clips 2 --batch 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import clip_dict, crossed_mean_interval, rows, toy_config, write_clips

from ardrag.data.sources.toy import ToySource
from ardrag.inference.session import StreamSession
from ardrag.metrics.bootstrap import Interval, difference_interval
from ardrag.model.model_folder import read_recipe
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.presets import ASSETS, TINY, TOY
from ardrag.rewards import TextImageScorer
from ardrag.training.run import build_models, resolve_config, train

TOY_FOLDER = ASSETS / TOY


def toy_args() -> argparse.Namespace:
    """The toy run's data settings, as the shipped model's recipe records them."""
    recipe = read_recipe(TOY_FOLDER)
    stage = next(s for s in recipe["stages"] if s["stage"] == "toy")
    return argparse.Namespace(**stage["args"])


def size() -> tuple[int, int]:
    g = read_recipe(TOY_FOLDER)["generation"]
    return g["height"], g["width"]


def config(args: argparse.Namespace, out: Path, seed: int) -> Any:
    steps = [{"start": 0, "end": args.switch, "text": args.first},
             {"start": args.switch, "end": toy_args().frames, "text": args.second}]  # fmt: skip
    raw = {
        "run_dir": str(out), "seed": seed, "steps": args.steps, "batch_size": args.batch,
        "save_every": 10**8, "keep_checkpoints": 1, "optim": {"lr": args.lr},
        "data": {"root": str(args.out / "data"), "procedural_clips": 0, "scale": 0.125,
                 "max_frames": toy_args().frames},
        "model": {"preset": None, "wan": TOY, "init": str(TOY_FOLDER / "transformer")},
        "tempact": {"group_size": args.group, "plans": args.plans, "latent_frames": 3, "cache_window": 2,
                    "switch_mode": args.mode, "planner": {"name": "fixed", "steps": steps}},
    }  # fmt: skip
    return resolve_config("tempact", preset=TINY, overrides=raw)


def train_seed(args: argparse.Namespace, out: Path, seed: int) -> dict[str, Any]:
    run = out / f"seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = config(args, run / "run", seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    train(cfg, progress=False)
    seconds = time.perf_counter() - start
    logs = [json.loads(line) for line in (run / "run" / "losses.jsonl").read_text().splitlines()]
    q = max(1, len(logs) // 4)

    def mean(key: str, part: list[dict[str, Any]]) -> float:
        return float(np.mean([r[key] for r in part]))

    key = "tempact/reward_step_following"
    return {"steps": len(logs), "seconds": seconds, "train_reward_first_quarter": mean(key, logs[:q]),
            "train_reward_last_quarter": mean(key, logs[-q:])}  # fmt: skip


def step_following(pipe: Any, model: Any, clip: dict[str, Any], scorer: TextImageScorer,
                   args: argparse.Namespace) -> tuple[float, float, float]:  # fmt: skip
    """(reward before the switch against --first, after it against --second, and after it --second's
    similarity minus --first's) of the clip streamed by ``model`` with the switch."""
    pipe.transformer = model.eval()
    session = StreamSession(pipe, clip["reference"], args.first, seed=0)
    switch = 0 if args.switch == 0 else (args.switch + 3) // 4
    frames = []
    for m in range((len(clip["tracks"]) - 1) // 4 + 1):
        if m == switch:
            session.set_prompt(args.second, args.mode)
        frames.append(session.step(rows(clip["tracks"], m), rows(clip["visible"], m),
                                   rows(clip["intensity"], m)))  # fmt: skip
    video = np.concatenate(frames)
    first = 1 + 4 * (switch - 1)  # the first pixel frame of the switched latent frame
    before = scorer.similarity(video[1:first], args.first) if first > 1 else np.zeros(1)
    after = scorer.similarity(video[first:], args.second)
    margin = after - scorer.similarity(video[first:], args.first)
    return float(before.mean()), float(after.mean()), float(margin.mean())


def fmt(i: Interval, digits: int = 4) -> str:
    return f"{i.estimate:+.{digits}f} [{i.low:+.{digits}f}, {i.high:+.{digits}f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--clips", type=int, default=4, help="training pool")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--plans", type=int, default=1)
    ap.add_argument("--group", type=int, default=4, help="E: continuations per plan")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--mode", choices=["keep", "recache"], default="keep")
    ap.add_argument("--switch", type=int, default=5, help="pixel frame where the second step starts")
    ap.add_argument("--first", default="a bright sprite glides to the left")
    ap.add_argument("--second", default="the sprite turns dark and stops")
    ap.add_argument("--eval-clips", type=int, default=16)
    ap.add_argument("--eval-seed", type=int, default=9300)
    ap.add_argument("--resamples", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    targs, hw = toy_args(), size()

    # the training pool (the toy run's clips) and the held-out clips
    data = args.out / "data"
    shutil.rmtree(data, ignore_errors=True)
    cfg = toy_config(targs, args.clips, targs.seed, (368, 640))
    write_clips(list(ToySource(cfg).samples()), data, cfg, max(1, args.clips // 2))
    held = [clip_dict(s) for s in ToySource(toy_config(targs, args.eval_clips, args.eval_seed, hw)).samples()]

    runs = {seed: train_seed(args, args.out, seed) for seed in args.seeds}
    pipe, _ = build_models(config(args, args.out / "eval", args.seeds[0]))
    start = CausalARDragTransformer.from_pretrained(str(TOY_FOLDER / "transformer")).eval()
    table: dict[str, Any] = {"args": vars(args) | {"out": str(args.out)}, "runs": {}, "held_out": {}}
    parts = ("before_switch", "after_switch", "after_switch_margin")
    before_after: dict[str, list[list[float]]] = {part: [] for part in parts}
    for seed in args.seeds:
        scorer = TextImageScorer.tiny(seed)
        final = CausalARDragTransformer.from_pretrained(str(args.out / f"seed{seed}" / "run" / "student"))
        got = {name: [step_following(pipe, m, c, scorer, args) for c in held]
               for name, m in (("start", start), ("final", final))}  # fmt: skip
        per: dict[str, Any] = {}
        for j, part in enumerate(parts):
            s = [v[j] for v in got["start"]]
            f = [v[j] for v in got["final"]]
            before_after[part].append([b - a for a, b in zip(s, f, strict=True)])
            d = difference_interval(s, f, args.resamples, seed)
            per[part] = {"start": float(np.mean(s)), "final": float(np.mean(f)), "final - start": vars(d)}
        table["runs"][seed] = runs[seed]
        table["held_out"][seed] = per
    overall = {
        part: vars(crossed_mean_interval(np.array(v), args.resamples)) for part, v in before_after.items()
    }
    table["overall final - start"] = overall
    (args.out / "figures.json").write_text(json.dumps(table, indent=1))

    print(f"held-out clips: {len(held)} (seed {args.eval_seed}); steps {args.steps}; switch at pixel frame "
          f"{args.switch} ({args.mode})")  # fmt: skip
    print(
        "seed | steps | train s | train reward first -> last quarter | after switch: start, final, "
        "final - start [95% CI] | before switch: final - start | after-switch margin: final - start"
    )
    for seed in args.seeds:
        r, h = runs[seed], table["held_out"][seed]
        a, b, g = h["after_switch"], h["before_switch"], h["after_switch_margin"]
        print(f"{seed} | {r['steps']} | {r['seconds']:.0f} | {r['train_reward_first_quarter']:+.4f} -> "
              f"{r['train_reward_last_quarter']:+.4f} | {a['start']:+.4f}, {a['final']:+.4f}, "
              f"{fmt(Interval(**a['final - start']))} | {fmt(Interval(**b['final - start']))} | "
              f"{fmt(Interval(**g['final - start']))}")  # fmt: skip
    for part, i in overall.items():
        print(f"over seeds and clips, {part}: final - start {fmt(Interval(**i))}")


if __name__ == "__main__":
    main()
