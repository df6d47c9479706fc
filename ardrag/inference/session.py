"""Interactive streaming generation: a reference image and a prompt in, frames out as the user drags.

A :class:`StreamSession` generates one latent frame per :meth:`~StreamSession.step`: the caller passes the
control points of the pixel frames that latent frame covers (1 for the first, 4 after), may change them
from one step to the next, and gets those frames back decoded as soon as the latent frame is done.
:meth:`~StreamSession.regenerate` redoes the last step with other controls: the KV caches, the streaming
VAE encoder and decoder and the noise generator roll back to where that step started.

Each step runs the student's sampler (:mod:`ardrag.inference.sampler`, the one that distillation and GRPO
train): its schedule, its re-noising draws and the noise that replaces the reference after frame 0
(drawn once per frame) are those of training, so a one-row GRPO rollout and a session given the same
draws (``noise``) produce the same frames, bit for bit on CPU in float32.

Starting a session encodes the prompt and the reference's CLIP embedding; the reference's VAE latent is
encoded by the first step, in one batch with frame 0's control heatmap (both are one frame, the first
chunk of the causal VAE encoder), and the encoder then keeps only the control stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.vae import StreamingVaeDecoder, StreamingVaeEncoder


@dataclass
class _State:
    caches: list[dict[str, Any]]
    encoder: Any
    decoder: Any
    rng: Any
    frame: int


class StreamSession:
    """``seed`` seeds the session's one noise stream; ``noise`` (a :class:`FrameNoise`, e.g. GRPO's
    :class:`~ardrag.inference.sampler.SelectiveNoise` with one row) replaces it, and ``sampler`` the
    pipeline's (``FrameSampler.from_config(pipe.config)``)."""

    def __init__(
        self,
        pipe: ARDragPipeline,
        reference: np.ndarray,
        prompt: str,
        seed: int = 0,
        *,
        noise: FrameNoise | None = None,
        sampler: FrameSampler | None = None,
    ):
        self.pipe = pipe
        model = pipe.transformer
        self.text, self.negative = pipe.encode_prompt(prompt)
        self._reference = pipe.reference_pixels(reference)
        self.clip = pipe.encode_clip(reference)
        # The reference's VAE latent (normalised): encoded in one batch with frame 0's controls (step).
        self.ref_latent: torch.Tensor | None = None
        self.guided = self.negative is not None
        self.caches = [model.new_cache() for _ in range(2 if self.guided else 1)]
        self.encoder = StreamingVaeEncoder(pipe.vae)
        self.decoder = StreamingVaeDecoder(pipe.vae)
        self.noise = noise if noise is not None else FrameNoise(SampleRandom([seed]))
        self.sampler = sampler if sampler is not None else FrameSampler.from_config(pipe.config)
        self.frame = 0  # latent frames done
        self.latent: torch.Tensor | None = None  # the last frame's clean latent (normalised)
        self._before_last: _State | None = None
        self._pending: tuple[torch.Tensor, ...] | None = None

    @property
    def pixel_frames_next(self) -> int:
        """How many pixel frames the next step covers (and how many control rows it takes)."""
        return 1 if self.frame == 0 else 4

    def _velocity(self, x: torch.Tensor, t: float, inputs: tuple[torch.Tensor, ...], control: torch.Tensor,
                  write: bool) -> torch.Tensor:  # fmt: skip
        model, ts = self.pipe.transformer, torch.tensor([t], device=x.device)
        mask, cond, clip = inputs
        x_in = torch.cat([x, mask, cond], 1)
        v = model.forward_frame(x_in, ts, self.text, self.caches[0], clip, control=control, write=write)
        if self.guided:
            v_neg = model.forward_frame(
                x_in, ts, self.negative, self.caches[1], clip, control=control, write=write
            )
            v = v_neg + self.pipe.config.guidance_scale * (v - v_neg)
        return v

    def _state(self) -> _State:
        return _State([c.snapshot() for c in self.caches], self.encoder.snapshot(), self.decoder.snapshot(),
                      self.noise.get_state(), self.frame)  # fmt: skip

    def _restore(self, state: _State) -> None:
        for cache, snap in zip(self.caches, state.caches, strict=True):
            cache.restore(snap)
        self.encoder.restore(state.encoder)
        self.decoder.restore(state.decoder)
        self.noise.set_state(state.rng)
        self.frame = state.frame

    @torch.no_grad()
    def step(
        self, tracks: np.ndarray, visible: np.ndarray | None = None, intensity: np.ndarray | None = None
    ) -> np.ndarray:
        """Generate the next latent frame under these controls ((n, N, 2) pixel points for its n pixel
        frames); returns its decoded frames, uint8 (n, H, W, 3)."""
        tracks, visible, intensity = self._check(tracks, visible, intensity)
        self.flush()
        self._before_last = self._state()
        pixels = self.pipe.control_pixels(tracks, visible, intensity)
        if self.frame == 0:
            # The reference image and frame 0's heatmap are both a causal VAE encoder's first chunk (one
            # frame, nothing cached): one batched call encodes both, then the control stream keeps its row.
            latents = self.pipe.normalize(self.encoder.encode_next(torch.cat([self._reference, pixels])))
            self.encoder.select(slice(1, None))
            self.ref_latent, control = latents[:1], latents[1:]
        else:
            control = self.pipe.normalize(self.encoder.encode_next(pixels))
        m, sampler = self.frame, self.sampler
        inputs = self.noise.inputs(m, self.ref_latent, self.clip)

        def predict(x: torch.Tensor, n: int) -> torch.Tensor:
            return sampler.predict(x, self._velocity(x, sampler.timesteps[n], inputs, control, False), n)

        x, _ = sampler.run(
            predict, self.noise.start(m, self.ref_latent), lambda n: self.noise.renoise(m, n, self.ref_latent)
        )
        self._pending = (x, inputs, control)
        self.latent = x
        pixels = self.decoder.decode_next(x)
        self.frame += 1
        frames = ((pixels[0].permute(1, 2, 3, 0).float() + 1) * 127.5).round().clamp(0, 255)
        return frames.to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def flush(self) -> None:
        """Write the last frame into the KV caches (the sampler's pass at ``write_timestep`` on the clean
        latent, with the frame's own inputs).
        :meth:`step` defers it to the start of the next step, so that its frames come out one transformer
        pass sooner; call it to have the caches complete now (an idle moment between user inputs)."""
        if self._pending is not None:
            x, inputs, control = self._pending
            self._pending = None
            self._velocity(x, self.sampler.write_timestep, inputs, control, write=True)

    def regenerate(
        self, tracks: np.ndarray, visible: np.ndarray | None = None, intensity: np.ndarray | None = None
    ) -> np.ndarray:
        """Redo the last step with other controls (the earlier frames stay as they were)."""
        if self._before_last is None:
            raise ConfigError("nothing to regenerate: call step() first")
        self._pending = None  # the last frame was never written: drop it
        self._restore(self._before_last)
        return self.step(tracks, visible, intensity)

    def _check(self, tracks: Any, visible: Any, intensity: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.pixel_frames_next
        tracks = np.asarray(tracks, dtype=np.float32)
        if tracks.ndim != 3 or tracks.shape[0] != n or tracks.shape[2] != 2 or tracks.shape[1] < 1:
            raise ConfigError(
                f"control points have shape {tracks.shape}; expected ({n}, N, 2) for frame {self.frame}"
            )
        if not np.isfinite(tracks).all():
            raise ConfigError(f"control points of frame {self.frame} are not all finite")
        visible = np.ones(tracks.shape[:2], bool) if visible is None else np.asarray(visible, bool)
        intensity = (
            np.ones(tracks.shape[:2], np.float32) if intensity is None else np.asarray(intensity, np.float32)
        )
        if visible.shape != tracks.shape[:2] or intensity.shape != tracks.shape[:2]:
            raise ConfigError(
                f"visible {visible.shape} and intensity {intensity.shape} must be {tracks.shape[:2]}"
            )
        return tracks, visible, intensity
