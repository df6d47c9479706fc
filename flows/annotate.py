"""The annotation flows: push waiting samples to Label Studio, pull finished annotations back.

No flow waits for people: ``annotation-push`` creates tasks and ends; ``annotation-pull`` takes what is
finished now and ends. Pull runs on a schedule (``prefect.yaml``, or :func:`serve_deployments`) and a
Label Studio webhook can ask for a run sooner: :func:`serve_webhook` answers the server at once (it gives
webhooks 1 s) and only enqueues a run of the pull deployment, unless one is already waiting.

Both flows are thin: one task around :func:`annotation.push.push` / :func:`annotation.pull.pull`, which
are idempotent, retried when Label Studio is down or slow, then failed with a clear message; the next
run picks up where this one stopped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from annotation.client import LabelStudioUnavailable
from annotation.pull import pull
from annotation.push import push
from annotation.settings import AnnotationSettings
from flows.events import dataset_version, emit_dataset_version

log = logging.getLogger(__name__)

PULL_DEPLOYMENT = "annotation-pull/annotation-pull"


def _server_trouble(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry when Label Studio did not answer or the disk failed; never on bad data."""
    return isinstance(state.result(raise_on_failure=False), LabelStudioUnavailable | OSError)


TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [30, 120],
    "retry_condition_fn": _server_trouble,
}


def _settings(settings: dict[str, Any] | None) -> AnnotationSettings:
    return AnnotationSettings.model_validate(settings or {})


@task(name="push-tasks", **TASK_OPTIONS)
def push_tasks(out: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    return push(out, _settings(settings), progress=False)


@task(name="pull-annotations", **TASK_OPTIONS)
def pull_annotations(out: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    return pull(out, _settings(settings), progress=False)


@flow(name="annotation-push", log_prints=False)
def annotation_push(out: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create the Label Studio tasks of every sample of ``out`` (a curation folder) waiting for a person."""
    report = push_tasks(out, settings)
    rows = [
        {"interface": i, **{k: report[i].get(k) for k in ("waiting", "present", "pushed")}}
        for i in ("verify", "annotate")
    ]
    create_table_artifact(rows, key="annotation-push", description=f"tasks of {out}")
    log.info("push %s", json.dumps(report))
    return report


@flow(name="annotation-pull", log_prints=False)
def annotation_pull(
    out: str, settings: dict[str, Any] | None = None, announce: bool = True
) -> dict[str, Any]:
    """Turn finished annotations of ``out``'s tasks into reviews, accepted samples and shards; a new
    dataset version is announced (``ardrag.dataset.version.created``) unless ``announce`` is off (the
    retrain flow announces it itself)."""
    dataset = Path(out) / "dataset"
    before = dataset_version(dataset)
    report = pull_annotations(out, settings)
    if announce and report["version"] != before:
        emit_dataset_version(dataset, report, producer="annotation-pull")
    keys = ("tasks", "open", "accepted", "rejected", "invalid", "stale", "reviews_written", "samples")
    create_table_artifact(
        [{k: report[k] for k in keys}], key="annotation-pull", description=f"reviews of {out}"
    )
    log.info("pull %s", json.dumps(report))
    return report


# -- the webhook: enqueue, never work ----------------------------------------------------------------
def enqueue_pull(deployment: str = PULL_DEPLOYMENT) -> str | None:
    """Create a run of the pull deployment unless one is already scheduled or pending; returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        states = FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
        waiting = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[target.id]),
                state=FlowRunFilterState(type=states),
            ),
            sort=FlowRunSort.ID_DESC,
            limit=1,
        )
    if waiting:
        return None
    run = run_deployment(deployment, timeout=0)  # timeout 0: create the run and return at once
    return str(run.id)


class _Handler(BaseHTTPRequestHandler):
    server: _WebhookServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        body = self.rfile.read(length)
        answer = b'{"queued": true}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        try:
            action = json.loads(body or b"{}").get("action")
        except (json.JSONDecodeError, AttributeError):
            action = None
        self.server.inbox.put(action)  # the worker thread enqueues; this request is done

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("webhook: " + format, *args)


class _WebhookServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], deployment: str):
        super().__init__(address, _Handler)
        self.deployment = deployment
        self.inbox: queue.Queue[str | None] = queue.Queue()
        self.received: list[str | None] = []
        self.enqueued: list[str] = []
        threading.Thread(target=self._work, name="ardrag-webhook-enqueue", daemon=True).start()

    def _work(self) -> None:
        """Enqueue a pull for each webhook (one at a time; none while a run is already waiting)."""
        while True:
            action = self.inbox.get()
            self.received.append(action)
            try:
                run_id = enqueue_pull(self.deployment)
            except Exception:  # the next webhook or the schedule will try again
                log.exception("could not enqueue %s", self.deployment)
                continue
            if run_id is not None:
                self.enqueued.append(run_id)
                log.info("webhook %s: enqueued %s run %s", action, self.deployment, run_id)


def serve_webhook(
    host: str = "127.0.0.1", port: int = 8765, deployment: str = PULL_DEPLOYMENT
) -> _WebhookServer:
    """A webhook receiver for Label Studio (``ANNOTATION_CREATED``, ``ANNOTATION_UPDATED``) running in a
    background thread; ``shutdown()`` stops it."""
    server = _WebhookServer((host, port), deployment)
    threading.Thread(target=server.serve_forever, name="ardrag-webhook", daemon=True).start()
    log.info("webhook receiver at http://%s:%d/ enqueues %s", host, server.server_address[1], deployment)
    return server


def serve_deployments(out: str, every_s: int = 600, settings: dict[str, Any] | None = None) -> None:
    """Serve the push and pull deployments for one curation folder, pull every ``every_s`` seconds
    (blocks; the process that runs scheduled and webhook-enqueued pulls)."""
    from prefect import serve

    parameters = {"out": out, "settings": settings}
    serve(
        annotation_pull.to_deployment(name="annotation-pull", interval=every_s, parameters=parameters),
        annotation_push.to_deployment(name="annotation-push", parameters=parameters),
    )
