"""Distillation step time and peak memory of the two rollout modes, ``self_rollout`` vs ``self_forcing``.

One ``DistillStage`` (tiny preset models: random tiny encoders, VAE and 2-layer Wan transformer; one
procedural clip per sample, 640x368 at data.scale 0.125 = 80x48) whose ``config`` is switched between
the two modes, so both run the same weights on the same batch. For each rollout setting (latent frames
F, KV-cache window W; by default the tiny preset's 3:2 and the paper's 21:7), measured interleaved (the
mode order alternates between repeats), R repeats, medians:

1. **rollout + backward**: ``distill.rollout`` with gradients at the exit step over F frames, then the
   backward of the mean square of its output: the part that differs between the modes.
2. **generator step**: ``Trainer.train_step`` at step 0: the critic phase (a rollout without gradients,
   the critic's flow matching and discriminator losses, backward, optimizer step) and the generator
   phase (a rollout with gradients, the real score, the critic, DMD and adversarial losses, backward,
   optimizer step).
3. **critic step**: ``Trainer.train_step`` at step 1 (critic phase only; ``generator_every`` 2).

The exit step s is drawn per training step from the run's seed (``DistillStage.exit_step``); here it is
fixed per measurement (the instance's ``exit_step`` replaced by a constant) and every s of the 3-step
schedule is measured: per frame, ``self_rollout`` runs 3 denoising passes + 1 cache write whatever s is,
``self_forcing`` s + 1 passes + 1 write (2, 3, 4 passes: a forward-pass ratio of 2, 1.33, 1), and the
training mean is the mean over s (uniform draws). Ratio = self_rollout / self_forcing.

Peak memory. CPU: each (mode, exit step) in a subprocess of its own: the peak RSS (VmHWM, reset
through /proc/self/clear_refs) during its first generator step (optimizer states included) minus the
RSS before it. Also, in this process, the bytes autograd saves for backward during the rollout with
gradients (``saved_tensors_hooks``, parameters left out, each storage counted once): the activation
memory the mode could change. GPU: ``torch.cuda.max_memory_allocated`` during the step minus the memory
allocated before it.

``--shape 1.3b`` (GPU only; not run in this session, which had none): a Wan 2.1 1.3B-shaped ARDrag
transformer with random weights (30 layers, 12 heads x 128, ffn 8960, I2V inputs: in_channels 36, CLIP
image_dim 1280, text_dim 4096), synthetic random conditions at 368x640 (latents 46x80, 257 CLIP tokens,
512 text tokens), bf16 autocast, without gradient checkpointing (``model.gradient_checkpointing``
works since the generator phase keeps the critic frozen through its backward; this script does not
turn it on). Memory therefore limits F at 1.3B; a setting that runs out of memory is reported as such.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py [--settings 3:2 21:7 --repeats 5]
        [--shape 1.3b --settings 21:7]   (GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ardrag.presets import TINY
from ardrag.training.conditions import Conditions
from ardrag.training.distill import DistillStage, rollout
from ardrag.training.run import resolve_config
from ardrag.training.trainer import Trainer

MODES = ("self_rollout", "self_forcing")

# Wan 2.1 T2V 1.3B's transformer, with the I2V inputs of the 14B I2V model (image condition, CLIP).
WAN_1_3B_I2V = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 36,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
    "added_kv_proj_dim": 1536, "rope_max_seq_len": 1024,
}  # fmt: skip


# -- setup -----------------------------------------------------------------------------------------
def build(args: argparse.Namespace, latent_frames: int, window: int, device: torch.device) -> tuple[Any, ...]:
    """(stage, batch Conditions, configs per mode, trainer) for one rollout setting."""
    frames = 4 * latent_frames - 3
    over = {
        "run_dir": "/tmp/bench_train_step", "seed": args.seed, "batch_size": args.batch_size,
        "mixed_precision": "bf16" if device.type == "cuda" else "no",
        "data": {"max_frames": frames, "scale": 0.125},
        "model": {"preset": TINY},
        "distill": {"latent_frames": latent_frames, "cache_window": window, "generator_every": 2},
    }  # fmt: skip
    configs = {m: resolve_config("distill", preset=TINY, overrides={**over, "distill": {
        **over["distill"], "rollout": m}}) for m in MODES}  # fmt: skip
    torch.manual_seed(args.seed)
    if args.shape == TINY:
        from ardrag.data.loader import collate
        from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
        from ardrag.model.pipeline import ARDragPipeline
        from ardrag.model.transformer_ardrag import ARDragTransformer

        pipe = ARDragPipeline.tiny(args.seed, height=48, width=80)
        teacher = ARDragTransformer.from_wan(pipe.wan.transformer)
        with torch.no_grad():  # as after teacher training: a control that does something
            torch.nn.init.normal_(teacher.control_embedding.weight, std=0.1)
        pipe.wan.to(device), pipe.transformer.to(device)
        stage = DistillStage(configs[MODES[0]], pipe, teacher.to(device))
        cfg = ProceduralConfig(
            num_clips=args.batch_size, seed=args.seed, num_frames=frames, buckets=["640x368"]
        )
        raw = collate(list(ProceduralSource(cfg).samples()))
        batch = stage.batch(raw, list(range(args.batch_size)))
    else:
        from ardrag.model.transformer_ardrag import ARDragTransformer

        with torch.device(device):
            teacher = ARDragTransformer(**WAN_1_3B_I2V).to(torch.bfloat16)
        stage = DistillStage(configs[MODES[0]], None, teacher)
        batch = synthetic_conditions(args.batch_size, latent_frames, (46, 80), 257, device)
    trainer = Trainer(configs[MODES[0]], stage, lambda epoch: iter([]), device=device)
    return stage, batch, configs, trainer


def synthetic_conditions(
    b: int, frames: int, hw: tuple[int, int], clip_tokens: int, device: torch.device
) -> Conditions:
    """Random conditions of the 14B/1.3B I2V shapes (latents normalised, so unit normal)."""

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device)

    return Conditions(
        latents=r(b, 16, frames, *hw), control=r(b, 16, frames, *hw), ref_latent=r(b, 16, 1, *hw),
        clip=r(b, clip_tokens, 1280), text=r(b, 512, 4096), text_neg=r(b, 512, 4096),
        index=list(range(b)), keys=[f"s{i}" for i in range(b)],
    )  # fmt: skip


def use(stage: DistillStage, trainer: Trainer, config: Any, exit_step: int) -> None:
    """Switch the stage to ``config``'s rollout mode, with a fixed exit step."""
    stage.config = trainer.config = config
    stage.exit_step = lambda step: exit_step  # type: ignore[method-assign]


# -- measurements ----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def rollout_backward(stage: DistillStage, c: Conditions, exit_step: int, device: torch.device) -> None:
    d = stage.config.distill
    stage.generator.zero_grad(set_to_none=True)
    with autocast(device):
        out = rollout(
            stage.generator, c, c.random(stage.config.seed, 0, 1, 1), timesteps=d.timesteps,
            frames=min(d.latent_frames, c.frames), window=d.cache_window, exit_step=exit_step,
            mode=d.rollout, grad=True,
        ).video  # fmt: skip
    out.square().mean().backward()


def steps(
    stage: DistillStage, trainer: Trainer, c: Conditions, device: torch.device
) -> dict[str, Callable[[], Any]]:
    def at(step: int) -> Callable[[], Any]:
        def run() -> Any:
            trainer.step = step
            return trainer.train_step([c])

        return run

    return {
        "rollout + backward": lambda: rollout_backward(stage, c, stage.exit_step(0), device),
        "generator step": at(0),
        "critic step": at(1),
    }


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def saved_bytes(stage: DistillStage, c: Conditions, exit_step: int, device: torch.device) -> int:
    """Bytes autograd saves for backward in a rollout with gradients (no parameters; storages once)."""
    params = {p.untyped_storage().data_ptr() for p in stage.generator.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rollout_backward(stage, c, exit_step, device)
    return sum(seen.values())


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextlib.contextmanager
def peak(device: torch.device) -> Iterator[dict[str, int]]:
    """The peak memory above the level at entry, of the code inside (CPU: RSS; GPU: allocated)."""
    out: dict[str, int] = {}
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
    yield out
    sync(device)
    after = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status("VmHWM")
    out["bytes"] = after - before


def child(args: argparse.Namespace, device: torch.device) -> None:
    """Peak memory of one mode's first generator step at one exit step, in a process of its own (so
    that nothing the other mode allocated is reused); prints one JSON line."""
    latent_frames, window = args.settings[0]
    stage, c, configs, trainer = build(args, latent_frames, window, device)
    use(stage, trainer, configs[args.child], args.exit)
    with peak(device) as p:
        steps(stage, trainer, c, device)["generator step"]()
    print(json.dumps({"peak": p["bytes"], "process_peak": _status("VmHWM")}))


# -- main ------------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:12.1f}"


def measure(args: argparse.Namespace, latent_frames: int, window: int, device: torch.device) -> None:
    """Times, then memory, of one rollout setting; prints its table."""
    stage, c, configs, trainer = build(args, latent_frames, window, device)
    exits = range(len(configs[MODES[0]].distill.timesteps))
    fns = steps(stage, trainer, c, device)
    times: dict[tuple[str, str, int], list[float]] = {}
    for mode in MODES:  # warm-up: every code path once, optimizer states
        use(stage, trainer, configs[mode], 0)
        for fn in fns.values():
            fn()
    for rep in range(args.repeats):
        for s in exits:
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                use(stage, trainer, configs[mode], s)
                for name, fn in fns.items():
                    times.setdefault((name, mode, s), []).append(timed(fn, device))
    h, w = c.latents.shape[-2:]
    print(f"\nF = {latent_frames} latent frames, cache window {window}, {h}x{w} latents: median of "
          f"{args.repeats} interleaved repeats (ms)")  # fmt: skip
    print(f"  {'':20s} {'exit':>4s} {'self_rollout':>12s} {'self_forcing':>12s} {'ratio':>6s} {'passes':>6s}")
    for name in fns:
        means: dict[str, list[float]] = {m: [] for m in MODES}
        for s in exits:
            med = {m: 1000 * statistics.median(times[(name, m, s)]) for m in MODES}
            for m in MODES:
                means[m].append(med[m])
            passes = (len(exits) + 1) / (s + 2)
            print(f"  {name:20s} {s:4d} {med[MODES[0]]:12.1f} {med[MODES[1]]:12.1f} "
                  f"{med[MODES[0]] / med[MODES[1]]:6.2f} {passes:6.2f}")  # fmt: skip
        a, b = statistics.mean(means[MODES[0]]), statistics.mean(means[MODES[1]])
        print(f"  {name:20s} {'mean':>4s} {a:12.1f} {b:12.1f} {a / b:6.2f}")
    print(f"  (passes: one frame's forward passes, self_rollout / self_forcing = {len(exits) + 1} / (s + 2))")

    def row(label: str, a: float, b: float, note: str = "") -> None:
        print(f"  {label:42s} {mib(a)} {mib(b)}{note}")

    print(f"  memory (MiB){'':31s} {'self_rollout':>12s} {'self_forcing':>12s}")
    for s in exits:
        saved = {}
        for m in MODES:
            use(stage, trainer, configs[m], s)
            saved[m] = saved_bytes(stage, c, s, device)
        row(f"saved for backward, rollout, exit {s}", saved[MODES[0]], saved[MODES[1]])
    if device.type == "cuda":
        for s in exits:
            got = {}
            for m in MODES:
                use(stage, trainer, configs[m], s)
                with peak(device) as p:
                    fns["generator step"]()
                got[m] = p["bytes"]
            row(f"peak allocated, generator step, exit {s}", got[MODES[0]], got[MODES[1]])
        return
    del stage, c, trainer
    for s in exits:
        res = {}
        for m in MODES:
            cmd = [sys.executable, __file__, "--child", m, "--exit", str(s), "--settings",
                   f"{latent_frames}:{window}", "--batch-size", str(args.batch_size), "--seed",
                   str(args.seed), "--shape", args.shape]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res[m] = json.loads(out.strip().splitlines()[-1])
        whole = (
            f"   (process peak {mib(res[MODES[0]]['process_peak'])}, {mib(res[MODES[1]]['process_peak'])})"
        )
        row(
            f"peak RSS increase, 1st generator step, exit {s}",
            res[MODES[0]]["peak"],
            res[MODES[1]]["peak"],
            whole,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["3:2", "21:7"], help="F:W, latent frames:cache window")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", choices=[TINY, "1.3b"], default=TINY)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--exit", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.settings = [tuple(int(v) for v in s.split(":")) for s in args.settings]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.shape == "1.3b" and device.type != "cuda":
        ap.error("--shape 1.3b needs a GPU (hours per step on CPU)")
    if device.type == "cpu":
        torch.set_num_threads(1)
    if args.child:
        return child(args, device)
    wall = time.perf_counter()
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{args.shape} model, batch {args.batch_size}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={omp}")  # fmt: skip
    for latent_frames, window in args.settings:
        try:
            measure(args, latent_frames, window, device)
        except torch.OutOfMemoryError as err:
            print(f"\nF = {latent_frames}, cache window {window}: out of memory ({str(err).splitlines()[0]})")
            torch.cuda.empty_cache()
    print(f"\nwall time: {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
