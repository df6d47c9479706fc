"""Full bidirectional sampling with the teacher: the whole clip denoised at once.

The slow path the student replaces (the paper's 45.64 s first frame): N Euler steps of the flow-matching
ODE over all latent frames together, each with two forward passes under classifier-free guidance, then
one VAE decode of the whole video; the first frame exists only at the end. Schedule as in diffusers' Wan
pipelines: sigmas from 1 to 0 in N steps, shifted by ``shift`` (3 for 480p), t = 1000 sigma,
x <- x + (sigma_next - sigma) v.

Conditions are those of the student (:mod:`ardrag.model.pipeline`) laid out over the whole clip: the
reference latent in latent frame 0's image-condition channels (mask 1), Gaussian noise in the later
frames' (mask 0), the control latent of the whole heatmap video. Cross-attention is shared by all tokens
of a bidirectional pass, so the reference's CLIP embedding serves the whole clip, as in Wan I2V.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ardrag.errors import ConfigError
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import ARDragTransformer
from ardrag.model.vae import denormalize_latents, fast_vae, to_uint8_frames


def shifted_sigmas(steps: int, shift: float) -> list[float]:
    """N + 1 noise levels from 1 to 0, flow-shifted: s' = shift s / (1 + (shift - 1) s)."""
    if steps < 1 or shift <= 0:
        raise ConfigError(f"teacher sampling: steps {steps} and shift {shift}; expected >= 1 and > 0")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).tolist()


def clip_condition(
    pipe: ARDragPipeline, ref_latent: torch.Tensor, latent_frames: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (1, 4, F, h, w), image condition (1, 16, F, h, w)) of a whole clip."""
    shape = (ref_latent.shape[0], ref_latent.shape[1], latent_frames, *ref_latent.shape[3:])
    cond = torch.randn(shape, generator=generator, dtype=torch.float32).to(ref_latent)
    cond[:, :, :1] = ref_latent
    mask = torch.zeros_like(cond[:, :4])
    mask[:, :, 0] = 1
    return mask, cond


@torch.no_grad()
def sample_clip(
    pipe: ARDragPipeline,
    teacher: ARDragTransformer,
    reference: np.ndarray,
    prompt: str,
    tracks: np.ndarray,
    visible: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
    *,
    steps: int = 50,
    guidance_scale: float = 5.0,
    shift: float = 3.0,
    seed: int = 0,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The teacher's video for (T, N, 2) control points at the model's resolution, uint8 (T, H, W, 3);
    T must be 4k + 1 (the VAE's causal layout). ``timings``, when given, receives the seconds of each
    phase: encode (text and reference), control (heatmaps through the VAE), sample, decode."""
    t0 = time.perf_counter()
    tracks = np.asarray(tracks, np.float32)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or (tracks.shape[0] - 1) % 4:
        raise ConfigError(f"control points have shape {tracks.shape}; expected (4k + 1, N, 2)")
    ones = np.ones(tracks.shape[:2], np.float32)
    visible = ones.astype(bool) if visible is None else np.asarray(visible, bool)
    intensity = ones if intensity is None else np.asarray(intensity, np.float32)
    guided = guidance_scale > 1
    text, text_neg = pipe.encode_prompt(prompt, guided)
    with fast_vae(pipe.vae):  # the streaming student's VAE code, for a like-for-like comparison
        ref_latent, clip = pipe.encode_reference(reference)
    t1 = time.perf_counter()
    pixels = pipe.control_pixels(tracks, visible, intensity)
    with fast_vae(pipe.vae):
        control = pipe.normalize(pipe.vae.encode(pixels).latent_dist.mode())
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(control.shape, generator=generator, dtype=torch.float32).to(control)
    mask, cond = clip_condition(pipe, ref_latent, control.shape[2], generator)
    t2 = time.perf_counter()
    sigmas = shifted_sigmas(steps, shift)
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        x_in, ts = torch.cat([x, mask, cond], 1), torch.tensor([1000 * s], device=x.device)
        v = teacher(x_in, ts, text, clip, control=control, return_dict=False)[0]
        if guided:
            v_neg = teacher(x_in, ts, text_neg, clip, control=control, return_dict=False)[0]
            v = v_neg + guidance_scale * (v - v_neg)
        x = x + (s_next - s) * v
    t3 = time.perf_counter()
    with fast_vae(pipe.vae):
        video = pipe.vae.decode(denormalize_latents(pipe.vae, x), return_dict=False)[0]
    out = to_uint8_frames(video)[0].cpu().numpy()
    if timings is not None:
        t4 = time.perf_counter()
        timings.update(encode=t1 - t0, control=t2 - t1, sample=t3 - t2, decode=t4 - t3, total=t4 - t0)
    return out


def teacher_of(pipe: ARDragPipeline) -> ARDragTransformer:
    """The bidirectional model with the pipeline's (student's) weights: the same parameters run
    without the causal mask."""
    teacher = ARDragTransformer.from_config(pipe.transformer.config).eval()
    teacher.load_state_dict(pipe.transformer.state_dict())
    if pipe.transformer.dtype != torch.float32:  # as the student was loaded: diffusers keeps norms in fp32
        return teacher.to(pipe.device, pipe.transformer.dtype)
    return teacher.to(pipe.device)
