"""The curation flow: inputs -> clips -> tracked, routed samples -> shards, with a summary artifact.

A thin Prefect layer over :mod:`ardrag.curation.pipeline`: one task per stage (extract per input; track,
route and record per input; shard; summarize), paths passed between tasks, retries only on I/O errors,
task caching keyed by content hashes, a global concurrency limit (``ardrag-gpu``) around the stages
that use a GPU (synthesis, CoTracker on CUDA), a progress artifact and a summary table in the UI.

Inputs already recorded with the same content and settings are skipped before any task starts, so a
rerun does no new work and added inputs are processed alone. The task runner comes from config:
threads by default, Dask (prefect-dask) for scale-out.

Run it with ``ardrag curate`` (``flows/commands.py``) or deploy it with ``prefect.yaml``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from ardrag.curation import pipeline
from ardrag.curation.pipeline import CurationConfig
from ardrag.curation.store import CurationStore
from ardrag.data.clip import SourceInput
from ardrag.data.sources import build_source

GPU_LIMIT = "ardrag-gpu"
CHUNK = 64  # inputs in flight at once


def _io_only(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry a task only when it failed on I/O (a flaky disk or network share), never on bad data."""
    return isinstance(state.result(raise_on_failure=False), OSError)


def _store_id(out: str) -> str:
    """A random id per output directory: cache keys die with the directory they describe."""
    path = Path(out) / "store-id"
    if not path.exists():
        Path(out).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), open(path, "x") as f:
            f.write(uuid.uuid4().hex)
    return path.read_text().strip()


def _cache_key(stage: str):
    def key(context, parameters: dict[str, Any]) -> str:  # noqa: ANN001
        extra = parameters.get("clip_path", "")
        return f"{stage}:{parameters['token']}:{Path(extra).name}"

    return key


@functools.cache
def _source(name: str, config_json: str) -> Any:
    source = build_source(name, json.loads(config_json))
    source.setup()
    return source


@functools.cache
def _source_lock(name: str, config_json: str) -> threading.Lock:
    """Serialises a source that is not thread-safe (a diffusers pipeline keeps per-call state)."""
    return threading.Lock()


def _gpu(uses_gpu: bool):
    return concurrency(GPU_LIMIT, occupy=1) if uses_gpu else contextlib.nullcontext()


TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": _io_only,
    "persist_result": True,
    "result_serializer": "json",
}


@task(name="list-inputs", **TASK_OPTIONS)
def list_inputs(source: str, source_config: dict[str, Any]) -> list[dict[str, Any]]:
    return [i.__dict__ for i in _source(source, json.dumps(source_config, sort_keys=True)).inputs()]


@task(name="extract-clips", cache_key_fn=_cache_key("extract"), **TASK_OPTIONS)
def extract_clips(source: str, source_config: dict[str, Any], item: dict[str, Any], out: str, token: str):
    key = json.dumps(source_config, sort_keys=True)
    src = _source(source, key)
    lock = contextlib.nullcontext() if getattr(src, "thread_safe", True) else _source_lock(source, key)
    with lock, _gpu(getattr(src, "uses_gpu", False)):
        return pipeline.extract(src, SourceInput(**item), CurationStore(out))


@task(name="track-and-record", cache_key_fn=_cache_key("track"), **TASK_OPTIONS)
def track_and_record(
    item: dict[str, Any], outcome: Any, out: str, config: dict[str, Any], digest: str, token: str
) -> dict[str, Any]:
    """Track and route every clip of one input (a GPU slot per clip for a CUDA tracker), then write
    the input's record, last."""
    cfg, store = CurationConfig.model_validate(config), CurationStore(out)
    if isinstance(outcome, list):
        rows = []
        for clip_path in outcome:
            with _gpu(pipeline.tracker_uses_gpu(cfg)):
                rows.append(pipeline.track_clip(clip_path, store, cfg))
        outcome = rows
    return pipeline.record(SourceInput(**item), outcome, store, digest)


@task(name="shard-accepted", **TASK_OPTIONS)
def shard_accepted(out: str, config: dict[str, Any]) -> dict[str, Any]:
    manifest = pipeline.shard_accepted(CurationStore(out), CurationConfig.model_validate(config))
    return {k: manifest[k] for k in ("version", "samples", "buckets")}


@task(name="summarize", **TASK_OPTIONS)
def summarize(out: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    store = CurationStore(out)
    summary = store.summary([SourceInput(**i) for i in items])
    pipeline.atomic_summary(store, summary)
    rows = [{"kind": "state", "name": k, "count": v} for k, v in summary["states"].items()]
    rows += [{"kind": "reason", "name": k, "count": v} for k, v in summary["reasons"].items()]
    rows += [{"kind": "accepted in bucket", "name": k, "count": v} for k, v in summary["buckets"].items()]
    create_table_artifact(
        key="curation-summary",
        table=rows,
        description=f"{summary['inputs']} inputs, {summary['clips']} clips in {out}",
    )
    return summary


@flow(name="curate", task_runner=ThreadPoolTaskRunner(max_workers=2))
def curate(
    source: str,
    source_config: dict[str, Any],
    out: str,
    config: dict[str, Any] | None = None,
    gpu_slots: int = 1,
) -> dict[str, Any]:
    """Curate every input of ``source`` into ``out``; returns the summary (also ``out/summary.json``)."""
    logger = get_run_logger()
    cfg = CurationConfig.model_validate(config or {})
    store = CurationStore(out)
    src = _source(source, json.dumps(source_config, sort_keys=True))
    digest = pipeline.config_digest(pipeline.settings_digest(src), cfg)
    token_base = f"{_store_id(out)}:{digest}"
    if getattr(src, "uses_gpu", False) or pipeline.tracker_uses_gpu(cfg):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, gpu_slots)

    items = list_inputs(source, source_config)
    todo = [i for i in items if store.done(SourceInput(**i), digest) is None]
    logger.info("%d inputs: %d already done, %d to process", len(items), len(items) - len(todo), len(todo))
    progress = create_progress_artifact(0.0, description=f"curating {len(todo)} inputs into {out}")

    cfg_dict = cfg.to_dict()
    done = 0
    # In chunks, extracts first then their tracking (which waits on them): the runner's workers stay
    # busy and the clip files waiting on disk stay bounded.
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        tokens = [f"{token_base}:{item['content_hash']}" for item in chunk]
        extracts = [
            extract_clips.submit(source, source_config, item, out, token)
            for item, token in zip(chunk, tokens, strict=True)
        ]
        records = [
            track_and_record.submit(item, future, out, cfg_dict, digest, token)
            for item, future, token in zip(chunk, extracts, tokens, strict=True)
        ]
        for future in as_completed(records):
            future.result()
            done += 1
            update_progress_artifact(progress, 100.0 * done / len(todo))
    if not todo:
        update_progress_artifact(progress, 100.0)
    dataset = shard_accepted(out, cfg_dict)
    summary = summarize(out, items)
    summary["dataset"] = dataset
    logger.info(
        "states %s; reasons %s; accepted per bucket %s",
        summary["states"],
        summary["reasons"],
        summary["buckets"],
    )
    return summary


def task_runner(name: str, workers: int = 2) -> Any:
    """The flow's task runner by name: ``local`` (threads) or ``dask`` (a local cluster of processes)."""
    if name == "local":
        return ThreadPoolTaskRunner(max_workers=workers)
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
        return DaskTaskRunner(cluster_kwargs=cluster)
    raise ValueError(f"runner {name!r} is unknown; expected 'local' or 'dask'")


def run(
    source: str,
    source_config: dict[str, Any],
    out: str,
    config: dict[str, Any] | None = None,
    runner: str = "local",
    workers: int = 2,
) -> dict[str, Any]:
    """Run the flow with the chosen task runner (on the API named by PREFECT_API_URL, else a temporary
    local one)."""
    return curate.with_options(task_runner=task_runner(runner, workers))(
        source, source_config, str(out), config, gpu_slots=1
    )
