"""The curation flow: inputs -> clips -> tracked, routed samples -> shards, with a summary artifact.

A thin Prefect layer over :mod:`ardrag.curation.pipeline`: one task per stage (extract per input; track,
route and record per input; shard; summarize), paths passed between tasks, retries only on I/O errors,
a global concurrency limit (``ardrag-gpu``) around the stages that use a GPU (synthesis, CoTracker on
CUDA), a progress artifact and a summary table in the UI.

Caching is keyed by content hashes through the per-input records: an input recorded with the same
content hash and settings is skipped before any task starts, so a rerun does no new work and added
inputs are processed alone. Prefect's result cache is deliberately not used: a cached stage result
(paths of intermediate clip files) outlives the files it names, and a hit for one input could stand for
another with the same bytes. An input whose task fails is reported (``inputs_failed``) and the run goes
on; the next run retries it. The task runner comes from config: threads by default, Dask
(prefect-dask) for scale-out.

Run it with ``ardrag curate`` (``flows/commands.py``) or deploy it with ``prefect.yaml``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from ardrag.console import Progress
from ardrag.curation import pipeline
from ardrag.curation.pipeline import CurationConfig
from ardrag.curation.store import CurationStore
from ardrag.data.clip import SourceInput
from ardrag.data.sources import build_source
from flows.events import dataset_version, emit_dataset_version

log = logging.getLogger(__name__)  # also sent to the Prefect UI (extra loggers)

GPU_LIMIT = "ardrag-gpu"
CHUNK = 8  # inputs in flight at once


def _io_only(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry a task only when it failed on I/O (a flaky disk or network share), never on bad data."""
    return isinstance(state.result(raise_on_failure=False), OSError)


@functools.cache
def _source(name: str, config_json: str) -> Any:
    """One source per process and settings; it loads its models on the first input that needs them."""
    return build_source(name, json.loads(config_json))


def _gpu(uses_gpu: bool):
    return concurrency(GPU_LIMIT, occupy=1) if uses_gpu else contextlib.nullcontext()


TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": _io_only,
}


@task(name="list-inputs", **TASK_OPTIONS)
def list_inputs(source: str, source_config: dict[str, Any], out: str) -> list[dict[str, Any]]:
    """Clean up after killed runs, list the inputs, record the skipped files (``pipeline.start_run``)."""
    src = _source(source, json.dumps(source_config, sort_keys=True))
    return [i.__dict__ for i in pipeline.start_run(src, CurationStore(out))]


@task(name="extract-clips", **TASK_OPTIONS)
def extract_clips(source: str, source_config: dict[str, Any], item: dict[str, Any], out: str):
    key = json.dumps(source_config, sort_keys=True)
    src = _source(source, key)
    with pipeline.exclusive(src), _gpu(getattr(src, "uses_gpu", False)):
        return pipeline.extract(src, SourceInput(**item), CurationStore(out))


@task(name="track-and-record", **TASK_OPTIONS)
def track_and_record(
    item: dict[str, Any], outcome: Any, out: str, config: dict[str, Any], digest: str
) -> dict[str, Any]:
    cfg = CurationConfig.model_validate(config)
    with _gpu(pipeline.tracker_uses_gpu(cfg)):
        return pipeline.track_and_record(SourceInput(**item), outcome, CurationStore(out), cfg, digest)


@task(name="shard-accepted", **TASK_OPTIONS)
def shard_accepted(out: str, config: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = [SourceInput(**i) for i in items]
    shards = CurationConfig.model_validate(config).shards
    manifest = pipeline.shard_accepted(CurationStore(out), shards, inputs)
    return {k: manifest[k] for k in ("version", "samples", "buckets")}


@task(name="write-previews", **TASK_OPTIONS)
def write_previews(out: str, items: list[dict[str, Any]]) -> list[str]:
    return pipeline.write_previews(CurationStore(out), [SourceInput(**i) for i in items])


@task(name="summarize", **TASK_OPTIONS)
def summarize(
    out: str, items: list[dict[str, Any]], failed: dict[str, str], previews: list[str] | None = None
) -> dict[str, Any]:
    store = CurationStore(out)
    summary = store.summary([SourceInput(**i) for i in items], failed)
    store.write_summary(summary)
    rows = [{"kind": "state", "name": k, "count": v} for k, v in summary["states"].items()]
    rows += [{"kind": "reason", "name": k, "count": v} for k, v in summary["reasons"].items()]
    rows += [{"kind": "accepted in bucket", "name": k, "count": v} for k, v in summary["buckets"].items()]
    rows += [{"kind": "skipped file", "name": k, "count": v} for k, v in summary["skipped_reasons"].items()]
    description = f"{summary['inputs']} inputs, {summary['clips']} clips in {out}"
    if previews is not None:
        folder = (store.root / "previews").resolve().as_uri()
        description += f"; previews of {len(previews)} clips: artifact `curation-previews`, folder {folder}"
    create_table_artifact(key="curation-summary", table=rows, description=description)
    if previews is not None:
        create_markdown_artifact(key="curation-previews", markdown=previews_markdown(store, previews))
    return summary


def previews_markdown(store: CurationStore, keys: list[str]) -> str:
    """A table of the clips with their state, reason and a link to each preview (file URLs: the
    curation folder is on the machine that ran the flow)."""
    rows = {c["key"]: c for r in store.records() for c in r["clips"]}
    lines = [
        f"# Previews: {len(keys)} clips in {store.root.resolve()}",
        "",
        "| clip | state | reason | measured | preview |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in keys:
        c = rows.get(key, {})
        d = c.get("decision") or {}
        measured = f"{d['value']:g} (threshold {d['threshold']:g})" if "value" in d else ""
        url = store.preview_path(key).resolve().as_uri()
        lines.append(
            f"| {key} | {c.get('state', '')} | {c.get('reason', '')} | {measured} | [{key}.mp4]({url}) |"
        )
    return "\n".join(lines)


@flow(name="curate", task_runner=ThreadPoolTaskRunner(max_workers=2))
def curate(
    source: str,
    source_config: dict[str, Any],
    out: str,
    config: dict[str, Any] | None = None,
    gpu_slots: int = 1,
    announce: bool = True,
    previews: bool = False,
) -> dict[str, Any]:
    """Curate every input of ``source`` into ``out``; returns the summary (also ``out/summary.json``).
    ``announce``: emit ``ardrag.dataset.version.created`` when the dataset's version changed (the retrain
    flow turns it off and announces the version itself). ``previews``: write ``previews/<clip>.mp4`` (the
    clip with its control points drawn) and a markdown artifact that links them."""
    cfg = CurationConfig.model_validate(config or {})
    store = CurationStore(out)
    src = _source(source, json.dumps(source_config, sort_keys=True))
    digest = pipeline.config_digest(pipeline.settings_digest(src), cfg)
    if getattr(src, "uses_gpu", False) or pipeline.tracker_uses_gpu(cfg):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, gpu_slots)

    items = list_inputs(source, source_config, out)
    todo = [i for i in items if store.done(SourceInput(**i), digest) is None]
    log.info("%d inputs: %d already done, %d to process", len(items), len(items) - len(todo), len(todo))
    progress = create_progress_artifact(0.0, description=f"curating {len(todo)} inputs into {out}")

    cfg_dict = cfg.to_dict()
    done, failed = 0, {}
    bar = Progress(total=len(todo), desc="curating", unit="input", logger=log)
    # In small chunks, extracts first, then their tracking (which waits on them): the runner's workers
    # stay busy, the clip files waiting on disk stay few, and one failing input stops only itself.
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        extracts = [extract_clips.submit(source, source_config, item, out) for item in chunk]
        records = {
            track_and_record.submit(item, future, out, cfg_dict, digest): item
            for item, future in zip(chunk, extracts, strict=True)
        }
        for future in as_completed(list(records)):
            item = records[future]
            # The returned value, or the exception of a failed task. (Not ``future.state``: read from
            # the API, it can lag behind the finished future in a subflow.)
            outcome = future.result(raise_on_failure=False)
            if not isinstance(outcome, BaseException):
                done += 1
            else:  # an error, not a verdict: reported, and the input is retried by the next run
                error = outcome
                failed[item["id"]] = f"{type(error).__name__}: {error}"
                log.error("input %s (%s) failed: %s", item["id"], item["description"], failed[item["id"]])
            update_progress_artifact(progress, 100.0 * (done + len(failed)) / len(todo))
            bar.update(1)
    bar.close()
    if not todo:
        update_progress_artifact(progress, 100.0)
    before = dataset_version(store.root / "dataset")
    dataset = shard_accepted(out, cfg_dict, items)
    if announce and dataset["version"] != before:
        emit_dataset_version(store.root / "dataset", dataset, producer="curate")
    shown = write_previews(out, items) if previews else None
    summary = summarize(out, items, failed, shown)
    summary["dataset"] = dataset
    log.debug(
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
    previews: bool = False,
) -> dict[str, Any]:
    """Run the flow with the chosen task runner (on the API named by PREFECT_API_URL, else a temporary
    local one)."""
    return curate.with_options(task_runner=task_runner(runner, workers))(
        source, source_config, str(out), config, gpu_slots=1, previews=previews
    )
