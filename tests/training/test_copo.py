"""AR-CoPO's pieces on the tiny preset: forking on the deployed sampler (a shared prefix, candidates that
differ from the forked chunk on), the contrastive surrogate's ratio of exactly 1 before an update,
gradients confined to the forked chunk, advantages per neighbourhood, the replay buffer across a resume,
and the configuration's errors."""

import copy
import dataclasses
import json
import math

import pytest
import torch
from training_helpers import record_passes, tiny_config

from ardrag.config import build_config, merge
from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, SampleRandom
from ardrag.presets import TINY, preset
from ardrag.training.config import TrainConfig
from ardrag.training.copo import (
    CoPOStage,
    ReplayBuffer,
    _select,
    auto_tau,
    contrastive_loss,
    fork_rollout,
    neighbourhood_advantages,
    neighbours,
    replay_chunk,
)
from ardrag.training.grpo import selective_rollout

COPO = {
    "group_size": 4,
    "anchors": 2,
    "latent_frames": 3,
    "cache_window": 2,
    "replay": {"groups": 1, "size": 4},
}


@pytest.fixture(scope="module")
def stage(tiny_models):
    pipe, teacher = tiny_models
    s = CoPOStage(tiny_config("copo", copo=COPO), pipe, teacher)
    with torch.no_grad():  # a policy that reads its control, unlike the tiny teacher's zero embedding
        torch.nn.init.normal_(s.policy.control_embedding.weight, std=0.1)
    return s


def rollout(stage, conditions, fork, g=3, seed=7):
    noise, deltas = FrameNoise(SampleRandom([seed])), SampleRandom([100 + i for i in range(g)])
    return fork_rollout(stage.policy, conditions, 0, fork=fork, chunk=1, end=3, noise=noise, deltas=deltas,
                        sigma=0.5, **stage._kw())  # fmt: skip


@pytest.mark.parametrize("fork", [1, 2])
def test_candidates_share_the_prefix_bit_for_bit_and_differ_from_the_fork_on(stage, conditions, fork):
    r = rollout(stage, conditions, fork)
    assert r.clean.shape[:3] == (3, 16, 3)
    for i in range(1, 3):
        assert torch.equal(r.clean[i, :, :fork], r.clean[0, :, :fork])  # the prefix: identical
        for m in range(fork, 3):  # the fork and its continuation: each candidate its own
            assert not torch.equal(r.clean[i, :, m], r.clean[0, :, m]), (i, m)
    # the prefix is the deterministic deployed sampler's rollout of the condition's shared draws
    plain = selective_rollout(stage.policy, _select(conditions, 0), FrameNoise(SampleRandom([7])),
                              frames=fork, **stage._kw())  # fmt: skip
    assert torch.equal(r.prefix, plain.clean)
    # the continuation is deterministic: the same draws give the same candidates
    assert torch.equal(rollout(stage, conditions, fork).clean, r.clean)
    # the chunk's starting noise: the shared draw's neighbours (what the prefix drew, then the next draw)
    assert r.x_in.shape[:3] == (1, 3, 3)  # (chunk frames, steps, candidates)


def test_neighbours_stay_standard_normal_with_the_stated_correlation():
    gen = torch.Generator().manual_seed(0)
    base, deltas = torch.randn(1, 200_000, generator=gen), torch.randn(2, 200_000, generator=gen)
    x = neighbours(base, deltas, 0.5)
    assert x.mean().abs() < 0.01 and (x.var(1) - 1).abs().max() < 0.02
    assert abs(torch.corrcoef(x)[0, 1].item() - 0.75) < 0.01  # 1 - sigma^2


def test_the_ratio_is_exactly_one_without_an_update(stage, conditions):
    group, _ = stage.roll_group(stage.policy, conditions, 1, step=0, tag=3)
    with torch.enable_grad():
        pred = replay_chunk(stage.policy, group, **stage._kw())
    assert pred.requires_grad and pred.shape == group.x0_old.shape == (1, 3, 4, 16, 1, 6, 10)
    assert torch.equal(pred.detach(), group.x0_old)  # the rollout's predictions, bit for bit
    anchors = torch.tensor([0, 3])
    _, logs = contrastive_loss(
        pred, group.x0_old, group.x0_ref, anchors, group.advantages, group.tau, 1e-4, 0.04
    )
    assert logs["ratio_dev"] == 0.0
    assert 0.1 < logs["entropy_old"] < 1.0  # the automatic tau: neither one-hot nor uniform
    # changed weights move the ratio (the check above can fail)
    moved = copy.deepcopy(stage.policy)
    with torch.no_grad():
        moved.proj_out.weight.add_(1e-3)
    _, logs = contrastive_loss(replay_chunk(moved, group, **stage._kw()), group.x0_old, group.x0_ref, anchors,
                               group.advantages, group.tau, 1e-4, 0.04)  # fmt: skip
    assert logs["ratio_dev"] > 0 and logs["kl"] > 0


def test_the_gradient_reaches_only_the_forked_chunk(stage, conditions, monkeypatch):
    group, _ = stage.roll_group(stage.policy, conditions, 0, step=0, tag=3)
    group.prefix.requires_grad_(True)
    calls = record_passes(stage.policy, monkeypatch)
    stage.policy.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss, _ = stage.group_loss([group], step=0, update=0, branch=0)
        loss.backward()
    graded = [c for c in calls if c[0]]
    assert len(graded) == 3  # chunk k's three denoising passes, no cache write
    assert all(not write and written == group.fork for _, write, written in graded)
    assert [c for c in calls if not c[0]] == [
        (False, True, m) for m in range(group.fork)
    ]  # the prefix's writes
    assert group.prefix.grad is None  # nothing flows into the frames before the fork
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage.policy.parameters())


def test_advantages_are_normalised_per_neighbourhood():
    r = torch.tensor([1.0, 2.0, 4.0, 9.0])
    a = neighbourhood_advantages(r)
    assert a.mean().abs() < 1e-6 and abs(a.std(correction=0).item() - 1) < 1e-5
    torch.testing.assert_close(neighbourhood_advantages(r, "quasi_norm", p=2.0), a)  # p = 2: the z-score
    for kind in ("zscore", "quasi_norm"):
        assert torch.equal(neighbourhood_advantages(torch.full((5,), 3.25), kind), torch.zeros(5))
    # quasi-norm (p < 2) shrinks a group whose deviations are spread evenly against one with an outlier
    even, outlier = torch.tensor([0.0, 1, 2, 3]), torch.tensor([0.0, 0, 0, 3])
    def ratio(r):
        return neighbourhood_advantages(r, "quasi_norm").abs().max() / neighbourhood_advantages(r).abs().max()

    assert ratio(even) < ratio(outlier)
    with pytest.raises(ValueError, match="expected 'zscore' or 'quasi_norm'"):
        neighbourhood_advantages(r, "rank")


def test_auto_tau_is_the_mean_pairwise_distance():
    x = torch.zeros(1, 1, 3, 2)
    x[0, 0, 1] = 1.0  # distances: (0,1) 1, (0,2) 0, (1,2) 1 -> mean over ordered pairs 4/6
    assert auto_tau(x).item() == pytest.approx(2 / 3)


def test_the_buffer_keeps_the_newest_and_draws_from_a_seed(stage, conditions):
    group, _ = stage.roll_group(stage.policy, conditions, 0, step=0, tag=3)
    buffer = ReplayBuffer(2)
    for step in range(3):
        buffer.push([dataclasses.replace(group, step=step)])
    assert len(buffer) == 2 and buffer.pushed == 3
    assert buffer.draw(2, 5) == buffer.draw(2, 5) and sorted(buffer.draw(2, 5)) == [0, 1]
    assert len(buffer.draw(5, 5)) == 5  # more than it holds: with replacement
    restored = ReplayBuffer(9)
    restored.load_state_dict(buffer.state_dict())
    assert restored.size == 9 and restored.pushed == 3 and [e.step for e in restored.entries] == [1, 2]
    assert all(torch.equal(a.x0_old, b.x0_old) for a, b in zip(buffer.entries, restored.entries, strict=True))
    smaller = ReplayBuffer(1)  # a smaller configured size keeps the newest entries
    smaller.load_state_dict(buffer.state_dict())
    assert [e.step for e in smaller.entries] == [2]
    # an entry owns its tensors: no view of the batch it came from
    assert buffer.entries[0].text.untyped_storage().data_ptr() != group.text.untyped_storage().data_ptr()


def test_a_resumed_run_logs_the_same_losses_and_keeps_the_buffer(tmp_path):
    """Three steps straight, against two, a stop, and a resume for the third: the same losses to the bit,
    and the same buffer (contents and the draws from it) in the last checkpoint."""
    from ardrag.training.run import train

    train(tiny_config("copo", run_dir=str(tmp_path / "straight"), steps=3, save_every=1), progress=False)
    stopped = tiny_config("copo", run_dir=str(tmp_path / "resumed"), steps=2, save_every=1)
    train(stopped, progress=False)
    train(stopped.model_copy(update={"steps": 3}), resume=True, progress=False)
    straight = (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()
    resumed = (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()
    assert len(straight) == 3 and straight == resumed
    logs = [json.loads(line) for line in straight]
    assert [r["copo_replay/buffer"] for r in logs] == [1.0, 2.0, 3.0]  # one reference group per step
    assert logs[0]["copo/ratio_dev"] == 0.0 and logs[0]["copo_update1/ratio_dev"] > 0
    a = torch.load(tmp_path / "straight" / "checkpoints" / "step-3" / "extra.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "step-3" / "extra.pt", weights_only=False)
    assert a["buffer"]["pushed"] == b["buffer"]["pushed"] == 3
    for x, y in zip(a["buffer"]["entries"], b["buffer"]["entries"], strict=True):
        for key, value in x.items():
            assert torch.equal(value, y[key]) if isinstance(value, torch.Tensor) else value == y[key], key
    assert all(math.isfinite(v) for r in logs for v in r.values())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"copo": {"anchors": 9, "group_size": 4}}, r"anchors is 9 with group_size 4; expected at most"),
        ({"copo": {"latent_frames": 2, "chunk_frames": 2}}, r"latent_frames is 2 with chunk_frames 2"),
        ({"copo": {"tau": -1.0}}, r"copo.tau"),
        ({"copo": {"sigma": 1.5}}, r"copo.sigma"),
        ({"copo": {"on_policy": False, "replay": {"groups": 0}}},
         r"on_policy is false and replay.groups is 0"),
        ({"copo": {"on_policy": False, "replay": {"groups": 1, "source": "on_policy"}}},
         r"replay.source is 'on_policy': the buffer would never fill"),
        ({"copo": {"replay": {"source": "elsewhere"}}}, r"copo.replay.source"),
        ({"copo": {"advantage": "rank"}}, r"copo.advantage"),
        ({"copo": {"separate_adapters": True}}, r"copo.separate_adapters is true with lora null"),
        ({"distributed": "fsdp"}, r"distributed is 'fsdp' for stage copo; expected 'ddp'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_field_the_value_and_what_was_expected(fields, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, merge(preset("train", TINY), {"stage": "copo", **fields}), source="test")


def test_too_short_clips_are_refused_with_the_clip_named(stage, conditions):
    short = copy.copy(stage)
    short.rl = stage.rl.model_copy(update={"chunk_frames": 2})
    with pytest.raises(ConfigError, match=r"clip '.*' has 3 latent frame\(s\): with chunk_frames 2"):
        short.fork_frames(conditions, 0, 0)


def test_separate_adapters_train_their_branches_merge_at_the_scale_and_resume(tmp_path):
    """lora with separate_adapters: the on-policy branch trains `on_policy`, the replay branch `replay`,
    each with its own optimizer (both kept in the checkpoint: a resumed run logs the same losses); the
    export is the plain student W0 + dW_replay + merge_scale dW_on_policy."""
    from safetensors.torch import load_file

    from ardrag.model.transformer_ardrag import CausalARDragTransformer
    from ardrag.training.run import train

    copo = {**COPO, "separate_adapters": True, "merge_scale": 0.5}
    fields = {"lora": {"rank": 4, "alpha": 8.0}, "copo": copo}
    straight = tiny_config("copo", run_dir=str(tmp_path / "straight"), steps=2, save_every=1, **fields)
    train(straight, progress=False)
    stopped = tiny_config("copo", run_dir=str(tmp_path / "resumed"), steps=1, save_every=1, **fields)
    train(stopped, progress=False)
    train(stopped.model_copy(update={"steps": 2}), resume=True, progress=False)
    straight = (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()
    assert straight == (tmp_path / "resumed" / "losses.jsonl").read_text().splitlines()
    optim = torch.load(tmp_path / "straight" / "checkpoints" / "step-2" / "optim.pt", weights_only=False)
    assert sorted(optim["optimizers"]) == ["on_policy", "replay"]

    state = load_file(str(tmp_path / "straight" / "checkpoints" / "step-2" / "policy.safetensors"))
    student = CausalARDragTransformer.from_pretrained(str(tmp_path / "straight" / "student"))
    assert not any("lora" in k for k in student.state_dict())
    layer = "blocks.0.attn1.to_q"
    delta = {name: state[f"{layer}.lora_B.{name}.weight"] @ state[f"{layer}.lora_A.{name}.weight"] * 2.0
             for name in ("on_policy", "replay")}  # alpha / rank = 2  # fmt: skip
    assert all(d.abs().max() > 0 for d in delta.values())  # both branches trained their own adapter
    expected = state[f"{layer}.base_layer.weight"] + delta["replay"] + 0.5 * delta["on_policy"]
    torch.testing.assert_close(student.state_dict()[f"{layer}.weight"], expected, rtol=0, atol=1e-6)


def test_each_branch_reaches_only_its_own_adapter(tiny_models, conditions):
    from ardrag.training.lora import adapter_parameters

    pipe, teacher = tiny_models
    config = tiny_config("copo", lora={"rank": 4, "alpha": 8.0}, copo={**COPO, "separate_adapters": True})
    stage = CoPOStage(config, pipe, teacher)
    own = {name: adapter_parameters(stage.policy, name) for name in ("on_policy", "replay")}
    phases = stage.phases(0)
    assert [(p.name, p.optimizer) for p in phases] == [
        ("copo", "on_policy"), ("copo_replay", "replay"), ("copo_update1", "on_policy"),
        ("copo_replay_update1", "replay")]  # fmt: skip
    for phase, other in zip(phases[:2], ("replay", "on_policy"), strict=True):
        stage.policy.zero_grad(set_to_none=True)
        with torch.enable_grad(), phase.context():
            loss, _ = phase.loss(_select(conditions, 0), 0)
            loss.backward()
        assert phase.params == own[phase.optimizer]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own[phase.optimizer])
        assert all(p.grad is None for p in own[other]), phase.name
