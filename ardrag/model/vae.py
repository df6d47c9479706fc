"""Streaming decode for the Wan VAE: each latent frame becomes pixels as soon as the causal model makes it.

diffusers' ``AutoencoderKLWan.decode()`` clears its temporal feature cache at the start and end of every
call, so decoding a stream one latent frame per call restarts the causal convolutions each time (seams).
``StreamingVaeDecoder`` runs the same decoder, one latent frame per call exactly as ``_decode`` loops over
them, with a feature cache it owns and keeps between calls; the frames it returns, concatenated, are those
``decode()`` gives for the whole latent video (up to float32 rounding, see below). ``snapshot()`` and
``restore()`` let the newest frame be decoded again with other content ("regenerate the last frame").

Both streaming classes run the VAE's modules with two cheaper, equivalent computations (``_fast_paths``),
swapped in for the duration of each call only, so ``vae.encode()``/``vae.decode()`` stay diffusers' own:

- a causal convolution whose input is one frame behind its ``k - 1`` zero frames of causal padding (every
  first chunk) is the 2-D convolution of that frame with the kernel's last temporal tap: the other taps
  multiply zeros. The first frame's 3x3x3 convolutions do a third of the work, on no padded copy.
- on CPU, the RMS norm's L2 norm over channels is computed as ``sqrt(sum(x * x))`` and its scale folded
  into gamma: ``F.normalize``'s vector-norm kernel over the channel dimension is slow on CPU. One norm,
  one thread: 14x faster at 8 channels of 64x96 (the tiny preset), 1.8x at 96 channels of 368x640.

Both change only the order of float32 rounding (the tests bound streaming against whole-video results at
1e-5; measured < 1e-6 on the tiny VAE).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ardrag.errors import ConfigError, describe

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan

CacheEntry = (
    torch.Tensor | str | None
)  # diffusers stores the string "Rep" for a temporal upsampler's first frame


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE config's ``latents_mean`` and ``1 / latents_std``, shaped and placed like ``like``; made
    once per device and dtype and kept on the VAE (a host-to-device copy per frame would make the host
    wait for the GPU)."""
    key = (str(like.device), like.dtype)
    kept = vae.__dict__.setdefault("_ardrag_latent_stats", {})
    if key not in kept:
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
        kept[key] = (mean, inv_std)
    return kept[key]


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """Decoded pixels (B, 3, T, H, W) in [-1, 1] as uint8 frames (B, T, H, W, 3), rounded to nearest."""
    frames = ((video.permute(0, 2, 3, 4, 1).float() + 1) * 127.5).round().clamp(0, 255)
    return frames.to(torch.uint8)


def normalize_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """What the transformer sees from what the VAE encodes (diffusers' ``(latent - mean) * (1 / std)``)."""
    mean, inv_std = _latent_stats(vae, latents)
    return (latents - mean) * inv_std


def denormalize_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """What the VAE decodes from what the transformer makes, with the exact arithmetic of diffusers' Wan
    pipelines (``latents / (1 / std) + mean``), so results match theirs bit for bit."""
    mean, inv_std = _latent_stats(vae, latents)
    return latents / inv_std + mean


def _causal_conv(conv: Any, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """``WanCausalConv3d.forward``, as a 2-D convolution when the input is one frame after zero padding
    only: then only the kernel's last temporal tap sees data, and the output is that one frame."""
    kt, p = conv.kernel_size[0], conv._padding
    if (
        cache_x is None
        and x.shape[2] == 1
        and p[4] == kt - 1
        and conv.dilation[0] == 1
        and conv.padding_mode == "zeros"
        and p[0] == p[1]
        and p[2] == p[3]
    ):
        out = F.conv2d(
            x[:, :, 0], conv.weight[:, :, -1], conv.bias, conv.stride[1:], (p[2], p[0]), conv.dilation[1:],
            conv.groups,
        )  # fmt: skip
        return out.unsqueeze(2)
    return type(conv).forward(conv, x, cache_x)


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """``WanRMS_norm.forward`` with the L2 norm as ``sqrt(sum(x * x))`` on CPU (see the module docstring)."""
    if x.device.type != "cpu":
        return type(norm).forward(norm, x)
    upcast = x.dtype in (torch.float16, torch.bfloat16) or any(
        t in str(x.dtype) for t in ("float4_", "float8_")
    )
    xf = x.float() if upcast else x
    dim = 1 if norm.channel_first else -1
    denom = torch.sqrt((xf * xf).sum(dim, keepdim=True)).clamp_min(1e-12)  # F.normalize's eps
    out = (xf / denom).to(x.dtype) * (norm.scale * norm.gamma)  # the scale folded into gamma: 1 pass less
    bias = norm.bias
    return out if isinstance(bias, float) and bias == 0.0 else out + bias  # bias=False: "+ 0.0", a copy


def _fast_modules(module: torch.nn.Module) -> list[tuple[torch.nn.Module, Any]]:
    """(module, replacement forward) for the causal convolutions and RMS norms of an encoder or decoder."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    fast = {WanCausalConv3d: _causal_conv, WanRMS_norm: _rms_norm}
    return [(m, functools.partial(fast[type(m)], m)) for m in module.modules() if type(m) in fast]


@contextlib.contextmanager
def _fast_paths(modules: list[tuple[torch.nn.Module, Any]]) -> Iterator[None]:
    """Run ``modules`` with their replacement forwards for the duration of one streaming call. A module
    whose ``forward`` is already an instance attribute (a hook, e.g. accelerate's offload) is left alone."""
    swapped = []
    try:
        for module, forward in modules:
            if "forward" not in module.__dict__:
                module.forward = forward
                swapped.append(module)
        yield
    finally:
        for module in swapped:
            del module.forward


@contextlib.contextmanager
def fast_vae(vae: AutoencoderKLWan) -> Iterator[None]:
    """Whole-video ``vae.encode()`` / ``vae.decode()`` with the same cheaper computations the streaming
    classes use (the teacher's sampler runs in it, so both sides of a comparison get the same VAE code)."""
    with _fast_paths(_fast_modules(vae.encoder) + _fast_modules(vae.decoder)):
        yield


@dataclass(frozen=True)
class DecoderState:
    """A copy of a stream's state: the decoder's feature cache, the frame count and the stream's size."""

    feat_cache: tuple[CacheEntry, ...]
    frames_decoded: int
    stream_shape: tuple[int, int, int] | None  # (batch, height, width) of the latents, fixed by frame 0

    @property
    def nbytes(self) -> int:
        """Size of the cached feature maps the state refers to (shared with the stream, not copied)."""
        return sum(t.nbytes for t in self.feat_cache if isinstance(t, torch.Tensor))


class StreamingVaeDecoder:
    """Decodes a latent video one frame per call, keeping the VAE's temporal feature cache across calls.

    ``decode_next`` takes *normalised* latents, as the transformer produces them, of shape
    ``(batch, z_dim, 1, h, w)``, and de-normalises them with the VAE config's ``latents_mean`` and
    ``latents_std``. It returns pixels in [-1, 1] of shape ``(batch, 3, n, 8h, 8w)``: n = 1 for the first
    frame, 4 for every later one (the Wan 2.1 VAE's temporal factor). Inference only: it runs under
    ``torch.no_grad()``, since cached features would otherwise keep every earlier frame's graph alive.

    The cache (one entry per causal convolution of the decoder, each the last two time steps of that
    convolution's input) belongs to this object, not to the VAE: ``vae.decode()`` calls in between, or
    several streams over one VAE, do not disturb it. Spatial tiling (``vae.enable_tiling()``) is not
    applied; the whole frame is decoded at once.
    """

    def __init__(self, vae: AutoencoderKLWan):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        if getattr(vae, "decoder", None) is None or not hasattr(vae, "post_quant_conv"):
            raise ConfigError(f"vae is {describe(vae)}; expected a diffusers AutoencoderKLWan with a decoder")
        if getattr(vae, "use_tiling", False):
            warnings.warn(
                "vae.use_tiling is ignored by StreamingVaeDecoder: frames decode untiled", stacklevel=2
            )
        self.vae = vae
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self._fast = _fast_modules(vae.decoder)
        self.reset()

    @property
    def frames_decoded(self) -> int:
        """Latent frames decoded since the last ``reset()`` (pixel frames: ``1 + 4 * (n - 1)``)."""
        return self._frames_decoded

    def reset(self) -> None:
        """Start a new video: the next frame is decoded as a first frame."""
        self._feat_cache: list[CacheEntry] = [None] * self._num_convs
        self._frames_decoded = 0
        self._stream_shape: tuple[int, int, int] | None = None

    def snapshot(self) -> DecoderState:
        """The stream's state, for ``restore()``. diffusers replaces cache entries rather than writing
        into them, so the state shares the tensors (no copy, no memory): a deep copy would cost one more
        cache, 2.1 GiB for the Wan 2.1 VAE at 368x640 in float32. The rollback tests would catch a
        diffusers version that starts writing in place.
        """
        return DecoderState(tuple(self._feat_cache), self._frames_decoded, self._stream_shape)

    def restore(self, state: DecoderState) -> None:
        """Go back to ``state`` as if the calls since ``snapshot()`` never happened; a state can be
        restored any number of times."""
        if len(state.feat_cache) != self._num_convs:
            raise ConfigError(
                f"state has {len(state.feat_cache)} cache entries; expected {self._num_convs} "
                "(a snapshot of a stream over a different VAE?)"
            )
        self._feat_cache = list(state.feat_cache)
        self._frames_decoded = state.frames_decoded
        self._stream_shape = state.stream_shape

    def _check_latent(self, latent: torch.Tensor) -> None:
        z_dim = self.vae.config.z_dim
        if not isinstance(latent, torch.Tensor) or latent.ndim != 5:
            raise ValueError(f"latent is {describe(latent)}; expected a 5-D tensor (batch, {z_dim}, 1, h, w)")
        batch, channels, frames, height, width = latent.shape
        if channels != z_dim:
            raise ValueError(
                f"latent has {channels} channels (shape {tuple(latent.shape)}); expected {z_dim}"
            )
        if frames != 1:
            raise ValueError(
                f"latent has {frames} frames (shape {tuple(latent.shape)}); expected 1: decode_next takes "
                "one latent frame per call"
            )
        if self._stream_shape is not None and (batch, height, width) != self._stream_shape:
            raise ValueError(
                f"latent has (batch, h, w) = {(batch, height, width)}; expected {self._stream_shape} as "
                "for the stream's first frame (reset() to start a stream of another size)"
            )

    @torch.no_grad()
    def decode_next(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode the next latent frame (normalised, ``(batch, z_dim, 1, h, w)``) into its pixel frames."""
        self._check_latent(latent)
        hook = getattr(self.vae, "_hf_hook", None)  # CPU offload moves the VAE here, as for decode()
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(self.vae)
        z = denormalize_latents(self.vae, latent.to(self.vae.device, self.vae.dtype))
        # diffusers replaces cache entries rather than writing into them, so working on a shallow copy
        # and keeping it only on success leaves the stream intact if the decoder raises.
        cache = list(self._feat_cache)
        first = self._frames_decoded == 0
        with _fast_paths(self._fast):
            out = self.vae.decoder(
                self.vae.post_quant_conv(z), feat_cache=cache, feat_idx=[0], first_chunk=first
            )
        if self.vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=self.vae.config.patch_size)
        self._feat_cache = cache
        self._frames_decoded += 1
        self._stream_shape = (latent.shape[0], latent.shape[3], latent.shape[4])
        return out.clamp(-1.0, 1.0)


class StreamingVaeEncoder:
    """Encodes a pixel video chunk by chunk (1 frame, then 4 per call) into one latent frame per call,
    keeping the encoder's temporal feature cache across calls: the latents ``vae.encode()`` gives for
    the whole video, up to float32 rounding (the mode of the posterior, not normalised). Inference
    only, like the decoder."""

    def __init__(self, vae: AutoencoderKLWan):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        if getattr(vae, "encoder", None) is None or not hasattr(vae, "quant_conv"):
            raise ConfigError(
                f"vae is {describe(vae)}; expected a diffusers AutoencoderKLWan with an encoder"
            )
        self.vae = vae
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.encoder.modules())
        self._fast = _fast_modules(vae.encoder)
        self.reset()

    @property
    def frames_encoded(self) -> int:
        return self._frames

    def reset(self) -> None:
        self._feat_cache: list[CacheEntry] = [None] * self._num_convs
        self._frames = 0

    def snapshot(self) -> DecoderState:
        return DecoderState(tuple(self._feat_cache), self._frames, None)

    def restore(self, state: DecoderState) -> None:
        if len(state.feat_cache) != self._num_convs:
            raise ConfigError(f"state has {len(state.feat_cache)} cache entries; expected {self._num_convs}")
        self._feat_cache, self._frames = list(state.feat_cache), state.frames_decoded

    @torch.no_grad()
    def encode_next(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (batch, 3, n, H, W) in [-1, 1], n = 1 for the first call and 4 after, to the latent
        frame (batch, z_dim, 1, H/8, W/8) they make."""
        want = 1 if self._frames == 0 else 4
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels are {describe(pixels)}; expected a (batch, 3, {want}, H, W) tensor")
        if pixels.shape[2] != want:
            raise ValueError(
                f"pixels have {pixels.shape[2]} frames; expected {want} (the first latent frame covers 1 "
                "pixel frame, every later one 4)"
            )
        x = pixels.to(self.vae.device, self.vae.dtype)
        if self.vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

            x = patchify(x, patch_size=self.vae.config.patch_size)
        cache = list(self._feat_cache)
        with _fast_paths(self._fast):
            out = self.vae.quant_conv(self.vae.encoder(x, feat_cache=cache, feat_idx=[0]))
        self._feat_cache, self._frames = cache, self._frames + 1
        return out[:, : self.vae.config.z_dim]

    def select(self, rows: slice) -> None:
        """Keep only these batch rows of the stream: after a first call that encoded other first frames
        alongside (``StreamSession`` encodes the reference image with frame 0's controls), the stream goes
        on as if only these rows had been encoded. The cache entries become views of the batch's; every
        later call replaces them all."""
        self._feat_cache = [t[rows] if isinstance(t, torch.Tensor) else t for t in self._feat_cache]
