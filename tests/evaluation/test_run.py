"""`ardrag eval` (ardrag.evaluation.run): the six columns on the tiny preset, and bad benchmark entries
reported per clip. Reading and writing benchmark lists is tested in test_benchmark.py."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ardrag.data.sources.procedural import ProceduralConfig
from ardrag.evaluation.benchmark import EntryError, load_benchmark, write_procedural_benchmark
from ardrag.evaluation.run import COLUMNS, evaluate
from ardrag.model.pipeline import ARDragPipeline


@pytest.mark.slow
def test_eval_on_the_tiny_preset_writes_all_six_columns(tmp_path):
    cmd = [sys.executable, "-m", "ardrag.cli", "eval", "--preset", "tiny", "--out", str(tmp_path), "--json"]
    result = subprocess.run(cmd, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    printed = json.loads(result.stdout.decode().strip().splitlines()[-1])
    data = json.loads((tmp_path / "results.json").read_text())
    assert (
        set(data["columns"])
        == set(COLUMNS)
        == {"fid", "fvd", "aesthetic", "smoothness", "consistency", "latency"}
    )
    assert all(isinstance(v, float) for v in data["columns"].values()), data["columns"]
    assert printed["columns"] == data["columns"] and printed["clips"] == 8 and data["errors"] == []
    assert (
        data["columns"]["fid"] > 0
        and data["columns"]["latency"] > 0
        and 1 <= data["columns"]["consistency"] <= 5
    )
    assert "cpu" in data["device"].lower() and len(data["clips"]) == 8
    table = (tmp_path / "results.md").read_text()
    assert "| latency (s) | FID | FVD | aesthetic (1-5) | smoothness | consistency (1-5) |" in table
    assert (tmp_path / "grid.mp4").stat().st_size > 1000


def test_bad_entries_are_reported_per_clip_and_the_rest_is_evaluated(tmp_path):
    bench = tmp_path / "bench"
    write_procedural_benchmark(
        ProceduralConfig(num_clips=3, seed=5, num_frames=9, buckets=["640x368"]), bench
    )
    listing = bench / "benchmark.jsonl"
    entries = [json.loads(x) for x in listing.read_text().splitlines()]
    missing = {**entries[0], "id": "missing-image", "reference": "nowhere.png"}
    traj = json.loads((bench / entries[1]["trajectory"]).read_text())
    traj["points"][0]["x"] = traj["points"][0]["x"][:-2]  # lists of different lengths
    (bench / "short.json").write_text(json.dumps(traj))
    wrong_length = {**entries[1], "id": "wrong-length", "trajectory": "short.json"}
    shutil.copy(bench / entries[2]["reference_video"], bench / "long-ref.mp4")
    traj = json.loads((bench / entries[2]["trajectory"]).read_text())
    for p in traj["points"]:  # a 13-frame drag against a 9-frame reference video
        for key in ("x", "y", "visible", "intensity"):
            p[key] = p[key] + p[key][-1:] * 4
    (bench / "long.json").write_text(json.dumps(traj))
    short_video = {**entries[2], "id": "short-video", "trajectory": "long.json"}
    lines = [json.dumps(e) for e in [entries[0], missing, wrong_length, entries[1], short_video, entries[2]]]
    listing.write_text("\n".join([*lines, "{not json", json.dumps({"id": "x", "prompt": "p"})]) + "\n")

    parsed = load_benchmark(bench)
    assert [type(e).__name__ for e in parsed[-2:]] == ["EntryError", "EntryError"]
    assert isinstance(parsed[-1], EntryError) and "'reference' is None" in parsed[-1].reason

    results = evaluate(
        tmp_path / "out", preset="tiny", benchmark=bench, progress=False, pipe=ARDragPipeline.tiny()
    )
    assert [c["id"] for c in results["clips"]] == [entries[i]["id"] for i in range(3)]
    errors = {e["id"]: e["error"] for e in results["errors"]}
    assert set(errors) == {"missing-image", "wrong-length", "short-video", "line-7", "x"}
    assert "nowhere.png' does not exist" in errors["missing-image"]
    assert "short.json: points[0].y has 9 entries but points[0].x has 7" in errors["wrong-length"]
    assert "has 9 frames; the trajectory has 13" in errors["short-video"]
    assert "not valid JSON" in errors["line-7"]
    assert all(results["columns"][k] is not None for k in ("fid", "aesthetic", "consistency", "latency"))
    assert results["columns"]["fvd"] is None and "16+ frames" in results["notes"]["fvd"]  # 9-frame clips
    table = (tmp_path / "out" / "results.md").read_text()
    assert "## Errors" in table and "missing-image" in table and "fvd: not computed" in table


def test_the_grid_enlarges_small_clips_so_that_a_person_can_see_them():
    """An 80x48 clip (the toy model's) becomes 320x192 per side, each pixel a 4x4 block, the drag drawn at
    that size; a clip 320 px wide or more is drawn as it is."""
    from ardrag.evaluation.run import grid
    from ardrag.inference.trajectory import Trajectory

    rng = np.random.default_rng(0)
    for (h, w), k in (((48, 80), 4), ((64, 96), 3), ((192, 320), 1)):
        video = rng.integers(0, 255, (3, h, w, 3), dtype=np.uint8)
        traj = Trajectory(tracks=np.full((3, 1, 2), 5.0, np.float32), visible=np.ones((3, 1), bool),
                          intensity=np.ones((3, 1), np.float32), fps=16.0, width=w, height=h)  # fmt: skip
        out = grid([(video, video, traj)])
        assert out.shape == (3, h * k, 2 * w * k + 4, 3)
        corner = out[0, h * k - k :, w * k - k : w * k]  # the bottom-right pixel, far from the drag
        assert (corner == video[0, -1, -1]).all()
