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
from ardrag.retrain.config import STAGES, RetrainConfig
from ardrag.retrain.ledger import Ledger
from ardrag.retrain.run import run_local

ARDRAG = str(Path(sys.executable).with_name("ardrag"))
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
