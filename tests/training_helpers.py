"""Helpers of the training tests (tests/training): the tiny config, a batch of procedural clips, a causal
student from the tiny teacher, and the `ardrag` command."""

import json
import os
import subprocess
import sys

import torch

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


def causal_student(tiny_models):
    """A fresh causal student from the tiny teacher with random control weights (so that the drag reaches
    the output), with a cache of 2 frames."""
    from ardrag.model.transformer_ardrag import CausalARDragTransformer

    _, teacher = tiny_models
    model = CausalARDragTransformer.from_config({**teacher.config, "cache_window": 2})
    model.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        torch.nn.init.normal_(model.control_embedding.weight, std=0.1)
    return model.eval()


def ardrag(*args, cwd):
    """Run the `ardrag` command in ``cwd``; its last stdout line, parsed as JSON."""
    result = subprocess.run([sys.executable, "-m", "ardrag.cli", *args], cwd=cwd, capture_output=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def record_passes(model, monkeypatch):
    """Every ``forward_frame`` call of ``model`` from now on, as (grad enabled, a cache write, frames in the
    cache it reads)."""
    calls = []
    forward = model.forward_frame

    def spy(*args, **kwargs):
        calls.append((torch.is_grad_enabled(), kwargs.get("write", False), args[3].frames_written))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward_frame", spy)
    return calls
