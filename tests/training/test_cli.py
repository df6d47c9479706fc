"""`ardrag train` end to end on the tiny preset: teacher, then distillation from its export, then the
student drives `ardrag generate` through the real loading path (a saved Wan folder + --checkpoint)."""

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

from ardrag.data.codec import get_decoder
from ardrag.data.sources.wan import build_tiny_pipeline
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer


def ardrag(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "ardrag.cli", *args], cwd=cwd, capture_output=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


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
