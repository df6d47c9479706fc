"""GRPO's pieces: selective stochasticity on the deployed sampler, the ratio-is-one check, per-frame
advantages over the frames after the reference."""

import math

import pytest
import torch
from training_helpers import causal_student

from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom, SelectiveNoise
from ardrag.training.grpo import (
    debiased_ema,
    group_advantages,
    grpo_loss,
    repeat_conditions,
    replay,
    selective_rollout,
    stochastic_steps_for,
)

SAMPLER = FrameSampler((1000.0, 755.0, 522.0))
KW = {"sampler": SAMPLER, "window": 2}


@pytest.fixture(scope="module")
def policy(tiny_models):
    return causal_student(tiny_models)


@pytest.fixture(scope="module")
def group(conditions):
    return repeat_conditions(conditions, 2)  # 2 conditions x G = 2 rollouts


def selective(group, steps):
    """Shared draws per condition (rows 0-1 and 2-3), the actions per rollout."""
    return SelectiveNoise(SampleRandom([7, 7, 8, 8]), SampleRandom([1, 2, 3, 4]), steps, SAMPLER.transitions)


def test_the_ratio_is_exactly_one_without_an_update(policy, group):
    steps = torch.tensor([[-1, 0, 1], [-1, 0, 1], [-1, 1, 0], [-1, 1, 0]])  # per condition, shared by its G
    rollout = selective_rollout(policy, group, selective(group, steps), **KW)
    old = torch.stack([f.logp for f in rollout.scored], 1)
    with torch.enable_grad():
        new, means = replay(policy, group, rollout, **KW)
    assert new.requires_grad and old.shape == new.shape == (4, 2)  # frames 1 and 2: frame 0 has no action
    assert torch.equal(new.detach(), old)  # bit for bit
    assert torch.equal(torch.exp(new.detach() - old), torch.ones_like(old))
    for f, mean in zip(rollout.scored, means, strict=True):
        assert torch.equal(mean.detach(), f.mean)


def test_one_action_per_frame_after_the_first_and_every_other_draw_is_fixed(policy, group):
    steps = torch.tensor([[-1, 1, 0]] * 2 + [[-1, 0, 1]] * 2)
    rollout = selective_rollout(policy, group, selective(group, steps), **KW, trace=True)
    for row, picks in enumerate(steps.tolist()):
        kinds = [[k[row] for m, _, k, _, _ in rollout.trace if m == frame] for frame in range(3)]
        assert [kind.count("action") for kind in kinds] == [0, 1, 1]
        assert [kind.index("action") for kind in kinds[1:]] == picks[1:]
    assert [f.step.tolist() for f in rollout.frames] == steps.T.tolist()
    # The action is the re-noising draw: x' = mean + std * eps with the sampler's mean (1 - s') x0 and std
    # s', and eps is the row's own action stream, one draw per scored frame.
    actions = SampleRandom([1, 2, 3, 4])
    for f in rollout.scored:
        eps = actions.randn(*f.x_in.shape[1:])
        std = torch.tensor([SAMPLER.std(n) for n in f.step.tolist()])
        assert torch.equal(f.std, std)
        torch.testing.assert_close((f.x_out - f.mean) / std.view(-1, 1, 1, 1, 1), eps, rtol=0, atol=1e-5)
    # Without actions the same shared draws give the deterministic sampler: frame 0 (no action) is the
    # same bit for bit, and so is frame 1 up to its action; the actions then change the frames.
    plain = selective_rollout(policy, group, FrameNoise(SampleRandom([7, 7, 8, 8])), **KW, trace=True)
    assert torch.equal(plain.clean[:, :, 0], rollout.clean[:, :, 0])
    first = [(x, x_next) for m, n, _, x, x_next in plain.trace if m == 1 and n == 0][0]
    got = [(x, x_next) for m, n, _, x, x_next in rollout.trace if m == 1 and n == 0][0]
    assert torch.equal(first[0], got[0])  # frame 1 starts alike
    assert torch.equal(first[1][:2], got[1][:2])  # rows 0-1 act at transition 1: transition 0 alike
    assert not torch.equal(first[1][2:], got[1][2:])  # rows 2-3 act at transition 0
    assert all(k == "fixed" for _, _, kinds, _, _ in plain.trace for k in kinds)
    assert not torch.equal(plain.clean, rollout.clean)


def test_a_different_seed_picks_different_steps():
    picks = stochastic_steps_for(list(range(6)), 8, 2)
    assert picks.shape == (6, 8) and len({tuple(p) for p in picks.tolist()}) == 6
    assert (picks[:, 0] == -1).all() and ((picks[:, 1:] >= 0) & (picks[:, 1:] < 2)).all()
    assert torch.equal(stochastic_steps_for([4], 8, 2)[0], picks[4])  # a seed's picks are its own
    with pytest.raises(ValueError, match="at least 2 steps"):
        stochastic_steps_for([0], 3, 0)


def test_action_steps_must_be_re_noising_transitions_and_whole_frames(group):
    rng, actions = SampleRandom([7, 7, 8, 8]), SampleRandom([1, 2, 3, 4])
    for bad in ([[-1, 2]] * 4, [[-1, 0], [-1, 1], [-1, -1], [-1, 0]]):  # the last step; a frame half acting
        with pytest.raises(ValueError, match="expected all -1 .no action. or all re-noising transitions"):
            SelectiveNoise(rng, actions, torch.tensor(bad), SAMPLER.transitions)


def test_grpo_refuses_the_ode_sampler(policy, group):
    steps = torch.tensor([[-1, 0, 1]] * 4)
    with pytest.raises(ValueError, match="re-noising"):
        selective_rollout(policy, group, selective(group, steps), sampler=FrameSampler(SAMPLER.timesteps,
                          kind="ode"), window=2)  # fmt: skip


def test_advantages_are_normalised_per_frame_within_each_group():
    rewards = torch.tensor([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0], [10.0, 0.0], [20.0, 1.0], [30.0, 2.0]])
    adv = group_advantages(rewards, group=3)
    for g in range(2):
        block = adv[3 * g : 3 * g + 3].double()
        varying = [0, 1] if g == 1 else [0]
        for frame in varying:
            assert block[:, frame].mean().item() == pytest.approx(0, abs=1e-6)
            assert block[:, frame].std(correction=0).item() == pytest.approx(1, abs=1e-5)
    assert torch.equal(adv[:3, 1], torch.zeros(3))  # equal rewards: zero advantage, no NaN
    assert torch.isfinite(adv).all()
    with pytest.raises(ValueError, match=r"expected \(conditions x 4, frames\)"):
        group_advantages(rewards, group=4)


def test_loss_clips_the_ratio_and_adds_the_kl():
    logp_old = torch.zeros(2, 1)
    logp = torch.tensor([[0.5], [-0.5]], requires_grad=True)
    adv = torch.tensor([[1.0], [1.0]])
    mean = [torch.ones(2, 1, 1, 1, 1)]
    std = [torch.tensor([0.5, 0.5])]
    loss, logs = grpo_loss(logp, logp_old, adv, mean, [torch.zeros(2, 1, 1, 1, 1)], std, 0.2, 0.1)
    # rollout 0: ratio e^0.5 clipped to 1.2; rollout 1: e^-0.5 unclipped (min picks it); KL = 1 / (2 * 0.25)
    expected = (-1.2 - math.exp(-0.5)) / 2 + 0.1 * 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["clip_fraction"] == 1.0
    loss.backward()
    assert logp.grad[0].item() == 0  # the clipped term carries no gradient


def test_debiased_ema_is_the_weighted_mean_of_the_values_so_far():
    # weights smoothing ** age: after [0, 10] at 0.5, (0.5 * 0 + 1 * 10) / 1.5
    assert debiased_ema([0.0, 10.0], 0.5) == pytest.approx([0.0, 10 / 1.5])
    assert debiased_ema([3.0] * 5, 0.9) == pytest.approx([3.0] * 5)
    # the first value is not weighted as if it had been seen many times: an EMA started at it gives
    # 1.92 after these ten values, the debiased one 2.41
    smooth = debiased_ema([1.0] + [2.5] * 9, 0.9)
    assert smooth[-1] == pytest.approx(
        (0.9**9 * 1.0 + sum(0.9**k for k in range(9)) * 2.5) / sum(0.9**k for k in range(10))
    )
    assert smooth[-1] > 2.4


def test_rollout_decoding_matches_the_plain_vae_decode(tiny_models, conditions):
    from ardrag.model.vae import denormalize_latents
    from ardrag.training.grpo import decode_video

    pipe, _ = tiny_models
    clean = conditions.latents[:, :, :3]
    videos = decode_video(pipe, clean)
    with torch.no_grad():
        plain = pipe.vae.decode(denormalize_latents(pipe.vae, clean), return_dict=False)[0]
    plain = ((plain.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert videos.shape == plain.shape == (2, 9, *plain.shape[2:4], 3)
    diff = abs(videos.astype(int) - plain.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float rounding flips at most a unit, rarely


@pytest.mark.parametrize("shared", [True, False])
def test_a_groups_rollouts_share_every_draw_but_their_actions(tiny_models, tmp_path, shared):
    from training_helpers import procedural_batch, tiny_config

    from ardrag.training.grpo import GRPOStage

    pipe, teacher = tiny_models
    config = tiny_config("grpo", run_dir=str(tmp_path), grpo={"shared_noise": shared, "latent_frames": 3})
    stage = GRPOStage(config, pipe, teacher)
    group = config.grpo.group_size
    c = stage.batch(procedural_batch(), [0, 1])
    got = stage.collect(c, step=0)
    rollout = got["rollout"]
    assert got["scored"] == [1, 2] and got["advantages"].shape == (2 * group, 2)
    assert stage.sampler.timesteps == tuple(config.grpo.timesteps)  # the deployed sampler, grpo's schedule
    _, logs = stage.policy_loss(c, got)  # the stage's own path (policy in train mode): ratio exactly 1
    assert logs["ratio_max_dev"] == 0.0 and logs["kl"] == 0.0
    pairs = [(0, j) for j in range(1, group)]
    first = rollout.frames[0].clean.view(2, group, -1)  # frame 0: no action
    for cond in range(2):
        same = [torch.equal(first[cond, i], first[cond, j]) for i, j in pairs]
        assert all(same) if shared else not any(same)
    for f in rollout.scored:
        x_out = f.x_out.view(2, group, -1)
        assert (f.step.view(2, group) == f.step.view(2, group)[:, :1]).all()  # one action step per condition
        for cond in range(2):
            assert not any(torch.equal(x_out[cond, i], x_out[cond, j]) for i, j in pairs)  # own actions
            inputs = (f.cond.view(2, group, -1), f.clip.view(2, group, -1))
            same = [torch.equal(t[cond, i], t[cond, j]) for t in inputs for i, j in pairs]
            assert all(same) if shared else not any(same)
        assert not torch.equal(f.cond.view(2, group, -1)[0, 0], f.cond.view(2, group, -1)[1, 0])


def test_grpo_needs_a_frame_after_the_reference(tiny_models, tmp_path):
    from training_helpers import procedural_batch, tiny_config

    from ardrag.errors import ConfigError
    from ardrag.training.grpo import GRPOStage

    pipe, teacher = tiny_models
    config = tiny_config("grpo", run_dir=str(tmp_path))
    stage = GRPOStage(config, pipe, teacher)
    raw = procedural_batch()
    short = {k: raw[k][:, :4] for k in ("video", "tracks", "visible", "intensity")}  # 1 latent frame
    raw = {**raw, **short}
    with pytest.raises(ConfigError, match="needs at least 2"):
        stage.collect(stage.batch(raw, [0, 1]), step=0)


def test_three_grpo_steps_raise_a_reward_they_can_raise_and_its_negation_lowers_it(tiny_models, tmp_path):
    """The whole loop (rollouts, advantages, clipped loss, Trainer, AdamW) with a smooth reward, the mean of
    each clean frame's first latent channel: the deterministic sampler's frames follow its sign."""
    from training_helpers import procedural_batch, tiny_config

    from ardrag.training.conditions import prepare
    from ardrag.training.grpo import GRPOStage
    from ardrag.training.trainer import Trainer

    pipe, teacher = tiny_models
    raw = procedural_batch()
    levels = {}
    for sign in (1, -1):
        config = tiny_config("grpo", run_dir=str(tmp_path / str(sign)), steps=3, optim={"lr": 1e-3},
                             grpo={"kl_beta": 0.0, "latent_frames": 3})  # fmt: skip
        c = prepare(pipe, raw, [0, 1], config.data.scale, config.data.max_frames, guided=False)
        stage = GRPOStage(config, pipe, teacher)
        stage.rewards = lambda _c, clean, s=sign: {"total": s * clean[:, 0].mean(dim=(-1, -2)).float()}

        def level(policy, c=c, config=config):
            with torch.no_grad():
                out = selective_rollout(policy, c, FrameNoise(SampleRandom([11, 12], c.latents.device)),
                                        sampler=FrameSampler(tuple(config.grpo.timesteps)),
                                        window=config.grpo.cache_window)  # fmt: skip
            return float(out.clean[:, 0, :3].mean())

        start = level(stage.policy)
        Trainer(config, stage, lambda _epoch, raw=raw: iter([raw] * 10)).run(progress=False)
        levels[sign] = (start, level(stage.policy))
    assert levels[1][0] == levels[-1][0]  # the same start
    start = levels[1][0]
    assert levels[1][1] > start + 0.1 and levels[-1][1] < start - 0.1, levels
