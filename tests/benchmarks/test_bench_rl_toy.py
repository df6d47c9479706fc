"""benchmarks/bench_rl_toy.py runs as a user runs it, on a toy folder of random weights laid out as
bench_train_toy.py writes it: both RL stages train one small step from the same student, side by side,
and the held-out figures (start, each method, the differences with their intervals) are written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.presets import TOY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "benchmarks" / "bench_rl_toy.py")

TOY_ARGS = {  # bench_train_toy.py's data flags as its figures.json records them (the recipe's, 9 frames)
    "seed": 0, "frames": 9, "speed": [16.0, 32.0], "sprites": [1, 2], "sprite_size": [0.25, 0.4],
    "background": "flat", "sprite_texture": "smooth", "fast_prob": 0.0, "occlusion_prob": 0.0,
    "leave_prob": 0.0, "intensity": [1.0, 1.0], "heatmap_sigma": 3.0, "transformer": [4, 32, 4, 256],
}  # fmt: skip


def fake_toy(out: Path) -> Path:
    """A toy folder: figures.json, the toy preset's random VAE and a random causal student."""
    pipe = ARDragPipeline.tiny(0, TOY)
    pipe.vae.save_pretrained(str(out / "vae"))
    student = CausalARDragTransformer.from_config(pipe.transformer.config)
    student.load_state_dict(pipe.transformer.state_dict())
    student.save_pretrained(str(out / "self_rollout" / "student"))
    (out / "figures.json").write_text(json.dumps({"args": TOY_ARGS, "size": [48, 80]}))
    return out


@pytest.mark.slow
def test_both_methods_train_and_are_compared_on_held_out_clips(tmp_path):
    toy = fake_toy(tmp_path / "toy")
    out = tmp_path / "rl"
    args = ["--toy", str(toy), "--out", str(out), "--minutes", "5", "--steps", "1", "--seeds", "0",
            "--eval-clips", "2", "--clips", "1", "--batch", "1", "--group", "2", "--anchors", "1",
            "--updates-per-rollout", "1", "--resamples", "100"]  # fmt: skip
    done = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    for method in ("grpo", "copo"):
        run = figures["train"][method]["0"]
        assert run["steps"] == 1 and run["seconds"] > 0
        assert (out / "seed0" / method / "run" / "student" / "config.json").is_file()
        assert f"{method}/reward_motion" in (out / "seed0" / method / "run" / "losses.jsonl").read_text()
    assert figures["train"]["copo"]["0"]["updates_per_step"] == 2  # on-policy and replay, once each
    error = figures["held_out"]["consistency_error_px"]
    if error["clips"] >= 2:  # random weights: a clip may lose all its tracked points
        for key in ("starting student", "grpo - start", "copo - start", "copo - grpo"):
            assert error[key]["low"] <= error[key]["estimate"] <= error[key]["high"]
    assert "copo - grpo" in done.stdout and "held out" in done.stdout
