"""The annotation flows on Prefect's temporary API against a real Label Studio, and the webhook.

The Prefect part runs in a process of its own (``annotate_scenario.py``) and reports as JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import HARD_CASES

from ardrag.curation.pipeline import CurationConfig, run_local

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, ls_settings, ls_server):
    from ardrag.data.sources import build_source

    queue = tmp_path_factory.mktemp("flows") / "flow-queue"
    source = build_source("procedural", {"num_clips": 4, "num_frames": 25, "seed": 2, **HARD_CASES})
    run_local(source, queue, CurationConfig(), progress=False)
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    done = subprocess.run(
        [sys.executable, str(HERE / "annotate_scenario.py"), json.dumps(ls_settings.to_dict()), str(queue)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_push_and_pull_flows(scenario):
    push, again, pull = scenario["push"], scenario["push_again"], scenario["pull"]
    total = push["verify"]["waiting"] + push["annotate"]["waiting"]
    assert push["verify"]["pushed"] + push["annotate"]["pushed"] == total == 4
    assert again["verify"]["pushed"] + again["annotate"]["pushed"] == 0
    assert pull["accepted"] == 1 and pull["samples"] == 1 and pull["open"] == total - 1


def test_label_studio_webhook_only_enqueues_a_pull_run(scenario):
    assert scenario["received_first"] == ["ANNOTATION_CREATED"] and len(scenario["enqueued_first"]) == 1
    assert scenario["run_deployment_matches"] and scenario["run_state"] == "SCHEDULED"
    assert scenario["annotation_request_s"] < 1.0  # Label Studio waited on the webhook for less than 1 s
    # a second annotation while that run still waits: acknowledged, nothing more enqueued
    assert len(scenario["received"]) == 2 and scenario["enqueued"] == scenario["enqueued_first"]
