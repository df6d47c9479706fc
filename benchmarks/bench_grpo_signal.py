"""Does the toy GRPO's gradient point where the reward rises? Its agreement between halves, and a line check.

``bench_grpo_toy.py`` trains and watches the reward curve, whose rise (or not) mixes three things: the
gradient's noise, its step size, and whether the reward can be raised at all. This takes the step out:

1. **Gradients.** From issue 6's toy student (``--toy``), on the pool of ``bench_grpo_toy.py`` (the first
   --clips training clips), --groups groups of G rollouts per clip, collected as in training
   (``GRPOStage.collect``: one re-noising action per frame, every other draw shared), and per group the
   gradient of the GRPO loss at ratio 1 with no KL term: the policy-gradient estimate of that group.
2. **Agreement.** The groups are split at random into two halves (the same number per clip in each); the
   cosine between the halves' mean gradients, over --splits splits. Two estimates of the same gradient
   agree (cosine near 1) when the signal dominates, and are orthogonal (near 0) when the noise does. With
   cosine c for halves of n rollouts, the signal's share gives the rollouts needed for c = 0.5 (signal
   and noise equal in one estimate) as n (1 - c) / c.
3. **Line check.** The mean reward of latent frames 1.. on the pool (frame 0 is the reference image: its
   motion reward is constant, and it carries no action), with N fixed seeds per clip (common random
   numbers), of
   the deployed sampler given the seeds and with selective actions, after moving the weights by eta times the
   unit vector of the mean gradient: along the GRPO step (-gradient of the loss, the ascent direction),
   against it, and along a random direction (the control: how much any move of that size changes the
   reward). eta is a Euclidean distance in weight space (``|theta|`` is printed for scale).

Rewards (--rewards): ``motion`` (the toy's: its tracker, ``--motion-alpha``) and ``brightness``, a
control (``common.brightness_reward``): each frame's mean intensity in [0, 1]. It is a smooth
function of the frames, so its gradient shows what a learnable reward looks like through the same
machinery.

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo_signal.py --toy /tmp/toy [--clips 4 --group 8
        --groups 8 --rewards motion brightness]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import add_grpo_arguments, build_grpo

from ardrag.inference.sampler import FrameNoise, SampleRandom, SelectiveNoise
from ardrag.training.conditions import prepare, sample_seed
from ardrag.training.grpo import repeat_conditions, selective_rollout, stochastic_steps_for


def flat_gradient(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params]).clone()


def half_agreement(grads: list[torch.Tensor], clip_of: list[int], splits: int, seed: int) -> list[float]:
    """Cosines between the mean gradients of two random halves (balanced per clip)."""
    rng = np.random.default_rng(seed)
    by_clip: dict[int, list[int]] = {}
    for i, c in enumerate(clip_of):
        by_clip.setdefault(c, []).append(i)
    out = []
    for _ in range(splits):
        a, b = [], []
        for idx in by_clip.values():
            perm = rng.permutation(idx)
            a += list(perm[: len(perm) // 2])
            b += list(perm[len(perm) // 2 :])
        ga, gb = torch.stack([grads[i] for i in a]).mean(0), torch.stack([grads[i] for i in b]).mean(0)
        out.append(float(torch.nn.functional.cosine_similarity(ga, gb, dim=0)))
    return out


def line_reward(built: Any, conds: list[Any], seeds: int, seed: int, stochastic: bool) -> float:
    """Mean reward of latent frames 1.. over the pool, ``seeds`` fixed seeds per clip: the deployed
    sampler given those seeds, or with one re-noising draw per frame from a second fixed stream (GRPO's
    selective actions, at fixed transitions)."""
    stage, kw = built.stage, built.stage._kw()
    values = []
    with torch.no_grad():
        for i, c0 in enumerate(conds):
            c = repeat_conditions(c0, seeds)
            rng = SampleRandom([sample_seed(seed, 7, i, j) for j in range(seeds)], c.latents.device)
            noise = FrameNoise(rng)
            if stochastic:
                picks = stochastic_steps_for([sample_seed(seed, 8, i)] * seeds, built.latent,
                                             kw["sampler"].transitions)  # fmt: skip
                actions = SampleRandom([sample_seed(seed, 9, i, j) for j in range(seeds)], c.latents.device)
                noise = SelectiveNoise(rng, actions, picks, kw["sampler"].transitions)
            frames = selective_rollout(stage.policy, c, noise, frames=built.latent, **kw).clean
            values.append(float(stage.rewards(c, frames)["total"][:, 1:].mean()))
    return statistics.mean(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grpo_arguments(ap)
    ap.set_defaults(clips=4, group=8, batch=1)
    ap.add_argument("--out", default="/tmp/bench_grpo_signal")
    ap.add_argument("--groups", type=int, default=8, help="groups of G rollouts per clip")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=16, help="N, fixed seeds per clip of the line check")
    ap.add_argument("--etas", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument(
        "--rewards", nargs="+", default=["motion", "brightness"], choices=("motion", "brightness")
    )
    args = ap.parse_args()
    if args.batch != 1:
        ap.error(f"--batch {args.batch}: this benchmark takes one clip per group; expected --batch 1")
    torch.set_num_threads(1)
    out = Path(args.out)
    figures: dict[str, Any] = {"args": vars(args)}
    for reward in args.rewards:
        built = build_grpo(args, out / reward, grpo={"reward_weights": {reward: 1.0}, "kl_beta": 0.0})
        stage, pipe, config = built.stage, built.pipe, built.config
        policy = stage.policy
        params = list(policy.parameters())
        raws = list(torch.utils.data.DataLoader(built.dataset, batch_size=None, num_workers=0))
        conds = [
            prepare(pipe, raw, [i], 1.0, config.data.max_frames, guided=False) for i, raw in enumerate(raws)
        ]

        # 1. one gradient per group
        t0 = time.perf_counter()
        grads, clip_of = [], []
        for i, c0 in enumerate(conds):
            c = repeat_conditions(c0, args.group)
            for k in range(args.groups):
                for p in params:
                    p.grad = None
                got = stage.collect(c, step=10_000 + k * len(conds) + i)
                loss, _ = stage.policy_loss(c, got)
                loss.backward()
                grads.append(flat_gradient(params))
                clip_of.append(i)
        seconds = time.perf_counter() - t0
        mean = torch.stack(grads).mean(0)
        cos = half_agreement(grads, clip_of, args.splits, args.seed)
        c_mean = statistics.mean(cos)
        half = len(grads) // 2 * args.group
        needed = half * (1 - c_mean) / c_mean if c_mean > 0 else float("inf")
        spread = statistics.pstdev(cos)
        print(f"\n{reward}: {len(grads)} groups of {args.group} in {seconds:.0f} s; agreement of two halves "
              f"of {half} rollouts: cosine {c_mean:.3f} (std over {args.splits} splits {spread:.3f}); "
              f"rollouts for cosine 0.5: ~{needed:.0f}", flush=True)  # fmt: skip

        # 3. the line check, common random numbers
        def evaluate(stochastic: bool, built: Any = built, conds: list[Any] = conds) -> float:
            return line_reward(built, conds, args.seeds, args.seed, stochastic)

        theta = [p.detach().clone() for p in params]
        norm = float(torch.sqrt(sum((t * t).sum() for t in theta)))
        random = torch.randn(mean.shape, generator=torch.Generator().manual_seed(args.seed))
        directions = {"GRPO step": -mean / mean.norm(), "against it": mean / mean.norm(),
                      "random": random / random.norm()}  # fmt: skip
        policy.eval()
        base = {"fixed": evaluate(False), "actions": evaluate(True)}
        print(
            f"  |theta| {norm:.1f}; reward of latent frames 1.. at the start: deterministic "
            f"{base['fixed']:.4f}, with selective actions {base['actions']:.4f}"
        )
        rows = []
        for eta in args.etas:
            for name, d in directions.items():
                with torch.no_grad():
                    offset = 0
                    for p, t in zip(params, theta, strict=True):
                        p.copy_(t + eta * d[offset : offset + p.numel()].view_as(p))
                        offset += p.numel()
                fixed, actions = evaluate(False), evaluate(True)
                change = {"fixed": fixed - base["fixed"], "actions": actions - base["actions"]}
                rows.append({"eta": eta, "direction": name, **change})
                print(f"  eta {eta:<4} {name:11s} change: fixed draws {change['fixed']:+.4f}, "
                      f"with actions {change['actions']:+.4f}", flush=True)  # fmt: skip
        with torch.no_grad():
            for p, t in zip(params, theta, strict=True):
                p.copy_(t)
        figures[reward] = {"groups": len(grads), "seconds": seconds, "cosines": cos, "cosine": c_mean,
                           "rollouts_for_cosine_half": needed, "theta_norm": norm, "start": base,
                           "line": rows}  # fmt: skip
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"\nfigures: {out / 'figures.json'}")


if __name__ == "__main__":
    main()
