"""Distillation (ardrag.training.distill)."""

import json

import pytest

from ardrag.training.run import resolve_config, train


def test_gradient_checkpointing_gives_the_same_distillation(tmp_path):
    """The critic recomputes its blocks in backward; the generator phase freezes it around the losses
    and their backward, so the recomputation sees the forward's flags (a CheckpointError otherwise)."""
    runs = []
    for flag in (False, True):
        overrides = {
            "run_dir": str(tmp_path / str(flag)),
            "steps": 3,
            "model": {"gradient_checkpointing": flag},
        }
        train(resolve_config("distill", preset="tiny", overrides=overrides), progress=False)
        runs.append([json.loads(x) for x in (tmp_path / str(flag) / "losses.jsonl").read_text().splitlines()])
    assert "generator/adv" in runs[0][0]
    for plain, checkpointed in zip(*runs, strict=True):
        assert checkpointed == pytest.approx(plain, rel=1e-6)
