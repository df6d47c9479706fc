"""TempAct's executor RL on the tiny preset: plans laid over latent frames, execution groups that share
their visual context bit for bit up to the fork, the ratio of exactly 1 before an update, gradients
confined to the forked frame, both switch modes, the advantages at both levels, planner credit, a
bit-exact resume, the configuration's errors and the command line."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from training_helpers import ardrag, record_passes, tiny_config

from ardrag.config import build_config, merge
from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameSampler
from ardrag.planners import Plan, StepPrompt
from ardrag.presets import TINY, preset
from ardrag.training.config import TrainConfig
from ardrag.training.grpo import grpo_loss
from ardrag.training.tempact import (
    Schedule,
    TempActStage,
    executor_advantages,
    plan_advantages,
    plan_rollout,
    replay_fork,
)

A, B = "a kite climbs into the wind", "the kite dives towards the sea"
STEPS = [{"start": 0, "end": 5, "text": A}, {"start": 5, "end": 9, "text": B}]
TEMPACT = {"group_size": 3, "plans": 2, "latent_frames": 3, "cache_window": 2,
           "planner": {"name": "fixed", "steps": STEPS}}  # fmt: skip


@pytest.fixture(scope="module")
def stage(tiny_models):
    pipe, teacher = tiny_models
    s = TempActStage(tiny_config("tempact", tempact=TEMPACT), pipe, teacher)
    with torch.no_grad():  # a policy that reads its control, unlike the tiny teacher's zero embedding
        torch.nn.init.normal_(s.policy.control_embedding.weight, std=0.1)
    return s


def schedule(switch_at_pixel=5, lookahead=False):
    plan = Plan((StepPrompt(0, switch_at_pixel, A), StepPrompt(switch_at_pixel, 9, B)), 9)
    return Schedule.from_plan(plan, 3, lookahead)


def rollout(stage, conditions, sched, fork, seeds=(101, 102, 103), mode="keep", model=None):
    texts = stage.encode(sched.texts)
    r = plan_rollout(model or stage.policy, conditions, 0, texts=texts, schedule=sched, fork=fork, end=3,
                     shared=7, seeds=list(seeds), mode=mode, **stage._kw())  # fmt: skip
    return r, texts


def test_a_plan_is_laid_over_latent_frames():
    s = schedule(5)  # pixel frames 5-8 are latent frame 2
    assert s.frame_step == (0, 0, 1) and s.switches == (2,) and s.texts == (A, B)
    assert s.pixel_prompts(3) == [A] * 5 + [B] * 4
    assert s.window(2) == (2, 3) and s.window(1) == (1, 2)
    early = schedule(1)  # pixel frame 1 starts latent frame 1
    assert early.frame_step == (0, 1, 1) and early.switches == (1,) and early.window(1) == (1, 3)
    ahead = schedule(5, lookahead=True)  # encoded with the next step; scored against its own
    assert ahead.texts == (f"{A} {B}", B) and ahead.steps == (A, B)
    one = Schedule.from_plan(Plan((StepPrompt(0, 9, A),), 9), 3)
    assert one.switches == () and one.frame_step == (0, 0, 0) and one.window(1) == (1, 3)
    # a plan that starts after frame 0: the frames before it follow the instruction, as generate does
    late = Schedule.from_plan(Plan((StepPrompt(4, 9, B),), 9), 3, instruction=A)
    assert late.steps == (A, B) and late.frame_step == (0, 1, 1) and late.switches == (1,)
    with pytest.raises(ValueError, match="need the instruction"):
        Schedule.from_plan(Plan((StepPrompt(4, 9, B),), 9), 3)


@pytest.mark.parametrize("fork", [1, 2])
def test_continuations_share_the_context_bit_for_bit_up_to_the_fork(stage, conditions, fork):
    r, _ = rollout(stage, conditions, schedule(5), fork)
    assert r.clean.shape[:3] == (3, 16, 3) and r.x_in.shape[:2] == (2, 3)  # (transitions, continuations)
    for i in range(1, 3):
        assert torch.equal(r.clean[i, :, :fork], r.clean[0, :, :fork])  # the shared context
        for m in range(fork, 3):  # each continuation its own from the fork on
            assert not torch.equal(r.clean[i, :, m], r.clean[0, :, m]), (i, m)
    assert torch.equal(r.clean[0, :, :fork], r.prefix[0])
    # the context does not depend on the group: two continuations, or other seeds, share the same prefix
    other, _ = rollout(stage, conditions, schedule(5), fork, seeds=(5, 6))
    assert torch.equal(other.prefix, r.prefix)
    # and the whole group is deterministic for its seeds
    assert torch.equal(rollout(stage, conditions, schedule(5), fork)[0].clean, r.clean)
    # a continuation is the clip a batch-1 rollout with that continuation's stream makes
    alone, _ = rollout(stage, conditions, schedule(5), fork, seeds=(102,))
    torch.testing.assert_close(alone.clean[0], r.clean[1], rtol=0, atol=1e-5)


def test_the_prompt_switch_reaches_the_frames_from_the_switch_on(stage, conditions):
    """Under one plan the frames before the switch are those of the plan's first prompt alone; from the
    switch on they follow the second. ``recache`` rebuilds the cache: frames after the switch differ from
    ``keep``, frames before it do not."""
    both, _ = rollout(stage, conditions, schedule(5), 1)
    only_a = Schedule.from_plan(Plan((StepPrompt(0, 9, A),), 9), 3)
    plain, _ = rollout(stage, conditions, only_a, 1)
    assert torch.equal(both.clean[:, :, :2], plain.clean[:, :, :2])  # latent frames 0, 1: prompt A in both
    assert not torch.equal(both.clean[:, :, 2], plain.clean[:, :, 2])  # frame 2 follows B
    recached, _ = rollout(stage, conditions, schedule(5), 1, mode="recache")
    assert torch.equal(recached.clean[:, :, :2], both.clean[:, :, :2])
    assert not torch.equal(recached.clean[:, :, 2], both.clean[:, :, 2])


def test_the_ratio_is_exactly_one_without_an_update(stage, conditions):
    # three steps (switches at latent frames 1 and 2, encoded with lookahead): a recache in the prefix
    three = Schedule.from_plan(Plan((StepPrompt(0, 1, A), StepPrompt(1, 5, B), StepPrompt(5, 9, A)), 9), 3,
                               lookahead=True)  # fmt: skip
    assert three.switches == (1, 2)
    cases = [("keep", 2, schedule(5)), ("recache", 2, schedule(5)), ("keep", 1, schedule(5)),
             ("recache", 2, three), ("keep", 2, three)]  # fmt: skip
    for mode, fork, sched in cases:
        r, texts = rollout(stage, conditions, sched, fork, mode=mode)
        with torch.enable_grad():
            logp, means = replay_fork(stage.policy, conditions, 0, r, texts=texts, schedule=sched,
                                      mode=mode, **stage._kw())  # fmt: skip
        assert logp.requires_grad and logp.shape == (3, 2)
        assert torch.equal(logp.detach(), r.logp), mode  # the rollout's log-probabilities, bit for bit
        adv = torch.tensor([1.0, -0.5, -0.5])[:, None].expand(3, 2)
        stds = [s.expand(3) for s in r.std]
        _, logs = grpo_loss(logp, r.logp, adv, means, means, stds, 1e-3, 5e-4)
        assert logs["ratio_max_dev"] == 0.0 and logs["kl"] == 0.0
    # changed weights move the ratio (the check above can fail)
    moved = copy.deepcopy(stage.policy)
    with torch.no_grad():
        moved.proj_out.weight.add_(1e-3)
    logp, _ = replay_fork(moved, conditions, 0, r, texts=texts, schedule=schedule(5), mode="keep",
                          **stage._kw())  # fmt: skip
    assert (logp - r.logp).abs().max() > 0
    # replaying under the wrong switch mode does not reproduce the rollout either
    r, texts = rollout(stage, conditions, schedule(5), 2, mode="recache")
    logp, _ = replay_fork(stage.policy, conditions, 0, r, texts=texts, schedule=schedule(5), mode="keep",
                          **stage._kw())  # fmt: skip
    assert not torch.equal(logp, r.logp)


def test_the_context_is_what_a_stream_session_makes_with_the_same_switch():
    """The batch-1 prefix of a plan rollout against ``StreamSession`` (the reference cache path, the same
    draws) streaming the same clip with ``set_prompt`` at the same frame: the same latents, bit for bit, in
    both modes, with the switch after the cache's window has filled (the recache then drops a frame)."""
    from inference_helpers import controls

    from ardrag.inference.sampler import FrameNoise, SampleRandom
    from ardrag.inference.session import StreamOptions, StreamSession
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.training.conditions import Conditions

    pipe = ARDragPipeline.tiny()
    with torch.no_grad():
        torch.nn.init.normal_(pipe.transformer.control_embedding.weight, std=0.1)
    reference = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    w = pipe.transformer.config.cache_window
    frames, switch = w + 3, w + 1  # the switch at latent frame w + 1, the fork after it
    plan = Plan((StepPrompt(0, 4 * switch - 3, A), StepPrompt(4 * switch - 3, 4 * frames - 3, B)),
                4 * frames - 3)  # fmt: skip
    sched = Schedule.from_plan(plan, frames)
    assert sched.switches == (switch,)
    sampler = FrameSampler.from_config(pipe.config)
    texts = torch.cat([pipe.encode_prompt(t, guided=False)[0] for t in sched.texts])
    for mode in ("keep", "recache"):
        session = StreamSession(pipe, reference, A, noise=FrameNoise(SampleRandom([5])),
                                options=StreamOptions.reference())  # fmt: skip
        encoded, real = [], session.encoder.encode_next
        session.encoder.encode_next = lambda pixels, real=real, encoded=encoded: encoded.append(
            real(pixels)) or encoded[-1]  # fmt: skip
        latents = []
        for m in range(frames - 1):
            if m == switch:
                session.set_prompt(B, mode)
            session.step(controls(m, speed=3.0))
            latents.append(session.latent)
        control = torch.cat([pipe.normalize(encoded[0])[1:], *[pipe.normalize(e) for e in encoded[1:]]], 2)
        control = torch.cat([control, control[:, :, -1:]], 2)  # the fork's own control: not compared
        c = Conditions(latents=torch.zeros_like(control), control=control, ref_latent=session.ref_latent,
                       clip=session.clip, text=texts[:1], text_neg=None, index=[0], keys=["s"])  # fmt: skip
        r = plan_rollout(pipe.transformer, c, 0, texts=texts, schedule=sched, sampler=sampler, window=w,
                         fork=frames - 1, end=frames, shared=5, seeds=[11, 12], mode=mode)  # fmt: skip
        assert torch.equal(r.prefix, torch.cat(latents, 2)), mode


def test_the_gradient_reaches_only_the_forked_frame(stage, conditions, monkeypatch):
    r, texts = rollout(stage, conditions, schedule(5), 2)
    calls = record_passes(stage.policy, monkeypatch)
    stage.policy.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logp, _ = replay_fork(stage.policy, conditions, 0, r, texts=texts, schedule=schedule(5), mode="keep",
                              **stage._kw())  # fmt: skip
        logp.mean().backward()
    assert [c for c in calls if c[0]] == [(True, False, 2)] * 2  # the fork's two transitions, no write
    assert [c for c in calls if not c[0]] == [(False, True, 0), (False, True, 1)]  # the prefix's writes
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.policy.parameters())


def test_executor_advantages_centre_per_group_scale_by_the_batch_and_clip():
    groups = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 10.0, 10.0])]
    a = executor_advantages(groups, clip=2.0)
    assert torch.equal(a[1], torch.zeros(3))  # equal rewards: nothing to learn
    every = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])  # TempAct: the std of the batch's rewards
    torch.testing.assert_close(a[0], torch.tensor([-1.0, 0.0, 1.0]) / (every.std() + 1e-6))
    alone = executor_advantages(groups[:1], clip=2.0)[0]  # the other group's spread scales this one's
    torch.testing.assert_close(alone, torch.tensor([-1.0, 0.0, 1.0]))
    clipped = executor_advantages([torch.tensor([0.0] * 9 + [9.0])], clip=2.0)
    assert clipped[0].max() == 2.0  # one outlier of ten: 3 std before the clip


def test_plan_advantages_are_normalised_over_the_planning_group():
    a = plan_advantages(torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(a, torch.tensor([-1.0, 1.0]), rtol=0, atol=1e-5)
    assert torch.equal(plan_advantages(torch.tensor([0.7])), torch.zeros(1))  # one plan: no credit


def test_collect_scores_the_window_of_the_step_the_fork_starts(stage, conditions, monkeypatch):
    scored, score = [], stage.score
    monkeypatch.setattr(stage, "score", lambda *a: scored.append(score(*a)) or scored[-1])
    groups, logs = stage.collect(conditions, step=0)
    assert len(groups) == len(scored) == 2 * 2  # two conditions, two plans each
    for g in groups:
        assert g.rollout.fork in g.schedule.switches and g.rewards.shape == (3,)
        assert g.sample.format_score == 1.0 and g.rollout.clean is None  # dropped once scored
    assert logs["format"] == 1.0 and logs["switches"] == 1.0
    assert all(math.isfinite(v) for v in logs.values())
    w = stage.rl.reward_weights
    for g, scores in zip(groups, scored, strict=True):
        # the executor's reward: the weighted total over the window of the step at the fork
        lo, hi = g.schedule.window(g.rollout.fork)
        window = torch.tensor(scores["total"][:, lo:hi].mean(1), dtype=torch.float32)
        torch.testing.assert_close(g.rewards, window)
        total = w["step_following"] * scores["step_following"] + w["aesthetic"] * scores["aesthetic"]
        np.testing.assert_allclose(scores["total"], total, rtol=1e-6)  # summed in float32
        # the plan's reward: the whole clip after the reference (format 1: no penalty)
        assert g.plan_reward == pytest.approx(float(scores["total"][:, 1:].mean()))
    # the plans of one condition share their noise: the same plan twice gives the same rollouts
    assert torch.equal(groups[0].rollout.x_out, groups[1].rollout.x_out)
    assert groups[0].plan_advantage == groups[1].plan_advantage == 0.0


def test_a_resumed_run_logs_the_same_losses(tmp_path):
    """Two steps straight, against one, a stop, and a resume for the second: the same losses to the bit,
    with planner credit on (the tiny LM planner trains too, its optimizer in the checkpoint)."""
    from ardrag.training.run import train

    def config(run, steps):
        credit = {"planner_credit": True, "planner_lr": 1e-3}
        fields = {"stage": "tempact", "run_dir": str(tmp_path / run), "steps": steps, "save_every": 1}
        raw = merge(preset("train", TINY), {**fields, "tempact": credit})
        raw["tempact"]["planner"] = {"name": TINY, "max_new_tokens": 16}  # in place of the preset's steps
        return TrainConfig.model_validate(raw)

    train(config("straight", 2), progress=False)
    stopped = config("resumed", 1)
    train(stopped, progress=False)
    train(stopped.model_copy(update={"steps": 2}), resume=True, progress=False)
    straight = (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()
    assert len(straight) == 2 and straight == (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()
    logs = [json.loads(line) for line in straight]
    assert logs[0]["tempact/ratio_max_dev"] == 0.0 and logs[0]["tempact_planner/ratio_max_dev"] == 0.0
    assert logs[0]["tempact/format"] == 0.0  # a random LM's plans are refused: the instruction, one step
    optim = torch.load(tmp_path / "straight" / "checkpoints" / "step-2" / "optim.pt", weights_only=False)
    assert sorted(optim["optimizers"]) == ["planner", "policy"]
    # the planner trained: its checkpointed weights moved away from the tiny LM's
    from safetensors.torch import load_file

    from ardrag.planners import tiny_lm

    saved = load_file(str(tmp_path / "straight" / "checkpoints" / "step-2" / "planner.safetensors"))
    initial = tiny_lm(0)[0].state_dict()
    assert max(float((saved[k] - initial[k]).abs().max()) for k in saved) > 0
    # and it is exported as a folder the llm planner loads, with the trained weights
    from ardrag.planners import get_planner

    exported = get_planner("llm", model=str(tmp_path / "straight" / "planner")).lm.state_dict()
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    assert all(math.isfinite(v) for r in logs for v in r.values())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tempact": {"planner": {"name": "oracle"}}}, r"planner 'oracle' is unknown"),
        ({"tempact": {"planner": {"name": None}}}, r"expected a mapping with a 'name'"),
        ({"tempact": {"planner": {"name": "fixed", "steps": STEPS}, "planner_credit": True}},
         r"planner_credit is true with the fixed planner"),
        ({"tempact": {"switch_mode": "rebuild"}}, r"tempact.switch_mode"),
        ({"tempact": {"reward_weights": {"beauty": 1.0}}}, r"rewards \['beauty'\]"),
        ({"distributed": "fsdp"}, r"distributed is 'fsdp' for stage tempact; expected 'ddp'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_field_the_value_and_what_was_expected(fields, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, merge(preset("train", TINY), {"stage": "tempact", **fields}), source="test")


@pytest.mark.parametrize("stage_name", ["grpo", "copo"])
def test_step_following_is_refused_where_no_step_prompts_exist(stage_name):
    fields = {stage_name: {"reward_weights": {"step_following": 1.0}}}
    with pytest.raises(ConfigError, match=rf"{stage_name}.reward_weights names step_following"):
        build_config(TrainConfig, merge(preset("train", TINY), {"stage": stage_name, **fields}), source="t")


def test_too_short_clips_are_refused_with_the_clips_named(stage, conditions):
    short = copy.copy(stage)
    short.rl = stage.rl.model_copy(update={"latent_frames": 2})
    assert short.frames(conditions) == 2
    c = copy.copy(conditions)
    c.latents = conditions.latents[:, :, :1]
    with pytest.raises(ConfigError, match=r"clips \[.*\] have 1 latent frame\(s\): TempAct forks"):
        stage.frames(c)


def test_the_command_runs_the_tiny_preset(tmp_path):
    summary = ardrag("train", "tempact", "--preset", TINY, "--run-dir", "run", "--steps", "2", "--json",
                     cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "run" / "student").is_dir()
    from PIL import Image

    with Image.open(tmp_path / "run" / "rewards.png") as plot:  # aesthetic and step following side by side
        assert plot.width > 2 * plot.height
    logs = [json.loads(line) for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert len(logs) == 2 and logs[0]["tempact/switches"] == 1.0 and logs[0]["tempact/format"] == 1.0
    assert "tempact/reward_total" in json.dumps(summary)
