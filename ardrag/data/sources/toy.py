"""Procedural clips that a toy model can learn from on CPU: flat backgrounds, smooth sprites, small frames.

:class:`ToySource` draws exactly the clips of :class:`~ardrag.data.sources.procedural.ProceduralSource`
(same seed, same sprites, paths, tracks and prompts) and changes only how they look:

- ``background="flat"``: each clip's background texture is replaced by its mean colour;
- ``sprite_texture="smooth"``: each sprite's texture is blurred to a few large colour blobs (Gaussian,
  sigma an eighth of its short side), their contrast stretched back to the texture's own spread;
- ``size``: the rendered clip is resized to (height, width), antialiased bilinear as
  :func:`ardrag.training.conditions.prepare` resizes, tracks scaled alike.

Why: a small Wan VAE fitted for minutes on CPU loses fine texture and, on the procedural source's
textured backgrounds, whole sprites; a clip through it then tracks no better than a still one, and a
tracking metric cannot see any control. Large blobs with sharp outlines on a flat background survive such
a VAE and still give a tracker gradients inside the sprite.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import cv2
import numpy as np
import torch
from pydantic import Field, field_validator

from ardrag.data.buckets import resize_frames
from ardrag.data.sample import Sample
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource, Scene, Sprite


class ToyConfig(ProceduralConfig):
    background: Literal["flat", "texture"] = Field(
        "flat", description="flat: each clip's background is its mean colour; texture: as procedural"
    )
    sprite_texture: Literal["smooth", "texture"] = Field(
        "smooth", description="smooth: textures blurred to a few large blobs; texture: as procedural"
    )
    size: tuple[int, int] | None = Field(
        None, description="(height, width) the clips are resized to; None: the bucket's size"
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"size {v}: expected a positive (height, width), e.g. (48, 80)")
        return v


def smooth_sprite(sprite: Sprite) -> Sprite:
    """The sprite with its texture's fine detail blurred away and the remaining blobs' contrast restored."""
    tex = sprite.texture
    blur = cv2.GaussianBlur(tex, (0, 0), min(tex.shape[:2]) / 8)
    mean = blur.mean(axis=(0, 1))
    gain = tex.std() / max(float(blur.std()), 1e-3)
    out = np.clip(mean + (blur - mean) * gain, 0, 255).astype(np.float32)  # the textures' 0-255 floats
    return dataclasses.replace(sprite, texture=out)


def resize_video(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, 3) at (height, width), resized as training resizes its inputs, back to uint8."""
    x = resize_frames(torch.from_numpy(video), size)
    return ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """The sample at (height, width), tracks scaled as ``prepare`` scales them; hashes recomputed."""
    h, w = size
    tracks = sample.tracks * np.array([w / sample.width, h / sample.height], np.float32)
    reference = None if sample.reference is None else resize_video(sample.reference[None], size)[0]
    return dataclasses.replace(
        sample, video=resize_video(sample.video, size), tracks=tracks, reference=reference, bucket=""
    ).with_hashes()


class ToySource(ProceduralSource):
    """``ProceduralSource``'s clips with the toy's look (see the module docstring)."""

    name = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.config: ToyConfig = config

    def make_scene(self, index: int) -> Scene:
        scene = super().make_scene(index)
        if self.config.background == "flat":
            flat = np.broadcast_to(scene.background.mean(axis=(0, 1)), scene.background.shape)
            scene = dataclasses.replace(scene, background=np.ascontiguousarray(flat, np.float32))
        if self.config.sprite_texture == "smooth":
            scene = dataclasses.replace(scene, sprites=tuple(smooth_sprite(s) for s in scene.sprites))
        return scene

    def make_clip(self, index: int) -> Sample:
        sample = super().make_clip(index)
        return sample if self.config.size is None else resize_sample(sample, self.config.size)
