"""What the toy benchmarks share (``bench_train_toy.py``, ``bench_grpo_toy.py``, ``bench_grpo_signal.py``,
``bench_rl_toy.py``).

Benchmark code, not library code: the toy run's data settings read back from its ``figures.json``, the
evaluation's tracker and tracking error, streaming a student over a clip, the toy RL stages' (GRPO,
AR-CoPO) models and stage, and a bootstrap interval over seeds and clips. The scripts import it as
``common`` (a script's own folder is the first entry of its import path).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardrag.data.build import ShardConfig, write_dataset
from ardrag.data.codec import EncodeConfig
from ardrag.data.heatmap import HeatmapConfig
from ardrag.data.loader import ShardedVideoDataset
from ardrag.data.sample import Sample
from ardrag.data.sources.toy import ToyConfig, ToySource
from ardrag.data.trackers.scaled import SMALL_VIDEO_OPENCV, ScaledTracker
from ardrag.inference.session import StreamSession
from ardrag.metrics.bootstrap import Interval
from ardrag.model.pipeline import ARDragPipeline, GenerationConfig
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.presets import TINY, TOY
from ardrag.rewards import register
from ardrag.training.config import TrainConfig
from ardrag.training.run import build_models, resolve_config
from ardrag.training.stages import get_stage

BUCKET = (368, 640)  # the toy clips are drawn at 640x368, then resized to the training size


# -- data ------------------------------------------------------------------------------------------
def toy_config(args: argparse.Namespace, num: int, seed: int, size: tuple[int, int]) -> ToyConfig:
    """The toy run's clips (``bench_train_toy.py``'s data flags, or its ``figures.json`` args) at ``size``."""
    return ToyConfig(
        num_clips=num, seed=seed, num_frames=args.frames, buckets=["640x368"],
        min_speed=args.speed[0], max_speed=args.speed[1], min_sprites=args.sprites[0],
        max_sprites=args.sprites[1], min_sprite_size=args.sprite_size[0], max_sprite_size=args.sprite_size[1],
        fast_prob=args.fast_prob, occlusion_prob=args.occlusion_prob, leave_frame_prob=args.leave_prob,
        min_intensity=args.intensity[0], max_intensity=args.intensity[1], background=args.background,
        sprite_texture=getattr(args, "sprite_texture", "texture"),  # runs recorded before it existed
        size=tuple(size),
    )  # fmt: skip


def clip_dict(s: Sample) -> dict[str, Any]:
    """What the evaluation reads of a sample: video, reference, tracks, visibility, intensity, prompt."""
    return {"video": s.video, "reference": s.reference, "tracks": s.tracks, "visible": s.visible,
            "intensity": s.intensity, "prompt": s.prompt}  # fmt: skip


def held_out_clips(args: argparse.Namespace, size: tuple[int, int], num: int) -> list[dict[str, Any]]:
    """``num`` held-out clips (the toy run's seed + 1) at the training size."""
    return [clip_dict(s) for s in ToySource(toy_config(args, num, args.seed + 1, size)).samples()]


def evaluate_models(
    pipe: ARDragPipeline, models: dict[str, Any], benchmark: Path, out: Path
) -> dict[str, Any]:
    """``ardrag eval``'s code path (``ardrag.evaluation.run.evaluate``: ``StreamSession`` with the deployed
    sampler, the metric tracker, seed 0) for each model on ``benchmark``; its ``results.json`` per model
    under ``out / name``. The metric networks are the tiny preset's (random: only the tracking and
    smoothness figures mean something here)."""
    from ardrag.evaluation.run import evaluate

    results = {}
    for name, model in models.items():
        pipe.transformer = model.eval()
        results[name] = evaluate(out / name.replace(" ", "_"), preset=TINY, pipe=pipe, benchmark=benchmark,
                                 progress=False)  # fmt: skip
    return results


def toy_benchmark(targs: argparse.Namespace, size: tuple[int, int], num: int, seed: int, out: Path) -> Path:
    """``num`` clips of the toy run's kind drawn with ``seed``, written as an evaluation benchmark."""
    from ardrag.evaluation.benchmark import write_procedural_benchmark

    return write_procedural_benchmark(toy_config(targs, num, seed, size), out)


def write_clips(samples: list[Sample], out: Path, config: ToyConfig, shard_samples: int) -> None:
    shards = ShardConfig(shard_samples=shard_samples, encode=EncodeConfig(threads=1))
    write_dataset(samples, out, config, shards=shards, name="procedural", progress=False)


def loader(config: TrainConfig, root: str, seen: list[str] | None = None) -> Callable[[int], Iterator[Any]]:
    """The ``Trainer``'s batches over the sharded dataset at ``root``, in the main process; ``seen``
    collects each batch's keys (sorted, joined by ``|``) in the order the trainer takes them."""
    loader_cfg = config.data.loader.model_copy(update={"batch_size": config.batch_size})
    dataset = ShardedVideoDataset(root, loader_cfg)

    def batches(epoch: int) -> Iterator[Any]:
        dataset.set_epoch(epoch)
        for raw in torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0):
            if seen is not None:
                seen.append("|".join(sorted(raw["key"])))
            yield raw

    return batches


# -- models ----------------------------------------------------------------------------------------
TOY_EVAL_SEED = 9001  # datasets/eval/toy.yaml's seed: clips that no toy run trains on


def toy_pipe(toy: Path) -> tuple[ARDragPipeline, argparse.Namespace, tuple[int, int], Any]:
    """(pipeline, run arguments, size, untrained model) of a ``bench_train_toy.py`` run: its encoders,
    fitted VAE, size and heatmap spots, and the random toy transformer its teacher started from (control
    weights zero: the untrained model)."""
    from ardrag.model.tiny import tiny_transformer

    figures = json.loads((toy / "figures.json").read_text())
    targs, size = argparse.Namespace(**figures["args"]), tuple(figures["size"])
    heads, head_dim, layers, ffn = targs.transformer
    wan = tiny_transformer(targs.seed, TOY, num_attention_heads=heads, attention_head_dim=head_dim,
                           num_layers=layers, ffn_dim=ffn, added_kv_proj_dim=heads * head_dim)  # fmt: skip
    config = resolve_config(
        "teacher", preset=TINY, overrides={"seed": targs.seed, "model": {"vae": str(toy / "vae")}}
    )
    pipe, untrained = build_models(config, transformer=wan)
    at_toy_size(pipe, size, targs.heatmap_sigma)
    return pipe, targs, size, untrained.eval()


def at_toy_size(pipe: ARDragPipeline, size: tuple[int, int], sigma: float) -> ARDragPipeline:
    """The pipeline generating at the toy's training size, with its heatmap spots (sigma in px)."""
    fields = pipe.config.model_dump()
    heatmap = HeatmapConfig(**{**fields["heatmap"], "sigma": sigma})
    pipe.config = GenerationConfig(
        **{**fields, "height": size[0], "width": size[1], "heatmap": heatmap, "buckets": None}
    )
    return pipe


# -- evaluation ------------------------------------------------------------------------------------
TRACKER = SMALL_VIDEO_OPENCV  # the library's settings for small, soft frames (ardrag.data.trackers.scaled)


def tracking_errors(video: np.ndarray, clip: dict[str, Any], tracker: Any) -> np.ndarray:
    """L2 errors (px) of the target points tracked from frame 0 through ``video`` by ``ScaledTracker``
    (predictions clipped to the frame), over the frames after 0 where the target point is visible; points
    not visible in frame 0 are left out."""
    ok = clip["visible"][0]
    tracks, visible = clip["tracks"][:, ok], clip["visible"][:, ok].copy()
    h, w = video.shape[1:3]
    queries = np.concatenate([np.zeros((len(tracks[0]), 1)), tracks[0]], 1).astype(np.float32)
    found = ScaledTracker(tracker).track(video, queries).tracks
    predicted = np.clip(found, -0.5, np.array([w - 0.5, h - 0.5], np.float32))
    visible[0] = False
    return np.linalg.norm(predicted - tracks, axis=-1)[visible]


def rows(a: np.ndarray, m: int) -> np.ndarray:
    """The rows of latent frame m: pixel frame 0, then 4m-3 .. 4m."""
    return a[:1] if m == 0 else a[4 * m - 3 : 4 * m + 1]


def stream(
    pipe: ARDragPipeline, student: CausalARDragTransformer, clip: dict[str, Any], seed: int
) -> np.ndarray:
    """The clip a student streams (``StreamSession``) under the clip's target tracks."""
    pipe.transformer = student.eval()
    session = StreamSession(pipe, clip["reference"], clip["prompt"], seed=seed)
    latent_frames = (len(clip["tracks"]) - 1) // 4 + 1
    return np.concatenate([
        session.step(rows(clip["tracks"], m), rows(clip["visible"], m), rows(clip["intensity"], m))
        for m in range(latent_frames)
    ])  # fmt: skip


# -- the toy RL stages (bench_grpo_toy.py, bench_grpo_signal.py, bench_rl_toy.py) ------------------
@register("brightness")
def brightness_reward(video: np.ndarray, **_: Any) -> np.ndarray:
    """Each frame's mean intensity in [0, 1]: a control reward of these benchmarks, smooth in the frames."""
    return video.reshape(len(video), -1).mean(1) / 255.0


def add_grpo_arguments(ap: argparse.ArgumentParser) -> None:
    """The toy GRPO's settings."""
    ap.add_argument("--toy", required=True, help="output folder of bench_train_toy.py")
    ap.add_argument("--clips", type=int, default=4, help="the first N of the toy's training clips")
    ap.add_argument("--group", type=int, default=8, help="G, rollouts per condition")
    ap.add_argument("--batch", type=int, default=4, help="conditions (clips) per step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--clip-range", type=float, default=1e-3, help="epsilon of the clipped ratio")
    ap.add_argument("--kl-beta", type=float, default=0.04)
    ap.add_argument("--updates-per-rollout", type=int, default=2)
    ap.add_argument(
        "--motion-alpha",
        type=float,
        default=0.04,
        help="GRPOConfig.motion_alpha, in squared fractions of the frame (library default 0.01)",
    )
    ap.add_argument("--own-noise", action="store_true",
                    help="shared_noise off: each rollout draws its own starting noise, noise inputs and "
                         "re-noising, not only its actions")  # fmt: skip
    ap.add_argument("--aesthetic-weight", type=float, default=0.0,
                    help="its weight in the advantages (0: logged, not trained on)")  # fmt: skip
    ap.add_argument("--brightness", action="store_true",
                    help="train on the control reward alone (motion, aesthetic logged only)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)


def add_copo_arguments(ap: argparse.ArgumentParser) -> None:
    """The toy AR-CoPO's own settings (``CoPOConfig``'s defaults; the group, lr, KL, updates per rollout
    and rewards are the toy GRPO's, :func:`add_grpo_arguments`)."""
    ap.add_argument("--copo-clip-range", type=float, default=1e-4, help="copo.clip_range (the paper's 1e-4)")
    ap.add_argument("--sigma", type=float, default=0.5, help="copo.sigma, the neighbourhood's (the paper's)")
    ap.add_argument("--anchors", type=int, default=4, help="copo.anchors per group (the paper's 4)")
    ap.add_argument("--replay-groups", type=int, default=1,
                    help="copo.replay.groups per on-policy condition and update (0: none)")  # fmt: skip
    ap.add_argument("--replay-source", default="reference", choices=["reference", "on_policy"])
    ap.add_argument("--replay-size", type=int, default=100, help="copo.replay.size (the paper's 100)")


def rl_settings(args: argparse.Namespace, stage: str, latent: int, cache_window: int) -> dict[str, Any]:
    """The config section of RL stage ``stage`` (``grpo`` or ``copo``) from the toy's arguments: what both
    share (G, frames, KL, updates per rollout, motion reward, reward weights) and each one's own."""
    weights = {"aesthetic": args.aesthetic_weight, "motion": 1.0}
    if args.brightness:
        weights = {"aesthetic": 0.0, "motion": 0.0, "brightness": 1.0}
    shared = {"group_size": args.group, "latent_frames": latent, "cache_window": cache_window,
              "kl_beta": args.kl_beta, "updates_per_rollout": args.updates_per_rollout,
              "motion_alpha": args.motion_alpha, "reward_weights": weights}  # fmt: skip
    if stage == "grpo":
        return {**shared, "clip_range": args.clip_range, "shared_noise": not args.own_noise}
    if stage == "copo":
        replay = {"groups": args.replay_groups, "source": args.replay_source, "size": args.replay_size}
        return {**shared, "clip_range": args.copo_clip_range, "sigma": args.sigma, "anchors": args.anchors,
                "replay": replay}  # fmt: skip
    raise ValueError(f"RL stage {stage!r}; expected 'grpo' or 'copo'")


def build_rl(
    args: argparse.Namespace,
    out: Path,
    stage: str = "grpo",
    minutes: float | None = None,
    section: dict[str, Any] | None = None,
    steps: int | None = None,
) -> argparse.Namespace:
    """The pool's dataset under ``out / "data"``, the toy's models (``build_models`` with its
    ``self_rollout`` student, its VAE folder and heatmap spots), the RL stage ``stage`` (``grpo`` or
    ``copo``, built by the stage registry; ``section``: more overrides of its config section; ``steps``: a
    cap besides ``minutes``)."""
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
    cfg = toy_config(targs, args.clips, targs.seed, size)
    samples = list(ToySource(cfg).samples())
    write_clips(samples, out / "data", cfg, max(1, args.clips // 2))

    # models: the toy's encoders, VAE and heatmap spots, its self_rollout student
    # (causal as saved: it streams in the before/after check; build_models would load model.init's teacher)
    start = CausalARDragTransformer.from_pretrained(str(student)).eval()
    settings = {**rl_settings(args, stage, latent, start.config.cache_window), **(section or {})}
    config = resolve_config(stage, preset=TINY, overrides={
        "run_dir": str(out / "run"), "seed": args.seed, "batch_size": args.batch, "steps": steps or 100_000,
        "save_every": 10**8, "keep_checkpoints": 1, "time_limit_minutes": minutes, "optim": {"lr": args.lr},
        "data": {"root": str(out / "data"), "procedural_clips": 0, "scale": 1.0, "max_frames": frames},
        "model": {"preset": TOY, "init": str(student), "vae": str(toy / "vae")},
        stage: settings,
    })  # fmt: skip
    # the toy run's encoders: drawn with its seed, whatever this run's --seed
    pipe, start = build_models(config.model_copy(update={"seed": targs.seed}), transformer=start)
    at_toy_size(pipe, size, targs.heatmap_sigma)
    torch.manual_seed(args.seed)
    built_stage = get_stage(stage).build_stage(config, pipe, start)
    loader_cfg = config.data.loader.model_copy(update={"batch_size": config.batch_size})
    dataset = ShardedVideoDataset(str(out / "data"), loader_cfg)
    return argparse.Namespace(
        pipe=pipe, start=start, stage=built_stage, config=config, dataset=dataset, student=student,
        latent=latent, toy_args=targs, size=size,
    )  # fmt: skip


def build_grpo(
    args: argparse.Namespace,
    out: Path,
    minutes: float | None = None,
    grpo: dict[str, Any] | None = None,
    steps: int | None = None,
) -> argparse.Namespace:
    """:func:`build_rl` for the ``grpo`` stage (``grpo``: more ``GRPOConfig`` overrides)."""
    return build_rl(args, out, "grpo", minutes, grpo, steps)


# -- statistics over seeds and clips ---------------------------------------------------------------
def crossed_mean_interval(
    values: np.ndarray, resamples: int = 5000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of ``values`` (seeds, clips): every training seed evaluated on the same clips, with a
    percentile bootstrap interval that resamples the seeds and the clips independently, with replacement
    (the two-way bootstrap of a crossed design: both the runs and the clips are samples)."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2 or 0 in a.shape or not np.isfinite(a).all():
        raise ValueError(f"values of shape {a.shape}; expected a finite (seeds, clips) array")
    if resamples < 100 or not 0 < level < 1:
        raise ValueError(f"resamples {resamples}, level {level}; expected >= 100 and a fraction in (0, 1)")
    rng = np.random.default_rng(seed)
    s, c = a.shape
    rows = rng.integers(0, s, size=(resamples, s))
    cols = rng.integers(0, c, size=(resamples, c))
    draws = np.array([a[r][:, k].mean() for r, k in zip(rows, cols, strict=True)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(a.mean()), float(low), float(high), level, a.size)
