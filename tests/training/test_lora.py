"""LoRA adapters on the student (ardrag.training.lora) and LoRA runs of the GRPO stage: adapters start as
a zero update, only they train, they switch on and off, they merge into a plain diffusers model that
`ardrag generate` loads, and a LoRA run checkpoints and resumes like full fine-tuning."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from training_helpers import ardrag, causal_student, procedural_batch, tiny_config

from ardrag.cli import main
from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom, SelectiveNoise
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.training import lora
from ardrag.training.config import LoRAConfig
from ardrag.training.grpo import replay, selective_rollout

SAMPLER = FrameSampler((1000.0, 755.0, 522.0))
KW = {"sampler": SAMPLER, "window": 2}
RANK4 = LoRAConfig(rank=4, alpha=8)
ADAPTED = 2 * 8  # layers with adapters: 2 blocks x (self- and cross-attention's to_q, to_k, to_v, to_out.0)


def frames(model, c):
    """Two latent frames of the deterministic sampler: every layer, the cache writes included."""
    return selective_rollout(model, c, FrameNoise(SampleRandom([7, 8])), frames=2, **KW).clean


def train_adapter(model, c, name, steps=3):
    """A few AdamW steps on adapter ``name`` alone, with a loss that moves it: the actions' negative
    log-probability (GRPO's replay) under that adapter."""
    picks = torch.tensor([[-1, 0, 1], [-1, 1, 0]])
    noise = SelectiveNoise(SampleRandom([7, 8]), SampleRandom([1, 2]), picks, SAMPLER.transitions)
    rollout = selective_rollout(model, c, noise, **KW)
    opt = torch.optim.AdamW(lora.adapter_parameters(model, name), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        with lora.active(model, [name]):
            logp, _ = replay(model, c, rollout, **KW)
        (-logp.mean()).backward()
        opt.step()


def test_adapters_start_as_a_zero_update_and_only_they_train(tiny_models, conditions):
    model = causal_student(tiny_models)
    plain = copy.deepcopy(model)
    lora.add_adapters(model, RANK4, ["default"])
    assert torch.equal(frames(model, conditions), frames(plain, conditions))  # bit for bit: B = 0
    adapter = lora.adapter_parameters(model, "default")
    assert len(adapter) == 2 * ADAPTED  # A and B per layer
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in adapter}
    assert sum(p.numel() for p in trainable) < 0.2 * sum(p.numel() for p in model.parameters())
    train_adapter(model, conditions, "default", steps=1)
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in got)
    assert not torch.equal(frames(model, conditions), frames(plain, conditions))  # the step moved it


def test_active_picks_the_adapters_a_pass_adds(tiny_models, conditions):
    model = causal_student(tiny_models)
    plain = frames(model, conditions)
    lora.add_adapters(model, RANK4, ["a", "b"])
    b_before = [p.clone() for p in lora.adapter_parameters(model, "b")]
    train_adapter(model, conditions, "a")
    assert all(torch.equal(p, q) for p, q in zip(lora.adapter_parameters(model, "b"), b_before, strict=True))
    assert lora.active_adapters(model) == ["a", "b"]  # restored after each pass
    assert all(p.requires_grad for p in lora.adapter_parameters(model, "b"))
    with lora.active(model, []):
        assert torch.equal(frames(model, conditions), plain)  # no adapter: the base
    with lora.active(model, ["b"]):
        assert torch.equal(frames(model, conditions), plain)  # b is untrained: still a zero update
    with lora.active(model, ["a"]):
        trained = frames(model, conditions)
    assert (trained - plain).abs().max() > 1e-3
    assert torch.equal(frames(model, conditions), trained)  # a and b on: a's update alone
    with pytest.raises(ValueError, match=r"no adapter named \['c'\] on the model; it has \['a', 'b'\]"):
        with lora.active(model, ["c"]):
            pass


@pytest.mark.parametrize("scales", [{"a": 1.0}, {"a": 1.0, "b": 0.5}])
def test_the_merged_model_computes_what_the_adapted_one_computes(tiny_models, conditions, tmp_path, scales):
    """Tolerance: 1e-5 absolute on clean latents up to ~3 in size. The merged layer computes (W0 + s B A) x
    in one product where the adapted one adds s B (A x) to W0 x: the same sums in another order, so
    float32 rounding differs in the last bits (measured: 5e-7 at most)."""
    model = causal_student(tiny_models)
    lora.add_adapters(model, RANK4, ["a", "b"])
    train_adapter(model, conditions, "a")
    train_adapter(model, conditions, "b")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = copy.deepcopy(model)  # scales[n] * dW_n as adapters: B scaled, the update linear in B
    with torch.no_grad():
        for name in ("a", "b"):
            for layer_name, p in expected.named_parameters():
                if f".lora_B.{name}." in layer_name:
                    p.mul_(scales.get(name, 0.0))
    with lora.active(expected, list(scales)):
        want = frames(expected, conditions)

    plain = lora.merged(model, scales)
    assert type(plain) is CausalARDragTransformer and not lora.adapter_names(plain)
    keys = list(plain.state_dict())
    assert not any("lora" in k or "base_layer" in k for k in keys)
    assert keys == list(CausalARDragTransformer.from_config(plain.config).state_dict())
    assert all(p.requires_grad for p in plain.parameters())  # a plain model, every weight trainable again
    got = frames(plain.eval(), conditions)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (got - frames(causal_student(tiny_models), conditions)).abs().max() > 1e-3  # the updates are in it
    after = model.state_dict()  # the adapted model is left as it was
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert lora.active_adapters(model) == ["a", "b"]

    plain.save_pretrained(str(tmp_path / "student"))
    loaded = CausalARDragTransformer.from_pretrained(tmp_path / "student").eval()
    assert torch.equal(frames(loaded, conditions), got)


def test_adapters_keep_their_base_exactly_when_scaled_to_nothing(tiny_models, conditions):
    model = causal_student(tiny_models)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora.add_adapters(model, RANK4, ["a"])
    train_adapter(model, conditions, "a", steps=1)
    plain = lora.merged(model, {"a": 0.0}).state_dict()
    assert plain.keys() == base.keys() and all(torch.equal(plain[k], base[k]) for k in base)


def test_adapters_added_in_two_calls_are_all_trainable_and_active(tiny_models):
    model = causal_student(tiny_models)
    lora.add_adapters(model, RANK4, ["on_policy"])
    lora.add_adapters(model, RANK4, ["replay"])
    assert lora.adapter_names(model) == lora.active_adapters(model) == ["on_policy", "replay"]
    adapters = lora.adapter_parameters(model, "on_policy") + lora.adapter_parameters(model, "replay")
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in adapters}


def test_bad_adapters_are_refused(tiny_models):
    model = causal_student(tiny_models)
    with pytest.raises(ConfigError, match=r"lora.target_modules: 'to_x' matches no module of the student; "
                       r"expected names of its Linear layers .*'attn1.to_q'"):  # fmt: skip
        lora.add_adapters(model, LoRAConfig(rank=4, target_modules=["to_q", "to_x"]), ["a"])
    lora.add_adapters(model, RANK4, ["a"])
    with pytest.raises(ValueError, match=r"already has adapters \['a'\]"):
        lora.add_adapters(model, RANK4, ["a"])
    with pytest.raises(ValueError, match=r"no adapter named \['z'\]"):
        lora.merged(model, {"z": 1.0})


def test_lora_is_refused_for_a_stage_that_trains_every_weight(capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"lora": {"rank": 4}}))
    code = main(["train", "teacher", "--preset", "tiny", "--config", str(tmp_path / "bad.yaml"),
                 "--run-dir", str(tmp_path / "run"), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    rl = "['grpo', 'copo', 'tempact']"
    assert f"lora is set for stage 'teacher'; expected null there (LoRA is for {rl})" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- the GRPO stage with LoRA --------------------------------------------------------------------
def test_a_lora_grpo_checkpoint_round_trips_bit_for_bit(tiny_models, tmp_path):
    """Save a trained LoRA policy; a stage built anew from the same config (other random adapter
    initialisation) loads it strictly: every weight and optimizer state equal."""
    from ardrag.training.grpo import GRPOStage
    from ardrag.training.trainer import Trainer

    pipe, teacher = tiny_models
    config = tiny_config("grpo", run_dir=str(tmp_path), steps=1, lora={"rank": 4})
    raw = procedural_batch()
    stage = GRPOStage(config, pipe, teacher)
    assert {n for n, p in stage.policy.named_parameters() if p.requires_grad} == {
        n for n, p in stage.policy.named_parameters() if ".lora_" in n
    }
    assert not any(".lora_" in k for k in stage.reference.state_dict())  # the reference stays plain
    trainer = Trainer(config, stage, lambda _epoch: iter([raw] * 4))
    trainer.run(progress=False)  # one step, saved at the end
    torch.manual_seed(123)  # another draw of the adapters' A
    again = Trainer(config, GRPOStage(config, pipe, teacher), lambda _epoch: iter([raw] * 4))
    key = "blocks.0.attn1.to_q.lora_A.default.weight"
    assert not torch.equal(again.stage.policy.state_dict()[key], stage.policy.state_dict()[key])
    assert again.load_latest()
    ours, theirs = stage.policy.state_dict(), again.stage.policy.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a, b = trainer.optimizers["policy"].state_dict(), again.optimizers["policy"].state_dict()
    assert len(a["state"]) == len(lora.adapter_parameters(stage.policy, "default"))
    for i, s in a["state"].items():
        assert all(torch.equal(s[k], b["state"][i][k]) for k in s)

    # the export of a sharded run: its gathered state dict loaded into an unsharded copy, then merged
    from ardrag.training.run import export_model

    out = export_model(config, again, state={k: v.clone() for k, v in theirs.items()})
    exported = load_file(os.path.join(out, "diffusion_pytorch_model.safetensors"))
    want = lora.merged(stage.policy, {"default": 1.0}).state_dict()
    assert exported.keys() == want.keys() and all(torch.equal(exported[k], want[k]) for k in want)


def test_a_lora_run_with_ema_exports_the_merged_average(tmp_path):
    from ardrag.training.grpo import GRPOStage
    from ardrag.training.run import build_models, resolve_config, train

    config = resolve_config("grpo", preset="tiny", overrides={
        "run_dir": str(tmp_path), "steps": 2, "ema_decay": 0.5, "lora": {"rank": 4}, "optim": {"lr": 1e-2},
    })  # fmt: skip
    summary = train(config, progress=False)
    step = tmp_path / "checkpoints" / "step-2"
    ema, raw = load_file(str(step / "ema_policy.safetensors")), load_file(str(step / "policy.safetensors"))
    assert ema.keys() == raw.keys() and any(".lora_B.default." in k for k in ema)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ".lora_" in k)
    assert all(torch.equal(ema[k], raw[k]) for k in ema if ".lora_" not in k)  # frozen: their own average

    pipe, start = build_models(config)
    policy = GRPOStage(config, pipe, start).policy
    policy.load_state_dict(ema)
    want = lora.merged(policy, {"default": 1.0}).state_dict()
    exported = load_file(os.path.join(summary["export"], "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == want.keys() and all(torch.equal(exported[k], want[k]) for k in want)


@pytest.mark.slow
def test_a_lora_grpo_run_exports_a_plain_student_that_generates(tmp_path):
    from ardrag.model.tiny import build_tiny_pipeline

    (tmp_path / "lora.yaml").write_text(yaml.safe_dump({"lora": {"rank": 4}, "optim": {"lr": 1e-2}}))
    summary = ardrag("train", "grpo", "--preset", "tiny", "--config", "lora.yaml", "--run-dir", "r",
                     "--steps", "2", "--json", cwd=tmp_path)  # fmt: skip
    export = tmp_path / summary["export"]
    assert sorted(p.name for p in export.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    weights = load_file(str(export / "diffusion_pytorch_model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in weights)
    checkpoint = load_file(str(tmp_path / "r" / "checkpoints" / "step-2" / "policy.safetensors"))
    assert "blocks.0.attn1.to_q.lora_B.default.weight" in checkpoint  # the checkpoint keeps the adapter
    moved = weights["blocks.0.attn1.to_q.weight"] - checkpoint["blocks.0.attn1.to_q.base_layer.weight"]
    assert moved.abs().max() > 0  # the adapter's update merged in
    assert torch.equal(weights["blocks.0.ffn.net.2.weight"], checkpoint["blocks.0.ffn.net.2.weight"])

    build_tiny_pipeline(0).save_pretrained(str(tmp_path / "wan"))  # the tiny preset's encoders, as a folder
    Image.fromarray((np.random.default_rng(0).random((368, 640, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "ref.png"
    )
    points = {"x": [100 + 3 * i for i in range(9)], "y": [200] * 9}
    drag = {"width": 640, "height": 368, "fps": 16, "points": [points]}
    (tmp_path / "traj.json").write_text(json.dumps(drag))
    out = ardrag("generate", "--ref", "ref.png", "--traj", "traj.json", "--prompt", "a ball rolls right",
                 "--out", "o.mp4", "--model", "wan", "--checkpoint", summary["export"], "--json",
                 cwd=tmp_path)  # fmt: skip
    assert out["frames"] == 9 and (tmp_path / "o.mp4").stat().st_size > 0


def test_a_resumed_lora_run_repeats_the_losses_of_an_uninterrupted_one(tmp_path):
    """Equal to the bit: the resume restores the adapter, the frozen weights, the optimizer, the data
    position and the RNG, and every draw is seeded per step and sample (as for full fine-tuning)."""
    from ardrag.training.run import resolve_config, train

    def run(run_dir, steps, resume=False):
        overrides = {"run_dir": str(run_dir), "steps": steps, "lora": {"rank": 4}, "optim": {"lr": 1e-2}}
        config = resolve_config("grpo", preset="tiny", overrides=overrides)
        return train(config, resume=resume, progress=False)

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    run(tmp_path / "resumed", 4, resume=True)

    def losses(run_dir):
        return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4] and straight == resumed
    assert any(r["grpo/kl"] > 0 for r in straight)  # the adapter moved the policy away from the reference
    a = load_file(str(tmp_path / "straight" / "student" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "student" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_sharded_lora_run_exports_the_merged_student(tmp_path):
    """distributed: fsdp over 2 gloo processes with an adapter: FSDP2 shards the adapted student (frozen
    and trainable parameters side by side), the checkpoint gathers it, the export merges it."""
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump({"distributed": "fsdp", "lora": {"rank": 4},
                                                        "optim": {"lr": 1e-2}}))  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "ardrag.cli", "train", "grpo", "--preset", "tiny", "--config", "fsdp.yaml", "--run-dir", "r",
           "--steps", "2", "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    state = load_file(str(tmp_path / "r" / "checkpoints" / "step-2" / "policy.safetensors"))
    assert any(".lora_B.default." in k for k in state)
    exported_config = CausalARDragTransformer.load_config(tmp_path / "r" / "student")
    model = CausalARDragTransformer.from_config(exported_config)
    lora.add_adapters(model, LoRAConfig(rank=4), ["default"])  # the run's: alpha at its default
    model.load_state_dict(state)
    want = lora.merged(model, {"default": 1.0}).state_dict()
    exported = load_file(str(tmp_path / "r" / "student" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == want.keys() and all(torch.equal(exported[k], want[k]) for k in want)
