"""The annotation flows and the webhook, run in a process of their own (``test_annotate_flow.py``).

Prefect's test harness leaves threads and fork hooks in the process that used it, which breaks the
DataLoader workers forked by later tests, so this runs apart and prints what happened as JSON.
Usage: python annotate_scenario.py SETTINGS_JSON QUEUE_DIR
"""

import json
import sys
import time

from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from annotation.client import Client
from annotation.scripted import submit, verdict
from annotation.settings import AnnotationSettings
from flows.annotate import annotation_pull, annotation_push, serve_webhook


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def main(settings_json: str, queue: str) -> dict:
    settings = json.loads(settings_json)
    ls = AnnotationSettings.model_validate(settings)
    out: dict = {}
    with prefect_test_harness(server_startup_timeout=120):
        out["push"] = annotation_push(queue, settings)
        out["push_again"] = annotation_push(queue, settings)
        client = Client(ls)
        task = client.tasks(out["push"]["verify"]["project"])[0]
        submit(client.sdk, task.id, verdict("accept"))
        out["pull"] = annotation_pull(queue, settings)

        deployment_id = annotation_pull.to_deployment(
            name="annotation-pull", parameters={"out": queue, "settings": settings}
        ).apply()
        receiver = serve_webhook("127.0.0.1", 0)
        try:
            project = out["push"]["annotate"]["project"]
            hook = client.sdk.webhooks.create(
                url=f"http://127.0.0.1:{receiver.server_address[1]}/",
                project=project,
                actions=["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
                send_for_all_actions=False,
                send_payload=True,
            )
            tasks = [t for t in client.tasks(project, with_annotations=True) if not t.annotations]
            started = time.monotonic()
            submit(client.sdk, tasks[0].id, tasks[0].predictions[0].result)
            out["annotation_request_s"] = time.monotonic() - started  # the webhook is sent inside it
            wait_for(lambda: receiver.enqueued, 30)
            out["received_first"] = list(receiver.received)
            out["enqueued_first"] = list(receiver.enqueued)
            with get_client(sync_client=True) as prefect:
                run = prefect.read_flow_run(receiver.enqueued[0])
            out["run_deployment_matches"] = run.deployment_id == deployment_id
            out["run_state"] = run.state.type.value
            submit(client.sdk, tasks[1].id, tasks[1].predictions[0].result)
            wait_for(lambda: len(receiver.received) >= 2, 15)
            time.sleep(1.0)  # give a (wrong) second enqueue the time to happen
            out["received"] = list(receiver.received)
            out["enqueued"] = list(receiver.enqueued)
            client.sdk.webhooks.delete(id=hook.id)
        finally:
            receiver.shutdown()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), default=str))
