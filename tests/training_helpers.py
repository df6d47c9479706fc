"""Helpers of the training tests (tests/training): the tiny config and a batch of procedural clips."""

from ardrag.config import merge
from ardrag.data.loader import collate
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.presets import TINY, preset
from ardrag.training.config import TrainConfig


def tiny_config(stage="distill", **overrides):
    return TrainConfig.model_validate(merge(preset("train", TINY), {"stage": stage, **overrides}))


def procedural_batch(n=2, frames=9, seed=0):
    cfg = ProceduralConfig(num_clips=n, seed=seed, num_frames=frames, buckets=["640x368"])
    return collate(list(ProceduralSource(cfg).samples()))
