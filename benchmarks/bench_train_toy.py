"""Toy-scale learning on CPU: does the teacher learn to follow trajectories, do 3-step students keep it?

The tiny preset's encoders (random tiny UMT5 / CLIP), a small Wan VAE fitted here (--vae-layout 4x-residual:
4x spatial and 4x temporal compression, base_dim --vae-dim 16) and the ``toy`` model preset's Wan
transformer, wider than the tiny one's (--transformer: 4 layers, 4 heads x 32, ffn 256, 1.1 M parameters:
the tiny preset's 2 x 12 = 24-wide tokens cannot even hold the 2 x 2 x 16 = 64 latent values of the patch
they predict, and its teacher learned nothing visible in 15 minutes), on procedural clips at 80x48
(data.scale 0.125 of 640x368), 9 frames (3 latent frames), one thread; each stage is bounded in
wall-clock time. In one process:

1. **Data.** P training clips (``ToySource`` seed 0, drawn at 640x368) are rendered, downscaled to 80x48
   as ``conditions.prepare`` would (antialiased bilinear; tracks scaled alike), written with
   ``write_dataset`` and read back by ``ShardedVideoDataset``; E held-out clips (seed 1) for evaluation.
   The toy's data (``ardrag.data.sources.toy``, all settings flags): 1-2 sprites of 0.25-0.4 of the short
   side (12-19 px) on a **flat background** (each clip's drawn background texture replaced by its mean
   colour), with **smooth textures** (--sprite-texture smooth: each sprite's texture blurred to a few
   large colour blobs, contrast restored), speeds 16-32 px/frame at 640x368 (2-4 px/frame at 80x48,
   16-32 px over the clip), no fast bursts, occlusions or frame exits, control intensity 1. Why: a VAE
   fitted for minutes on CPU loses fine texture and, on the library's textured backgrounds, whole
   sprites; a real clip through it then tracks no better than a static one, and the metric cannot see
   any control. Large blobs with sharp outlines on a flat background survive the VAE and still give the
   tracker gradients inside the sprite.
2. **VAE.** Random VAE weights decode to noise, so the VAE is fitted first: AdamW (lr --vae-lr 1e-4,
   cosine-decayed to a tenth over --vae-minutes), batches of 4 random --vae-window (9: whole clips) frame
   windows of the training clips, whole frames (or --vae-crop), in [-1, 1]; loss = MSE of the reconstruction
   from the posterior mode (a plain autoencoder, no KL term), taken before the decoder's final clamp to [-1,
   1] (which zeroes the gradient of every pixel out of range). The layout (``VAE_LAYOUTS``, --vae-layout
   4x-residual): 4x spatial and 4x temporal compression, widths 16-32-32, with Wan 2.2's parameter-free
   shortcuts around each down- and upsampling block (``is_residual``); it keeps the transformer's tokens per
   frame of the earlier 160x96 toy (12 x 20 latents, 6 x 10 patches). Both choices were made on reconstruction
   error alone: by step 600 the fit without the shortcuts had not reached the error of step 200 with them (MSE
   0.027 against 0.024); Wan 2.1's 8x layout at 160x96 was worse still; and at lr 1e-3 or more the fit
   collapses to one colour for every clip for hundreds of steps, the first frame (which the Wan VAE encodes
   alone) longest. The earlier toy runs used 3e-3 and the 8x layout, which is why their decoded frame 0 had
   lost its sprites. Windows of 5 frames give twice the steps per minute but never train the third latent
   frame (whose chunk reads the cache a 4-frame chunk left): after 14 minutes on them, held-out frames 0-4
   reconstruct at 26-28 dB and frames 5-8 at 13-20; so the recorded VAE had 14 minutes on 5-frame windows and
   then 6 on whole clips (--vae-init), after which every frame is at 25-28 dB. Then the VAE config's
   ``latents_mean`` / ``latents_std`` are set to the per-channel statistics of the training clips' latents
   (unit-variance latents for the transformer, as with the real VAE's statistics). Reported: reconstruction
   PSNR of the held-out clips before and after. ``--vae-only`` stops there and reports the floor the VAE sets
   for the tracking metric (real clips through it, against clips with no motion); --vae-from DIR loads a VAE
   saved by such a run (its ``vae/``) instead of fitting one.
3. **Teacher.** ``TeacherStage`` (flow matching) under ``Trainer`` for --teacher-minutes
   (``time_limit_minutes``), from the random Wan transformer with zero control weights (the untrained
   model), exported with ``run.export_model``. The models come from ``run.build_models`` with overrides:
   the random transformer (``ardrag.model.tiny.tiny_transformer``, seeded by --seed) and the fitted VAE;
   the pipeline then generates at the toy's size with its heatmap spots, sigma --heatmap-sigma px (3: half
   ``HeatmapConfig``'s default of 6, for half the earlier toy's size; the GRPO script reads it from
   ``figures.json``). ``conditions.prepare`` runs once per clip for all stages
   (``ardrag.training.conditions_cache.ConditionsCache``: it is deterministic, and its VAE encodings,
   redone every step, would cost several times the transformer's step at this size). Then a check that
   the teacher uses the drag, not only the heatmaps' constant part: its loss on training clips with their
   own control latents, with another clip's, and with its control weights zeroed (same noise draws).
4. **Students.** ``DistillStage`` from the exported teacher, once with ``self_rollout`` and once with
   ``self_forcing``, --student-minutes each, same seed and data; 3 steps at t = 1000, 755, 522, KV cache
   of 2 frames (the tiny preset's), DMD real score without guidance (--real-guidance 1: the teacher is
   evaluated without it, and was trained without prompt dropout).
5. **Evaluation.** Per held-out clip: the teachers' clips from ``sample_clip`` (--sample-steps Euler
   steps, shift 3, guidance 1), the students' from ``StreamSession`` (3 steps; the first pixel frame,
   then 4 per step), all under the clip's target tracks. The target points visible in frame 0 are
   tracked from frame 0 through the generated clip with the opencv tracker and compared with the target
   tracks: L2 error (px at the toy's size) over the later frames where the target point is visible,
   pooled over points and clips: mean, median and TAP-Vid's d_avg (fraction within 1, 2, 4, 8, 16 px,
   averaged). The tracker runs on the clip upscaled to about 320 px wide (x4 at 80x48; bicubic) with
   ``TRACKER``: a 31-px window, no appearance check, forward-backward threshold 4 px, no motion
   prediction for lost points, predictions clipped to
   the frame. The defaults (15 px, appearance and 1.5-px FB checks, velocity prediction) suit sharp
   368-640 px video: on the fitted VAE's blurry reconstructions of real clips they lose nearly every
   point (error close to no motion at all) and lost points drift off with a stale velocity. The setting
   was chosen among five on VAE reconstructions of real clips, never on generated ones.
   Reference rows: the real clip (the tracker's own error), the real clip through the fitted VAE (the
   best a generator can hope for here), the reference frame repeated (no motion), the trained teacher
   with its control weights zeroed, and the student before distillation (the trained teacher's weights,
   causal, 3 steps).

Prints the loss curves (first vs last 10 % of steps) and the tables; writes ``figures.json``,
``losses.png`` (loss curves; PIL, matplotlib is not installed), ``samples.png`` (every 4th frame of two
held-out clips per model, target points in red) and ``videos.npz`` (every generated clip) to --out.
``--quick`` runs every stage for seconds: a smoke test, its figures mean nothing. --vae-steps,
--teacher-steps and --student-steps cap the stages in steps besides minutes (and the VAE's learning-rate
schedule follows the steps then): with minutes to spare, a run repeats to the last digit, timings aside.

    # the recorded recipe: the VAE in two runs (14 min on 5-frame windows, then 6 on whole clips), then
    # the stages with it
    OMP_NUM_THREADS=1 python benchmarks/bench_train_toy.py --out /tmp/toy_vae5 --vae-only --vae-window 5 \
        --vae-lr 2e-4
    OMP_NUM_THREADS=1 python benchmarks/bench_train_toy.py --out /tmp/toy_vae --vae-only --vae-minutes 6 \
        --vae-init /tmp/toy_vae5/vae
    OMP_NUM_THREADS=1 python benchmarks/bench_train_toy.py --out /tmp/toy --vae-from /tmp/toy_vae/vae \
        --eval-clips 32
    # options: [--teacher-minutes 18 --student-minutes 7 --train-clips 256 --quick] [--background texture
    # --sprite-texture texture --sprites 2 3 --sprite-size 0.4 0.6 --speed 6 16 --vae-layout 8x --vae-dim 8
    # --scale 0.25 --transformer 2 12 2 32 --frames 17]   (the earlier toys)
    # a repeatable check (fixed steps, seconds each): --train-clips 8 --eval-clips 2 --sample-steps 4 \
    #     --vae-minutes 30 --teacher-minutes 30 --student-minutes 30 --vae-steps 60 --teacher-steps 100 \
    #     --student-steps 10
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    BUCKET,
    TRACKER,
    at_toy_size,
    held_out_clips,
    loader,
    stream,
    toy_config,
    tracking_errors,
    write_clips,
)
from diffusers import AutoencoderKLWan

from ardrag import console
from ardrag.data.sources.toy import ToySource
from ardrag.data.trackers import get_tracker
from ardrag.inference.teacher import sample_clip
from ardrag.model.tiny import tiny_transformer
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer
from ardrag.presets import TINY, TOY, preset
from ardrag.training.conditions import training_size
from ardrag.training.conditions_cache import ConditionsCache
from ardrag.training.distill import DistillStage
from ardrag.training.run import build_models, export_model, resolve_config
from ardrag.training.teacher import TeacherStage, flow_matching_loss
from ardrag.training.trainer import Trainer

MODES = ("self_rollout", "self_forcing")
TOY_TRANSFORMER = preset("model", TOY)["transformer"]


# -- VAE -------------------------------------------------------------------------------------------
VAE_LAYOUTS: dict[str, dict[str, Any]] = {
    # Wan 2.1's layout (8x spatial, 4x temporal), one residual block per level, the same width throughout
    "8x": {"dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "temperal_downsample": [False, True, True]},
    # 4x spatial, 4x temporal: one downsampling level fewer, widths base, 2 base, 2 base
    "4x": {"dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [True, True],
           "scale_factor_spatial": 4},
    # the same with Wan 2.2's parameter-free shortcuts around each down- and upsampling block
    # (``is_residual``: space-to-channel averages, channel-to-space copies)
    "4x-residual": {"dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [True, True],
                    "scale_factor_spatial": 4, "is_residual": True},
}  # fmt: skip


def random_vae(args: argparse.Namespace) -> AutoencoderKLWan:
    """The toy's VAE layout (``--vae-layout``, ``--vae-dim``), random weights seeded by --seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return AutoencoderKLWan(**VAE_LAYOUTS[args.vae_layout], base_dim=args.vae_dim, z_dim=16)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of images in [-1, 1]."""
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))


def to_pixels(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


@torch.no_grad()
def reconstruct(vae: Any, video: np.ndarray) -> np.ndarray:
    out = vae.decode(vae.encode(to_pixels(video)).latent_dist.mode()).sample
    return ((out[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


def vae_psnr(vae: Any, clips: list[np.ndarray]) -> float:
    vae.eval()
    return statistics.mean(psnr(to_pixels(reconstruct(vae, v)), to_pixels(v)) for v in clips)


def decode_unclamped(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z)`` without its final clamp to [-1, 1], which stops the gradient of every pixel out
    of range (diffusers' ``AutoencoderKLWan._decode``, same calls; untiled, no patching)."""
    vae.clear_cache()
    x, frames = vae.post_quant_conv(z), []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))  # fmt: skip
    vae.clear_cache()
    return torch.cat(frames, 2)


def fit_vae(vae: Any, pool: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Fit ``vae`` for ``args.vae_minutes`` (or ``args.vae_steps`` steps, whichever ends first; the cosine
    schedule follows the nearer end) to random crops of the uint8 clips ``pool`` (P, T, h, w, 3); then set
    its latent statistics from the clips' latents."""
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    _, t, h, w, _ = pool.shape
    (ch, cw), window, batch, losses = args.vae_crop or (h, w), min(args.vae_window, t), 4, []
    cap = args.vae_steps or math.inf

    def draw(n: int) -> list[int]:
        return torch.randint(n, (batch,), generator=gen).tolist()

    vae.train()
    t0 = time.monotonic()
    while (frac := max((time.monotonic() - t0) / (60 * args.vae_minutes), len(losses) / cap)) < 1:
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        starts = zip(draw(len(pool)), draw(t - window + 1), draw(h - ch + 1), draw(w - cw + 1), strict=True)
        x = torch.cat([to_pixels(pool[i, s : s + window, y : y + ch, c : c + cw]) for i, s, y, c in starts])
        loss = torch.nn.functional.mse_loss(decode_unclamped(vae, vae.encode(x).latent_dist.mode()), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if len(losses) % 200 == 0:
            print(f"  vae step {len(losses)}: mse {statistics.mean(losses[-200:]):.4f}", flush=True)
    vae.eval()
    with torch.no_grad():  # per-channel statistics of the training clips' latents
        z = torch.cat([vae.encode(to_pixels(v)).latent_dist.mode() for v in pool[:64]], 2)
        mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.clamp_min(1e-3).tolist())
    n = max(1, len(losses) // 10)
    return {"steps": len(losses), "loss_first": statistics.mean(losses[:n]),
            "loss_last": statistics.mean(losses[-n:])}  # fmt: skip


# -- training --------------------------------------------------------------------------------------
def train_stage(stage: Any, config: Any) -> tuple[list[dict[str, float]], str, float]:
    """Run ``stage`` to ``config.steps`` or its ``time_limit_minutes`` over ``config.data.root``;
    (history, export folder, seconds)."""
    trainer = Trainer(config, stage, loader(config, config.data.root))
    t0 = time.monotonic()
    history = trainer.run(progress=True)
    seconds = time.monotonic() - t0
    return history, export_model(config, trainer), seconds


def curve(history: list[dict[str, float]], key: str) -> dict[str, Any] | None:
    """First and last 10 % means of a logged scalar."""
    values = [(r["step"], r[key]) for r in history if key in r]
    if not values:
        return None
    n = max(1, len(values) // 10)
    first, last = statistics.mean(v for _, v in values[:n]), statistics.mean(v for _, v in values[-n:])
    return {"points": values, "first": first, "last": last, "n": n}


@torch.no_grad()
def control_dependence(
    teacher: ARDragTransformer, cache: ConditionsCache, clips: int = 32, draws: int = 2
) -> dict[str, float]:
    """The trained teacher's flow-matching loss on cached training conditions (the first ``clips``), same
    noise draws each way: with the clip's own control latents, with those of the next clip (shuffled:
    the heatmaps' constant part kept, the spots moved), with the control weights zeroed."""
    conds = cache.conditions(guided=False)[:clips]
    zeroed, out = no_control(teacher), {"own": [], "shuffled": [], "zeroed": []}
    for k in range(draws):
        for i, c in enumerate(conds):
            other = conds[(i + 1) % len(conds)].control
            for name, model, control in (("own", teacher, c.control), ("shuffled", teacher, other),
                                         ("zeroed", zeroed, c.control)):  # fmt: skip
                c2 = dataclasses.replace(c, control=control, index=[i])
                out[name].append(float(flow_matching_loss(model, c2, c2.latents, c2.random(777, k, 0), 3.0)))
    return {name: statistics.mean(v) for name, v in out.items()}


# -- evaluation ------------------------------------------------------------------------------------
def reference_makers(vae: Any) -> dict[str, Any]:
    """The reference rows of the tracking table, as clip makers (clip, index) -> video: the real clip, the
    real clip through the fitted VAE (the floor) and the reference frame repeated (no motion)."""
    return {
        "real clip (tracker's own error)": lambda c, i: c["video"],
        "real clip through the fitted VAE": lambda c, i: reconstruct(vae, c["video"]),
        "reference frame repeated (no motion)": lambda c, i: np.repeat(c["video"][:1], len(c["video"]), 0),
    }


def track_all(
    makers: dict[str, Any], clips: list[dict[str, Any]], tracker: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, list[np.ndarray]]]:
    """Per maker: its clips' tracking errors pooled over points and clips (mean, median, d_avg, pairs,
    per-clip means), and the videos it made."""
    results, videos = {}, {}
    for name, make in makers.items():
        errors, videos[name] = [], []
        for i, clip in enumerate(clips):
            video = make(clip, i)
            videos[name].append(video)
            errors.append(tracking_errors(video, clip, tracker))
        pooled = np.concatenate(errors)
        results[name] = {
            "mean_px": float(pooled.mean()), "median_px": float(np.median(pooled)),
            "delta_avg": float(np.mean([(pooled < d).mean() for d in (1, 2, 4, 8, 16)])),
            "pairs": int(pooled.size), "per_clip_mean_px": [float(e.mean()) for e in errors],
        }  # fmt: skip
    return results, videos


def causal_copy(teacher: ARDragTransformer, window: int) -> CausalARDragTransformer:
    student = CausalARDragTransformer.from_config({**teacher.config, "cache_window": window})
    student.load_state_dict(teacher.state_dict())
    return student.eval()


def no_control(teacher: ARDragTransformer) -> ARDragTransformer:
    model = copy.deepcopy(teacher)
    with torch.no_grad():
        model.control_embedding.weight.zero_()
        model.control_embedding.bias.zero_()
    return model


# -- pictures (PIL; matplotlib is not installed) ---------------------------------------------------
def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    from PIL import Image, ImageDraw

    pw, ph, pad = 520, 150, 36
    img = Image.new("RGB", (pw, ph * len(series)), "white")
    draw = ImageDraw.Draw(img)
    for i, (name, points) in enumerate(series.items()):
        top = i * ph
        steps = np.array([s for s, _ in points], float)
        values = np.array([v for _, v in points], float)
        k = max(1, len(values) // 50)  # moving average over 2 % of the run
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        lo, hi = float(np.percentile(values, 1)), float(np.percentile(values, 99))
        hi = hi if hi > lo else lo + 1

        def xy(s: float, v: float, top: int = top, steps: np.ndarray = steps, lo: float = lo, hi: float = hi):
            x = pad + (pw - 2 * pad) * (s - steps[0]) / max(1.0, steps[-1] - steps[0])
            return x, top + ph - pad / 2 - (ph - 1.5 * pad) * (min(max(v, lo), hi) - lo) / (hi - lo)

        draw.rectangle([pad, top + pad, pw - pad, top + ph - pad / 2], outline="gray")
        draw.point([xy(s, v) for s, v in zip(steps, values, strict=True)], fill=(170, 190, 230))
        draw.line([xy(s, v) for s, v in zip(steps[k - 1 :], smooth, strict=True)], fill="navy", width=2)
        draw.text((pad, top + 8), f"{name}  (steps {int(steps[0])}-{int(steps[-1])}, {lo:.3g} .. {hi:.3g})",
                  fill="black")  # fmt: skip
    img.save(path)


def sample_strip(videos: dict[str, list[np.ndarray]], clips: list[dict[str, Any]], path: Path) -> None:
    """Every 4th frame of the first clips, one row per model, target points in red."""
    from PIL import Image, ImageDraw

    h, w = clips[0]["video"].shape[1:3]
    zoom, label = max(1, round(320 / w)), 150
    frames = list(range(0, len(clips[0]["video"]), 4))
    n = min(2, len(clips))
    img = Image.new(
        "RGB", (label + n * len(frames) * w * zoom + (n - 1) * 8, len(videos) * h * zoom), "white"
    )
    draw = ImageDraw.Draw(img)
    for r, (name, vids) in enumerate(videos.items()):
        draw.text((4, r * h * zoom + 4), name, fill="black")
        for c in range(n):
            for j, t in enumerate(frames):
                x0, y0 = label + (c * len(frames) + j) * w * zoom + c * 8, r * h * zoom
                img.paste(Image.fromarray(vids[c][t]).resize((w * zoom, h * zoom), Image.NEAREST), (x0, y0))
                for (x, y), v in zip(clips[c]["tracks"][t], clips[c]["visible"][t], strict=True):
                    if v:
                        cx, cy = x0 + (x + 0.5) * zoom, y0 + (y + 0.5) * zoom
                        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], outline="red")
    img.save(path)


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bench_train_toy", help="run folders, figures.json, PNGs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=9, help="pixel frames per clip (4k + 1)")
    ap.add_argument("--scale", type=float, default=0.125, help="of the 640x368 bucket (multiples of 16)")
    ap.add_argument("--speed", type=float, nargs=2, default=(16.0, 32.0), help="px/frame at 640x368")
    ap.add_argument("--sprites", type=int, nargs=2, default=(1, 2), help="sprites per clip, min max")
    ap.add_argument("--sprite-size", type=float, nargs=2, default=(0.25, 0.4), help="of the short side")
    ap.add_argument("--background", choices=("flat", "texture"), default="flat", help="see ToySource")
    ap.add_argument("--sprite-texture", choices=("smooth", "texture"), default="smooth", help="see ToySource")
    ap.add_argument("--fast-prob", type=float, default=0.0, help="ProceduralConfig.fast_prob")
    ap.add_argument("--occlusion-prob", type=float, default=0.0, help="ProceduralConfig.occlusion_prob")
    ap.add_argument("--leave-prob", type=float, default=0.0, help="ProceduralConfig.leave_frame_prob")
    ap.add_argument("--intensity", type=float, nargs=2, default=(1.0, 1.0), help="spot peaks, min max")
    ap.add_argument("--heatmap-sigma", type=float, default=3.0, help="control spots, px at the model size")
    ap.add_argument("--train-clips", type=int, default=256)
    ap.add_argument("--eval-clips", type=int, default=16)
    ap.add_argument("--vae-minutes", type=float, default=14.0)
    ap.add_argument("--vae-steps", type=int, help="a cap besides --vae-minutes")
    ap.add_argument("--vae-lr", type=float, default=1e-4, help="at 1e-3 and above the fit stalls (see 2.)")
    ap.add_argument("--vae-layout", choices=sorted(VAE_LAYOUTS), default="4x-residual", help="VAE_LAYOUTS")
    ap.add_argument("--vae-window", type=int, default=9, help="frames per training window (4k + 1)")
    ap.add_argument("--vae-only", action="store_true", help="stop after the VAE and its tracking floor")
    ap.add_argument("--vae-dim", type=int, default=16, help="the VAE's base_dim (the tiny preset's: 8)")
    ap.add_argument("--vae-from", help="a VAE folder written by an earlier run (its vae/): no fitting")
    ap.add_argument("--vae-init", help="a VAE folder written by an earlier run: fit on from its weights")
    ap.add_argument("--vae-crop", type=int, nargs=2, help="training crops, h w (default: whole frames)")
    toy = TOY_TRANSFORMER
    ap.add_argument("--transformer", type=int, nargs=4, metavar=("HEADS", "HEAD_DIM", "LAYERS", "FFN"),
                    default=(toy["num_attention_heads"], toy["attention_head_dim"], toy["num_layers"],
                             toy["ffn_dim"]),
                    help="default: the toy model preset's; the tiny preset's: 2 12 2 32")  # fmt: skip
    ap.add_argument("--teacher-minutes", type=float, default=18.0)
    ap.add_argument("--teacher-steps", type=int, help="a cap besides --teacher-minutes")
    ap.add_argument("--teacher-lr", type=float, default=1e-3)
    ap.add_argument("--student-minutes", type=float, default=7.0, help="per rollout mode")
    ap.add_argument("--student-steps", type=int, help="a cap besides --student-minutes")
    ap.add_argument("--student-lr", type=float, default=2e-4)
    ap.add_argument("--student-batch-size", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--generator-every", type=int, default=2, help="critic steps per generator step")
    ap.add_argument("--real-guidance", type=float, default=1.0, help="guidance of the DMD real score")
    ap.add_argument("--tracker-config", type=json.loads, default={}, help="OpenCVConfig fields over TRACKER")
    ap.add_argument("--sample-steps", type=int, default=30, help="the teacher's Euler steps at evaluation")
    ap.add_argument("--quick", action="store_true", help="seconds per stage: a smoke test of the script")
    args = ap.parse_args()
    if args.quick:
        args.train_clips, args.eval_clips, args.sample_steps = 8, 2, 4
        args.vae_minutes, args.teacher_minutes, args.student_minutes = 0.2, 0.3, 0.2
    if (args.frames - 1) % 4:
        ap.error("--frames must be 4k + 1")
    console.setup()  # the trainer's progress and time-limit lines
    torch.set_num_threads(1)
    wall = time.monotonic()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    size = training_size(*BUCKET, args.scale)
    latent_frames = (args.frames - 1) // 4 + 1
    print(f"toy run: {size[1]}x{size[0]}, {args.frames} frames ({latent_frames} latent), torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)  # fmt: skip
    figures: dict[str, Any] = {"args": vars(args), "size": list(size)}

    # 1. data
    t0 = time.monotonic()
    train_cfg = toy_config(args, args.train_clips, args.seed, size)
    samples = list(ToySource(train_cfg).samples())
    pool = np.stack([s.video for s in samples])
    write_clips(samples, out / "data", train_cfg, max(1, args.train_clips // 4))
    del samples
    clips = held_out_clips(args, size, args.eval_clips)
    print(f"data: {args.train_clips} training clips written, {len(clips)} held out "
          f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip

    # 2. VAE
    vae = random_vae(args)
    held = [c["video"] for c in clips]
    before = vae_psnr(vae, held)
    t0 = time.monotonic()
    if args.vae_from:  # a VAE fitted by an earlier run
        vae = AutoencoderKLWan.from_pretrained(args.vae_from).eval()
        fit: dict[str, Any] = {"from": args.vae_from}
    else:
        if args.vae_init:  # go on fitting a VAE an earlier run saved
            vae = AutoencoderKLWan.from_pretrained(args.vae_init)
            before = vae_psnr(vae, held)
        fit = fit_vae(vae, pool, args)
        fit["init"] = args.vae_init
    after = vae_psnr(vae, held)
    vae.save_pretrained(str(out / "vae"))
    fit.update(psnr_before=before, psnr_after=after, seconds=time.monotonic() - t0)
    figures["vae"] = fit
    if args.vae_from:
        done = f"from {args.vae_from}"
    else:
        done = f"{fit['steps']} steps in {fit['seconds']:.0f} s, mse {fit['loss_first']:.4f} -> "
        done += f"{fit['loss_last']:.4f}"
    print(f"vae: {done}, held-out PSNR {before:.2f} -> {after:.2f} dB", flush=True)
    if args.vae_only:  # the floor the VAE sets, against a clip with no motion
        tracker = get_tracker("opencv", {**TRACKER, **args.tracker_config})
        tracker.setup()
        figures["tracking"], videos = track_all(reference_makers(vae), clips, tracker)
        for name, r in figures["tracking"].items():
            print(f"  {name}: tracking error mean {r['mean_px']:.2f} px, median {r['median_px']:.2f}")
        (out / "figures.json").write_text(json.dumps(figures, indent=1))
        sample_strip(videos, clips, out / "samples.png")
        return

    # 3. teacher
    base = {
        "seed": args.seed, "save_every": 10**8, "keep_checkpoints": 1, "batch_size": args.batch_size,
        "log_every": 50, "model": {"preset": TOY},
        "data": {"root": str(out / "data"), "procedural_clips": 0, "max_frames": args.frames, "scale": 1.0},
        "distill": {"latent_frames": latent_frames, "generator_every": args.generator_every,
                    "real_guidance": args.real_guidance},
    }  # fmt: skip
    config = resolve_config("teacher", preset=TINY, overrides={
        **base, "run_dir": str(out / "teacher"), "optim": {"lr": args.teacher_lr},
        "steps": args.teacher_steps or 10**8, "time_limit_minutes": args.teacher_minutes,
    })  # fmt: skip
    heads, head_dim, layers, ffn = args.transformer
    wan = tiny_transformer(args.seed, TOY, num_attention_heads=heads, attention_head_dim=head_dim,
                           num_layers=layers, ffn_dim=ffn, added_kv_proj_dim=heads * head_dim)  # fmt: skip
    torch.manual_seed(args.seed)
    pipe, teacher = build_models(config, transformer=wan, vae=vae)
    at_toy_size(pipe, size, args.heatmap_sigma)
    untrained = copy.deepcopy(teacher).eval()
    n_params = sum(p.numel() for p in untrained.parameters())
    figures["transformer"] = {**untrained.config, "parameters": n_params}
    print(f"teacher: {args.teacher_minutes} min, lr {args.teacher_lr}, batch {args.batch_size}, "
          f"{untrained.config.num_layers} layers, {untrained.config.num_attention_heads} heads x "
          f"{untrained.config.attention_head_dim}, {n_params} parameters", flush=True)  # fmt: skip
    cache = ConditionsCache()  # one pipeline and one dataset for every stage
    history, teacher_dir, seconds = train_stage(cache.attach(TeacherStage(config, pipe, teacher)), config)
    teacher = ARDragTransformer.from_pretrained(teacher_dir).eval()
    losses = {"teacher/loss": curve(history, "teacher/loss")}
    figures["teacher"] = {"steps": len(history), "seconds": seconds, "loss": losses["teacher/loss"]}
    c = losses["teacher/loss"]
    print(f"teacher: {len(history)} steps in {seconds:.0f} s ({seconds / len(history):.3f} s/step), loss "
          f"first {c['n']} steps {c['first']:.4f} -> last {c['n']} {c['last']:.4f}", flush=True)  # fmt: skip

    dep = control_dependence(teacher, cache)
    figures["teacher"]["control_dependence"] = dep
    print(f"teacher loss on training clips: own control {dep['own']:.4f}, another clip's control "
          f"{dep['shuffled']:.4f}, control weights zeroed {dep['zeroed']:.4f}", flush=True)  # fmt: skip

    # 4. students: from the trained teacher, on the teacher's pipeline (and cached conditions)
    window = config.distill.cache_window
    students: dict[str, CausalARDragTransformer] = {}
    for mode in MODES:
        dconfig = resolve_config("distill", preset=TINY, overrides={
            **base, "run_dir": str(out / mode), "model": {"preset": TOY, "init": teacher_dir},
            "optim": {"lr": args.student_lr}, "distill": {**base["distill"], "rollout": mode},
            "batch_size": args.student_batch_size, "steps": args.student_steps or 10**8,
            "time_limit_minutes": args.student_minutes,
        })  # fmt: skip
        torch.manual_seed(args.seed)
        print(f"student {mode}: {args.student_minutes} min, lr {args.student_lr}", flush=True)
        stage = cache.attach(DistillStage(dconfig, pipe, copy.deepcopy(teacher)), args.real_guidance > 1)
        history, student_dir, seconds = train_stage(stage, dconfig)
        students[mode] = CausalARDragTransformer.from_pretrained(student_dir).eval()
        entry: dict[str, Any] = {"steps": len(history), "seconds": seconds}
        for key in ("critic/loss", "critic/flow", "critic/disc", "generator/dmd", "generator/adv"):
            if (cv := curve(history, key)) is not None:
                entry[key] = cv
                losses[f"{mode} {key}"] = cv
        figures[mode] = entry
        shown = ", ".join(f"{k} {entry[k]['first']:.4f} -> {entry[k]['last']:.4f}"
                          for k in ("critic/flow", "generator/dmd") if k in entry)  # fmt: skip
        print(f"student {mode}: {len(history)} steps in {seconds:.0f} s ({seconds / len(history):.3f} "
              f"s/step), {shown}", flush=True)  # fmt: skip

    # 5. evaluation
    t0 = time.monotonic()
    tracker = get_tracker("opencv", {**TRACKER, **args.tracker_config})
    tracker.setup()
    teachers = {"untrained teacher (zero control)": untrained, "trained teacher": teacher,
                "trained teacher, control zeroed": no_control(teacher)}  # fmt: skip
    makers = reference_makers(pipe.vae)
    for name, model in teachers.items():
        makers[name] = lambda c, i, model=model: sample_clip(
            pipe, model, c["reference"], c["prompt"], c["tracks"], c["visible"], c["intensity"],
            steps=args.sample_steps, guidance_scale=1.0, shift=3.0, seed=i,
        )  # fmt: skip
    causal = {"student before distillation": causal_copy(teacher, window)}
    causal |= {f"student {mode}": students[mode] for mode in MODES}
    for name, model in causal.items():
        makers[name] = lambda c, i, model=model: stream(pipe, model, c, seed=i)
    results, videos = track_all(makers, clips, tracker)
    figures["tracking"] = results
    figures["eval_seconds"] = time.monotonic() - t0

    # report
    teacher_err = results["trained teacher"]["mean_px"]
    untrained_err = results["untrained teacher (zero control)"]["mean_px"]
    print("\nloss curves (mean of the first vs the last 10 % of logged steps)")
    for name, cv in losses.items():
        if cv is not None:
            print(f"  {name:32s} {cv['first']:9.4f} -> {cv['last']:9.4f}  ({cv['last'] / cv['first']:.3f}x, "
                  f"{len(cv['points'])} values)")  # fmt: skip
    print(f"\ntracking error of generated clips vs target tracks ({len(clips)} held-out clips, opencv "
          f"tracker from frame 0; px at {size[1]}x{size[0]})")  # fmt: skip
    print(f"  {'clip source':40s} {'mean':>7s} {'median':>7s} {'d_avg':>6s} {'/teacher':>9s}")
    for name, r in results.items():
        print(f"  {name:40s} {r['mean_px']:7.2f} {r['median_px']:7.2f} {r['delta_avg']:6.3f} "
              f"{r['mean_px'] / teacher_err:9.2f}")  # fmt: skip
    print(f"  untrained / trained teacher: {untrained_err / teacher_err:.2f}x")
    for mode in MODES:
        print(
            f"  student {mode} / trained teacher: {results[f'student {mode}']['mean_px'] / teacher_err:.2f}x"
        )
    print(f"\n  {'rollout':14s} {'steps':>6s} {'s/step':>7s} {'critic flow':>18s} {'generator dmd':>18s} "
          f"{'track err':>9s} {'/teacher':>8s}")  # fmt: skip
    for mode in MODES:
        e, r = figures[mode], results[f"student {mode}"]
        flow, dmd = (f"{e[k]['first']:.3f} -> {e[k]['last']:.3f}" if k in e else "-"
                     for k in ("critic/flow", "generator/dmd"))  # fmt: skip
        print(f"  {mode:14s} {e['steps']:6d} {e['seconds'] / e['steps']:7.3f} {flow:>18s} {dmd:>18s} "
              f"{r['mean_px']:9.2f} {r['mean_px'] / teacher_err:8.2f}")  # fmt: skip
    figures["wall_seconds"] = time.monotonic() - wall
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    np.savez_compressed(out / "videos.npz", **{f"{name}|{i}": v for name, vids in videos.items()
                                               for i, v in enumerate(vids)})  # fmt: skip
    plot_curves({k: v["points"] for k, v in losses.items() if v is not None}, out / "losses.png")
    sample_strip(videos, clips, out / "samples.png")
    print(f"\nwrote {out / 'figures.json'}, {out / 'losses.png'}, {out / 'samples.png'}; "
          f"wall time {figures['wall_seconds'] / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
