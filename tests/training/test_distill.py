"""Self-Rollout vs Self-Forcing: what the KV cache holds and which step carries the gradient."""

import pytest
import torch
from training_helpers import tiny_config

from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.training.distill import rollout

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
