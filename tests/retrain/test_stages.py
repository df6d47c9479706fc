"""ardrag.retrain.stages: a training stage launched under torchrun by the retrain config's
``nproc_per_node``, resumed from its checkpoints when it is run again."""

import json

import pytest

from ardrag.data.build import ShardConfig, write_dataset
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.retrain.config import RetrainConfig, train_config
from ardrag.retrain.ledger import stage_key
from ardrag.retrain.report import loss_figures
from ardrag.retrain.stages import run_training


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
