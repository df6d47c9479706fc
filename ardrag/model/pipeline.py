"""The AR-Drag components and how conditions become model inputs (paper Eq. 6).

Per latent frame m the transformer sees 36 input channels, as Wan 2.1 I2V does: the noisy latent (16),
a mask (4) and an image condition (16), plus the control latent through its own patch embedding:

- **Reference image**: at m = 0 its VAE latent fills the image condition (mask 1) and its CLIP image
  embedding joins the text in cross-attention. For m > 0 the paper puts Gaussian noise in its place:
  noise in the image-condition channels (mask 0) and a noise tensor of the CLIP embedding's shape.
- **Text**: UMT5 embeddings of the prompt, and of the shared negative prompt when guidance is on (then
  the student keeps two KV caches, one per branch).
- **Motion control**: the trajectory heatmaps (``ardrag.data.heatmap``) as a 3-channel video in [-1, 1],
  encoded by the same causal VAE: latent frame m covers pixel frames 4m-3 .. 4m (frame 0 alone).

Flow convention (diffusers' Wan): x_t = (1 - s) x_0 + s noise with s = t / 1000, and the model predicts
v = noise - x_0. A few-step sampler denoises to x_0 at each step and re-noises to the next level.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from ardrag.config import Config
from ardrag.data.buckets import Bucket, default_buckets
from ardrag.data.heatmap import HeatmapConfig, render_heatmaps
from ardrag.data.sample import negative_prompt
from ardrag.errors import ConfigError
from ardrag.model.device import cast_keeping_fp32, load_dtype, resolve_device, resolve_dtype
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.model.vae import normalize_latents
from ardrag.presets import TINY


class GenerationConfig(Config):
    height: int = Field(368, ge=16, description="model resolution (pixels); multiple of 16")
    width: int = Field(640, ge=16)
    timesteps: list[float] = Field(default_factory=lambda: [1000.0, 755.0, 522.0], min_length=1)
    write_timestep: float = Field(
        0.0, ge=0, le=1000, description="the clean frame's pass that fills the cache"
    )
    sampler: Literal["renoise", "ode"] = Field(
        "renoise",
        description="how a frame reaches the next level (ardrag.inference.sampler): re-noise the x0 "
        "prediction with fresh noise, as distillation and GRPO train it (the default), or the flow ODE's "
        "Euler step (for comparison)",
    )
    guidance_scale: float = Field(1.0, ge=1.0, description="> 1: classifier-free guidance, two caches")
    attention_sink: int = Field(
        0,
        ge=0,
        description="latent frames pinned in the KV cache beside the rolling window (StreamingLLM's "
        "attention sink): 1 keeps the first frame in view on streams of any length; 0: none, as trained",
    )
    negative_prompt: str = "default"
    heatmap: HeatmapConfig = HeatmapConfig()
    buckets: list[str] | None = Field(
        default_factory=lambda: [b.name for b in default_buckets()],
        description="the resolutions ('WxH') this model renders at: generation picks the one nearest the "
        "reference image's aspect ratio (ardrag.inference.generate.render_size). Default: the paper's five "
        "training buckets (datasets/buckets.yaml); None: only width x height",
    )

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        if not names:
            raise ValueError("an empty list; expected 'WxH' names, or null for width x height only")
        for name in names:
            b = Bucket.parse(name)
            if b.width % 16 or b.height % 16:
                raise ValueError(f"bucket {name!r}: expected width and height multiples of 16")
        return [Bucket.parse(n).name for n in names]

    def bucket_list(self) -> tuple[Bucket, ...]:
        """The buckets as :class:`Bucket`; ``(width x height,)`` when ``buckets`` is None."""
        if self.buckets is None:
            return (Bucket(self.width, self.height),)
        return tuple(Bucket.parse(n) for n in self.buckets)


TINY_BUCKETS = ["96x64", "80x80", "64x96"]  # landscape, square, portrait: the tiny preset's resolutions


class ARDragPipeline:
    """Tokenizer, text encoder, CLIP image encoder, VAE and the causal transformer, with the encoders
    of diffusers' Wan I2V pipeline reused for text and image."""

    def __init__(self, wan: Any, transformer: CausalARDragTransformer, config: GenerationConfig):
        if config.height % 16 or config.width % 16:
            raise ConfigError(
                f"resolution {config.width}x{config.height}: width and height must be multiples of 16"
            )
        self.wan = wan  # a WanImageToVideoPipeline holding the encoders and the VAE
        self.transformer = transformer.eval()
        self.config = config

    @property
    def vae(self) -> Any:
        return self.wan.vae

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
           ) -> ARDragPipeline:  # fmt: skip
        """Every component (text encoder, CLIP image encoder, VAE, Wan's transformer and the student) on
        ``device`` in ``dtype``, resolved by :mod:`ardrag.model.device` (None: CUDA when present, and
        bfloat16 there, float32 on a CPU); returns ``self``.

        Each model keeps the modules it lists in ``_keep_in_fp32_modules`` in float32 (Wan's norms, time
        embedding and modulation table), as ``from_pretrained(torch_dtype=...)`` loads them. The VAE
        takes ``dtype`` too: the student reads its latents directly, and the tiny and toy VAEs stream in
        bfloat16 on a CPU (tested); diffusers' Wan examples keep the VAE in float32 for quality, which
        ``pipe.vae.float()`` restores, the casts between it and the student then being the caller's."""
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        models = [m for m in self.wan.components.values() if isinstance(m, torch.nn.Module)]
        for model in [*models, self.transformer]:
            model.to(device=device)
            cast_keeping_fp32(model, dtype)
        return self

    def placed(self, device: torch.device | str | None, dtype: torch.dtype | str | None) -> ARDragPipeline:
        """:meth:`to` when either is given; ``self`` as built or loaded (the CPU, float32 or the saved
        dtype) when neither is."""
        return self.to(device, dtype) if device is not None or dtype is not None else self

    def at_size(self, width: int, height: int) -> ARDragPipeline:
        """A pipeline sharing this one's models that renders at ``width`` x ``height`` (multiples of 16;
        its config re-validated); ``self`` when that is already its size."""
        if (width, height) == (self.config.width, self.config.height):
            return self
        return self.with_config(width=width, height=height)

    def with_config(self, **fields: Any) -> ARDragPipeline:
        """A pipeline sharing this one's models with these generation config fields replaced (the config
        re-validated)."""
        return ARDragPipeline(
            self.wan, self.transformer, GenerationConfig(**{**self.config.model_dump(), **fields})
        )

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        name: str = TINY,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        **overrides: Any,
    ) -> ARDragPipeline:
        """Random weights at toy size, offline: the components of model preset ``name``
        (:mod:`ardrag.model.tiny`); default resolution 96x64, rendering at :data:`TINY_BUCKETS`
        (landscape, square, portrait) unless ``overrides`` set a size or ``buckets`` (a size alone: that
        size only). The control embedding is random too, as after training: a zero one would make the
        controls inert. ``device``, ``dtype``: see :meth:`to` (the weights are drawn on the CPU in float32
        first, so a seed gives the same model everywhere)."""
        from ardrag.model.tiny import build_tiny_pipeline

        wan = build_tiny_pipeline(seed, name)
        sized = "width" in overrides or "height" in overrides
        defaults = {"height": 64, "width": 96, "buckets": None if sized else TINY_BUCKETS}
        config = GenerationConfig(**{**defaults, **overrides})
        student = CausalARDragTransformer.from_wan(wan.transformer)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + 1)
            torch.nn.init.normal_(student.control_embedding.weight, std=0.1)
        pipe = cls(wan, student, config)
        return pipe.placed(device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        wan_id_or_path: str,
        checkpoint: str | None = None,
        torch_dtype: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        **overrides: Any,
    ) -> ARDragPipeline:
        """Encoders and VAE from a diffusers Wan I2V model (hub id or folder); the transformer from an
        ardrag checkpoint folder, or from the Wan transformer with zero control weights. A model folder
        (:mod:`ardrag.model.model_folder`, e.g. the shipped toy model's) brings its own trained student
        and generation config instead (``overrides`` on top). ``dtype`` (``torch_dtype`` is its older
        name; give one) and ``device``: see :meth:`to`; both None leave the weights as loaded, on the
        CPU."""
        from diffusers import WanImageToVideoPipeline

        from ardrag.model.model_folder import is_model_folder, load_model_folder

        dtype, load = load_dtype(torch_dtype, dtype, device)
        if is_model_folder(wan_id_or_path):
            return load_model_folder(wan_id_or_path, checkpoint, device=device, dtype=dtype, **overrides)

        wan = WanImageToVideoPipeline.from_pretrained(wan_id_or_path, **load)
        if checkpoint is not None:
            student = CausalARDragTransformer.from_pretrained(checkpoint, **load)
        else:
            student = CausalARDragTransformer.from_wan(wan.transformer)
        pipe = cls(wan, student, GenerationConfig(**overrides))
        return pipe.placed(device, dtype)

    # -- conditions -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(
        self, prompt: str, guided: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UMT5 embeddings (1, 512, D) of the prompt, and of the negative prompt when guided (by default
        when the config's guidance is on)."""
        guided = self.config.guidance_scale > 1 if guided is None else guided
        prompts = [prompt, negative_prompt(self.config.negative_prompt)] if guided else [prompt]
        embeds = encode_text(self.wan.tokenizer, self.wan.text_encoder, prompts, self.device)
        return embeds[:1], embeds[1:] if guided else None

    @torch.no_grad()
    def encode_reference(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE latent (1, 16, 1, h, w), normalised, and CLIP embedding of an RGB uint8 image at the
        model's resolution."""
        pixels = self.reference_pixels(image)
        clip = self.encode_clip(image)
        latent = self.vae.encode(pixels).latent_dist.mode()
        return self.normalize(latent), clip

    def reference_pixels(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 image at the model's resolution as a (1, 3, 1, H, W) video in [-1, 1] for the VAE."""
        h, w = self.config.height, self.config.width
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (h, w, 3):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ConfigError(f"reference image is {got}; expected uint8 ({h}, {w}, 3)")
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1
        return pixels.to(self.device, self.vae.dtype)

    @torch.no_grad()
    def encode_clip(self, image: np.ndarray) -> torch.Tensor:
        """CLIP image embedding (1, 257, 1280 for Wan I2V) of an RGB uint8 image."""
        from PIL import Image

        return self.wan.encode_image(Image.fromarray(image), self.device)

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        return normalize_latents(self.vae, latent)

    def control_pixels(self, tracks: np.ndarray, visible: np.ndarray, intensity: np.ndarray) -> torch.Tensor:
        """Heatmaps of (n, N, 2) points as a (1, 3, n, H, W) video in [-1, 1] for the VAE."""
        maps = render_heatmaps(
            tracks, visible, intensity, self.config.height, self.config.width, self.config.heatmap
        )
        maps = torch.from_numpy(maps).to(self.device)  # one channel crosses to the device, not three
        return (maps * 2 - 1)[None, None].expand(1, 3, -1, -1, -1).to(self.vae.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device


@torch.no_grad()
def encode_text(
    tokenizer: Any, text_encoder: Any, prompts: list[str], device: torch.device, max_length: int = 512
) -> torch.Tensor:
    """What diffusers' Wan pipelines compute for ``prompts`` ((B, max_length, D): each prompt's token
    embeddings, then zeros), with the encoder run over the longest prompt's tokens instead of all
    ``max_length``. Under the attention mask padding tokens change no real token's embedding, and Wan
    zeroes their rows anyway; a 20-token prompt then costs 1/25 of the encoder's work (the largest part
    of a tiny session's start-up; on the real UMT5-XXL, ~5 TFLOPs less per prompt)."""
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

    tokens = tokenizer(
        [prompt_clean(p) for p in prompts], padding="longest", max_length=max_length, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )  # fmt: skip
    mask = tokens.attention_mask.to(device)
    hidden = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
    out = hidden.new_zeros(len(prompts), max_length, hidden.shape[-1])
    out[:, : hidden.shape[1]] = hidden * mask[..., None].to(hidden.dtype)
    return out
