"""ardrag.retrain without Prefect: every stage through the local runner (``ardrag retrain --local``),
whose keys the Prefect flow then finds fresh; a missing annotation hook fails before any compute; a
training stage launched under torchrun by the retrain config's ``nproc_per_node``, resumed from its
checkpoints when it is run again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ardrag.data.build import ShardConfig, write_dataset
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.errors import ConfigError
from ardrag.retrain import (
    STAGES,
    Ledger,
    RetrainConfig,
    loss_figures,
    run_local,
    run_training,
    stage_key,
    train_config,
)

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


@pytest.mark.slow
def test_a_stage_under_torchrun_with_two_processes_then_resumed(tmp_path):
    cfg = ProceduralConfig(num_clips=4, seed=0, num_frames=9, buckets=["640x368"])
    shards = ShardConfig(shard_samples=2)  # one shard per process
    write_dataset(ProceduralSource(cfg).samples(), tmp_path / "data", cfg, shards=shards, name="procedural",
                  total=4, progress=False)  # fmt: skip
    teacher = {"config": {"steps": 2}, "nproc_per_node": 2}
    config = RetrainConfig.model_validate({"out": str(tmp_path), "preset": "tiny", "teacher": teacher})
    tc = train_config(config, "teacher", str(tmp_path / "data"), None)
    tc = tc.model_copy(update={"run_dir": str(tmp_path / "run")})
    summary = run_training(tc, nproc_per_node=2, progress=False)
    assert summary["steps"] == 2 and (tmp_path / "run" / "teacher").is_dir()
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-2" / "trainer.json").read_text())
    assert meta["world_size"] == 2  # really two processes
    assert set(loss_figures(tmp_path / "run")["teacher/loss"]) == {"first", "last"}
    # the same stage with more steps: its key changes; in the same folder it resumes from step 2
    longer = tc.model_copy(update={"steps": 3})
    assert stage_key(longer, "v1") != stage_key(tc, "v1") and stage_key(tc, "v1") == stage_key(tc, "v1")
    again = run_training(longer, nproc_per_node=2, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert again["steps"] == 3 and [r["step"] for r in rows] == [1, 2, 3]
