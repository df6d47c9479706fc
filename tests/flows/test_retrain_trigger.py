"""The retrain deployment's trigger, end to end on a real Prefect server: `ardrag curate` makes a new
dataset version, its event starts a run of the served retrain deployment (prefect.yaml's trigger), and
the retrain run's own announcement does not start another."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARDRAG = str(Path(sys.executable).with_name("ardrag"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        try:
            if value := check():
                return value
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    body = json.dumps({"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}).encode()
    req = urllib.request.Request(f"{api}/flow_runs/filter", body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def deployment_id(api: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{api}/deployments/name/retrain/retrain-real", timeout=10) as r:
            return json.loads(r.read())["id"]
    except urllib.error.HTTPError:
        return None


@pytest.mark.slow
def test_new_dataset_version_from_curation_starts_one_retrain_run(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    curation, out = tmp_path / "curation", tmp_path / "retrain"
    logs = [open(tmp_path / name, "w") for name in ("server.log", "serve.log")]
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=logs[0], stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    procs = [server]
    try:
        wait_for(
            "the Prefect server", lambda: urllib.request.urlopen(f"{api}/health", timeout=5), 180, server
        )
        serve = subprocess.Popen([sys.executable, str(ROOT / "tests" / "flows" / "serve_retrain.py"),
                                  str(curation), str(out)], env=env, cwd=ROOT, stdout=logs[1],
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        procs.append(serve)
        dep = wait_for("the served deployment", lambda: deployment_id(api), 120, serve)
        time.sleep(
            5
        )  # the trigger's automation is created with the deployment; let the triggers service see it
        assert flow_runs(api, dep) == []

        done = subprocess.run([ARDRAG, "curate", "--source", "procedural", "--preset", "tiny", "--num", "3",
                               "--out", str(curation), "--auto-accept", "--json"], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        version = json.loads(done.stdout.strip().splitlines()[-1])["dataset"]["version"]

        def finished():
            runs = flow_runs(api, dep)
            return (
                runs
                if runs and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs)
                else None
            )

        runs = wait_for("the triggered retrain run", finished, 600, serve)
        time.sleep(10)  # a second run, if the retrain run's own announcement started one, would show now
        runs = flow_runs(api, dep)
        assert len(runs) == 1, [(r["name"], r["state_type"]) for r in runs]
        (run,) = runs
        assert run["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        assert f"version {version}" in run["parameters"]["trigger"]
        assert "ardrag.dataset.version.created" in run["parameters"]["trigger"]
        report = (out / "report.md").read_text()
        assert "| curation | skipped |" not in report  # the stage ran the curation flow (all inputs done)
        for stage in ("teacher", "distill", "grpo", "evaluation"):
            assert f"## {stage} (ran)" in report
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        for f in logs:
            f.close()
