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
from ardrag.inference import generate as gen
from ardrag.model.pipeline import ARDragPipeline
from ardrag.presets import TINY


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


def test_a_clip_with_a_schedule_switches_at_its_frame_and_its_results_say_so(tmp_path, monkeypatch):
    """Schedules from the entry (keep) and from the trajectory file (recache), at pixel frame 5 of 9-frame
    clips (latent frames 0, 1-4, 5-8): frames 0-4 are bit-identical to the same clip without a schedule,
    frames 5-8 are not; each clip's results list its switches. A schedule the list refuses (an unknown
    mode), one past the drag's frames, and one in both the entry and the trajectory are reported for their
    clips, with their line, and the other clips still run."""
    bench = tmp_path / "bench"
    write_procedural_benchmark(
        ProceduralConfig(num_clips=2, seed=5, num_frames=9, buckets=["640x368"]), bench
    )
    listing = bench / "benchmark.jsonl"
    first, second = (json.loads(x) for x in listing.read_text().splitlines())
    keep = {"frame": 5, "text": "the shapes drift apart", "mode": "keep"}
    recache = {**keep, "mode": "recache"}
    traj = json.loads((bench / second["trajectory"]).read_text())
    (bench / "switching.json").write_text(json.dumps({**traj, "prompts": [recache]}))
    lines = [
        first, {**first, "id": "entry-switch", "prompts": [keep]},
        second, {**second, "id": "trajectory-switch", "trajectory": "switching.json"},
        {**second, "id": "both", "trajectory": "switching.json", "prompts": [keep]},
        {**first, "id": "late", "prompts": [{**keep, "frame": 9}]},
        {**first, "id": "bad-mode", "prompts": [{**keep, "mode": "rebuild"}]},
    ]  # fmt: skip
    listing.write_text("".join(json.dumps(x) + "\n" for x in lines))
    calls, stream = [], gen.stream_clip

    def recording(pipe, image, trajectory, prompt, **kw):  # the library's stream, its videos kept
        video, first_s = stream(pipe, image, trajectory, prompt, **kw)
        calls.append(video)
        return video, first_s

    monkeypatch.setattr(gen, "stream_clip", recording)  # evaluate's default clip_fn
    results = evaluate(
        tmp_path / "out", preset=TINY, benchmark=bench, progress=False, pipe=ARDragPipeline.tiny()
    )

    ids = [c["id"] for c in results["clips"]]
    assert ids == [first["id"], "entry-switch", second["id"], "trajectory-switch"]
    videos = dict(zip(ids, calls[1:], strict=True))  # calls[0]: the untimed warm-up
    for plain, switched in ((first["id"], "entry-switch"), (second["id"], "trajectory-switch")):
        np.testing.assert_array_equal(videos[switched][:5], videos[plain][:5])
        assert not np.array_equal(videos[switched][5:], videos[plain][5:]), switched
    clips = {c["id"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["clips"]}
    assert clips["entry-switch"]["prompts"] == [{**keep, "latent_frame": 2}]
    assert clips["trajectory-switch"]["prompts"] == [{**recache, "latent_frame": 2}]
    assert [clips[i]["prompts_from"] for i in ids] == [None, "entry", None, "trajectory"]
    assert clips[first["id"]]["prompts"] == clips[second["id"]]["prompts"] == []

    errors = {e["id"]: e for e in results["errors"]}
    assert set(errors) == {"both", "late", "bad-mode"}
    assert [errors[i]["line"] for i in ("both", "late", "bad-mode")] == [5, 6, 7]
    assert "line 5: the entry has 'prompts' and so does its trajectory" in errors["both"]["error"]
    late = "line 6: prompts[0].frame is 9; expected a pixel frame in 0 .. 8 (the drag's frames)"
    assert late in errors["late"]["error"]
    assert "prompts[0].mode is 'rebuild'; expected one of ['keep', 'recache']" in errors["bad-mode"]["error"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "## Prompt switches" in table
    assert "- `entry-switch` (from the entry): frame 5 (latent 2, keep): 'the shapes drift apart'" in table
    assert "`trajectory-switch` (from the trajectory)" in table and f"`{first['id']}` (from" not in table


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
