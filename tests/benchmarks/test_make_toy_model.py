"""benchmarks/make_toy_model.py: stages already done are skipped, and ``--ship`` writes the final student,
the toy's VAE and its encoders into a model folder with a recipe.json that says how they were made (here
on stage folders of random weights, laid out as the toy benchmarks write them)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ardrag.model.model_folder import read_recipe
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.tiny import build_tiny_pipeline
from ardrag.presets import TOY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "benchmarks" / "make_toy_model.py")


def fake_stages(out: Path, grpo: bool = True) -> dict:
    """Stage folders as bench_train_toy.py and bench_grpo_toy.py leave them, with random weights."""
    pipe = ARDragPipeline.tiny(0, TOY)
    args = {"seed": 0, "eval_clips": 2, "heatmap_sigma": 3.0, "frames": 9}
    for name, vae in (("vae5", {"psnr_before": 9.0}), ("vae", {"psnr_after": 27.0})):
        (out / name).mkdir(parents=True)
        (out / name / "figures.json").write_text(json.dumps({"args": {**args, "vae_only": True}, "vae": vae}))
    row = {"mean_px": 5.0, "median_px": 4.0, "pairs": 10, "per_clip_mean_px": [5.0, 5.0]}
    toy = {"args": args, "size": [48, 80], "tracking": {"student self_rollout": row},
           "vae": {"from": "vae/vae", "psnr_before": 9.0, "psnr_after": 27.0},
           "teacher": {"control_dependence": {"own": 0.5, "zeroed": 0.9}}}  # fmt: skip
    (out / "toy").mkdir()
    (out / "toy" / "figures.json").write_text(json.dumps(toy))
    pipe.vae.save_pretrained(str(out / "toy" / "vae"))
    students = {"self_rollout": ARDragPipeline.tiny(1, TOY).transformer}
    run_config = {"distill": {"timesteps": [1000.0, 700.0, 400.0]}}
    students["self_rollout"].save_pretrained(str(out / "toy" / "self_rollout" / "student"))
    (out / "toy" / "self_rollout" / "config.yaml").write_text(yaml.safe_dump(run_config))
    if grpo:
        students["grpo"] = ARDragPipeline.tiny(2, TOY).transformer
        students["grpo"].save_pretrained(str(out / "grpo" / "run" / "student"))
        (out / "grpo" / "run" / "config.yaml").write_text(yaml.safe_dump(run_config))
        figures = {"args": {"seed": 3, "steps": 110}, "steps": 110, "before_after": {"held-out": {}}}
        (out / "grpo" / "figures.json").write_text(json.dumps(figures))
    return students


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ship_writes_the_final_student_and_the_recipe(tmp_path):
    students = fake_stages(tmp_path / "run")
    done = make("--out", str(tmp_path / "run"), "--ship", "--to", str(tmp_path / "toy"))
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("vae5", "vae", "toy", "grpo"):
        assert f"{stage}: done already" in done.stdout  # nothing rerun
    assert "MB in 12 files" in done.stdout
    recipe = read_recipe(tmp_path / "toy")
    assert recipe["preset"] == TOY and recipe["final"] == "grpo" and recipe["student"] == "grpo/run/student"
    run, toy = tmp_path / "run", tmp_path / "toy"
    assert recipe["made_by"] == f"python benchmarks/make_toy_model.py --out {run} --ship --to {toy}"
    assert len(recipe["commit"]) == 40 and isinstance(recipe["dirty"], bool) and recipe["quick"] is False
    stages = {s["stage"]: s for s in recipe["stages"]}
    assert list(stages) == ["vae5", "vae", "toy", "grpo"]
    assert stages["vae"]["command"] == (
        "python benchmarks/bench_train_toy.py --out DIR/vae --vae-only --vae-minutes 120 --vae-steps 360 "
        "--vae-init DIR/vae5/vae"
    )
    assert stages["grpo"]["command"].startswith("python benchmarks/bench_grpo_toy.py --out DIR/grpo --toy")
    assert stages["toy"]["args"]["heatmap_sigma"] == 3.0
    assert stages["toy"]["run"] == "run outside make_toy_model.py"
    assert recipe["seeds"] == {"toy run (training clips, encoders, transformer and VAE init)": 0,
                               "held-out clips": 1, "grpo": 3}  # fmt: skip
    assert recipe["figures"]["tracking_px"]["rows"]["student self_rollout"]["mean_px"] == 5.0
    assert recipe["figures"]["grpo"]["steps"] == 110 and recipe["figures"]["vae_psnr_db"]["fitted"] == 27.0
    g = recipe["generation"]
    assert (g["width"], g["height"], g["guidance_scale"], g["heatmap"]["sigma"]) == (80, 48, 1.0, 3.0)
    assert g["timesteps"] == [1000.0, 700.0, 400.0]

    pipe = ARDragPipeline.from_pretrained(str(tmp_path / "toy"))
    want = students["grpo"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in pipe.transformer.state_dict().items())
    drawn = build_tiny_pipeline(0, TOY)  # the encoders the toy run drew from its seed
    for a, b in ((pipe.wan.text_encoder, drawn.text_encoder), (pipe.wan.image_encoder, drawn.image_encoder)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not list(tmp_path.glob("toy.*"))  # no temporary folder left


@pytest.mark.slow
def test_final_self_rollout_ships_the_distilled_student(tmp_path):
    students = fake_stages(tmp_path / "run")
    done = make("--out", str(tmp_path / "run"), "--ship", "--to", f"{tmp_path}/toy", "--final=self_rollout")
    assert done.returncode == 0, done.stderr[-3000:]
    recipe = read_recipe(tmp_path / "toy")
    assert recipe["final"] == "self_rollout" and recipe["student"] == "toy/self_rollout/student"
    pipe = ARDragPipeline.from_pretrained(str(tmp_path / "toy"))
    assert torch.equal(pipe.transformer.proj_out.weight, students["self_rollout"].proj_out.weight)


@pytest.mark.slow
@pytest.mark.slow
def test_ship_only_runs_no_stage(tmp_path):
    fake_stages(tmp_path / "run", grpo=False)
    out = ["--out", str(tmp_path / "run"), "--ship", "--to", str(tmp_path / "toy"), "--ship-only"]
    done = make(*out, "--final", "self_rollout")
    assert done.returncode == 0 and "grpo: not run (--ship-only)" in done.stdout, done.stderr[-3000:]
    assert [s["stage"] for s in read_recipe(tmp_path / "toy")["stages"]] == ["vae5", "vae", "toy"]
    done = make(*out)  # GRPO's policy: not there
    assert done.returncode != 0 and "--final grpo: the GRPO stage has not run" in done.stderr


def test_no_exported_student_no_ship(tmp_path):
    fake_stages(tmp_path / "run")
    for p in (tmp_path / "run" / "grpo" / "run" / "student").iterdir():
        p.unlink()
    done = make("--out", str(tmp_path / "run"), "--ship", "--to", str(tmp_path / "toy"))
    assert done.returncode != 0 and "grpo/run/student: no exported student there" in done.stderr
    assert not (tmp_path / "toy").exists()
