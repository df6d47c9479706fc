"""The teacher stage (ardrag.training.teacher): the flow-matching loss of paper Eq. 7 with per-sample
draws, so a batch's loss is the mean of its samples' losses whatever batch they are in, and the stage's
one phase, which trains the whole teacher, control weights included, and lowers the loss."""

import copy
import dataclasses

import pytest
import torch
from training_helpers import tiny_config

from ardrag.training.conditions import Conditions
from ardrag.training.teacher import TeacherStage, flow_matching_loss

SHIFT = 3.0


def take(c: Conditions, i: int) -> Conditions:
    """Sample i of a batch, alone (its global index kept)."""
    fields = {}
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        fields[f.name] = value[i : i + 1] if value is not None else None
    return Conditions(**fields)


@pytest.fixture
def teacher(tiny_models):
    _, model = tiny_models
    return copy.deepcopy(model).eval()  # the session's teacher stays as it was


def loss(model, c, *parts):
    return flow_matching_loss(model, c, c.latents, c.random(*parts), SHIFT)


@torch.no_grad()
def test_a_batch_loss_is_the_mean_of_its_samples_losses(teacher, conditions):
    whole = loss(teacher, conditions, 0, 1, 0)
    alone = [loss(teacher, take(conditions, i), 0, 1, 0) for i in range(conditions.batch)]
    assert whole.item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-5)
    assert loss(teacher, conditions, 0, 1, 0).item() == whole.item()  # the same draws
    assert loss(teacher, conditions, 0, 2, 0).item() != pytest.approx(whole.item(), rel=1e-3)  # another step


def test_the_stage_trains_the_whole_teacher_and_lowers_the_loss(tiny_models, teacher, conditions):
    pipe, _ = tiny_models
    stage = TeacherStage(tiny_config("teacher", optim={"lr": 1e-3}), pipe, teacher)
    assert set(stage.modules()) == set(stage.optimizers()) == {"teacher"} and teacher.training
    first = None
    for _ in range(4):  # the same step: the same noise, so the loss can only fall by learning
        (phase,) = stage.phases(step=1)
        assert (phase.name, phase.optimizer) == ("teacher", "teacher")
        assert phase.params == list(teacher.parameters())
        stage.optimizers()["teacher"].zero_grad()
        value, logs = phase.loss(conditions, 0)
        assert logs == {"loss": value.item()}
        value.backward()
        if first is None:
            first = value.item()
            control = teacher.control_embedding.weight.grad
            assert control is not None and control.abs().sum() > 0  # zero weights, yet they learn
        stage.optimizers()["teacher"].step()
    assert value.item() < first
