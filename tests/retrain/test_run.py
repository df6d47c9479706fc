"""ardrag.retrain.run without Prefect: every stage through the local runner (``ardrag retrain --local``),
whose keys the Prefect flow then finds fresh; a missing annotation hook fails before any compute."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ardrag.errors import ConfigError
from ardrag.retrain.config import RetrainConfig, stage_names
from ardrag.retrain.ledger import Ledger
from ardrag.retrain.run import run_local

ARDRAG = str(Path(sys.executable).with_name("ardrag"))
STAGES = stage_names(RetrainConfig())  # the default rl: grpo
# the CLI in a fresh interpreter, then which Prefect modules it imported (none, without Prefect)
CLI_THEN_MODULES = """
import json, sys
from ardrag.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "prefect": sorted(m for m in sys.modules if m.split(".")[0] == "prefect")}))
"""


def small_config(tmp_path: Path) -> Path:
    """Four procedural clips (two hard cases, accepted by ``auto`` annotation), two steps a stage."""
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({
        "out": str(tmp_path / "retrain"), "preset": "tiny", "annotation": "auto", "progress": False,
        "curation": {"source": "procedural", "preset": "tiny", "config": {"auto_accept": True},
                     "source_config": {"num_clips": 4, "fast_prob": 0.5, "min_fast_speed": 24.0,
                                       "max_fast_speed": 32.0}},
        "train": {"save_every": 2},
        "teacher": {"config": {"steps": 2}}, "distill": {"config": {"steps": 2}},
        "grpo": {"config": {"steps": 2}},
        "eval": {"procedural": {"num_clips": 2}},
    }))  # fmt: skip
    return path


@pytest.mark.slow
def test_local_runner_runs_every_stage_without_prefect_and_the_flow_finds_the_same_keys(tmp_path):
    config, out = small_config(tmp_path), tmp_path / "retrain"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-c", CLI_THEN_MODULES]
    argv = [*cli, "retrain", "--local", "--config", str(config), "--json"]
    local = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert local.returncode == 0, local.stderr[-4000:]
    *_, printed, modules = local.stdout.strip().splitlines()
    assert json.loads(modules) == {"rc": 0, "prefect": []}
    result = json.loads(printed)
    assert [s["stage"] for s in result["stages"]] == list(STAGES)
    assert {s["status"] for s in result["stages"]} == {"ran"}, result["stages"]
    report = Path(result["report"]).read_text()
    assert result["report"] == str(out / "report.md")
    for stage in STAGES:
        assert f"## {stage} (ran)" in report
    assert "auto-annotated" in report and "teacher/loss" in report and "grid.mp4" in report
    keys = {s["stage"]: s["key"] for s in result["stages"]}
    ledger = Ledger(out)
    assert {stage: ledger.get(stage)["key"] for stage in STAGES} == keys
    assert all(f"`{key}`" in report for key in keys.values())

    # the Prefect flow on the same config and folder computes the same keys: it skips every stage
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
    flow = subprocess.run([ARDRAG, "retrain", "--config", str(config), "--json"], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert flow.returncode == 0, flow.stderr[-4000:]
    again = json.loads(flow.stdout.strip().splitlines()[-1])
    assert {s["stage"]: s["status"] for s in again["stages"]} == dict.fromkeys(STAGES, "skipped")
    assert {s["stage"]: s["key"] for s in again["stages"]} == keys


def test_an_annotation_mode_without_its_hook_fails_before_any_compute(tmp_path):
    config = RetrainConfig.model_validate({"out": str(tmp_path / "retrain"), "annotation": "auto"})
    with pytest.raises(ConfigError, match="annotation 'auto' needs the annotation package.*annotators"):
        run_local(config)
    assert not (tmp_path / "retrain").exists()


@pytest.mark.slow
def test_rl_copo_runs_copo_after_distill_then_both_adds_grpo_before_it_and_reruns_nothing_else(tmp_path):
    """``rl: copo``: AR-CoPO right after the distillation, from the distilled student's export; then
    ``rl: both``: GRPO from that same student and AR-CoPO from GRPO's, the stages before them skipped;
    then the same again: every stage skipped."""
    out = tmp_path / "retrain"
    fields = {
        "out": str(out), "preset": "tiny", "rl": "copo", "progress": False,
        "curation": {"source": "procedural", "preset": "tiny", "config": {"auto_accept": True},
                     "source_config": {"num_clips": 2, "fast_prob": 0.0}},
        "train": {"steps": 1, "save_every": 1},
        "eval": {"procedural": {"num_clips": 1}},
    }  # fmt: skip
    config = RetrainConfig.model_validate(fields)
    first = run_local(config)
    stages = {s["stage"]: s for s in first["stages"]}
    assert list(stages) == ["curation", "annotation", "dataset", "teacher", "distill", "copo", "evaluation"]
    assert {k: s["status"] for k, s in stages.items() if k != "annotation"} == dict.fromkeys(
        ("curation", "dataset", "teacher", "distill", "copo", "evaluation"), "ran"
    ), first["stages"]
    student, copo = stages["distill"]["outputs"]["model"], stages["copo"]["outputs"]["model"]
    assert stages["copo"]["start"].startswith(f"the distill stage's export `{student}`;")
    resolved = yaml.safe_load((Path(stages["copo"]["outputs"]["run folder"]) / "config.yaml").read_text())
    assert resolved["stage"] == "copo" and resolved["model"]["init"] == student
    assert stages["evaluation"]["start"].startswith(f"the copo stage's export `{copo}`;")
    assert not list((out / "train").glob("grpo-*"))  # no GRPO run
    report = Path(first["report"]).read_text()
    assert "## copo (ran)" in report and "## grpo" not in report

    both = run_local(RetrainConfig.model_validate({**fields, "rl": "both"}))
    again = {s["stage"]: s for s in both["stages"]}
    chain = ("teacher", "distill", "grpo", "copo")
    assert [*again] == ["curation", "annotation", "dataset", *chain, "evaluation"]
    assert {k: s["status"] for k, s in again.items() if k != "annotation"} == {
        "curation": "skipped", "dataset": "skipped", "teacher": "skipped", "distill": "skipped",
        "grpo": "ran", "copo": "ran", "evaluation": "ran",
    }  # fmt: skip
    assert again["grpo"]["start"].startswith(f"the distill stage's export `{student}`;")
    grpo = again["grpo"]["outputs"]["model"]
    assert again["copo"]["start"].startswith(f"the grpo stage's export `{grpo}`;")
    assert again["copo"]["key"] != stages["copo"]["key"] and Path(copo).is_dir()  # beside the first one
    final = again["copo"]["outputs"]["model"]
    assert again["evaluation"]["start"].startswith(f"the copo stage's export `{final}`;")

    rerun = run_local(RetrainConfig.model_validate({**fields, "rl": "both"}))
    statuses = {s["stage"]: s["status"] for s in rerun["stages"] if s["stage"] != "annotation"}
    assert statuses == dict.fromkeys(("curation", "dataset", *chain, "evaluation"), "skipped")
