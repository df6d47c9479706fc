"""benchmarks/bench_realtime.py, bench_long_stream.py, bench_prompt_switch.py, bench_studio_load.py and
gpu_check.sh run as users run them (tiny shapes, on the CPU) and write the figures they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(args, **env):
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **env})  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_bench_realtime_reports_each_variant_and_the_speedup(tmp_path):
    out = tmp_path / "rt.json"
    script = str(ROOT / "benchmarks" / "bench_realtime.py")
    args = ["--shape", "tiny", "--res", "96x64", "--frames", "3", "--guidance", "3", "--out", str(out)]
    stdout = run([sys.executable, script, *args, "--variants", "reference,fast,-batched_cfg,-cross_cache"])
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny" and result["res"] == "96x64" and result["pixel_frames"] == 9
    assert set(result["variants"]) == {"reference", "fast", "-batched_cfg", "-cross_cache"}
    for row in result["variants"].values():
        assert row["first_frame_s"] > 0 and row["fps"] > 0 and row["peak_mem_gb"] > 0
        assert {"denoise", "write", "control", "decode", "total"} <= set(row["breakdown_ms"])
    assert result["variants"]["fast"]["options"]["batched_cfg"] is True
    assert result["variants"]["-batched_cfg"]["options"]["batched_cfg"] is False
    assert result["speedup"]["fps"] > 0 and "fast / reference" in stdout


def test_bench_long_stream_compares_the_last_frames_with_the_early_ones(tmp_path):
    out = tmp_path / "long.json"
    script = str(ROOT / "benchmarks" / "bench_long_stream.py")
    run([sys.executable, script, "--pixel-frames", "401", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["pixel_frames"] == 401 and result["latent_frames"] == 101 and result["sink"] == 1
    assert result["frames_50_150"]["steps"] == 25 and result["last_100"]["steps"] == 25
    assert result["latency_ratio"] > 0 and result["rss_ratio"] > 0 and len(result["rows"]) == 101


def test_gpu_check_rehearses_on_the_cpu(tmp_path):
    """The GPU script's CPU rehearsal (its documented command, smaller): both resolutions, JSON for each."""
    env = {"DEVICE": "cpu", "SHAPE": "tiny", "VAE": "tiny", "FRAMES": "2", "REPEATS": "1",
           "VARIANTS": "reference,fast", "OUT": str(tmp_path), "PYTHON": sys.executable}  # fmt: skip
    run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], **env)
    env_info = json.loads((tmp_path / "env.json").read_text())
    assert env_info["gpu"] is None and env_info["torch"]
    for res in ("480x368", "832x480"):
        result = json.loads((tmp_path / f"realtime-tiny-{res}.json").read_text())
        assert result["res"] == res and set(result["variants"]) == {"reference", "fast"}
    assert "done in" in (tmp_path / "gpu_check.log").read_text()


def test_bench_prompt_switch_times_each_mode_against_a_normal_frame(tmp_path):
    out = tmp_path / "switch.json"
    script = str(ROOT / "benchmarks" / "bench_prompt_switch.py")
    args = ["--shapes", "tiny", "--frames", "3", "--after", "1", "--normal", "2", "--repeats", "1"]
    stdout = run([sys.executable, script, *args, "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["shape"], r["mode"]) for r in rows] == [("tiny", "keep"), ("tiny", "recache")]
    for row in rows:
        assert row["normal_s"] > 0 and 0 < row["switch_s"] < row["next_s"] and row["next_over_normal"] > 0
        assert row["frames_in_view"] == 3  # the window (7) is not yet full after 3 frames
    assert "recache" in stdout and "x normal" in stdout


def test_bench_studio_load_streams_to_every_client_in_order(tmp_path):
    out = tmp_path / "load.json"
    script = str(ROOT / "benchmarks" / "bench_studio_load.py")
    args = ["--clients", "2", "--seconds", "4", "--settle", "5", "--arenas", "16,2", "--out", str(out)]
    stdout = run([sys.executable, script, *args])
    result = json.loads(out.read_text())
    assert result["clients"] == 2 and result["errors"] == 0 and result["out_of_order"] == 0
    assert all(c["frames"] >= 1 and c["fps"] > 0 for c in result["per_client"])
    assert result["model_steps"] >= 2 and result["sessions_after"] == 0
    assert result["rss_mb"]["idle"] > 0 and "queue wait" in stdout
    assert [r["malloc_arena_max"] for r in result["runs"]] == ["16", "2"] and "peak memory x" in stdout
