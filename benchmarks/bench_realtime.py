"""Real-time streaming at real shapes: first-frame latency, sustained frames per second (VAE included),
a breakdown and peak memory, for the streaming fast path with and without each of its parts.

The models are random weights at the real shapes (``--shape``: the presets ``tiny``, ``small`` = two
layers of the 1.3B width, ``1.3b``, ``14b``; :mod:`ardrag.presets`): the Wan 2.1 transformer of that
shape as the causal student, the real Wan VAE and CLIP ViT-H/14 shapes, and a one-layer UMT5 stand-in of
the real output width for the text (the prompt is encoded once per session; the real UMT5-XXL's cost is
not in these figures). Speed does not depend on the weights' values.

Per variant (``--variants``; each is :class:`~ardrag.inference.session.StreamOptions`):

- ``first_frame_s``: from creating the session with the image, prompt and drag to the first decoded
  frame on the host (CLIP and VAE encoding of the reference, the control heatmap, 3 denoising passes,
  the decode). Median over ``--repeats`` sessions, after a warm-up session (whose time, compilation
  included, is ``warmup_s``).
- ``fps``: pixel frames per second over latent frames 1 .. F-1 of a session, end to end: controls, the
  deferred cache write, denoising, decode, frames on the host. On a GPU the next frame is submitted
  before the last one's frames are collected, so the decode stream overlaps (``StreamSession.submit``).
- ``breakdown_ms``: per latent frame after the first, in a separate run with the device synchronised
  around each part: ``denoise`` (3 passes), ``write`` (the cache write pass), ``control`` (the VAE
  encode of the heatmaps), ``decode`` (the VAE decode); ``total`` is the whole step, the heatmaps'
  drawing and the frames' copy to the host included.
- ``compile``: for the ``compile=`` variants, dynamo's graph count and inductor's CUDA-graph skips (a
  CUDA-graph mode that silently fell back shows here). Compiling changes the model's blocks in place,
  so these variants run after every other one.
- ``peak_mem_gb``: GPU: the peak of allocated memory during the variant; CPU: the process's peak RSS
  so far (monotone across variants), with ``cache_mb`` the KV cache's own bytes.

    OMP_NUM_THREADS=2 python benchmarks/bench_realtime.py --shape small --res 480x368 --frames 9 \\
        --vae tiny --out results.json
    python benchmarks/bench_realtime.py --shape 1.3b --device cuda --res 832x480 --frames 41
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import reference_image  # this folder is first on the path of a script run from it

from ardrag.inference.generate import parse_size
from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.model.device import dtype_name, resolve_device, resolve_dtype
from ardrag.model.pipeline import ARDragPipeline, GenerationConfig
from ardrag.model.tiny import build_tiny_pipeline, tiny_vae, transformer_config
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.presets import SMALL, TINY, WAN_1_3B_RANDOM, WAN_14B_RANDOM

SHAPES = (TINY, SMALL, WAN_1_3B_RANDOM, WAN_14B_RANDOM)
PROMPT = "a red kite climbs over a green hill, then dives towards the lake"

# name -> options; "-x": the fast path without part x
VARIANTS: dict[str, StreamOptions] = {
    "reference": StreamOptions.reference(),
    "fast": StreamOptions(),
    "-ring_cache": StreamOptions(ring_cache=False),
    "-rope_once": StreamOptions(rope_once=False),
    "-cross_cache": StreamOptions(cross_cache=False),
    "-batched_cfg": StreamOptions(batched_cfg=False),
    "-decode_stream": StreamOptions(decode_stream=False),
    "sdpa=flash": StreamOptions(sdpa="flash"),
    "sdpa=efficient": StreamOptions(sdpa="efficient"),
    "sdpa=cudnn": StreamOptions(sdpa="cudnn"),
    "sdpa=math": StreamOptions(sdpa="math"),
    "compile=default": StreamOptions(compile="default"),
    "compile=max-autotune-no-cudagraphs": StreamOptions(compile="max-autotune-no-cudagraphs"),
    "compile=reduce-overhead": StreamOptions(compile="reduce-overhead"),
}


def build(shape: str, device: torch.device, dtype: torch.dtype, width: int, height: int, vae: str,
          guidance: float, seed: int = 0) -> ARDragPipeline:  # fmt: skip
    """Random weights at ``shape``: the student built directly on ``device`` in ``dtype`` (two float32
    copies of a 14B model would not fit a host), the encoders and VAE built on the CPU and moved."""
    wan = build_tiny_pipeline(seed, shape, transformer=False)
    if vae == TINY:
        wan.vae = tiny_vae(seed)
    config = transformer_config(shape)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype != torch.float16 else torch.float32)
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            student = CausalARDragTransformer(**config)
            torch.nn.init.normal_(student.control_embedding.weight, std=0.02)
    finally:
        torch.set_default_dtype(default)
    generation = GenerationConfig(width=width, height=height, buckets=None, guidance_scale=guidance)
    return ARDragPipeline(wan, student, generation).to(device, dtype)


def drag(m: int, n: int, w: int, h: int) -> np.ndarray:
    """Two points for latent frame m's n pixel frames: one moving right, one pinned."""
    start = 0 if m == 0 else 1 + 4 * (m - 1)
    t = np.arange(start, start + n, dtype=np.float32)
    moving = np.stack([0.3 * w + 0.004 * w * t, 0.5 * h + 0 * t], -1)
    pinned = np.tile(np.array([0.7 * w, 0.4 * h], np.float32), (n, 1))
    return np.stack([moving, pinned], 1).astype(np.float32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Adds up the seconds spent in wrapped callables, synchronising the device around each call."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            return out

        return timed


def first_frame(
    pipe: ARDragPipeline, options: StreamOptions, image: np.ndarray
) -> tuple[float, StreamSession]:
    w, h = pipe.config.width, pipe.config.height
    sync(pipe.device)
    t0 = time.perf_counter()
    session = StreamSession(pipe, image, PROMPT, seed=0, options=options)
    session.step(drag(0, 1, w, h))
    return time.perf_counter() - t0, session


def sustained(session: StreamSession, frames: int) -> float:
    """Pixel frames per second over latent frames 1 .. frames-1, the next frame submitted before the
    last one's frames are collected."""
    w, h = session.pipe.config.width, session.pipe.config.height
    sync(session.pipe.device)
    t0, pending, pixels = time.perf_counter(), None, 0
    for m in range(1, frames):
        handle = session.submit(drag(m, 4, w, h))
        if pending is not None:
            pixels += len(pending.result())
        pending = handle
    pixels += len(pending.result())
    return pixels / (time.perf_counter() - t0)


def breakdown(
    pipe: ARDragPipeline, options: StreamOptions, image: np.ndarray, frames: int
) -> dict[str, float]:
    """Milliseconds per latent frame (after the first) in each part, the device synchronised."""
    clock = Clock(pipe.device)
    model = pipe.transformer
    forward = model.forward_frame
    model.forward_frame = lambda *a, **k: clock.wrap("write" if k.get("write") else "denoise", forward)(
        *a, **k
    )
    try:
        session = StreamSession(pipe, image, PROMPT, seed=0, options=options)
        w, h = pipe.config.width, pipe.config.height
        session.step(drag(0, 1, w, h))
        clock.seconds.clear()
        session.encoder.encode_next = clock.wrap("control", session.encoder.encode_next)
        session.decoder.decode_next = clock.wrap("decode", session.decoder.decode_next)
        sync(pipe.device)
        t0 = time.perf_counter()
        for m in range(1, frames):
            session.step(drag(m, 4, w, h))
        total = time.perf_counter() - t0
    finally:
        model.forward_frame = forward
    out = {k: 1000 * v / (frames - 1) for k, v in sorted(clock.seconds.items())}
    out["total"] = 1000 * total / (frames - 1)
    return out


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_variant(pipe: ARDragPipeline, options: StreamOptions, frames: int, repeats: int) -> dict[str, Any]:
    device = pipe.device
    image = reference_image(pipe.config.height, pipe.config.width)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    warm_first, warm = first_frame(pipe, options, image)
    sustained(warm, min(frames, 3))
    warmup = time.perf_counter() - t0
    firsts, rates, session = [], [], None
    for _ in range(repeats):
        first, session = first_frame(pipe, options, image)
        firsts.append(first)
        rates.append(sustained(session, frames))
    cache = sum(c.nbytes() for c in session.caches) / 2**20
    parts = breakdown(pipe, options, image, frames)
    return {
        "first_frame_s": statistics.median(firsts),
        "first_frame_all_s": firsts,
        "fps": statistics.median(rates),
        "fps_all": rates,
        "warmup_s": warmup,
        "breakdown_ms": parts,
        "peak_mem_gb": peak_memory(device),
        "cache_mb": cache,
        "options": asdict(options),
        **({"compile": compile_counters()} if options.compile != "none" else {}),
    }


def compile_counters() -> dict[str, Any]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"], "inductor": dict(counters["inductor"]),
            "recompiles": sum(counters["recompiles"].values())}  # fmt: skip


def machine(device: torch.device) -> dict[str, Any]:
    info = {"host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when present)")
    parser.add_argument(
        "--dtype", help="float32, bfloat16, float16 (default: bf16 on a GPU, float32 on a CPU)"
    )
    parser.add_argument("--res", default="480x368", help="WIDTHxHEIGHT, multiples of 16 (480x368, 832x480)")
    parser.add_argument("--frames", type=int, default=9, help="latent frames per session (>= 2)")
    parser.add_argument("--repeats", type=int, default=1, help="measured sessions per variant")
    parser.add_argument("--vae", choices=("wan", TINY), help="default: tiny for --shape tiny, else wan")
    parser.add_argument("--guidance", type=float, default=1.0, help="> 1: classifier-free guidance")
    parser.add_argument(
        "--variants",
        default="reference,fast",
        help=f"comma-separated, of {list(VARIANTS)}; 'all' for every one",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    width, height = parse_size(args.res, "--res")
    if args.frames < 2:
        parser.error(f"--frames {args.frames}: expected at least 2 latent frames")
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected names among {list(VARIANTS)}")
    if device.type != "cuda":  # the decode stream and these kernels exist on a GPU only
        names = [n for n in names if n not in ("-decode_stream", "sdpa=flash", "sdpa=efficient", "sdpa=cudnn",
                                               "compile=reduce-overhead")]  # fmt: skip
    if args.guidance <= 1:
        names = [n for n in names if n != "-batched_cfg"]
    names = [n for n in names if not n.startswith("compile=")] + [
        n for n in names if n.startswith("compile=")
    ]
    vae = args.vae or (TINY if args.shape == TINY else "wan")

    t0 = time.perf_counter()
    pipe = build(args.shape, device, dtype, width, height, vae, args.guidance)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    result: dict[str, Any] = {
        "machine": machine(device),
        "shape": args.shape, "params_m": params / 1e6, "dtype": dtype_name(dtype), "res": f"{width}x{height}",
        "latent_frames": args.frames, "pixel_frames": 1 + 4 * (args.frames - 1), "vae": vae,
        "guidance": args.guidance, "build_s": time.perf_counter() - t0, "variants": {},
    }  # fmt: skip
    print(f"{args.shape} ({params / 1e6:.0f} M) {dtype_name(dtype)} {width}x{height} on {result['machine']}")
    print(f"{'variant':<36} {'first frame s':>13} {'fps':>8} {'denoise':>8} {'write':>7} {'control':>8} "
          f"{'decode':>7} {'peak GB':>8}")  # fmt: skip
    for name in names:
        try:
            row = run_variant(pipe, replace(VARIANTS[name]), args.frames, args.repeats)
        except Exception as err:  # one variant that fails (a kernel missing here) is recorded, not fatal
            result["variants"][name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            print(f"{name:<36} failed: {type(err).__name__}: {str(err)[:100]}")
            continue
        result["variants"][name] = row
        b = row["breakdown_ms"]
        print(f"{name:<36} {row['first_frame_s']:>13.3f} {row['fps']:>8.2f} {b.get('denoise', 0):>8.1f} "
              f"{b.get('write', 0):>7.1f} {b.get('control', 0):>8.1f} {b.get('decode', 0):>7.1f} "
              f"{row['peak_mem_gb']:>8.2f}")  # fmt: skip
        if args.out:  # written after every variant, so a run cut short keeps what it measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    ref, fast = result["variants"].get("reference", {}), result["variants"].get("fast", {})
    if "fps" in ref and "fps" in fast:
        step = {
            k: v["breakdown_ms"]["denoise"] + v["breakdown_ms"]["write"] for k, v in (("r", ref), ("f", fast))
        }
        result["speedup"] = {
            "fps": fast["fps"] / ref["fps"],
            "denoise": ref["breakdown_ms"]["denoise"] / fast["breakdown_ms"]["denoise"],
            "transformer_step": step["r"] / step["f"],  # the 3 denoising passes and the cache write
            "first_frame": ref["first_frame_s"] / fast["first_frame_s"],
        }
        s = result["speedup"]
        print(f"fast / reference: fps x{s['fps']:.2f}, denoising passes x{s['denoise']:.2f}, "
              f"transformer step (passes and write) x{s['transformer_step']:.2f}, "
              f"first frame x{s['first_frame']:.2f}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
