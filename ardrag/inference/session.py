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

**The streaming fast path** (:class:`StreamOptions`, every part on by default, each one switchable so that
``benchmarks/bench_realtime.py`` can show what it buys): a ring-buffer KV cache of fixed shapes rotated
once per frame (:class:`~ardrag.model.transformer_ardrag.RingKVCache`), cross-attention keys and values
cached (the text's per session, the image tokens' per frame), both guidance branches in one batched pass,
a chosen SDPA backend, ``torch.compile`` of the transformer blocks, and on a GPU the VAE decode on its own
CUDA stream (:meth:`StreamSession.submit`), overlapped with the next frame's denoising.
``StreamOptions.reference()`` turns it all off: the reference path, which GRPO's rollouts match bit for
bit; the fast path gives its frames to float32 reordering error (tests/inference/test_fast_step.py).

**The cache write** is a fourth transformer pass per frame, on the clean latent at ``write_timestep``: no
denoising pass computes the clean frame's keys, so it cannot be dropped. It is deferred to the start of the
next step (or an idle moment, :meth:`StreamSession.flush`), so it is never between a drag and the frame it
produces; its cost is measured by ``benchmarks/bench_realtime.py`` ("write").

**Streams of any length**: with ``attention_sink`` frames (``GenerationConfig.attention_sink``,
``ardrag generate --sink``) the first latent frame stays in the cache beside the rolling window, as in
StreamingLLM and LongLive. The cache's memory is fixed by its window, and RoPE positions are counted
within the cached window, so they stay in range however long the stream runs.

Starting a session encodes the prompt and the reference's CLIP embedding; the reference's VAE latent is
encoded by the first step, in one batch with frame 0's control heatmap (both are one frame, the first
chunk of the causal VAE encoder), and the encoder then keeps only the control stream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom
from ardrag.inference.trajectory import PROMPT_MODES
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import CrossCache
from ardrag.model.vae import StreamingVaeDecoder, StreamingVaeEncoder, to_uint8_frames

PromptMode = Literal["keep", "recache"]
SdpaBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]
CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class StreamOptions:
    """Which parts of the streaming fast path a session runs (see the module docstring).

    - ``ring_cache``: the preallocated ring-buffer KV cache (else the reference cache, concatenated on
      every write); ``rope_once``: its slots rotated once per frame (else once per pass).
    - ``cross_cache``: cross-attention keys and values of the text per session, of the image tokens
      per frame (else recomputed in every pass, the text embedding MLP included).
    - ``batched_cfg``: guidance's two branches in one batch-2 pass (else two batch-1 passes).
    - ``sdpa``: the scaled-dot-product-attention backend: ``auto`` lets PyTorch choose (on a GPU flash
      or memory-efficient attention where the inputs allow, bf16 without a mask); ``flash``,
      ``efficient``, ``cudnn`` or ``math`` that one alone: a kernel that cannot take the inputs raises
      rather than falling back without a word.
    - ``compile``: ``torch.compile`` each transformer block with this mode (``reduce-overhead`` adds
      CUDA graphs); ``none`` runs eagerly. It compiles the model's blocks in place, for every user of
      the model.
    - ``decode_stream``: on a GPU, the VAE decode on its own CUDA stream (:meth:`StreamSession.submit`).
    - ``attention_sink``: frames pinned in the cache (None: the pipeline config's).
    """

    ring_cache: bool = True
    rope_once: bool = True
    cross_cache: bool = True
    batched_cfg: bool = True
    sdpa: SdpaBackend = "auto"
    compile: CompileMode = "none"
    decode_stream: bool = True
    attention_sink: int | None = None

    @classmethod
    def reference(cls, **overrides: Any) -> StreamOptions:
        """Everything off: the reference path."""
        off = {"ring_cache": False, "rope_once": False, "cross_cache": False, "batched_cfg": False,
               "decode_stream": False}  # fmt: skip
        return cls(**{**off, **overrides})

    def sdpa_context(self) -> Any:
        if self.sdpa == "auto":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[self.sdpa]  # fmt: skip
        return sdpa_kernel([backend])


class FrameHandle:
    """The decoded frames of one :meth:`StreamSession.submit`: ready now (CPU), or once the decode
    stream's event fires (GPU). :meth:`result` waits and returns uint8 (n, H, W, 3)."""

    def __init__(self, frames: torch.Tensor, done: Any = None):
        self._frames, self._done = frames, done

    def result(self) -> np.ndarray:
        if self._done is None:
            return self._frames.numpy()
        self._done.synchronize()
        return self._frames.numpy().copy()  # the pinned buffer is freed with the handle


def compile_blocks(model: Any, mode: str) -> None:
    """``torch.compile`` each transformer block of ``model`` in place (once per model and mode)."""
    if mode == "none" or getattr(model, "_ardrag_compiled", None) == mode:
        return
    for block in model.blocks:
        block.compile(mode=None if mode == "default" else mode, dynamic=False)
    model._ardrag_compiled = mode


@dataclass
class _State:
    caches: list[dict[str, Any]]
    encoder: Any
    decoder: Any
    rng: Any
    frame: int
    written: list[tuple[int, tuple[torch.Tensor, ...]]]


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
        options: StreamOptions | None = None,
    ):
        self.pipe = pipe
        model = pipe.transformer
        options = options if options is not None else StreamOptions()
        if options.attention_sink is None:
            options = replace(options, attention_sink=int(getattr(pipe.config, "attention_sink", 0)))
        self.options = options
        compile_blocks(model, options.compile)
        self.text, self.negative = pipe.encode_prompt(prompt)
        self._reference = pipe.reference_pixels(reference)
        self.clip = pipe.encode_clip(reference)
        # The reference's VAE latent (normalised): encoded in one batch with frame 0's controls (step).
        self.ref_latent: torch.Tensor | None = None
        self.guided = self.negative is not None
        self.batched = self.guided and options.batched_cfg
        branches = 1 if self.batched or not self.guided else 2
        sink = options.attention_sink
        new = model.new_ring_cache if options.ring_cache else model.new_cache
        self.caches = [new(sink=sink) for _ in range(branches)]
        self.cross = (
            [CrossCache.empty(len(model.blocks)) for _ in range(branches)] if options.cross_cache else None
        )
        if self.batched:
            self.text_both = torch.cat([self.text, self.negative])
        self.encoder = StreamingVaeEncoder(pipe.vae)
        self.decoder = StreamingVaeDecoder(pipe.vae)
        self._decode_stream = None
        if options.decode_stream and pipe.device.type == "cuda":
            self._decode_stream = torch.cuda.Stream(device=pipe.device)
        self.noise = noise if noise is not None else FrameNoise(SampleRandom([seed], device=pipe.device))
        self.sampler = sampler if sampler is not None else FrameSampler.from_config(pipe.config)
        self.frame = 0  # latent frames done
        self.latent: torch.Tensor | None = None  # the last frame's clean latent (normalised)
        self._before_last: _State | None = None
        self._pending: tuple[torch.Tensor, ...] | None = None
        # the frames in the KV cache's view, as written: (write number, (clean latent, inputs, control)),
        # what a re-cache under a new prompt writes again
        self._written: list[tuple[int, tuple[Any, ...]]] = []

    @property
    def pixel_frames_next(self) -> int:
        """How many pixel frames the next step covers (and how many control rows it takes)."""
        return 1 if self.frame == 0 else 4

    def _velocity(self, x: torch.Tensor, t: float, inputs: tuple[torch.Tensor, ...], control: torch.Tensor,
                  write: bool) -> torch.Tensor:  # fmt: skip
        model, ts = self.pipe.transformer, torch.full((1,), float(t), device=x.device)  # no host copy
        mask, cond, clip = inputs
        x_in = torch.cat([x, mask, cond], 1)
        o = self.options
        fast = {"rope_once": o.rope_once} if o.ring_cache else {}
        cross = self.cross or [None, None]

        def run(branch: int, text: torch.Tensor, batch: int = 1) -> torch.Tensor:
            def rows(t: torch.Tensor) -> torch.Tensor:  # the batch-2 pass takes each input twice
                return t if batch == 1 else t.repeat(batch, *[1] * (t.ndim - 1))

            return model.forward_frame(
                rows(x_in), rows(ts), text, self.caches[branch], rows(clip), control=rows(control),
                write=write, cross=cross[branch], **fast,
            )  # fmt: skip

        with o.sdpa_context():
            if self.batched:
                v, v_neg = run(0, self.text_both, batch=2).chunk(2)
            else:
                v = run(0, self.text)
                if self.guided:
                    v_neg = run(1, self.negative)
        if self.guided:
            v = v_neg + self.pipe.config.guidance_scale * (v - v_neg)
        return v

    def _state(self) -> _State:
        return _State([c.snapshot() for c in self.caches], self.encoder.snapshot(), self.decoder.snapshot(),
                      self.noise.get_state(), self.frame, list(self._written))  # fmt: skip

    def _restore(self, state: _State) -> None:
        if self._decode_stream is not None:
            self._decode_stream.synchronize()
        for cache, snap in zip(self.caches, state.caches, strict=True):
            cache.restore(snap)
        self.encoder.restore(state.encoder)
        self.decoder.restore(state.decoder)
        self.noise.set_state(state.rng)
        self.frame = state.frame
        self._written = list(state.written)

    def step(
        self, tracks: np.ndarray, visible: np.ndarray | None = None, intensity: np.ndarray | None = None
    ) -> np.ndarray:
        """Generate the next latent frame under these controls ((n, N, 2) pixel points for its n pixel
        frames); returns its decoded frames, uint8 (n, H, W, 3)."""
        return self.submit(tracks, visible, intensity).result()

    @torch.no_grad()
    def submit(
        self, tracks: np.ndarray, visible: np.ndarray | None = None, intensity: np.ndarray | None = None
    ) -> FrameHandle:
        """:meth:`step` without waiting for the decode: on a GPU with ``decode_stream`` the VAE decodes
        on its own CUDA stream while the caller submits the next frame; ``.result()`` waits for it."""
        tracks, visible, intensity = self._check(tracks, visible, intensity)
        self.flush()
        self._before_last = self._state()
        for cross in self.cross or []:
            cross.new_frame()  # after the flush: the write pass used the last frame's image tokens
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
        self.frame += 1
        if self._decode_stream is None:
            return FrameHandle(to_uint8_frames(self.decoder.decode_next(x))[0].cpu())
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(x.device))  # the frame's denoising, on the main stream
        with torch.cuda.device(x.device), torch.cuda.stream(self._decode_stream):
            self._decode_stream.wait_event(ready)
            x.record_stream(self._decode_stream)
            frames = to_uint8_frames(self.decoder.decode_next(x))[0]
            host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._decode_stream)
        return FrameHandle(host, done)

    @torch.no_grad()
    def flush(self) -> None:
        """Write the last frame into the KV caches (the sampler's pass at ``write_timestep`` on the clean
        latent, with the frame's own inputs).
        :meth:`step` defers it to the start of the next step, so that its frames come out one transformer
        pass sooner; call it to have the caches complete now (an idle moment between user inputs)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._write(pending)

    def _write(self, frame: tuple[Any, ...]) -> None:
        """The cache write of one frame (clean latent, inputs, control), kept while it is in view."""
        x, inputs, control = frame
        self._velocity(x, self.sampler.write_timestep, inputs, control, write=True)
        cache = self.caches[0]
        self._written.append((cache.frames_written - 1, frame))
        view = set(cache.cached())
        self._written = [(n, f) for n, f in self._written if n in view]

    @torch.no_grad()
    def set_prompt(self, prompt: str, mode: PromptMode = "recache") -> None:
        """Generate from the next latent frame on under ``prompt``; the frames already returned stay.

        ``keep``: the KV cache stays as it is (the last frame is written under the prompt it was made
        with), so the frames in view keep the old prompt's keys and values. ``recache`` (LongLive's KV
        re-cache): the last frame is written first (:meth:`flush`), then the frames in the cache's view
        (the sink's and the rolling window's) are written again, in time order into fresh caches, under
        the new prompt, so that what follows attends to context encoded under it (the same frames whether
        or not :meth:`flush` ran before; training's rollouts switch the same way). A switch drops what
        :meth:`regenerate` would undo."""
        if mode not in PROMPT_MODES:
            raise ConfigError(f"prompt switch mode is {mode!r}; expected one of {list(PROMPT_MODES)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"the new prompt is {prompt!r}; expected a description of what follows")
        self.flush()
        model = self.pipe.transformer
        self.text, self.negative = self.pipe.encode_prompt(prompt)
        if self.batched:
            self.text_both = torch.cat([self.text, self.negative])
        if self.cross is not None:  # the text's keys and values are the new prompt's from now on
            self.cross = [CrossCache.empty(len(model.blocks)) for _ in self.cross]
        self._before_last = None
        if mode == "recache":
            frames, self._written = [f for _, f in self._written], []
            new = model.new_ring_cache if self.options.ring_cache else model.new_cache
            self.caches = [new(sink=self.options.attention_sink) for _ in self.caches]
            for frame in frames:
                for cross in self.cross or []:
                    cross.new_frame()  # each frame's own image tokens
                self._write(frame)

    def regenerate(
        self, tracks: np.ndarray, visible: np.ndarray | None = None, intensity: np.ndarray | None = None
    ) -> np.ndarray:
        """Redo the last step with other controls (the earlier frames stay as they were)."""
        if self._before_last is None:
            raise ConfigError("nothing to regenerate: call step() first (a prompt switch ends what can be "
                              "regenerated)")  # fmt: skip
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
