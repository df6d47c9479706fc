"""The order of the stages (:func:`run_stages`, shared with the Prefect flow), their start and end lines,
the report at the end, and :func:`run_local`: every stage in this process, without Prefect."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ardrag.retrain.config import RetrainConfig, check_stage_inputs, stage_names, training_chain
from ardrag.retrain.report import write_report
from ardrag.retrain.stages import (
    Annotator,
    OnDatasetVersion,
    Result,
    annotation_stage,
    annotator,
    curation_stage,
    dataset_stage,
    evaluation_stage,
    training_stage,
)

log = logging.getLogger(__name__)


def announced(stage: str, run: Callable[..., Result], *args: Any) -> Result:
    """Run a stage between a start line and an end line (status, time, summary)."""
    log.info("%s: started", stage)
    result = run(*args)
    took = f" in {result['seconds']:.0f} s" if result.get("seconds") else ""
    if result["status"] == "skipped":
        took = " (its inputs have not changed)"
    log.info("%s: %s%s; %s", stage, result["status"], took, result.get("summary", ""))
    return result


def run_stages(config: RetrainConfig, run_stage: Callable[..., Result]) -> list[Result]:
    """Every stage of the config in order (:func:`~ardrag.retrain.config.stage_names`: the training chain
    is the config's); ``run_stage(stage, *upstream_results)`` runs one (the local runner calls the stage
    functions of :mod:`ardrag.retrain.stages`, the flow its subflows). Training waits for a dataset with
    samples."""
    chain = training_chain(config)
    results = [run_stage("curation")]
    if results[-1]["status"] == "incomplete":
        log.warning("curation is incomplete: the stages after it use what was accepted; the failed "
                    "inputs are retried by the next run (see the report)")  # fmt: skip
    results.append(run_stage("annotation", results[0]))
    results.append(run_stage("dataset"))
    if not results[-1].get("samples"):
        note = "the dataset has no samples yet: nothing to train on (see the annotation stage)"
        results += [{"stage": s, "status": "blocked", "summary": note} for s in (*chain, "evaluation")]
    else:
        upstream = results[-1]
        for stage in chain:
            upstream = run_stage(stage, upstream)
            results.append(upstream)
        results.append(run_stage("evaluation", upstream))
    for r, name in zip(results, stage_names(config), strict=True):
        r["stage"] = name
    return results


def finish(config: RetrainConfig, results: list[Result], seconds: float) -> dict[str, Any]:
    """Write ``report.md``; the run's result: the stages, the report's path and the folder."""
    path = write_report(config.root, results, seconds)
    log.debug("stages: %s; report %s", ", ".join(f"{r['stage']} {r['status']}" for r in results), path)
    return {"stages": results, "report": str(path), "out": str(config.root)}


def run_local(
    config: RetrainConfig,
    *,
    annotators: Mapping[str, Annotator] | None = None,
    on_dataset_version: OnDatasetVersion | None = None,
) -> dict[str, Any]:
    """Run every stage whose inputs changed, in this process, without Prefect (the same stage functions,
    keys and ledger as the flow, so either can pick up after the other). Curation runs one input at a
    time (:func:`ardrag.curation.pipeline.run_local`). Returns what the flow returns."""
    t0 = time.monotonic()
    check_stage_inputs(config)
    annotator(config, annotators)
    if config.curation.runner != "local":
        log.warning("curation runner %r is ignored without Prefect: curation runs in this process, one "
                    "input at a time", config.curation.runner)  # fmt: skip
    log.info("retrain into %s (local runner, without Prefect)", config.root)
    steps: dict[str, Callable[..., Result]] = {
        "curation": functools.partial(curation_stage, config),
        "annotation": lambda curation: annotation_stage(config, curation, annotators),
        "dataset": functools.partial(dataset_stage, config, on_dataset_version),
        **{stage: functools.partial(training_stage, config, stage) for stage in training_chain(config)},
        "evaluation": functools.partial(evaluation_stage, config),
    }
    results = run_stages(config, lambda stage, *upstream: announced(stage, steps[stage], *upstream))
    return finish(config, results, time.monotonic() - t0)
