"""The retrain flow: curation -> annotation -> dataset version -> teacher -> distillation -> GRPO ->
evaluation, each a subflow that is skipped when its inputs have not changed (:mod:`ardrag.retrain`
defines the keys and the ledger), ending with ``report.md`` and a markdown artifact of it.

Started by hand (``ardrag retrain --config FILE``, ``ardrag demo``), on a schedule, or by a new dataset
version: the ``retrain`` deployment in ``prefect.yaml`` has a trigger on the event
``ardrag.dataset.version.created`` (:mod:`flows.events`). Rerunning with no new data skips every stage;
one new input reruns curation for that input alone, then every stage after it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ardrag.curation import pipeline
from ardrag.curation.pipeline import CurationConfig
from ardrag.curation.store import CurationStore
from ardrag.presets import preset
from ardrag.retrain import (
    STAGES,
    TRAINING,
    Ledger,
    RetrainConfig,
    check_stage_inputs,
    digest,
    files_digest,
    load_retrain_config,
    loss_figures,
    run_training,
    stage_key,
    train_config,
    write_report,
)
from flows.curate import _source, curate, task_runner
from flows.events import emit_dataset_version

log = logging.getLogger(__name__)  # also sent to the Prefect UI (extra loggers)


def _config(config: dict[str, Any]) -> RetrainConfig:
    return RetrainConfig.model_validate(config)


def _skipped(stage: str, entry: dict[str, Any]) -> dict[str, Any]:
    log.debug("%s: skipped, its inputs have not changed (key %s)", stage, entry["key"])
    return {**entry, "status": "skipped", "seconds": 0.0}


def _announced(stage: str, subflow: Any, *args: Any) -> dict[str, Any]:
    """Run a stage's subflow between a start line and an end line (status, time, summary)."""
    log.info("%s: started", stage)
    result = subflow(*args)
    took = f" in {result['seconds']:.0f} s" if result.get("seconds") else ""
    if result["status"] == "skipped":
        took = " (its inputs have not changed)"
    log.info("%s: %s%s; %s", stage, result["status"], took, result.get("summary", ""))
    return result


def _source_config(cfg: RetrainConfig) -> dict[str, Any]:
    c = cfg.curation
    return {**(preset(c.source, c.preset) if c.preset else {}), **c.source_config}


@flow(name="retrain-curation")
def curation_stage(config: dict[str, Any]) -> dict[str, Any]:
    """Curate the source's inputs into ``<out>/curation`` (the curate flow, as a subflow)."""
    cfg, t0 = _config(config), time.monotonic()
    ledger = Ledger(cfg.root)
    source_config = _source_config(cfg)
    src = _source(cfg.curation.source, json.dumps(source_config, sort_keys=True))
    curation = CurationConfig.model_validate(cfg.curation.config)
    inputs = sorted((i.id, i.content_hash) for i in src.inputs())
    key = digest(cfg.curation.source, pipeline.config_digest(pipeline.settings_digest(src), curation), inputs)
    if entry := ledger.fresh("curation", key):
        return _skipped("curation", entry)
    log.debug("curation: %d inputs from %s", len(inputs), cfg.curation.source)
    run = curate.with_options(task_runner=task_runner(cfg.curation.runner, cfg.curation.workers))
    out = str(cfg.curation_dir)
    summary = run(cfg.curation.source, source_config, out, curation.to_dict(), announce=False)
    states = ", ".join(f"{k} {v}" for k, v in summary["states"].items())
    result = {
        "key": key,
        "summary": f"{summary['inputs']} inputs, {summary['clips']} clips: {states}",
        "figures": {k: summary[k] for k in ("inputs", "clips", "states", "reasons", "buckets")},
        "outputs": {"curation folder": str(cfg.curation_dir)},
        "seconds": time.monotonic() - t0,
    }
    if summary["inputs_failed"] or summary["inputs_missing"]:  # not done: the next run retries them
        failed = {**summary["inputs_failed"], **{i: "missing" for i in summary["inputs_missing"]}}
        log.error("curation: %d inputs failed, retried by the next run: %s", len(failed), failed)
        return {**result, "status": "incomplete", "note": f"inputs that failed (retried next run): {failed}"}
    return {**ledger.put("curation", result), "status": "ran"}


@flow(name="retrain-annotation")
def annotation_stage(config: dict[str, Any], curation: dict[str, Any]) -> dict[str, Any]:
    """Hard cases: wait for people (``none``), go to Label Studio and come back (``label-studio``), or
    are accepted without a person, labelled so (``auto``). Its inputs: the curation's result and the
    clips waiting for people."""
    cfg, t0 = _config(config), time.monotonic()
    ledger = Ledger(cfg.root)
    store = CurationStore(cfg.curation_dir)
    waiting = store.waiting()
    undecided = [c for c in waiting if c["review"] is None]
    key = digest(cfg.annotation, curation["key"], sorted((c["key"], c.get("sample_sha256")) for c in waiting))
    counts = {"waiting for a person": len(undecided), "clips routed to people": len(waiting)}
    base = {"key": key, "figures": counts}
    if cfg.annotation == "none":
        note = (
            f"{len(undecided)} clips wait for a person: start Label Studio (`ardrag annotate serve`) and "
            f"run `ardrag annotate push --out {cfg.curation_dir}`, or rerun with annotation `auto`."
        )
        log.info("annotation: off; %s", note)
        return {**base, "status": "skipped (off)", "summary": f"{len(undecided)} clips wait", "note": note,
                "seconds": 0.0}  # fmt: skip
    if cfg.annotation == "auto":
        if entry := ledger.fresh("annotation", key):
            return _skipped("annotation", entry)
        from annotation.auto import AUTO_ANNOTATOR, auto_annotate

        report = auto_annotate(cfg.curation_dir)
        note = (f"{report['accepted']} clips accepted WITHOUT a person: provenance status `auto-annotated`, "
                f"annotator `{AUTO_ANNOTATOR}`.")  # fmt: skip
        log.warning("annotation: %s", note)
        result = {**base, "summary": f"{report['accepted']} auto-annotated", "note": note,
                  "figures": {**counts, **report}, "seconds": time.monotonic() - t0}  # fmt: skip
        return {**ledger.put("annotation", result), "status": "ran"}
    from flows.annotate import annotation_pull, annotation_push

    pushed = annotation_push(str(cfg.curation_dir))
    pulled = annotation_pull(str(cfg.curation_dir), announce=False)  # the dataset stage announces
    new = sum(pushed[i].get("pushed", 0) for i in ("verify", "annotate")) + pulled["reviews_written"]
    figures = {"pushed": {i: pushed[i].get("pushed", 0) for i in ("verify", "annotate")},
               **{k: pulled[k] for k in ("tasks", "open", "accepted", "rejected", "invalid")}}  # fmt: skip
    status = "ran" if new else "up to date"
    summary = f"{pulled['open']} tasks open in Label Studio"
    return {**base, "status": status, "figures": {**counts, **figures}, "summary": summary,
            "seconds": time.monotonic() - t0}  # fmt: skip


@flow(name="retrain-dataset")
def dataset_stage(config: dict[str, Any]) -> dict[str, Any]:
    """Check the curated shards and record their version; announce a new one."""
    from ardrag.data.inspect import inspect_dataset
    from ardrag.data.shards import read_manifest

    cfg, t0 = _config(config), time.monotonic()
    ledger = Ledger(cfg.root)
    root = cfg.curation_dir / "dataset"
    manifest = read_manifest(root)
    key = manifest["version"]
    if entry := ledger.fresh("dataset", key):
        return _skipped("dataset", entry)
    report = inspect_dataset(root, verify_hashes=True)
    if report["problems"]:
        raise RuntimeError(f"dataset {root} is damaged: {report['problems']}")
    people = (manifest.get("reviews") or {}).get("accepted", {})
    by = {"rule": manifest["samples"] - sum(people.values()), **people}
    result = {
        "key": key,
        "summary": f"version {key}: {manifest['samples']} samples",
        "figures": {"samples": manifest["samples"], "buckets": manifest["buckets"], "accepted by": by},
        "outputs": {"dataset": str(root)},
        "samples": manifest["samples"],
        "seconds": time.monotonic() - t0,
    }
    if manifest["samples"]:
        emit_dataset_version(root, manifest, producer="retrain")
    return {**ledger.put("dataset", result), "status": "ran"}


@flow(name="retrain-training", flow_run_name="retrain-{stage}")
def training_stage(config: dict[str, Any], stage: str, upstream: dict[str, Any]) -> dict[str, Any]:
    """One training stage (teacher, distill or grpo) from the dataset and the upstream stage's model."""
    cfg, t0 = _config(config), time.monotonic()
    ledger = Ledger(cfg.root)
    init = upstream["outputs"].get("model")
    tc = train_config(cfg, stage, str(cfg.curation_dir / "dataset"), init)
    key = stage_key(tc, upstream["key"] if init is None else upstream["model_digest"])
    entry = ledger.fresh(stage, key)
    if entry and Path(entry["outputs"]["model"]).is_dir():
        return _skipped(stage, entry)
    run_dir = cfg.root / "train" / f"{stage}-{key}"
    tc = tc.model_copy(update={"run_dir": str(run_dir)})
    log.debug("%s: %d steps into %s", stage, tc.steps, run_dir)
    summary = run_training(tc, getattr(cfg, stage).nproc_per_node, progress=cfg.progress)
    figures: dict[str, Any] = {"steps": summary["steps"], **loss_figures(run_dir)}
    outputs = {"model": str(Path(summary["export"]).resolve()), "run folder": str(run_dir),
               "TensorBoard": str(run_dir / "tb")}  # fmt: skip
    if summary.get("rewards_plot"):
        outputs["reward curves"] = str(Path(summary["rewards_plot"]).resolve())
    main = {"teacher": "teacher/loss", "distill": "generator/dmd", "grpo": "grpo/reward_motion"}[stage]
    line = f"{summary['steps']} steps"
    if main in figures:
        line += f"; {main} {figures[main]['first']:.4g} -> {figures[main]['last']:.4g}"
    result = {"key": key, "summary": line, "figures": figures, "outputs": outputs,
              "model_digest": files_digest(outputs["model"]), "seconds": time.monotonic() - t0}  # fmt: skip
    return {**ledger.put(stage, result), "status": "ran"}


@flow(name="retrain-evaluation")
def evaluation_stage(config: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    """The paper's six metrics of the final student on the benchmark (``ardrag eval``'s outputs)."""
    from ardrag.evaluation.benchmark import procedural_config, write_procedural_benchmark
    from ardrag.evaluation.run import evaluate
    from ardrag.training.run import trained_pipeline

    cfg, t0 = _config(config), time.monotonic()
    ledger = Ledger(cfg.root)
    model = student["outputs"]["model"]
    key = digest(student["model_digest"], cfg.eval.to_dict(), cfg.preset)
    if entry := ledger.fresh("evaluation", key):
        return _skipped("evaluation", entry)
    out = cfg.root / "eval" / f"eval-{key}"
    benchmark = cfg.eval.benchmark
    if benchmark is None:
        procedural = procedural_config().model_copy(update=cfg.eval.procedural)
        benchmark = str(write_procedural_benchmark(procedural, cfg.root / "eval" / "benchmark"))
    pipe = trained_pipeline(train_config(cfg, "grpo", str(cfg.curation_dir / "dataset"), model), model)
    e = cfg.eval
    results = evaluate(out, preset=cfg.preset, pipe=pipe, benchmark=benchmark, inception=e.inception,
                       i3d=e.i3d, aesthetic_clip=e.aesthetic_clip, aesthetic_head=e.aesthetic_head,
                       seed=e.seed, progress=cfg.progress)  # fmt: skip
    columns = results["columns"]
    header = "| " + " | ".join(columns) + " |"
    row = "| " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in columns.values()) + " |"
    result = {
        "key": key,
        "summary": f"{len(results['clips'])} clips, {len(results['errors'])} with errors",
        "figures": {"clips": len(results["clips"]), "errors": len(results["errors"])},
        "table": "\n".join([header, "|" + " --- |" * len(columns), row]),
        "outputs": {
            "results": str(out / "results.md"),
            "videos (generated | reference)": str(out / "grid.mp4"),
        },
        "seconds": time.monotonic() - t0,
    }
    if cfg.preset == "tiny":
        result["note"] = ("Tiny preset: FID, FVD and the aesthetic score use random networks; they exercise "
                          "the pipeline and say nothing about quality.")  # fmt: skip
    return {**ledger.put("evaluation", result), "status": "ran"}


@flow(name="retrain")
def retrain(
    config: dict[str, Any] | None = None, config_file: str | None = None, trigger: str | None = None
) -> dict[str, Any]:
    """Run every stage whose inputs changed; returns the stages' results and the report's path.
    ``trigger``: what started the run (the deployment trigger passes the dataset event), for the log."""
    t0 = time.monotonic()
    cfg = load_retrain_config(config_file, config or {})
    check_stage_inputs(cfg)
    if trigger:
        log.info("started by %s", trigger)
    c = cfg.to_dict()
    results = [_announced("curation", curation_stage, c)]
    if results[-1]["status"] == "incomplete":
        log.warning("curation is incomplete: the stages after it use what was accepted; the failed "
                       "inputs are retried by the next run (see the report)")  # fmt: skip
    results.append(_announced("annotation", annotation_stage, c, results[0]))
    results.append(_announced("dataset", dataset_stage, c))
    if not results[-1].get("samples"):
        note = "the dataset has no samples yet: nothing to train on (see the annotation stage)"
        results += [{"stage": s, "status": "blocked", "summary": note} for s in (*TRAINING, "evaluation")]
    else:
        upstream = results[-1]
        for stage in TRAINING:
            upstream = _announced(stage, training_stage, c, stage, upstream)
            results.append(upstream)
        results.append(_announced("evaluation", evaluation_stage, c, upstream))
    for r, name in zip(results, STAGES, strict=True):
        r["stage"] = name
    path = write_report(cfg.root, results, time.monotonic() - t0)
    create_markdown_artifact(path.read_text(encoding="utf-8"), key="retrain-report",
                             description=f"retrain report of {cfg.root}")  # fmt: skip
    log.debug("stages: %s; report %s", ", ".join(f"{r['stage']} {r['status']}" for r in results), path)
    return {"stages": results, "report": str(path), "out": str(cfg.root)}


def run(config: RetrainConfig) -> dict[str, Any]:
    """Run the flow (on the API named by PREFECT_API_URL, else a temporary local one)."""
    logging.getLogger("ardrag").info("retrain into %s", config.root)
    return retrain(config.to_dict())
