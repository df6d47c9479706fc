"""The annotation flows on Prefect's temporary API against a real Label Studio, and the webhook."""

import socket
import time

import pytest
from annotator import submit, verdict

from annotation.client import Client
from ardrag.curation.pipeline import CurationConfig, run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    from ardrag.data.sources import build_source

    out = tmp_path_factory.mktemp("flows") / "flow-queue"
    source = build_source("procedural", {"num_clips": 4, "num_frames": 25, "seed": 2})
    run_local(source, out, CurationConfig(), progress=False)
    return out


def test_push_and_pull_flows(prefect_api, queue, ls_settings, ls_server):
    from flows.annotate import annotation_pull, annotation_push

    settings = ls_settings.to_dict()
    report = annotation_push(str(queue), settings)
    total = report["verify"]["waiting"] + report["annotate"]["waiting"]
    assert report["verify"]["pushed"] + report["annotate"]["pushed"] == total == 4
    assert annotation_push(str(queue), settings)["annotate"]["pushed"] == 0

    client = Client(ls_settings)
    project = report["verify"]["project"]
    task = client.tasks(project)[0]
    submit(client.sdk, task.id, verdict("accept"))
    pulled = annotation_pull(str(queue), settings)
    assert pulled["accepted"] == 1 and pulled["samples"] == 1 and pulled["open"] == total - 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_label_studio_webhook_only_enqueues_a_pull_run(prefect_api, queue, ls_settings, ls_server):
    from prefect.client.orchestration import get_client

    from flows.annotate import annotation_pull, serve_webhook

    deployment_id = annotation_pull.to_deployment(
        name="annotation-pull", parameters={"out": str(queue), "settings": ls_settings.to_dict()}
    ).apply()
    receiver = serve_webhook("127.0.0.1", free_port())
    try:
        client = Client(ls_settings)
        project = client.find_project("ardrag flow-queue annotate")
        hook = client.sdk.webhooks.create(
            url=f"http://127.0.0.1:{receiver.server_address[1]}/",
            project=project.id,
            actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
            send_for_all_actions=False,
            send_payload=True,
        )
        tasks = [t for t in client.tasks(project.id, with_annotations=True) if not t.annotations]
        started = time.monotonic()
        submit(client.sdk, tasks[0].id, tasks[0].predictions[0].result)
        answered_in = time.monotonic() - started  # the webhook is sent inside this request
        deadline = time.monotonic() + 30
        while not receiver.enqueued and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.received == ["ANNOTATION_CREATED"] and len(receiver.enqueued) == 1
        assert answered_in < 1.0
        with get_client(sync_client=True) as prefect:
            run = prefect.read_flow_run(receiver.enqueued[0])
        assert run.deployment_id == deployment_id and run.state.is_scheduled()
        # a second annotation while that run still waits: acknowledged, nothing more enqueued
        submit(client.sdk, tasks[1].id, tasks[1].predictions[0].result)
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(receiver.received) == 2 and len(receiver.enqueued) == 1
        client.sdk.webhooks.delete(id=hook.id)
    finally:
        receiver.shutdown()
