"""`ardrag retrain`: the whole retrain flow on real video files and the tiny models, through Prefect.

A rerun with no new data skips every stage; one more video reruns curation (for that video alone) and
every stage after it, into new run folders, the old ones kept."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import videos
import yaml

from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.shards import decode_sample, read_manifest, read_sample_file
from ardrag.retrain.config import RetrainConfig, stage_names

ARDRAG = str(Path(sys.executable).with_name("ardrag"))
STAGES = stage_names(RetrainConfig())  # the default rl: grpo


def retrain(config: Path) -> dict:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([ARDRAG, "retrain", "--config", str(config), "--json"], capture_output=True,
                         text=True, env=env, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in result["stages"]] == list(STAGES)
    return result


def statuses(result: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in result["stages"]}


def add_video(folder: Path, name: str, seed: int) -> None:
    videos.write_video(
        folder / name, frames=17, fps=16, size=(640, 368), content="textured-square", seed=seed
    )


@pytest.mark.slow
def test_rerun_skips_every_stage_and_a_new_video_reruns_from_curation(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        add_video(folder, f"v{i}.mp4", seed=i)
    out = tmp_path / "retrain"
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(out), "preset": "tiny", "annotation": "auto", "progress": False,
        "curation": {"source": "folder", "source_config": {"folder": str(folder), "clip_frames": 17},
                     "config": {"auto_accept": True}},
        "train": {"save_every": 2},
        "teacher": {"config": {"steps": 2}}, "distill": {"config": {"steps": 2}},
        "grpo": {"config": {"steps": 2}},
        "eval": {"procedural": {"num_clips": 2}},
    }))  # fmt: skip

    first = retrain(config)
    assert set(statuses(first).values()) == {"ran"}, statuses(first)
    report = Path(first["report"]).read_text()
    for stage in STAGES:
        assert f"## {stage} (ran)" in report
    assert "teacher/loss" in report and "grpo/reward_motion" in report and "grid.mp4" in report
    store = CurationStore(out / "curation")
    assert sorted(r["state"] for r in store.records()) == ["processed", "processed"]
    version = read_manifest(out / "curation" / "dataset")["version"]
    runs = sorted(p.name for p in (out / "train").iterdir())
    assert [r.split("-")[0] for r in runs] == ["distill", "grpo", "teacher"]

    again = retrain(config)
    assert set(statuses(again).values()) == {"skipped"}, statuses(again)
    assert read_manifest(out / "curation" / "dataset")["version"] == version
    assert sorted(p.name for p in (out / "train").iterdir()) == runs  # nothing new trained

    record_times = {r["id"]: r["time"] for r in store.records()}
    add_video(folder, "v2.mp4", seed=7)
    third = retrain(config)
    assert set(statuses(third).values()) == {"ran"}, statuses(third)
    records = store.records()
    assert len(records) == 3
    assert {r["id"]: r["time"] for r in records if r["id"] in record_times} == record_times  # not redone
    manifest = read_manifest(out / "curation" / "dataset")
    assert manifest["version"] != version and manifest["samples"] == 3
    after = sorted(p.name for p in (out / "train").iterdir())
    assert len(after) == 6 and set(runs) < set(after)  # new run folders beside the old ones
    first_keys = {s["stage"]: s["key"] for s in first["stages"]}
    assert all(s["key"] != first_keys[s["stage"]] for s in third["stages"])
    # every sample's provenance says how it was accepted: by rule, or without a person
    for c in (c for r in records for c in r["clips"] if c["state"] != "rejected"):
        review = store.review(c["key"])
        path = store.reviewed_sample_path(c["key"]) if review else out / "curation" / c["sample"]
        sample = decode_sample(*read_sample_file(path), get_decoder())
        annotation = sample.provenance.annotation
        if review:
            assert annotation.status == "auto-annotated" and "no person" in annotation.annotator
        else:
            assert (annotation.status, annotation.annotator) == ("auto", "auto-accept")


@pytest.mark.slow
def test_demo_queues_hard_cases_for_people_and_reports_every_stage(tmp_path):
    from factories import toy_model_folder

    from ardrag.errors import ConfigError
    from ardrag.presets import TOY, shipped_folder

    try:  # the stages start from the shipped toy model; without it, from a folder of random weights
        toy = shipped_folder(TOY)
    except ConfigError:
        toy = tmp_path / "toy"
        toy_model_folder(toy)
    quick = tmp_path / "quick.yaml"  # the demo's defaults, fewer clips and steps
    quick.write_text(yaml.safe_dump({
        "curation": {"source_config": {"num_clips": 8}}, "teacher": {"config": {"steps": 2}},
        "distill": {"config": {"steps": 2}}, "grpo": {"config": {"steps": 2}},
        "eval": {"procedural": {"num_clips": 2}}, "train": {"model": {"wan": str(toy)}},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ARDRAG_LS_URL" and not k.startswith("PREFECT_LOG")}
    env.update(OMP_NUM_THREADS="1")
    out = subprocess.run([ARDRAG, "demo", "--out", str(tmp_path / "demo"), "--config", str(quick)],
                         capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    report = (tmp_path / "demo" / "report.md").read_text()
    # the console: a line per stage start and end, a few plain progress lines, the summary; the rest
    # (Prefect's engine lines, httpx's request lines) in the log file it names last
    console = (out.stderr + out.stdout).splitlines()
    assert len(console) <= 40, "\n".join(console)
    assert "httpx" not in out.stderr and "Finished in state" not in out.stderr
    for stage in STAGES:
        assert re.search(rf"^\d\d:\d\d:\d\d {stage}: started$", out.stderr, re.M)
        assert re.search(rf"^\d\d:\d\d:\d\d {stage}: (ran|skipped \(off\))[ ;]", out.stderr, re.M)
        assert re.search(rf"^  {stage} +(ran|skipped \(off\)) ", out.stdout, re.M)  # the summary
    assert f"report: {tmp_path / 'demo' / 'report.md'}" in out.stdout
    assert re.search(r"demo done in \d+\.\d min", out.stdout)
    (log,) = (tmp_path / "demo" / "logs").glob("demo-*.log")
    assert out.stderr.rstrip().splitlines()[-1].startswith(f"full log: {log}")
    kept = log.read_text()
    assert "httpx: HTTP Request:" in kept and "Finished in state Completed()" in kept
    store = CurationStore(tmp_path / "demo" / "curation")
    waiting = [c for c in store.waiting() if c["review"] is None]
    assert waiting  # hard cases among 8 toy clips (fast bursts): queued, not accepted
    assert f"## annotation (skipped (off))\n\n{len(waiting)} clips wait for a person" in report
    assert "ardrag annotate push --out" in report
    for stage in ("curation", "dataset", "teacher", "distill", "grpo", "evaluation"):
        assert f"## {stage} (ran)" in report
    manifest = read_manifest(tmp_path / "demo" / "curation" / "dataset")
    assert manifest["samples"] == store.summary()["states"]["accepted"] > 0  # the easy ones, by rule
    assert "| fid | fvd | aesthetic | smoothness | consistency | latency |" in report
    # which weights each stage started from, and the evaluation's still-frame reference
    started = "Started from: the toy model's trained student, control weights included"
    assert f"## teacher (ran)\n\n{started} (`{toy}`)" in report
    assert "## distill (ran)\n\nStarted from: the teacher stage's export `" in report
    assert "## grpo (ran)\n\nStarted from: the distill stage's export `" in report
    assert "## evaluation (ran)\n\nEvaluated: the grpo stage's export `" in report
    assert re.search(r"- tracking error of the reference frame held still \(px\): \d", report)
    assert re.search(r"- tracking error of the untrained model \(px\): \d", report)
    assert list((tmp_path / "demo" / "eval").glob("eval-*/untrained/grid.mp4"))
    assert list((tmp_path / "demo" / "eval").glob("eval-*/grid.mp4"))
    assert list((tmp_path / "demo" / "train").glob("grpo-*/rewards.png"))
