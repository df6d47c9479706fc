"""`ardrag curate --source folder --config FILE` with the source's settings, a prompts.jsonl, and the
prompts arriving in the samples and in the tasks of a real Label Studio."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import videos
import yaml

from annotation.client import Client
from annotation.push import push
from ardrag.curation.store import CurationStore
from ardrag.data.shards import read_sample_file

pytestmark = pytest.mark.slow

ARDRAG = str(Path(sys.executable).with_name("ardrag"))
PROMPTS = {"walk.mp4": "a red square walks to the right", "sub/jump.mov": "a red square jumps"}


def test_config_file_sets_the_source_and_prompts_reach_samples_and_tasks(tmp_path, ls_settings, ls_server):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    videos.write_video(folder / "walk.mp4", frames=48, fps=16, size=(640, 368), content="textured-square")
    videos.write_video(
        folder / "sub" / "jump.mov", frames=60, fps=20, size=(480, 368), content="textured-square"
    )
    videos.write_video(
        folder / "none.mp4", frames=40, fps=16, size=(640, 368), content="textured-square", seed=5
    )
    rows = [{"file": name, "prompt": text} for name, text in PROMPTS.items()]
    (folder / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = tmp_path / "conf" / "curation.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {"source": {"clip_frames": 33, "min_clip_frames": 33}, "routing": {"hard_speed_px": 0.5}}
        )
    )  # every clip moves faster than 0.5 px a frame: all go to the annotation interface
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    args = [
        "--source",
        "folder",
        "--input",
        str(folder),
        "--out",
        str(out),
        "--config",
        str(config),
        "--json",
    ]
    run = subprocess.run([ARDRAG, "curate", *args], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 3 and summary["skipped"] == []  # prompts.jsonl is no input, nor skipped
    store = CurationStore(out)
    by_file = {}
    for r in store.records():
        rel = Path(r["description"]).relative_to(folder).as_posix()
        for c in r["clips"]:
            assert c["num_frames"] == 33, c  # the file's clip length, not the default 81
            assert c["state"] == "awaiting_annotation" and c["reason"] == "fast-motion"
            _, members = read_sample_file(out / c["sample"])
            meta = json.loads(members["json"])
            by_file.setdefault(rel, []).append((members["prompt.txt"].decode(), meta["provenance"]["prompt"]))
    assert set(by_file) == {"walk.mp4", "sub/jump.mov", "none.mp4"}
    for rel, text in PROMPTS.items():
        assert all(
            p == text and info == {"source": "prompts-file", "detail": "prompts.jsonl"}
            for p, info in by_file[rel]
        )
    assert all(p == "" and info["source"] == "none" for p, info in by_file["none.mp4"])

    report = push(out, ls_settings, Client(ls_settings), progress=False)
    tasks = Client(ls_settings).tasks(report["annotate"]["project"])
    prompts = {t.data["key"]: t.data["prompt"] for t in tasks}
    assert len(tasks) == sum(len(v) for v in by_file.values())
    by_key = {
        c["key"]: Path(r["description"]).relative_to(folder).as_posix()
        for r in store.records()
        for c in r["clips"]
    }
    for key, text in prompts.items():
        assert text == PROMPTS.get(by_key[key], ""), key
    for t in tasks:
        assert t.data["routing"].startswith("fast-motion: measured ") and "threshold 0.5" in t.data["routing"]
        assert t.data["prompt_source"] in ("prompts-file", "none")
