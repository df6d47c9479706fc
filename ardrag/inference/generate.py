"""``ardrag generate``: a reference image, a drag (trajectory JSON) and a prompt become an mp4.

Everything the user gave is read and checked first (:mod:`ardrag.inference.trajectory`); only then are
models loaded and frames generated, one latent frame at a time through a :class:`StreamSession` (the
same path as interactive use). The video has as many frames as the trajectory lists (the last latent
frame's surplus frames are dropped).

**Resolution** (:func:`render_size`): the model's bucket nearest the reference image's aspect ratio
(``GenerationConfig.buckets``; nearest aspect, then nearest area, the rule that put each training clip in
its bucket), so a portrait photo renders portrait; ``--size WxH`` picks one instead. The image and points
are then fitted to it by scale-to-cover and centre crop
(:func:`~ardrag.inference.trajectory.fit_to_resolution`): points the crop cuts off become not visible,
with a warning. A model without buckets (the shipped toy
model, trained at 80x48 only) renders at its one size.

**Device and dtype** (:mod:`ardrag.model.device`): ``--device`` (default CUDA when present) and
``--dtype`` (default bfloat16 on a GPU, float32 on a CPU) hold every component of the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardrag.console import Progress
from ardrag.data.buckets import Bucket, nearest_bucket
from ardrag.data.codec import encode_mp4
from ardrag.data.overlay import draw_tracks
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.inference.session import StreamSession
from ardrag.inference.trajectory import (
    Trajectory,
    fit_to_resolution,
    load_prompt_schedule,
    load_reference,
    load_trajectory,
)
from ardrag.model.device import dtype_name, resolve_device, resolve_dtype
from ardrag.model.model_folder import load_model_folder
from ardrag.model.pipeline import ARDragPipeline, GenerationConfig
from ardrag.presets import DEFAULT_WAN, check_random_model, shipped_folder, shipped_models, wan_model

log = logging.getLogger(__name__)


def latent_chunks(num_frames: int) -> list[tuple[int, int]]:
    """Pixel-frame ranges [start, end) of each latent frame: 1 frame, then 4 each (the VAE's causal
    layout); the last range may run past ``num_frames`` (padded by repeating the last control)."""
    chunks, start = [(0, 1)], 1
    while start < num_frames:
        chunks.append((start, start + 4))
        start += 4
    return chunks


def load_pipeline(
    preset: str | None,
    checkpoint: str | None,
    model: str,
    seed: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> ARDragPipeline:
    """The student to generate with: a model preset's (``preset``: the trained weights shipped for it,
    else random ones), or the Wan encoders of ``model`` with the transformer of ``checkpoint`` (or Wan's
    own with zero control weights). With a shipped preset, ``checkpoint`` replaces its student (e.g. one
    that ``ardrag demo`` trained from it). Every component on ``device`` in ``dtype`` (None: the defaults
    of :mod:`ardrag.model.device`)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if preset is not None:
        try:
            check_random_model(preset)
        except ValueError as err:
            raise ConfigError(f"--preset: {err}") from None
        if preset in shipped_models():
            return load_model_folder(shipped_folder(preset), checkpoint, device=device, dtype=dtype)
        if checkpoint is not None:
            raise ConfigError(
                f"--checkpoint and --preset {preset} exclude each other: the preset is random weights"
            )
        return ARDragPipeline.tiny(seed, preset, device=device, dtype=dtype)
    try:
        model = wan_model(model)
    except ValueError as err:
        raise ConfigError(f"--model: {err}") from None
    return ARDragPipeline.from_pretrained(model, checkpoint=checkpoint, device=device, dtype=dtype)


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"WxH"`` as (width, height): positive multiples of 16 (8x VAE downsampling, then 2x2 patches)."""
    expected = "WIDTHxHEIGHT in pixels, both positive multiples of 16, e.g. 480x368"
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"{option} {text}: expected {expected}") from None
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise ConfigError(f"{option} {text}: expected {expected}")
    return width, height


def render_size(
    config: GenerationConfig, image_width: int, image_height: int, size: str | None = None
) -> tuple[int, int, str]:
    """(width, height, why) of the video for a ``image_width`` x ``image_height`` reference: ``size``
    ("WxH", validated) when given; else the config's bucket nearest the image's aspect ratio, ties broken
    by area (:func:`ardrag.data.buckets.nearest_bucket`); else, for a config without buckets, its width
    x height. ``why`` is "--size", "bucket" or "model"."""
    if size is not None:
        return (*parse_size(size), "--size")
    if config.buckets is None:
        return config.width, config.height, "model"
    bucket: Bucket = nearest_bucket(image_width, image_height, config.bucket_list())
    return bucket.width, bucket.height, "bucket"


def stream_clip(
    pipe: ARDragPipeline,
    image: np.ndarray,
    trajectory: Trajectory,
    prompt: str,
    *,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, float]:
    """The student's video (uint8 (T, H, W, 3), T = the trajectory's frames) for an image and a drag
    already at the model's resolution, and the seconds until its first frame was decoded (session
    start included). The trajectory's prompt switches apply from the latent frame that holds their
    frame (a switch at frame 0 replaces ``prompt``)."""
    t0 = time.perf_counter()
    switches = {s.latent_frame: s for s in trajectory.prompts}
    start_prompt = switches.pop(0).text if 0 in switches else prompt
    session = StreamSession(pipe, image, start_prompt, seed=seed)
    t = trajectory.num_frames
    frames, first, pending = [], 0.0, None
    chunks = latent_chunks(t)
    for m, (start, end) in enumerate(
        Progress(chunks, desc="generating", unit="latent frame", enabled=progress)
    ):
        if m in switches:
            session.set_prompt(switches[m].text, switches[m].mode)  # type: ignore[arg-type]
        rows = np.minimum(np.arange(start, end), t - 1)
        handle = session.submit(trajectory.tracks[rows], trajectory.visible[rows], trajectory.intensity[rows])
        if start == 0:  # the first frame at once; later ones collected one step behind, so that on a GPU
            frames.append(handle.result())  # the decode overlaps the next frame's denoising
            first = time.perf_counter() - t0
        else:
            if pending is not None:
                frames.append(pending.result())
            pending = handle
    if pending is not None:
        frames.append(pending.result())
    return np.concatenate(frames)[:t], first


def generate(
    ref: str | os.PathLike[str],
    traj: str | os.PathLike[str],
    prompt: str,
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    checkpoint: str | None = None,
    model: str = DEFAULT_WAN,
    overlay: bool = False,
    seed: int = 0,
    size: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    sink: int | None = None,
    prompt_schedule: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out`` (and ``<out stem>.overlay.mp4`` with ``overlay``); returns a summary: what was
    written, the resolution and why it was chosen (:func:`render_size`), the device and dtype. ``sink``:
    attention-sink frames (None: the model's ``GenerationConfig.attention_sink``). ``prompt_schedule``: a
    JSON file of prompt switches, in place of the trajectory's ``prompts``."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ConfigError(f"--out {str(out)!r}: expected a file name ending in .mp4")
    if not prompt.strip():
        raise ConfigError("--prompt is empty; expected a description of the video")
    if size is not None:
        parse_size(size)
    if sink is not None and (isinstance(sink, bool) or not isinstance(sink, int) or sink < 0):
        raise ConfigError(
            f"--sink {sink!r}: expected a number of latent frames >= 0 (1: pin the first frame)"
        )
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    image, trajectory = load_reference(ref), load_trajectory(traj)  # checked before any model loads
    if prompt_schedule is not None:
        trajectory = dataclasses.replace(
            trajectory, prompts=load_prompt_schedule(prompt_schedule, trajectory.num_frames)
        )
    pipe = load_pipeline(preset, checkpoint, model, seed, device, dtype)
    h0, w0 = image.shape[:2]
    width, height, why = render_size(pipe.config, w0, h0, size)
    pipe = pipe.at_size(width, height)
    if sink is not None:
        pipe = pipe.with_config(attention_sink=sink)
    image, trajectory = fit_to_resolution(image, trajectory, width, height)
    video, _ = stream_clip(pipe, image, trajectory, prompt, seed=seed, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, encode_mp4(video, trajectory.fps))
    written = {
        "out": str(out), "frames": int(len(video)), "width": width, "height": height, "size_from": why,
        "reference_size": [w0, h0], "buckets": pipe.config.buckets, "device": str(device),
        "dtype": dtype_name(dtype), "attention_sink": pipe.config.attention_sink,
        "prompts": [s.record() for s in trajectory.prompts],
    }  # fmt: skip
    if overlay:
        path = out.with_name(out.stem + ".overlay.mp4")
        atomic_write(
            path, encode_mp4(draw_tracks(video, trajectory.tracks, trajectory.visible), trajectory.fps)
        )
        written["overlay"] = str(path)
    log.info("wrote %s (%d frames at %dx%d, size from %s)", out, len(video), width, height, why)
    return written
