"""Checkpoint folders on their own (ardrag.training.checkpoint): what a save writes, what a load
restores, which folders count as complete, which are pruned, and which are refused."""

import json
import random
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ardrag.errors import ConfigError
from ardrag.training import checkpoint
from ardrag.training.checkpoint import checkpoint_dirs, load_into, rng_state, set_rng_state
from ardrag.training.trainer import EMA


class Parts:
    """A small model, its Adam optimizer with a warmup schedule, and an EMA: the kinds of state a
    trainer checkpoints."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / 5))
        self.ema = EMA(self.model, 0.9)

    def state(self):
        return checkpoint.TrainingState(
            modules={"model": self.model}, optimizers={"model": self.opt},
            optimizer_modules={"model": self.model}, schedulers={"model": self.sched},
            averages={"ema_model": self.ema},
        )  # fmt: skip

    def train(self, steps):
        for _ in range(steps):
            self.opt.zero_grad()
            self.model(torch.randn(3, 4)).square().mean().backward()
            self.opt.step()
            self.sched.step()
            self.ema.update(self.model)


def meta(step, stage="teacher", world=1):
    return {"step": step, "epoch": 0, "batches_in_epoch": step, "world_size": world, "stage": stage,
            "config_digest": "abc"}  # fmt: skip


def snapshot(parts):
    return (
        {k: v.clone() for k, v in parts.model.state_dict().items()},
        {k: v.clone() for k, v in parts.ema.shadow.items()},
        parts.opt.state_dict()["state"][0]["exp_avg"].clone(),
        parts.sched.state_dict()["last_epoch"],
    )


def assert_same(a, b):
    weights_a, ema_a, avg_a, epoch_a = a
    weights_b, ema_b, avg_b, epoch_b = b
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k
    assert torch.equal(avg_a, avg_b) and epoch_a == epoch_b


def test_a_saved_checkpoint_holds_the_files_and_metadata(tmp_path):
    parts = Parts()
    parts.train(2)
    path = checkpoint.save(tmp_path, parts.state(), meta(2), keep=2)
    assert path == tmp_path / "checkpoints" / "step-2"
    assert sorted(p.name for p in path.iterdir()) == [
        "ema_model.safetensors", "model.safetensors", "optim.pt", "rng-0.pt", "trainer.json"
    ]  # fmt: skip
    assert json.loads((path / "trainer.json").read_text()) == meta(2)
    assert not (tmp_path / "checkpoints" / "step-2.tmp").exists()


def test_load_restores_weights_optimizer_scheduler_and_ema(tmp_path):
    parts = Parts()
    parts.train(3)
    checkpoint.save(tmp_path, parts.state(), meta(3), keep=2)
    saved = snapshot(parts)
    parts.train(4)  # moves every piece of state away from the saved one
    assert not torch.equal(saved[2], snapshot(parts)[2]) and snapshot(parts)[3] != saved[3]

    fresh = Parts(seed=1)  # other initial weights
    got = checkpoint.load(checkpoint_dirs(tmp_path)[-1], fresh.state(), "teacher")
    assert got == meta(3)
    assert_same(snapshot(fresh), saved)


def test_resumed_training_continues_as_if_never_stopped(tmp_path):
    """Save, train on; load into fresh parts, train on: the same weights to the bit, random inputs
    included (the RNG is restored with the rest)."""
    torch.manual_seed(5)
    parts = Parts()
    parts.train(2)
    checkpoint.save(tmp_path, parts.state(), meta(2), keep=2)
    parts.train(3)
    straight = snapshot(parts)

    resumed = Parts(seed=7)
    torch.rand(10)  # another RNG position than at the save
    checkpoint.load(checkpoint_dirs(tmp_path)[-1], resumed.state(), "teacher")
    resumed.train(3)
    assert_same(snapshot(resumed), straight)


def test_rng_state_round_trip_repeats_the_same_draws():
    state = rng_state()
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    random.random(), np.random.rand(5), torch.rand(5)  # move every generator on
    set_rng_state(state)
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_load_restores_this_process_rng(tmp_path):
    parts = Parts()
    checkpoint.save(tmp_path, parts.state(), meta(1), keep=2)
    after_save = (random.random(), np.random.rand(), torch.rand(2))
    checkpoint.load(checkpoint_dirs(tmp_path)[-1], parts.state(), "teacher")
    after_load = (random.random(), np.random.rand(), torch.rand(2))
    assert after_save[:2] == after_load[:2] and torch.equal(after_save[2], after_load[2])


def test_checkpoint_dirs_lists_complete_steps_in_numeric_order(tmp_path):
    assert checkpoint_dirs(tmp_path) == []  # no checkpoints folder yet
    root = tmp_path / "checkpoints"
    for name in ["step-10", "step-2", "step-11.tmp", "step-x", "other"]:
        (root / name).mkdir(parents=True)
    (root / "step-3").write_text("a file, not a checkpoint")
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-2", "step-10"]


class Unpicklable:
    """A schedule whose state cannot be saved (it holds a lock): the save fails after the weights
    are written, as a crash mid-save would stop it."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, step):
        return 1.0


def test_an_interrupted_save_leaves_no_checkpoint_that_resume_would_take(tmp_path):
    parts = Parts()
    parts.train(1)
    checkpoint.save(tmp_path, parts.state(), meta(1), keep=2)
    saved = snapshot(parts)
    parts.train(1)
    broken = parts.state()
    broken.schedulers = {"model": torch.optim.lr_scheduler.LambdaLR(parts.opt, Unpicklable())}
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, broken, meta(2), keep=2)
    half = tmp_path / "checkpoints" / "step-2.tmp"
    assert (half / "model.safetensors").is_file() and not (half / "trainer.json").exists()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-1"]  # the half folder is not listed

    fresh = Parts(seed=3)
    assert checkpoint.load(checkpoint_dirs(tmp_path)[-1], fresh.state(), "teacher")["step"] == 1
    assert_same(snapshot(fresh), saved)

    checkpoint.save(tmp_path, parts.state(), meta(2), keep=2)  # the next save of that step replaces it
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_saving_keeps_the_latest_and_the_one_before(tmp_path):
    parts = Parts()
    for step in range(1, 6):
        parts.train(1)
        checkpoint.save(tmp_path, parts.state(), meta(step), keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-5"]
    checkpoint.save(tmp_path, parts.state(), meta(12), keep=3)  # numeric order, not by name
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-4", "step-5", "step-12"]
    checkpoint.prune(tmp_path, 1)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-12"]


def test_saving_a_step_again_replaces_its_folder(tmp_path):
    parts = Parts()
    checkpoint.save(tmp_path, parts.state(), meta(4), keep=2)
    parts.train(2)
    checkpoint.save(tmp_path, parts.state(), meta(4), keep=2)
    fresh = Parts(seed=9)
    checkpoint.load(tmp_path / "checkpoints" / "step-4", fresh.state(), "teacher")
    assert_same(snapshot(fresh), snapshot(parts))


def test_a_checkpoint_of_another_stage_or_world_size_is_refused(tmp_path):
    parts = Parts()
    parts.train(1)
    checkpoint.save(tmp_path, parts.state(), meta(1, stage="teacher", world=1), keep=2)
    path = checkpoint_dirs(tmp_path)[-1]
    before = snapshot(parts)
    other = Parts(seed=4)
    other.train(1)
    with pytest.raises(ConfigError, match="checkpoint of stage 'teacher', not 'distill'"):
        checkpoint.load(path, other.state(), "distill")
    with pytest.raises(ConfigError, match="written by 1 processes; resume with the same number"):
        checkpoint.load(path, other.state(), "teacher", world=2)
    assert not torch.equal(snapshot(other)[0]["0.weight"], before[0]["0.weight"])  # nothing was loaded


def test_load_into_names_what_does_not_fit(tmp_path):
    model = torch.nn.Linear(4, 2)
    with pytest.raises(ConfigError, match="is missing"):
        load_into(model, tmp_path / "absent.safetensors")
    save_file({"weight": torch.zeros(3, 4), "extra": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match=r"missing \['bias'\], unexpected \['extra'\].*'weight', \(3, 4\)"):
        load_into(model, tmp_path / "w.safetensors")
    save_file({"weight": torch.ones(2, 4), "bias": torch.ones(2)}, str(tmp_path / "ok.safetensors"))
    load_into(model, tmp_path / "ok.safetensors")
    assert torch.equal(model.weight, torch.ones(2, 4)) and torch.equal(model.bias, torch.ones(2))
