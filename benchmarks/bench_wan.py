"""Seconds per clip of the ``wan`` source, and GPU-hours per 10,000 clips.

Two shapes, both through :class:`~ardrag.data.sources.wan.WanSource` (image loading, bucket crop,
text and image encoding, denoising with classifier-free guidance, VAE decode, resize to the bucket):

* ``--shape tiny`` (CPU is fine): the ``wan/tiny`` preset, a random-weight toy pipeline.
* ``--shape 14b`` (a GPU): every component at the real Wan 2.1 I2V 14B 480P shape with RANDOM weights
  (nothing to download): transformer 40 layers x 40 heads x 128 = 5120, ffn 13824, in 36 / out 16
  channels, text_dim 4096, image_dim 1280, added_kv_proj_dim 5120, rope 1024 (diffusers'
  ``convert_wan_to_diffusers.py`` values for "Wan-I2V-14B-480p"); UMT5-XXL encoder; CLIP ViT-H/14;
  the default Wan VAE. Transformer and text encoder in bfloat16, VAE and image encoder in float32.
  Time does not depend on the weights' values, so this is the real model's cost.

``--steps`` measures fewer denoising steps; the per-step time (both guidance passes) is timed with
hooks on the transformer, and the clip time is extrapolated to ``--target-steps``:
``clip(target) = clip(steps) + (target - steps) * step``.

    python benchmarks/bench_wan.py --shape tiny
    python benchmarks/bench_wan.py --shape 14b --device cuda --steps 4   # bucket 640x368, 81 frames
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from ardrag.config import build_config
from ardrag.data.sources.wan import WanConfig, WanSource
from ardrag.model.tiny import assemble_pipeline, byte_tokenizer
from ardrag.presets import TINY, preset

TRANSFORMER_14B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "rope_max_seq_len": 1024,
}
UMT5_XXL = {  # google/umt5-xxl encoder
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
}
CLIP_VIT_H14 = {  # open-clip ViT-H/14 vision tower, as in the Wan I2V checkpoints
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu",
    "projection_dim": 1024,
}


def build_14b_pipeline(device: str, layers: int | None = None) -> Any:
    """The I2V pipeline at the 14B shape with random weights, allocated directly on ``device``."""
    from diffusers import (
        AutoencoderKLWan,
        WanTransformer3DModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = byte_tokenizer()
    t_cfg, u_cfg, c_cfg = dict(TRANSFORMER_14B), dict(UMT5_XXL), dict(CLIP_VIT_H14)
    if layers is not None:  # a cheap smoke test of this code path, not a measurement
        t_cfg["num_layers"], u_cfg["num_layers"], c_cfg["num_hidden_layers"] = layers, layers, max(2, layers)
    default = torch.get_default_dtype()
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)  # 28 GB of bf16 weights, never a float32 copy
        try:
            transformer = WanTransformer3DModel(**t_cfg)
            text_encoder = UMT5EncoderModel(
                UMT5Config(**u_cfg, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
            )
        finally:
            torch.set_default_dtype(default)
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**c_cfg))
        vae = AutoencoderKLWan()  # the defaults are the Wan 2.1 VAE
    return assemble_pipeline(tokenizer, text_encoder, image_encoder, vae, transformer, image_size=224)


class StepTimer:
    """Wall time inside the transformer's forward passes (synchronised on CUDA)."""

    def __init__(self, module: torch.nn.Module, device: str):
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.seconds, self.calls, self._t0 = 0.0, 0, 0.0
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_: Any) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        self.sync()
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=[TINY, "14b"], default=TINY)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--steps", type=int, default=None, help="steps measured (default: the preset's)")
    ap.add_argument("--target-steps", type=int, default=None, help="steps extrapolated to (default: preset)")
    ap.add_argument("--frames", type=int, default=None, help="default: the preset's (tiny 9, 14b 81)")
    ap.add_argument("--bucket", default="640x368")
    ap.add_argument("--clips", type=int, default=3, help="timed clips (after --warmup untimed ones)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="14b only: fewer layers, for a smoke test")
    args = ap.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    family = preset("wan", TINY if args.shape == TINY else "14b")
    steps = args.steps or family["num_inference_steps"]
    target = args.target_steps or family["num_inference_steps"]
    frames = args.frames or family["num_frames"]
    width, height = (int(v) for v in args.bucket.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        image = cv2.resize(
            rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8), (width, height)
        )
        cv2.imwrite(str(Path(tmp) / "ref.png"), image)
        n = args.warmup + args.clips
        jobs = [
            {"image": "ref.png", "prompt": f"a ball rolls, take {i}", "seed": i, "bucket": args.bucket}
            for i in range(n)
        ]
        (Path(tmp) / "jobs.yaml").write_text(yaml.safe_dump(jobs))
        config = build_config(
            WanConfig,
            {
                **family,
                "jobs": str(Path(tmp) / "jobs.yaml"),
                "num_inference_steps": steps,
                "num_frames": frames,
                "device": device,
            },
        )
        source = WanSource(config)
        t0 = time.perf_counter()
        # setup() sets the dtypes (back to float32 for what Wan keeps so) and places the pipeline
        source.setup(build_14b_pipeline(device, args.layers) if args.shape == "14b" else None)
        build_s = time.perf_counter() - t0
        timer = StepTimer(source.pipe.transformer, device)
        items = source.inputs()
        for item in items[: args.warmup]:
            list(source.clips(item))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        timer.reset()
        t0 = time.perf_counter()
        for item in items[args.warmup :]:
            list(source.clips(item))
        per_clip = (time.perf_counter() - t0) / args.clips

    per_step = timer.seconds / args.clips / steps  # both guidance passes
    at_target = per_clip + (target - steps) * per_step
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"wan source, shape {args.shape}{f' ({args.layers} layers)' if args.layers else ''}, {device} ({gpu})"
    )
    print(f"  bucket {args.bucket}, {frames} frames, rendered at 1/{config.render_downscale} of the bucket")
    print(
        f"  torch {torch.__version__}, threads {torch.get_num_threads()}, pipeline built in {build_s:.1f} s"
    )
    print(f"  measured at {steps} steps: {per_clip:.3f} s per clip, {per_step:.3f} s per step")
    print(f"  other work per clip (encoders, VAE, resize): {per_clip - steps * per_step:.3f} s")
    hours = at_target * 10_000 / 3600
    print(f"  at {target} steps: {at_target:.3f} s per clip = {hours:.2f} device-hours per 10,000 clips")
    if device.startswith("cuda"):
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
