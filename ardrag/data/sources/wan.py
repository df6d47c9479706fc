"""Synthetic clips from Wan 2.1 image-to-video: a reference image and a prompt in, a bucketed clip out.

Each input is one job: an image, a prompt, a seed and optionally a bucket and a negative prompt template.
Jobs come from a jobs file (YAML or JSON list) or from an images folder plus a prompts file (file name ->
prompt; ``prompts.yaml`` in the folder by default; the seed then derives from the content). The source
conditions Wan on the image resized and centre-cropped to the job's bucket (nearest to the image when
not given), so the clip starts at the reference frame and no padding reaches the training data.

``preset`` names a model preset built in memory by :mod:`ardrag.model.tiny` (the same diffusers pipeline
class from a small config with random weights): offline, seeded, about a second per clip on CPU, and it
makes noise.
Decision on resolution: every config renders at the bucket size divided by ``render_downscale``
(rounded to a multiple of 16, which Wan needs) and resizes the frames up to the bucket with
:class:`~ardrag.data.buckets.ResizeCrop`. The tiny preset sets ``render_downscale: 8`` (640x368 renders
at 80x48) because the tiny pipeline takes ~12 s per 9-frame clip at 640x368 on CPU; the real model
uses 1 (no resize). Clips therefore always come at one of the buckets, so curation shards them like any
other source's.

Dtypes follow the 14B model card: transformer and text encoder in ``dtype`` (bfloat16 by default), the
image encoder and VAE in float32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from ardrag.config import Config, build_config
from ardrag.console import route_library_logs
from ardrag.data.buckets import Bucket, ResizeCrop, nearest_bucket, resolve_buckets
from ardrag.data.clip import Clip, InputRejected, SourceInput, file_digest, safe_id
from ardrag.data.sample import KEY_PATTERN, SourceInfo, negative_prompt
from ardrag.errors import ConfigError
from ardrag.model import TEXT_TOKENS
from ardrag.model.tiny import build_tiny_pipeline
from ardrag.presets import DEFAULT_WAN, RandomModelPreset, WanModel

if TYPE_CHECKING:
    from diffusers import WanImageToVideoPipeline

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PROMPTS_FILES = ("prompts.yaml", "prompts.yml", "prompts.json")  # looked for in an images folder
INSTALL_HINT = (
    "pip install 'ardrag[models]' (diffusers, transformers, accelerate, safetensors, ftfy, tokenizers)"
)


def _check_bucket(name: str | None) -> str | None:
    if name is not None:
        Bucket.parse(name)  # a ConfigError is a ValueError: build_config reports field and value
    return name


def _check_template(name: str | None) -> str | None:
    if name is not None and not KEY_PATTERN.fullmatch(name):
        raise ValueError(
            "expected the name of a template in datasets/prompts/negative/ (letters, digits, -, _)"
        )
    return name


class WanJob(Config):
    """One synthesis job; ``image`` is relative to the jobs file's folder unless absolute."""

    image: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    seed: int = Field(ge=0, lt=2**63)
    bucket: str | None = None  # "WxH"; None: the bucket nearest to the image
    negative_prompt: str | None = None  # template name; None: the config's

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, name: str | None) -> str | None:
        return _check_bucket(name)

    @field_validator("negative_prompt")
    @classmethod
    def _template(cls, name: str | None) -> str | None:
        return _check_template(name)


class WanConfig(Config):
    """Where jobs come from and how Wan renders them; the defaults are the real 14B I2V model's."""

    model: WanModel = DEFAULT_WAN  # hub id, model preset or folder of a diffusers WanImageToVideoPipeline
    preset: RandomModelPreset = None  # a random-weight model preset, built in memory (tests, CPU)
    jobs: str | None = None  # YAML/JSON list of jobs (see WanJob)
    images: str | None = None  # folder of images ...
    prompts: str | None = None  # ... and a YAML/JSON mapping: file name -> prompt; None: prompts.yaml there
    buckets: list[str] = Field(default_factory=list)  # "WxH" names; empty: all of datasets/buckets.yaml
    num_frames: int = Field(81, ge=5, le=1025)
    fps: float = Field(16.0, gt=0, le=240)
    num_inference_steps: int = Field(40, ge=1, le=1000)
    guidance_scale: float = Field(5.0, ge=0)
    negative_prompt: str = "default"  # template name in datasets/prompts/negative/
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # transformer and text encoder
    device: Literal["auto", "cuda", "cpu"] = "auto"
    cpu_offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False
    max_sequence_length: int = TEXT_TOKENS
    render_downscale: int = Field(1, ge=1, le=64)  # render at bucket / this, then resize up to the bucket
    progress_bar: bool = False  # diffusers' per-step bar on stderr

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, names: list[str]) -> list[str]:
        return [_check_bucket(n) or n for n in names]

    @field_validator("negative_prompt")
    @classmethod
    def _template(cls, name: str) -> str:
        return _check_template(name) or name

    @field_validator("num_frames")
    @classmethod
    def _frames(cls, n: int) -> int:
        if (n - 1) % 4:
            lo = (n - 1) // 4 * 4 + 1
            raise ValueError(f"Wan's VAE needs 4k+1 frames (4x temporal compression); use {lo} or {lo + 4}")
        return n

    @field_validator("max_sequence_length")
    @classmethod
    def _text_tokens(cls, n: int) -> int:
        if n != TEXT_TOKENS:
            raise ValueError(
                f"must be {TEXT_TOKENS}: diffusers' Wan I2V attention splits image from text tokens "
                f"assuming {TEXT_TOKENS} text tokens, so another length silently mixes them"
            )
        return n

    @model_validator(mode="after")
    def _inputs(self) -> WanConfig:
        if self.jobs is not None and (self.images is not None or self.prompts is not None):
            raise ValueError("give either jobs or images (+ prompts), not both")
        if self.jobs is None and self.images is None:
            raise ValueError("no inputs: set jobs (a jobs file) or images (a folder, with a prompts file)")
        return self

    @property
    def model_key(self) -> str:
        """What identifies the generator in input ids and provenance."""
        return self.preset or self.model


def cast_weights(model: Any, dtype: Any) -> None:
    """Cast floating weights to ``dtype``, keeping in float32 what ``from_pretrained(dtype=...)`` keeps.

    A plain ``.to(bfloat16)`` would also cast the norms and time embeddings that diffusers' Wan keeps in
    float32 (``_keep_in_fp32_modules``); transformers keeps only ``_keep_in_fp32_modules_strict`` at bf16.
    """
    import torch
    from diffusers import ModelMixin

    keep: tuple[str, ...] = ()
    if dtype != torch.float32:
        attr = "_keep_in_fp32_modules" if isinstance(model, ModelMixin) else "_keep_in_fp32_modules_strict"
        keep = tuple(getattr(model, attr, None) or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        target = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        if tensor.is_floating_point() and tensor.dtype != target:
            tensor.data = tensor.data.to(target)


def render_size(bucket: Bucket, downscale: int) -> tuple[int, int]:
    """(width, height) Wan renders at for ``bucket``: bucket / downscale, to a multiple of 16."""
    width, height = (max(16, round(v / downscale / 16) * 16) for v in (bucket.width, bucket.height))
    return width, height


def _load_list_or_map(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} file {str(path)!r} is not valid YAML or JSON: {err}") from None


def read_jobs(path: str | os.PathLike[str]) -> list[WanJob]:
    """Parse a jobs file; image paths become absolute (relative ones are taken from the file's folder)."""
    path = Path(path)
    data = _load_list_or_map(path, "jobs")
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"jobs file {str(path)!r} holds {type(data).__name__}; expected a non-empty list of "
            "{image, prompt, seed, bucket?, negative_prompt?}"
        )
    jobs = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: jobs[{i}] = {entry!r}; expected a mapping with image, prompt, seed")
        job = build_config(WanJob, entry, source=f"{path}: jobs[{i}]")
        image = Path(job.image).expanduser()
        jobs.append(
            job.model_copy(update={"image": str(image if image.is_absolute() else path.parent / image)})
        )
    return jobs


def folder_jobs(
    images: str | os.PathLike[str], prompts: str | os.PathLike[str] | None = None
) -> list[WanJob]:
    """One job per entry of the prompts file; the seed derives from the image bytes and the prompt.

    ``prompts`` defaults to ``prompts.yaml`` (or ``.yml``, ``.json``) inside the images folder.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise ConfigError(f"images folder {str(folder)!r} does not exist")
    if prompts is None:
        found = [folder / n for n in PROMPTS_FILES if (folder / n).is_file()]
        if not found:
            raise ConfigError(
                f"images folder {str(folder)!r} has no {' / '.join(PROMPTS_FILES)}; set prompts to a file "
                "mapping image file name: prompt"
            )
        prompts = found[0]
    prompts = Path(prompts)
    mapping = _load_list_or_map(prompts, "prompts")
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(
            f"prompts file {str(prompts)!r}: expected a non-empty mapping of image file name: prompt"
        )
    jobs = []
    for name, prompt in mapping.items():
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{prompts}: prompt for {name!r} is {prompt!r}; expected non-empty text")
        image = folder / str(name)
        try:
            content = file_digest(image)
        except OSError:
            content = f"unreadable:{name}"  # rejected with its reason in clips()
        seed = int(hashlib.sha256(f"{content}\n{prompt}".encode()).hexdigest()[:15], 16)
        jobs.append(WanJob(image=str(image), prompt=prompt, seed=seed))
    unprompted = [
        p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in mapping
    ]
    if unprompted:
        logger.warning(
            "%d images in %s have no prompt in %s and are ignored (e.g. %s)",
            len(unprompted),
            folder,
            prompts,
            sorted(unprompted)[0],
        )
    return jobs


def _require_models() -> None:
    """Fail at construction, with the install hint, rather than in a worker after hours of queueing."""
    needed = ("torch", "diffusers", "transformers", "tokenizers", "ftfy", "accelerate")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]  # cheap: imports nothing
    if missing:
        raise ImportError(f"the wan source needs {', '.join(missing)}: {INSTALL_HINT}")


class WanSource:
    """Image-to-video synthesis with Wan 2.1: one input per job, one clip per input."""

    name = "wan"
    thread_safe = False  # one diffusers pipeline per process keeps per-call state
    # Fields that say where the inputs are (each job digests its own content) or how fast it runs,
    # not what the clips become: left out of curation's settings digest.
    input_fields = ("jobs", "images", "prompts", "device", "cpu_offload", "progress_bar")

    def __init__(self, config: WanConfig):
        _require_models()
        self.config = config
        self.buckets = resolve_buckets(config.buckets)
        self.pipe: WanImageToVideoPipeline | None = None
        self.device: str | None = None
        if config.preset is not None and config.model != DEFAULT_WAN:
            logger.warning(
                "model=%r is ignored: preset %r builds a random-weight pipeline", config.model, config.preset
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pipe": None, "device": None}  # workers call setup() themselves

    @property
    def uses_gpu(self) -> bool:
        """Whether synthesis runs on CUDA (the flow then takes a slot of its GPU concurrency limit)."""
        if self.device is not None:
            return self.device.startswith("cuda")
        return self.config.device == "cuda"

    # -- inputs ---------------------------------------------------------------------------------
    def jobs(self) -> list[WanJob]:
        c = self.config
        return read_jobs(c.jobs) if c.jobs is not None else folder_jobs(c.images or "", c.prompts)

    def inputs(self) -> list[SourceInput]:
        """One input per job, keyed by everything that determines the clip (not by file names)."""
        c = self.config
        out: dict[str, SourceInput] = {}
        for job in self.jobs():
            try:
                image_sha: str | None = file_digest(job.image)
            except OSError:
                image_sha = None  # rejected with its reason in clips()
            template = job.negative_prompt or c.negative_prompt
            key = {
                "image_sha256": image_sha,
                "image": None if image_sha else job.image,
                "prompt": job.prompt,
                "negative_prompt": negative_prompt(template),
                "seed": job.seed,
                "bucket": job.bucket or "auto:" + ",".join(b.name for b in self.buckets),
                "model": c.model_key,
                "num_frames": c.num_frames,
                "fps": c.fps,
                "steps": c.num_inference_steps,
                "guidance": c.guidance_scale,
                "render_downscale": c.render_downscale,
            }
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            item = SourceInput(
                id=safe_id(Path(job.image).stem, digest),
                content_hash=digest,
                kind="wan",
                description=f"{Path(job.image).name}: {job.prompt[:80]}",
                params={**job.to_dict(), "negative_prompt": template, "image_sha256": image_sha},
            )
            if item.id in out:
                logger.warning("duplicate wan job %s (%s) is listed once", item.id, item.description)
                continue
            out[item.id] = item
        return list(out.values())

    # -- model ----------------------------------------------------------------------------------
    def setup(self, pipeline: WanImageToVideoPipeline | None = None) -> None:
        """Build or load the pipeline, set its dtypes and place it (idempotent).

        ``pipeline``: use this one instead (built elsewhere, e.g. at the 14B shape by the benchmark).
        """
        if self.pipe is not None and pipeline is None:
            return
        import torch

        c = self.config
        dtype = getattr(torch, c.dtype)
        t0 = time.perf_counter()
        if pipeline is not None:
            pipe = pipeline
        elif c.preset is not None:
            pipe = build_tiny_pipeline(seed=0, name=c.preset)
        else:
            pipe = _load_pipeline(c.model, dtype)
        # the model card's dtypes (no-ops after from_pretrained, which already loads them so)
        cast_weights(pipe.transformer, dtype)
        cast_weights(pipe.text_encoder, dtype)
        cast_weights(pipe.image_encoder, torch.float32)
        cast_weights(pipe.vae, torch.float32)
        device = c.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but torch sees no CUDA device; use device: cpu or auto")
        if c.cpu_offload != "none" and device == "cpu":
            logger.warning("cpu_offload=%r is ignored on device cpu", c.cpu_offload)
        if c.cpu_offload == "model" and device != "cpu":
            pipe.enable_model_cpu_offload(device=device)
        elif c.cpu_offload == "sequential" and device != "cpu":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        if c.vae_tiling:
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=not c.progress_bar, leave=False)
        self.pipe, self.device = pipe, device
        logger.info(
            "wan pipeline %s ready on %s (%s, offload %s) in %.1f s",
            c.model_key,
            device,
            c.dtype,
            c.cpu_offload,
            time.perf_counter() - t0,
        )

    # -- work -----------------------------------------------------------------------------------
    def clips(self, item: SourceInput) -> Iterator[Clip]:
        """Render the job's clip (calls :meth:`setup` if it has not run)."""
        import torch
        from PIL import Image

        c, job = self.config, item.params
        image, image_sha = _read_image(job["image"])
        if image_sha != job.get("image_sha256"):
            raise InputRejected(
                "image-changed", f"{job['image']}: its content changed since the inputs were listed"
            )
        h, w = image.shape[:2]
        bucket = Bucket.parse(job["bucket"]) if job.get("bucket") else nearest_bucket(w, h, self.buckets)
        reference = ResizeCrop.fit(w, h, bucket).apply_frames(image)
        rw, rh = render_size(bucket, c.render_downscale)
        if (rw, rh) != (bucket.width, bucket.height):
            reference = ResizeCrop.fit(bucket.width, bucket.height, Bucket(rw, rh)).apply_frames(reference)

        self.setup()
        assert self.pipe is not None
        t0 = time.perf_counter()
        out = self.pipe(
            image=Image.fromarray(reference),
            prompt=job["prompt"],
            negative_prompt=negative_prompt(job["negative_prompt"]),
            height=rh,
            width=rw,
            num_frames=c.num_frames,
            num_inference_steps=c.num_inference_steps,
            guidance_scale=c.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(job["seed"]),  # same noise on any device
            output_type="np",
            max_sequence_length=c.max_sequence_length,
        )
        video = np.clip(np.rint(np.asarray(out.frames[0], dtype=np.float32) * 255), 0, 255).astype(np.uint8)
        if (rw, rh) != (bucket.width, bucket.height):
            video = ResizeCrop.fit(rw, rh, bucket).apply_frames(video)
        seconds = time.perf_counter() - t0
        logger.info("wan clip %s: %s, %d frames in %.1f s", item.id, bucket.name, video.shape[0], seconds)
        yield Clip(
            key=item.id,
            input_id=item.id,
            video=video,
            fps=c.fps,
            prompt=job["prompt"],
            source=SourceInfo(
                kind="wan",
                params={
                    "model": c.model_key,
                    "preset": c.preset,
                    "seed": job["seed"],
                    "steps": c.num_inference_steps,
                    "guidance": c.guidance_scale,
                    "num_frames": c.num_frames,
                    "negative_prompt": job["negative_prompt"],
                    "dtype": c.dtype,
                    "render_size": f"{rw}x{rh}",
                    "image": {"name": Path(job["image"]).name, "sha256": image_sha},
                },
                seed=job["seed"],
            ),
            bucket=bucket.name,
            extra={"negative_prompt": job["negative_prompt"], "seconds": round(seconds, 3)},
        )


def _read_image(path: str) -> tuple[np.ndarray, str]:
    """uint8 RGB (H, W, 3) and the sha256 of the file's bytes; a bad file is a rejected input."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputRejected("unreadable-image", f"{path}: {err.strerror or err}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise InputRejected("unreadable-image", f"{path}: not a decodable image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), hashlib.sha256(data).hexdigest()


def _load_pipeline(model: str, dtype: Any) -> WanImageToVideoPipeline:
    """The real pipeline, with the image encoder and VAE in float32 as the 14B model card loads them."""
    import torch

    route_library_logs()
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPVisionModel

    local = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not local.is_dir():
        raise ConfigError(
            f"model = {model!r}: no such folder (expected a diffusers pipeline folder or a hub id)"
        )
    source = str(local) if local.is_dir() else model
    image_encoder = CLIPVisionModel.from_pretrained(source, subfolder="image_encoder", dtype=torch.float32)
    vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32)
    return WanImageToVideoPipeline.from_pretrained(source, vae=vae, image_encoder=image_encoder, dtype=dtype)
