"""Every stage keeps its models and batches on the process's device.

No GPU is needed to catch the usual slip, a tensor made without ``device=`` (``torch.zeros(n)``,
``torch.tensor([t])``), which lands on the CPU while the process computes on CUDA: :class:`DefaultMeta`
runs a step with such tensors made on the ``meta`` device instead, for calls from the code under audit
(the training stages, the sampler and the transformer they run). A device-less tensor that meets the
batch or the models then fails ("Tensor on device meta is not on the expected device cpu"), as a CPU
tensor meeting CUDA ones fails on a GPU; one kept on the host for bookkeeping must say ``device="cpu"``.
Tensors made with an explicit device, and code outside the audited files (diffusers, transformers,
torch's optimizers, the VAE's host-side constants), are untouched, so the step computes what it always
computes. The trainer's own checks (every model a stage runs, and every batch tensor, on its device) are
tested with modules and tensors on ``meta`` against a CPU process.
"""

import copy
import dataclasses
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from training_helpers import procedural_batch, tiny_config

from ardrag.training import checkpoint
from ardrag.training.trainer import Phase, Stage, Trainer, check_batch_devices, check_model_devices

AUDITED = ("ardrag/training/", "ardrag/inference/", "ardrag/model/transformer_ardrag.py")


class DefaultMeta(TorchFunctionMode):
    """Tensor factories (``torch.zeros``, ``torch.tensor``, ``torch.randn``, ...) called without a device
    from a file under one of ``audited`` make their tensor on ``meta``; ``made`` lists those calls."""

    def __init__(self, audited=AUDITED):
        super().__init__()
        self.audited, self.made = audited, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            caller = sys._getframe(1)
            path = caller.f_code.co_filename.replace("\\", "/")
            if any(part in path for part in self.audited):
                kwargs["device"] = "meta"
                self.made.append(f"{path}:{caller.f_lineno} {func.__name__}")
        return func(*args, **kwargs)


def _stray(x):
    return x + torch.zeros(x.shape)  # the slip: on the CPU whatever x's device


def _placed(x):
    return x + torch.zeros(x.shape, device=x.device)


def test_the_guard_catches_a_tensor_made_without_a_device():
    x = torch.ones(3)
    with DefaultMeta(audited=(__file__,)) as guard, pytest.raises(RuntimeError, match="meta"):
        _stray(x)
    assert len(guard.made) == 1
    with DefaultMeta(audited=(__file__,)) as guard:
        assert torch.equal(_placed(x), x) and guard.made == []


def build_stage(name, tiny_models, tmp_path):
    pipe, teacher = tiny_models
    teacher = copy.deepcopy(teacher)  # the stages train or freeze it: the session's stays as it is
    config = tiny_config(name, run_dir=str(tmp_path))
    if name == "teacher":
        from ardrag.training.teacher import TeacherStage as cls
    elif name == "distill":
        from ardrag.training.distill import DistillStage as cls
    else:
        from ardrag.training.grpo import GRPOStage as cls
    return config, cls(config, pipe, teacher)


@pytest.mark.parametrize("name", ["teacher", "distill", "grpo"])
def test_a_step_of_each_stage_makes_no_tensor_off_the_device(name, tiny_models, tmp_path):
    """The stage's batch (the encoders' inputs and outputs) and every phase's loss (rollouts, noise,
    timesteps, rewards, advantages, the models' passes) under :class:`DefaultMeta`; the backward passes
    and the optimizer steps run as usual."""
    config, stage = build_stage(name, tiny_models, tmp_path)
    phases, made = stage.phases, []

    def guarded_phases(step):
        out = phases(step)
        for phase in out:

            def loss(mb, i, inner=phase.loss):
                with DefaultMeta() as guard:
                    try:
                        return inner(mb, i)
                    finally:
                        made.extend(guard.made)

            phase.loss = loss
        return out

    stage.phases = guarded_phases
    trainer = Trainer(config, stage, lambda _epoch: iter(()))
    with DefaultMeta() as guard:
        batch = stage.batch(procedural_batch(), [0, 1])
    made.extend(guard.made)
    logs = trainer.train_step([batch])
    assert made == []  # every tensor the audited code made names its device
    assert logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    expected = {"teacher": ["teacher/loss"], "distill": ["critic/loss", "generator/loss"],
                "grpo": ["grpo/loss"]}[name]  # fmt: skip
    assert all(key in logs for key in expected)


@pytest.mark.parametrize("name", ["teacher", "distill", "grpo"])
def test_the_trainer_checks_every_model_the_stage_holds(name, tiny_models, tmp_path):
    """``Stage.models()`` names every network the stage runs (trained, frozen, the encoders, the reward's),
    so that the trainer's device check sees them all."""
    _, stage = build_stage(name, tiny_models, tmp_path)
    held = [v for v in vars(stage).values() if isinstance(v, torch.nn.Module)]
    scorer = getattr(stage, "scorer", None)
    if scorer is not None:
        held += [scorer.clip, scorer.head]
    held += [getattr(stage.pipe.wan, n) for n in ("vae", "text_encoder", "image_encoder")]

    def tensors(modules):
        return {id(t) for m in modules for t in [*m.parameters(), *m.buffers()]}

    assert tensors(held) <= tensors(stage.models().values())


class OneLinear(Stage):
    name = "linear"

    def __init__(self, device="cpu"):
        self.model = torch.nn.Linear(2, 1, device=device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def modules(self):
        return {"model": self.model}

    def optimizers(self):
        return {"model": self.opt}

    def phases(self, step):
        return [Phase("model", "model", list(self.model.parameters()),
                      lambda mb, _i: (self.model(mb["x"]).sum(), {}))]  # fmt: skip


def test_the_trainer_refuses_a_model_off_the_process_device(tmp_path):
    config = tiny_config("teacher", run_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"'model' has weight on meta; the process's device is cpu"):
        Trainer(config, OneLinear(device="meta"), lambda _epoch: iter(()))
    Trainer(config, OneLinear(), lambda _epoch: iter(()))  # on the CPU: accepted


def test_the_trainer_refuses_a_batch_off_the_process_device(tmp_path):
    config = tiny_config("teacher", run_dir=str(tmp_path))
    trainer = Trainer(config, OneLinear(), lambda _epoch: iter(()))
    with pytest.raises(ValueError, match=r"batch's 'x' is on meta; the process's device is cpu"):
        trainer.train_step([{"x": torch.ones(3, 2, device="meta")}])
    trainer.train_step([{"x": torch.ones(3, 2)}])


def test_the_batch_check_sees_every_tensor_of_the_conditions(conditions):
    cpu = torch.device("cpu")
    check_batch_devices(conditions, cpu)
    check_model_devices({"m": torch.nn.Linear(1, 1)}, cpu)
    for name in ("latents", "text_neg"):
        moved = dataclasses.replace(conditions, **{name: getattr(conditions, name).to("meta")})
        with pytest.raises(ValueError, match=f"'{name}' is on meta"):
            check_batch_devices(moved, cpu)


def test_grpo_host_bookkeeping_stays_on_the_cpu_whatever_the_default_device():
    """The action steps are drawn by CPU generators, so that every device picks the same."""
    from ardrag.training.grpo import stochastic_steps_for

    plain = stochastic_steps_for([1, 2], frames=4, transitions=2)
    with torch.device("meta"):
        under = stochastic_steps_for([1, 2], frames=4, transitions=2)
    assert under.device.type == "cpu" and torch.equal(under, plain)


def test_checkpoint_reads_optimizer_and_rng_states_onto_the_cpu(tmp_path, monkeypatch):
    """A GPU run's optimizer states are CUDA tensors of rank 0's device; every process reads them onto
    the CPU, and loading them into the optimizer moves them to each parameter's device."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = checkpoint.TrainingState(modules={"m": model}, optimizers={"m": opt},
                                     optimizer_modules={"m": model}, schedulers={"m": sched},
                                     averages={})  # fmt: skip
    meta = {"step": 1, "epoch": 0, "batches_in_epoch": 1, "world_size": 1, "stage": "teacher",
            "config_digest": "abc"}  # fmt: skip
    path = checkpoint.save(tmp_path, state, meta, keep=1)
    where, load = [], torch.load

    def recording_load(*args, **kwargs):
        where.append(kwargs.get("map_location"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    checkpoint.load(path, state, "teacher")
    assert where == ["cpu", "cpu"]  # optimizer and scheduler states, then this process's RNG
    assert opt.state_dict()["state"][0]["exp_avg"].device == model.weight.device


def test_the_motion_reward_tracker_runs_on_the_policy_device():
    """CoTracker (a network) on the policy's device; OpenCV's tracker has none."""
    from ardrag.data.trackers import CoTrackerTracker, OpenCVTracker
    from ardrag.training.grpo import reward_tracker

    cotracker = reward_tracker("cotracker", torch.device("cuda", 1))
    assert isinstance(cotracker.tracker, CoTrackerTracker) and cotracker.tracker.config.device == "cuda:1"
    assert reward_tracker("cotracker", torch.device("cpu")).tracker.config.device == "cpu"
    assert isinstance(reward_tracker("opencv", torch.device("cuda", 0)).tracker, OpenCVTracker)
