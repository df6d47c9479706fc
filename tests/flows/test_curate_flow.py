"""The curation flow for real: Prefect's temporary local API, the real `ardrag curate` command."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ardrag.curation.store import CurationStore
from ardrag.data.inspect import inspect_dataset
from ardrag.data.shards import read_sample_file
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource, follows_truth

ARDRAG = str(Path(sys.executable).with_name("ardrag"))


def curate(*args, check=True, timeout=600):
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run([ARDRAG, "curate", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"ardrag curate {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def procedural24(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "D"
    result = curate("--source", "procedural", "--num", "24", "--out", str(out), "--json")
    return out, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_procedural_24_every_clip_in_exactly_one_state(procedural24):
    out, summary = procedural24
    assert summary["inputs"] == 24 and summary["clips"] == 24 and summary["inputs_missing"] == []
    assert sum(summary["states"].values()) == 24 and sum(summary["reasons"].values()) == 24
    assert set(summary["states"]) <= {"awaiting_verification", "awaiting_annotation", "rejected"}
    records = CurationStore(out).records()
    assert len(records) == 24 and all(len(r["clips"]) == 1 for r in records)


@pytest.mark.slow
def test_controls_sent_to_verification_follow_ground_truth_and_routes_name_their_figures(procedural24):
    # Routing judges the control trajectories a person will verify (ardrag.curation.routing). Ground
    # truth for any point of a procedural clip (point_truth) scores them: a clip sent to a quick check
    # must have controls that follow their true paths. Points on an outline are left out (either
    # answer is defensible there).
    out, _ = procedural24
    source = ProceduralSource(ProceduralConfig(num_clips=24))
    accurate, scored = 0, 0
    for r in CurationStore(out).records():
        for c in r["clips"]:
            decision = c["decision"]
            assert decision["state"] == c["state"] and decision["checks"], c
            if c["state"] == "awaiting_annotation":
                assert "value" in decision and "threshold" in decision, decision
            if c["state"] != "awaiting_verification":
                continue
            _, members = read_sample_file(out / c["sample"])
            tracks = np.load(io.BytesIO(members["tracks.npy"]))
            visible = np.load(io.BytesIO(members["visible.npy"]))
            scene = source.make_scene(int(c["key"].rsplit("-", 1)[1]))
            good, n = follows_truth(scene, tracks, visible)
            accurate, scored = accurate + good, scored + n
    assert scored >= 40 and accurate >= 0.9 * scored, (accurate, scored)


@pytest.mark.slow
def test_rerun_does_no_new_work(procedural24):
    out, summary = procedural24
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    again = json.loads(
        curate("--source", "procedural", "--num", "24", "--out", str(out), "--json")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == before
    assert again["states"] == summary["states"]


@pytest.mark.slow
def test_killed_run_resumes_with_every_input_once(tmp_path):
    out = tmp_path / "K"
    args = [ARDRAG, "curate", "--source", "procedural", "--num", "16", "--out", str(out), "--auto-accept"]
    # its own process group, killed whole: the run and the ephemeral Prefect server it started (killing
    # the run alone would leave that server running after the tests)
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list((out / "records").glob("*.json"))) < 5:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done_before = len(list((out / "records").glob("*.json")))
    assert 5 <= done_before < 16, "the kill should land mid-run"
    summary = json.loads(
        curate("--source", "procedural", "--num", "16", "--out", str(out), "--auto-accept", "--json")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert summary["inputs"] == 16 and summary["clips"] == 16 and summary["inputs_missing"] == []
    assert not list(out.rglob("*.partial"))
    keys = [c["key"] for r in CurationStore(out).records() for c in r["clips"]]
    assert len(keys) == len(set(keys)) == 16
    for path in (out / "samples").glob("*.tar"):
        read_sample_file(path)  # every sample file is whole
    report = inspect_dataset(out / "dataset")
    assert report["problems"] == [] and report["samples"] == summary["states"].get("accepted", 0)


@pytest.mark.slow
def test_dask_runner_with_two_workers(tmp_path):
    out = tmp_path / "dask"
    result = curate("--source", "procedural", "--num", "4", "--out", str(out), "--runner", "dask", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 4 and sum(summary["states"].values()) == 4


def test_prefect_yaml_deployments_have_valid_parameters():
    import yaml

    from ardrag.config import build_config
    from ardrag.curation.pipeline import CurationConfig
    from ardrag.data.sources import SOURCES
    from flows.annotate import annotation_pull, annotation_push
    from flows.curate import curate as curate_flow
    from flows.retrain import retrain

    flows = {
        "flows/curate.py:curate": curate_flow,
        "flows/annotate.py:annotation_push": annotation_push,
        "flows/annotate.py:annotation_pull": annotation_pull,
        "flows/retrain.py:retrain": retrain,  # its config: tests/test_deploy_files.py
    }
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    assert {d["entrypoint"] for d in spec["deployments"]} == set(flows)
    for deployment in spec["deployments"]:
        flow = flows[deployment["entrypoint"]]
        params = deployment["parameters"]
        assert set(params) <= set(flow.parameters.properties), deployment["name"]
        assert set(flow.parameters.required or []) <= set(params), deployment["name"]
        if flow is curate_flow:
            build_config(SOURCES[params["source"]][1], params["source_config"], source=deployment["name"])
            build_config(CurationConfig, params.get("config", {}), source=deployment["name"])
        assert deployment["schedules"] and deployment["work_pool"]["name"] in ("cpu", "gpu")
    # the webhook receiver enqueues runs of this deployment by name
    assert any(d["name"] == "annotation-pull" for d in spec["deployments"])


ARTIFACTS = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, TaskRunFilter
from prefect.client.schemas.sorting import ArtifactSort
from prefect.testing.utilities import prefect_test_harness
from flows.curate import run

with prefect_test_harness(server_startup_timeout=120):
    summary = run("procedural", {"num_clips": 2, "num_frames": 17}, sys.argv[1], {}, previews=True)
    with get_client(sync_client=True) as client:
        # every field given: this client sends the ones left out as null, which the server refuses
        keys = ArtifactFilterKey(any_=["curation-previews", "curation-summary"])
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=keys),
            flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(),
            sort=ArtifactSort.CREATED_DESC, limit=10, offset=0,
        )
print(json.dumps({"clips": summary["clips"], "artifacts": {a.key: [a.data, a.description] for a in found}}))
"""


@pytest.mark.slow
def test_previews_are_written_and_the_prefect_artifacts_link_them(tmp_path):
    # In a process of its own: Prefect's test harness leaves state behind that breaks spawned workers
    # of later tests (DataLoader workers exited with code 1).
    out = tmp_path / "P"
    env = {
        **os.environ,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", ARTIFACTS, str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    store = CurationStore(out)
    keys = [c["key"] for r in store.records() for c in r["clips"] if c.get("sample")]
    assert result["clips"] == 2 and keys
    previews, _ = result["artifacts"]["curation-previews"]
    for key in keys:
        preview = store.preview_path(key)
        assert preview.is_file() and preview.resolve().as_uri() in previews
    assert "artifact `curation-previews`" in result["artifacts"]["curation-summary"][1]


@pytest.mark.slow
def test_curate_console_a_bar_on_a_terminal_plain_lines_elsewhere_and_prefect_in_the_log(tmp_path):
    from terminal import run_in_pty

    argv = [ARDRAG, "curate", "--source", "procedural", "--num", "4", "--seed", "3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    piped = subprocess.run([*argv, "--out", str(tmp_path / "P")], capture_output=True, text=True, env=env,
                           timeout=600)  # fmt: skip
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "\r" not in piped.stderr and "%|" not in piped.stderr
    assert [line.split(" ", 1)[1] for line in piped.stderr.splitlines() if "curating:" in line] == [
        "curating: 2/4 input",
        "curating: 4/4 input",
    ]
    # Prefect's engine lines and the request lines: in the log file, not on the console
    assert "httpx" not in piped.stderr and "Finished in state" not in piped.stderr
    (log,) = (tmp_path / "P" / "logs").glob("curate-*.log")
    assert piped.stderr.rstrip().splitlines()[-1].startswith(f"full log: {log}")
    kept = log.read_text()
    assert "httpx: HTTP Request:" in kept and "Finished in state Completed()" in kept
    # on a terminal: a bar; --verbose puts the rest on the console too
    shown = run_in_pty([*argv, "--out", str(tmp_path / "T"), "--verbose"], env=env)
    assert "\r" in shown and "curating: 100%" in shown and "4/4" in shown
    assert "curating: 4/4 input" not in shown  # the bar, not the plain lines
    assert "4 inputs, 4 clips curated into" in shown
    assert "httpx: HTTP Request:" in shown and "Finished in state Completed()" in shown


@pytest.mark.slow
def test_sigterm_stops_the_run_and_the_temporary_prefect_server_it_started(tmp_path):
    import re
    import socket

    out = tmp_path / "S"
    argv = [ARDRAG, "curate", "--source", "procedural", "--num", "16", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((out / "records").glob("*.json")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # the command alone, as `kill PID` or a scheduler does
        _, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in its group (a failing test's)
    assert proc.returncode == 130 and "ardrag: stopped" in stderr, stderr[-3000:]
    (log,) = (out / "logs").glob("curate-*.log")
    port = int(re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", log.read_text()).group(1))
    deadline = time.time() + 30
    while time.time() < deadline:  # the server is gone: nothing listens on its port
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"Prefect's temporary server still answers on port {port} after SIGTERM")
