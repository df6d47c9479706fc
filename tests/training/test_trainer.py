"""The training loop (ardrag.training.trainer): a run killed mid-way resumes to the same losses as a run
that never stopped. The checkpoint files themselves are tested in test_checkpoint.py, resuming sharded
training in test_parallel.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 16


def command(run_dir, *extra):
    return [sys.executable, "-m", "ardrag.cli", "train", "distill", "--preset", "tiny",
            "--run-dir", str(run_dir), "--steps", str(STEPS), "-q", *extra]  # fmt: skip


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def losses(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_distillation_resumes_to_the_losses_of_an_uninterrupted_run(tmp_path):
    """Tolerance: 1e-6 relative. The resumed run restores weights, optimizer and scheduler states, the
    data position and RNG, and draws per step and sample, so it repeats the same arithmetic; measured
    equal to the last bit on this machine."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(straight), check=True, env=env(), capture_output=True)

    proc = subprocess.Popen(command(killed), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / "checkpoints" / "step-2"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert f"step-{STEPS}" not in done and not (killed / "student").exists()  # it really stopped early

    result = subprocess.run(command(killed, "--resume", "--json"), check=True, env=env(), capture_output=True)
    summary = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert summary["steps"] == STEPS and Path(summary["export"]).is_dir()

    a, b = losses(straight), losses(killed)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))  # every step once: no duplicate, no gap
    assert a[0].keys() == b[0].keys() and "generator/dmd" in a[0] and "critic/disc" in a[0]
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    kept = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert kept == [f"step-{STEPS - 2}", f"step-{STEPS}"]  # the latest two, no .tmp left
