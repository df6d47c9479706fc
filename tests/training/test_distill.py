"""Distillation (ardrag.training.distill): Self-Rollout vs Self-Forcing (what the KV cache holds and which
step carries the gradient), then the stage: which models each phase trains, the DMD and critic losses,
and a checkpointed critic giving the same run."""

import copy
import json

import pytest
import torch
from training_helpers import tiny_config

from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.training.distill import Discriminator, DistillStage, frozen, rollout
from ardrag.training.run import resolve_config, train

STEPS = [1000.0, 755.0, 522.0]


@pytest.fixture(scope="module")
def generator(tiny_models):
    _, teacher = tiny_models
    model = CausalARDragTransformer.from_config({**teacher.config, "cache_window": 2})
    model.load_state_dict(teacher.state_dict())
    with torch.no_grad():  # trained control weights, so the controls matter
        torch.nn.init.normal_(model.control_embedding.weight, std=0.1)
    return model.train()


def run(generator, conditions, mode, exit_step, grad=True, frames=3):
    """The rollout, and for each forward pass whether it ran with gradients (and whether it wrote)."""
    passes = []

    def record(_module, args, kwargs):
        passes.append((torch.is_grad_enabled(), kwargs.get("write", False)))

    handle = generator.register_forward_pre_hook(record, with_kwargs=True)
    original = generator.forward_frame

    def traced(*args, **kwargs):
        passes.append((torch.is_grad_enabled(), kwargs.get("write", False)))
        return original(*args, **kwargs)

    generator.forward_frame = traced
    try:
        out = rollout(
            generator, conditions, conditions.random(0, 0, 1), timesteps=STEPS, frames=frames, window=2,
            exit_step=exit_step, mode=mode, grad=grad,
        )  # fmt: skip
    finally:
        generator.forward_frame = original
        handle.remove()
    return out, passes


@pytest.mark.parametrize("exit_step", [0, 1, 2])
def test_self_rollout_caches_the_fully_denoised_frame_and_grads_one_step(generator, conditions, exit_step):
    full, _ = run(generator, conditions, "self_rollout", exit_step=2, grad=False)  # plain 3-step sampling
    out, passes = run(generator, conditions, "self_rollout", exit_step=exit_step)
    for m in range(3):  # what was written is the frame denoised through all 3 steps, bit for bit
        assert torch.equal(out.written[m], full.written[m])
        assert torch.equal(full.written[m], full.video[:, :, m : m + 1])
    for layer in range(len(generator.blocks)):
        k_full, v_full = full.cache.read(layer)
        k, v = out.cache.read(layer)
        assert torch.equal(k, k_full) and torch.equal(v, v_full)
        assert not k.requires_grad and not v.requires_grad  # no graph kept alive by the cache
    # per frame: 3 denoising passes and one cache write; exactly one pass with gradients
    assert len(passes) == 3 * 4
    for m in range(3):
        frame = passes[4 * m : 4 * m + 4]
        assert [g for g, _ in frame] == [n == exit_step for n in range(3)] + [False]
        assert [w for _, w in frame] == [False, False, False, True]
    assert out.video.requires_grad
    if exit_step < 2:  # the output is step s's prediction, not the finished frame
        assert not torch.equal(out.video[:, :, 1:2].detach(), out.written[1])


@pytest.mark.parametrize("exit_step", [0, 1])
def test_self_forcing_caches_the_exit_steps_output(generator, conditions, exit_step):
    full, _ = run(generator, conditions, "self_rollout", exit_step=2, grad=False)
    out, passes = run(generator, conditions, "self_forcing", exit_step=exit_step)
    for m in range(3):
        assert torch.equal(out.written[m], out.video[:, :, m : m + 1].detach())
    assert not torch.equal(out.written[0], full.written[0])  # the collapse skipped steps
    assert len(passes) == 3 * (exit_step + 2)  # steps 0..s, then the write
    assert sum(g for g, _ in passes) == 3


def test_backward_through_a_rollout_reaches_the_generator_and_ignores_checkpointing(generator, conditions):
    """The frames read the cache of earlier frames; gradient checkpointing would recompute the passes
    against a cache mutated since, so frame passes never checkpoint: the gradients are the same."""

    def grads():
        generator.zero_grad(set_to_none=True)
        out, _ = run(generator, conditions, "self_rollout", exit_step=1)
        out.video.square().mean().backward()
        return {n: p.grad.clone() for n, p in generator.named_parameters() if p.grad is not None}

    plain = grads()
    generator.enable_gradient_checkpointing()
    try:
        checkpointed = grads()
    finally:
        generator.disable_gradient_checkpointing()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    assert any(g.abs().sum() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=0, atol=0)


def test_rollout_rejects_an_unknown_mode_or_exit_step(generator, conditions):
    with pytest.raises(ValueError, match="'teacher_forcing'"):
        run(generator, conditions, "teacher_forcing", exit_step=0)
    with pytest.raises(ValueError, match="exit step 3"):
        run(generator, conditions, "self_rollout", exit_step=3)


def test_tiny_config_is_valid():
    assert tiny_config().distill.cache_window == 2


# -- the stage ------------------------------------------------------------------------------------------
def test_frozen_turns_gradients_off_inside_and_restores_each_flag_even_after_an_error():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    a.bias.requires_grad_(False)  # a mixed module: its flags come back as they were, not all True
    with pytest.raises(RuntimeError, match="inside"), frozen(a, b):
        assert not any(p.requires_grad for m in (a, b) for p in m.parameters())
        loss = b(a(torch.ones(1, 2))).sum()
        assert not loss.requires_grad
        raise RuntimeError("inside")
    assert [p.requires_grad for p in a.parameters()] == [True, False]
    assert all(p.requires_grad for p in b.parameters())


def test_the_discriminator_gives_one_logit_per_sample():
    d = Discriminator(8)
    tokens = torch.randn(3, 5, 8)
    logits = d(tokens)
    assert logits.shape == (3,)
    torch.testing.assert_close(logits[1:2], d(tokens[1:2]))  # each sample's logit its tokens' alone


def make_stage(tiny_models, **distill):
    pipe, teacher = tiny_models
    return DistillStage(tiny_config(distill=distill), pipe, copy.deepcopy(teacher))


def grads(*modules):
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for m in modules for p in m.parameters()]


@pytest.fixture(scope="module")
def stage(tiny_models):
    return make_stage(tiny_models)


def test_the_stage_starts_every_model_from_the_teacher_and_freezes_the_teacher(stage, tiny_models):
    _, teacher = tiny_models
    reference = teacher.state_dict()
    for model in (stage.generator, stage.critic):
        state = model.state_dict()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert stage.generator.config.cache_window == 2  # the distillation's cache, not the teacher's
    assert not any(p.requires_grad for p in stage.teacher.parameters())
    assert set(stage.optimizers()) == {"generator", "critic"}
    critic_side = {id(p) for p in stage.optimizers()["critic"].param_groups[0]["params"]}
    assert critic_side == {id(p) for m in (stage.critic, stage.discriminator) for p in m.parameters()}


def test_the_critic_steps_every_step_and_the_generator_every_second(stage):
    assert [[p.name for p in stage.phases(step)] for step in range(4)] == [
        ["critic", "generator"], ["critic"], ["critic", "generator"], ["critic"],
    ]  # fmt: skip
    exits = [stage.exit_step(step) for step in range(30)]
    assert exits == [stage.exit_step(step) for step in range(30)]  # from (seed, step): processes agree
    assert set(exits) == {0, 1, 2}  # every step of the 3-step schedule gets the gradient in turn


def test_the_critic_loss_trains_the_critic_and_discriminator_only(stage, conditions):
    for m in stage.modules().values():
        m.zero_grad(set_to_none=True)
    loss, logs = stage.critic_loss(conditions, step=1)
    loss.backward()
    d = stage.config.distill
    assert set(logs) == {"flow", "disc", "loss"} and logs["flow"] > 0 and logs["disc"] > 0
    assert logs["loss"] == pytest.approx(logs["flow"] + d.discriminator_weight * logs["disc"], rel=1e-5)
    assert any(grads(stage.critic)) and all(grads(stage.discriminator))
    assert not any(grads(stage.generator))  # the samples come from a rollout without gradients
    for m in stage.modules().values():
        m.zero_grad(set_to_none=True)


def test_the_generator_loss_trains_the_generator_only(stage, conditions):
    for m in stage.modules().values():
        m.zero_grad(set_to_none=True)
    (generator,) = [p for p in stage.phases(0) if p.name == "generator"]
    with generator.context():
        loss, logs = stage.generator_loss(conditions, step=0)
        loss.backward()
    d = stage.config.distill
    assert set(logs) == {"dmd", "adv", "loss"}
    assert logs["loss"] == pytest.approx(d.dmd_weight * logs["dmd"] + d.generator_adv_weight * logs["adv"])
    assert any(grads(stage.generator))
    assert not any(grads(stage.critic, stage.discriminator, stage.teacher))
    assert all(p.requires_grad for m in (stage.critic, stage.discriminator) for p in m.parameters())
    for m in stage.modules().values():
        m.zero_grad(set_to_none=True)


def test_dmd_is_zero_while_the_critic_equals_the_real_score_and_grows_as_they_part(tiny_models, conditions):
    """DMD's gradient is fake - real: without guidance, a critic still equal to the teacher gives none."""
    stage = make_stage(tiny_models, real_guidance=1.0, generator_adv_weight=0.0)
    _, logs = stage.generator_loss(conditions, step=0)
    assert logs == {"dmd": 0.0, "loss": 0.0}
    with torch.no_grad():
        for p in stage.critic.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, logs = stage.generator_loss(conditions, step=0)
    assert logs["dmd"] > 0 and logs["loss"] == pytest.approx(logs["dmd"])
    loss.backward()
    assert any(grads(stage.generator))
    guided = make_stage(tiny_models, generator_adv_weight=0.0)  # real_guidance 3: the real score moves
    assert guided.generator_loss(conditions, step=0)[1]["dmd"] > 0


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
