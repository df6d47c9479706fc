"""A loader batch becomes model inputs (paper Eq. 6), and randomness that does not depend on the split.

:func:`prepare` cuts each clip to the VAE's causal layout (4k + 1 frames), resizes it to the training
resolution (the bucket times ``data.scale``, rounded to multiples of 16; tracks scaled alike), and encodes
without gradients: the clean video latents, the control heatmaps, the reference (VAE latent and CLIP
embedding) and the prompts (with the negative prompts when guidance needs them).

Every random draw of a sample comes from its own generator (``SampleRandom``, defined with the sampler
in :mod:`ardrag.inference.sampler` and re-exported here), seeded by (run seed, step, phase, the
sample's global index): a global batch split over 2 processes draws exactly what one process draws for
the whole batch, which the multi-process test relies on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ardrag.data.buckets import resize_frames
from ardrag.data.heatmap import render_heatmaps
from ardrag.data.sample import negative_prompt
from ardrag.inference.sampler import SampleRandom
from ardrag.model.pipeline import encode_text
from ardrag.model.vae import normalize_latents


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, step, phase, sample index, ...), stable across runs."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Conditions:
    latents: torch.Tensor  # (B, 16, F, h, w) clean video, normalised
    control: torch.Tensor  # (B, 16, F, h, w) heatmaps through the VAE, normalised
    ref_latent: torch.Tensor  # (B, 16, 1, h, w)
    clip: torch.Tensor  # (B, tokens, D)
    text: torch.Tensor  # (B, 512, D)
    text_neg: torch.Tensor | None  # (B, 512, D) when guidance needs it
    index: list[int]  # global sample indices (for seeds)
    keys: list[str]
    tracks: np.ndarray | None = None  # (B, T, N, 2) pixels at the training size (the rewards' targets)
    visible: np.ndarray | None = None  # (B, T, N)
    intensity: np.ndarray | None = None  # (B, T, N)
    prompts: list[str] | None = None  # the captions (a planner's instructions)

    @property
    def batch(self) -> int:
        return self.latents.shape[0]

    @property
    def frames(self) -> int:
        return self.latents.shape[2]

    def random(self, *parts: int) -> SampleRandom:
        return SampleRandom([sample_seed(*parts, i) for i in self.index], self.latents.device)


def training_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The bucket's size times ``scale``, rounded to the nearest multiple of 16 (at least 16)."""
    return (max(16, round(height * scale / 16) * 16), max(16, round(width * scale / 16) * 16))


def clip_frames(frames: int, max_frames: int) -> int:
    """The longest 4k + 1 <= min(frames, max_frames)."""
    return 1 + 4 * ((min(frames, max_frames) - 1) // 4)


@torch.no_grad()
def prepare(pipe: Any, batch: dict[str, Any], index: list[int], scale: float, max_frames: int,
            guided: bool) -> Conditions:  # fmt: skip
    """Model inputs of one loader batch (see the module docstring)."""
    device, dtype, vae = pipe.device, pipe.vae.dtype, pipe.vae
    video = batch["video"]  # (B, T, H, W, 3) uint8
    b, t, height, width = video.shape[:4]
    t = clip_frames(t, max_frames)
    h, w = training_size(height, width, scale)
    frames = torch.stack([resize_frames(v[:t], (h, w)) for v in video])  # (B, T, 3, h, w)
    latents = vae.encode(frames.permute(0, 2, 1, 3, 4).to(device, dtype)).latent_dist.mode()
    tracks = batch["tracks"][:, :t].numpy() * np.array([w / width, h / height], np.float32)
    visible, intensity = batch["visible"][:, :t].numpy(), batch["intensity"][:, :t].numpy()
    maps = np.stack([
        render_heatmaps(tr, vis, inten, h, w, pipe.config.heatmap)
        for tr, vis, inten in zip(tracks, visible, intensity, strict=True)
    ])  # fmt: skip
    heat = torch.from_numpy(maps)[:, None].expand(-1, 3, -1, -1, -1) * 2 - 1
    control = vae.encode(heat.to(device, dtype)).latent_dist.mode()
    ref = resize_frames(batch["reference"], (h, w))  # (B, 3, h, w)
    ref_latent = vae.encode(ref[:, :, None].to(device, dtype)).latent_dist.mode()
    from PIL import Image

    images = [Image.fromarray(((r.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()) for r in ref]
    clip = pipe.wan.encode_image(images, device)
    prompts = list(batch["prompt"])
    if guided:
        prompts += [negative_prompt(name) for name in batch["negative_prompt"]]
    text = encode_text(pipe.wan.tokenizer, pipe.wan.text_encoder, prompts, device)
    return Conditions(
        latents=normalize_latents(vae, latents).float(),
        control=normalize_latents(vae, control).float(),
        ref_latent=normalize_latents(vae, ref_latent).float(),
        clip=clip.float(),
        text=text[:b].float(),
        text_neg=text[b:].float() if guided else None,
        index=list(index),
        keys=list(batch["key"]),
        tracks=tracks,
        visible=visible,
        intensity=intensity,
        prompts=list(batch["prompt"]),
    )


def image_condition(c: Conditions, frames: int, rng: SampleRandom) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, 4, F, h, w), image condition (B, 16, F, h, w)) of a whole clip, for the bidirectional
    passes (teacher, critic): the reference latent at latent frame 0 (mask 1), Gaussian noise after it
    (mask 0), as in :mod:`ardrag.inference.teacher`. The student's frame-by-frame inputs come from
    :class:`ardrag.inference.sampler.FrameNoise`."""
    shape = c.ref_latent.shape
    cond = rng.randn(shape[1], frames, *shape[3:])
    cond[:, :, :1] = c.ref_latent
    mask = torch.zeros_like(cond[:, :4])
    mask[:, :, 0] = 1
    return mask, cond


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow shift of noise levels in [0, 1]: shift u / (1 + (shift - 1) u)."""
    return shift * u / (1 + (shift - 1) * u)
