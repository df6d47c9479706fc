"""`ardrag train` (ardrag.training.run) end to end on the tiny preset: teacher, then distillation from its
export, then the student drives `ardrag generate` through the real loading path (a saved Wan folder +
--checkpoint); GRPO's reward curves; a time limit, then resume; a VAE folder in place of the preset's."""

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
from training_helpers import ardrag

from ardrag.data.codec import get_decoder
from ardrag.errors import ConfigError
from ardrag.model.tiny import build_tiny_pipeline
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer
from ardrag.training.run import build_models, check_config, resolve_config, train


@pytest.mark.slow
def test_teacher_then_distill_then_generate(tmp_path):
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({"ema_decay": 0.5}))
    teacher = ardrag("train", "teacher", "--preset", "tiny", "--config", "teacher.yaml", "--run-dir", "t",
                     "--steps", "3", "--json", cwd=tmp_path)  # fmt: skip
    run = tmp_path / "t"
    assert teacher["steps"] == 3 and teacher["last"]["teacher/loss"] > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-3"]  # kept: 2
    files = sorted(p.name for p in (run / "checkpoints" / "step-3").iterdir())
    assert files == ["ema_teacher.safetensors", "optim.pt", "rng-0.pt", "teacher.safetensors", "trainer.json"]
    assert [json.loads(x)["step"] for x in (run / "losses.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert yaml.safe_load((run / "config.yaml").read_text())["ema_decay"] == 0.5  # the resolved config
    exported = ARDragTransformer.from_pretrained(tmp_path / teacher["export"])  # EMA weights, not the last
    ema = load_file(str(run / "checkpoints" / "step-3" / "ema_teacher.safetensors"))
    raw = load_file(str(run / "checkpoints" / "step-3" / "teacher.safetensors"))
    state = exported.state_dict()
    assert all(torch.equal(state[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)

    (tmp_path / "distill.yaml").write_text(yaml.safe_dump({"model": {"init": teacher["export"]}}))
    student = ardrag("train", "distill", "--preset", "tiny", "--config", "distill.yaml", "--run-dir", "d",
                     "--steps", "3", "--json", cwd=tmp_path)  # fmt: skip
    logged = [json.loads(x) for x in (tmp_path / "d" / "losses.jsonl").read_text().splitlines()]
    assert ["generator/dmd" in r for r in logged] == [True, False, True]  # generator_every 2, step 0 too
    assert all("critic/flow" in r and "critic/disc" in r for r in logged)
    model = CausalARDragTransformer.from_pretrained(tmp_path / student["export"])
    assert model.config.cache_window == 2  # the distillation's cache, saved with the student

    build_tiny_pipeline(0).save_pretrained(str(tmp_path / "wan"))  # a Wan I2V folder as users have one
    Image.fromarray((np.random.default_rng(0).random((368, 640, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "ref.png"
    )
    points = {"x": [100 + 3 * i for i in range(9)], "y": [200] * 9}
    (tmp_path / "traj.json").write_text(
        json.dumps({"width": 640, "height": 368, "fps": 16, "points": [points]})
    )
    out = ardrag("generate", "--ref", "ref.png", "--traj", "traj.json", "--prompt", "a ball rolls right",
                 "--out", "o.mp4", "--model", "wan", "--checkpoint", student["export"], "--json",
                 cwd=tmp_path)  # fmt: skip
    assert out["frames"] == 9 and (out["width"], out["height"]) == (640, 368)
    assert get_decoder("pyav").decode((tmp_path / "o.mp4").read_bytes()).shape == (9, 368, 640, 3)


@pytest.mark.slow
def test_train_draws_a_progress_bar_on_a_terminal_and_plain_lines_elsewhere(tmp_path):
    from terminal import run_in_pty

    argv = [sys.executable, "-m", "ardrag.cli", "train", "teacher", "--preset", "tiny", "--steps", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shown = run_in_pty([*argv, "--run-dir", "on-terminal"], cwd=tmp_path, env=env)
    assert "\r" in shown and "train teacher: 100%" in shown and "4/4" in shown and "loss=" in shown
    assert "train teacher: 4/4 step" not in shown  # the bar, not the plain lines
    piped = subprocess.run([*argv, "--run-dir", "piped"], cwd=tmp_path, capture_output=True, text=True,
                           env=env)  # fmt: skip
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "\r" not in piped.stderr and "%|" not in piped.stderr
    plain = [line.split(" ", 1)[1] for line in piped.stderr.splitlines() if "train teacher:" in line]
    assert [line.split(" (")[0] for line in plain] == ["train teacher: 2/4 step", "train teacher: 4/4 step"]
    assert all("(teacher/loss " in line for line in plain)
    (log,) = (tmp_path / "piped" / "logs").glob("train-teacher-*.log")
    last = piped.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"full log: {log}")
    library_warnings = [line.split(": ", 1)[1] for line in log.read_text().splitlines()
                        if " WARNING " in line and " ardrag." not in line]  # fmt: skip
    assert not any(w in piped.stderr for w in library_warnings)  # in the log file only
    n = len(library_warnings)  # (transformers warns here when torchvision is not installed)
    assert last.endswith(f"({n} library warning{'s' * (n > 1)} in it)") if n else last == f"full log: {log}"


@pytest.mark.slow
def test_grpo_runs_logs_rewards_and_plots_the_curves(tmp_path):
    config = resolve_config("grpo", preset="tiny", overrides={
        "run_dir": str(tmp_path), "steps": 3, "grpo": {"updates_per_rollout": 2},
    })  # fmt: skip
    summary = train(config, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"grpo/reward_motion", "grpo/reward_aesthetic", "grpo/reward_total", "grpo/kl"} <= set(r)
        assert r["grpo/ratio_max_dev"] == 0.0  # the first update: no change since the rollout
        assert "grpo_update1/loss" in r and "grpo_update1/reward_motion" not in r
    assert any(r["grpo_update1/ratio_max_dev"] > 0 for r in rows)  # the second update moved the policy
    plot = Image.open(summary["rewards_plot"])
    assert plot.size[0] > 400 and plot.size[1] > 200
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
    assert (tmp_path / "student" / "config.json").is_file()


def test_a_time_limit_saves_and_stops_and_resume_goes_on(tmp_path):
    limited = {"run_dir": str(tmp_path), "steps": 4, "time_limit_minutes": 1e-6}
    summary = train(resolve_config("teacher", preset="tiny", overrides=limited), progress=False)
    assert summary["stopped_early"] and summary["steps"] == 1  # the limit is checked after each step
    assert (tmp_path / "checkpoints" / "step-1").is_dir() and (tmp_path / "teacher").is_dir()
    rest = train(resolve_config("teacher", preset="tiny", overrides={"run_dir": str(tmp_path), "steps": 4}),
                 resume=True, progress=False)  # fmt: skip
    assert not rest["stopped_early"] and rest["steps"] == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_vae_folder_replaces_the_presets_vae(tmp_path):
    other = build_tiny_pipeline(7).vae  # another seed: other weights
    other.save_pretrained(str(tmp_path / "vae"))
    pipe, _ = build_models(
        resolve_config("teacher", preset="tiny", overrides={"model": {"vae": str(tmp_path / "vae")}})
    )
    theirs, ours = other.state_dict(), pipe.vae.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    config = resolve_config("teacher", preset="tiny", overrides={"model": {"vae": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="model.vae .* is not a folder"):
        check_config(config)


def test_build_models_takes_a_transformer_and_a_vae_in_place_of_the_configs():
    from ardrag.model.tiny import tiny_transformer, tiny_vae
    from ardrag.presets import TINY, TOY

    config = resolve_config("teacher", preset=TINY)
    wide, vae = tiny_transformer(5, TOY), tiny_vae(9)
    pipe, teacher = build_models(config, transformer=wide, vae=vae)
    assert isinstance(teacher, ARDragTransformer) and teacher.config.num_layers == 4  # the toy width
    assert torch.count_nonzero(teacher.control_embedding.weight) == 0  # from Wan: zero control weights
    ours, theirs = pipe.vae.state_dict(), vae.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert pipe.transformer.config.num_layers == 2  # the encoders' pipeline stays the preset's
    _, same = build_models(config, transformer=teacher)  # an ARDragTransformer is taken as it is
    assert same is teacher
    narrow = tiny_transformer(0, TINY, text_dim=16)  # reads 16-wide text; the tiny encoders write 32
    with pytest.raises(ConfigError, match="the transformer override does not fit tiny: text_dim is 16"):
        build_models(config, transformer=narrow)


def test_the_toy_model_preset_trains_with_its_wider_transformer(tmp_path):
    from ardrag.presets import TINY, TOY

    overrides = {"run_dir": str(tmp_path), "steps": 1, "model": {"preset": TOY}}
    summary = train(resolve_config("teacher", preset=TINY, overrides=overrides), progress=False)
    exported = ARDragTransformer.from_pretrained(summary["export"])
    assert exported.config.num_layers == 4 and exported.config.attention_head_dim == 32
