"""The stages, one plain function each (``curation_stage`` ... ``evaluation_stage``): key, skip rule,
result, summary, figures, notes; and :func:`run_training`, which runs a training stage in this process
or under torchrun. The hooks' types name what the callers pass in for what the library may not import."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.model.model_folder import folder_preset, is_model_folder
from ardrag.presets import preset
from ardrag.retrain.config import RetrainConfig, stage_settings, train_config, training_chain
from ardrag.retrain.ledger import Ledger, digest, files_digest, stage_key
from ardrag.retrain.report import loss_figures
from ardrag.training.stages import get_stage

if TYPE_CHECKING:
    from ardrag.curation.pipeline import CurationConfig

log = logging.getLogger(__name__)


Result = dict[str, Any]
# source settings, curation settings -> the curation summary (``CurationStore.summary``)
Curate = Callable[[dict[str, Any], "CurationConfig"], dict[str, Any]]
# the curation folder -> what the mode's stage reads (see :func:`annotation_stage`)
Annotator = Callable[[Path], Any]
# the dataset folder and its manifest, when the dataset stage recorded a new version with samples
OnDatasetVersion = Callable[[Path, dict[str, Any]], Any]


def run_training(config: Any, nproc_per_node: int = 1, progress: bool = True) -> dict[str, Any]:
    """Train one stage into ``config.run_dir``, resuming from its checkpoints when it has some; with
    ``nproc_per_node`` > 1 under torchrun (its resolved config written to the run folder first)."""
    from ardrag.training.checkpoint import checkpoint_dirs

    run = Path(config.run_dir)
    resume = bool(checkpoint_dirs(run))
    if nproc_per_node == 1:
        from ardrag.training.run import train

        return train(config, resume=resume, progress=progress)
    import yaml

    run.mkdir(parents=True, exist_ok=True)
    path = run / "launch.yaml"
    atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc_per_node}", "-m", "ardrag.cli", "train", config.stage,
               "--config", str(path), "--json", "-q"]  # fmt: skip
    if resume:
        command.append("--resume")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(
            f"torchrun of stage {config.stage} ({nproc_per_node} processes) failed with exit code "
            f"{done.returncode}: {done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def skipped(stage: str, entry: dict[str, Any]) -> Result:
    """A stage's ledger entry, reported as skipped (its inputs have not changed)."""
    log.debug("%s: skipped, its inputs have not changed (key %s)", stage, entry["key"])
    return {**entry, "status": "skipped", "seconds": 0.0}


def curation_source_config(config: RetrainConfig) -> dict[str, Any]:
    """The source's settings: its named preset, then the config's ``source_config``."""
    c = config.curation
    return {**(preset(c.source, c.preset) if c.preset else {}), **c.source_config}


def curation_stage(config: RetrainConfig, curate: Curate | None = None) -> Result:
    """Curate the source's inputs into the curation folder. ``curate(source_config, curation)`` runs the
    curation and returns its summary (the flow passes the curate subflow); by default
    :func:`ardrag.curation.pipeline.run_local` in this process. Inputs that failed leave the stage
    ``incomplete`` (not in the ledger): the next run retries them."""
    from ardrag.curation import pipeline
    from ardrag.curation.pipeline import CurationConfig
    from ardrag.data.sources import build_source

    t0, ledger = time.monotonic(), Ledger(config.root)
    source_config = curation_source_config(config)
    src = build_source(config.curation.source, source_config)
    curation = CurationConfig.model_validate(config.curation.config)
    inputs = sorted((i.id, i.content_hash) for i in src.inputs())
    settings = pipeline.config_digest(pipeline.settings_digest(src), curation)
    key = digest(config.curation.source, settings, inputs)
    if entry := ledger.fresh("curation", key):
        return skipped("curation", entry)
    log.debug("curation: %d inputs from %s", len(inputs), config.curation.source)
    if curate is None:
        summary = pipeline.run_local(src, config.curation_dir, curation, progress=config.progress)
    else:
        summary = curate(source_config, curation)
    states = ", ".join(f"{k} {v}" for k, v in summary["states"].items())
    result = {
        "key": key,
        "summary": f"{summary['inputs']} inputs, {summary['clips']} clips: {states}",
        "figures": {k: summary[k] for k in ("inputs", "clips", "states", "reasons", "buckets")},
        "outputs": {"curation folder": str(config.curation_dir)},
        "seconds": time.monotonic() - t0,
    }
    if summary["inputs_failed"] or summary["inputs_missing"]:  # not done: the next run retries them
        failed = {**summary["inputs_failed"], **{i: "missing" for i in summary["inputs_missing"]}}
        log.error("curation: %d inputs failed, retried by the next run: %s", len(failed), failed)
        return {**result, "status": "incomplete", "note": f"inputs that failed (retried next run): {failed}"}
    return {**ledger.put("curation", result), "status": "ran"}


def annotator(config: RetrainConfig, annotators: Mapping[str, Annotator] | None) -> Annotator | None:
    """The hook of the config's annotation mode (None for ``none``, which needs none). ``auto`` and
    ``label-studio`` are the annotation package's, which the library does not import: the caller passes
    them; a missing one fails here, before any compute."""
    mode = config.annotation
    if mode == "none":
        return None
    hook = (annotators or {}).get(mode)
    if hook is None:
        raise ConfigError(
            f"annotation {mode!r} needs the annotation package, which ardrag's library does not import: "
            f"pass annotators={{{mode!r}: ...}} to ardrag.retrain.run.run_local (the "
            "`ardrag retrain --local` command does), or set annotation: none"
        )
    return hook


def annotation_stage(
    config: RetrainConfig, curation: Result, annotators: Mapping[str, Annotator] | None = None
) -> Result:
    """Hard cases: wait for people (``none``), go to Label Studio and come back (``label-studio``), or
    are accepted without a person, labelled so (``auto``). Its inputs: the curation's result and the
    clips waiting for people. The hooks (``annotators[mode](curation_folder)``): ``auto`` returns the
    counts of ``annotation.auto.auto_annotate`` (``accepted``, ...; ``annotator``: the name written in
    provenance); ``label-studio`` pushes then pulls, returning both reports ``(pushed, pulled)``."""
    from ardrag.curation.store import CurationStore

    hook = annotator(config, annotators)
    t0, ledger = time.monotonic(), Ledger(config.root)
    waiting = CurationStore(config.curation_dir).waiting()
    undecided = [c for c in waiting if c["review"] is None]
    versions = sorted((c["key"], c.get("sample_sha256")) for c in waiting)
    key = digest(config.annotation, curation["key"], versions)
    counts = {"waiting for a person": len(undecided), "clips routed to people": len(waiting)}
    base = {"key": key, "figures": counts}
    if hook is None:
        note = (
            f"{len(undecided)} clips wait for a person: start Label Studio (`ardrag annotate serve`) and "
            f"run `ardrag annotate push --out {config.curation_dir}`, or rerun with annotation `auto`."
        )
        log.info("annotation: off; %s", note)
        return {**base, "status": "skipped (off)", "summary": f"{len(undecided)} clips wait", "note": note,
                "seconds": 0.0}  # fmt: skip
    if config.annotation == "auto":
        if entry := ledger.fresh("annotation", key):
            return skipped("annotation", entry)
        report = dict(hook(config.curation_dir))
        name = report.pop("annotator", None)
        note = (f"{report['accepted']} clips accepted WITHOUT a person: provenance status `auto-annotated`"
                + (f", annotator `{name}`." if name else "."))  # fmt: skip
        log.warning("annotation: %s", note)
        result = {**base, "summary": f"{report['accepted']} auto-annotated", "note": note,
                  "figures": {**counts, **report}, "seconds": time.monotonic() - t0}  # fmt: skip
        return {**ledger.put("annotation", result), "status": "ran"}
    pushed, pulled = hook(config.curation_dir)
    new = sum(pushed[i].get("pushed", 0) for i in ("verify", "annotate")) + pulled["reviews_written"]
    figures = {"pushed": {i: pushed[i].get("pushed", 0) for i in ("verify", "annotate")},
               **{k: pulled[k] for k in ("tasks", "open", "accepted", "rejected", "invalid")}}  # fmt: skip
    status = "ran" if new else "up to date"
    summary = f"{pulled['open']} tasks open in Label Studio"
    return {**base, "status": status, "figures": {**counts, **figures}, "summary": summary,
            "seconds": time.monotonic() - t0}  # fmt: skip


def dataset_stage(config: RetrainConfig, on_dataset_version: OnDatasetVersion | None = None) -> Result:
    """Check the curated shards and record their version; a new version with samples is passed to
    ``on_dataset_version(dataset_folder, manifest)`` (the flow emits its Prefect event there)."""
    from ardrag.data.inspect import inspect_dataset
    from ardrag.data.shards import read_manifest

    t0, ledger = time.monotonic(), Ledger(config.root)
    root = config.curation_dir / "dataset"
    manifest = read_manifest(root)
    key = manifest["version"]
    if entry := ledger.fresh("dataset", key):
        return skipped("dataset", entry)
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
    if manifest["samples"] and on_dataset_version is not None:
        on_dataset_version(root, manifest)
    return {**ledger.put("dataset", result), "status": "ran"}


def start_weights(tc: Any, before: str | None = None) -> str:
    """What a training stage's model starts from, in words, for the report: the export of the stage
    ``before`` it in the chain, a model folder's trained student (e.g. the shipped toy model's), Wan's
    transformer, or random weights; then where its encoders and VAE come from."""
    m = tc.model
    shipped = folder_preset(m.wan) if m.preset is None else None
    if m.init is not None:
        model = f"the {before} stage's export `{m.init}`" if before else f"`{m.init}`"
    elif m.preset is not None:
        model = f"random weights (model preset {m.preset}) with zero control weights"
    elif shipped is not None:
        model = f"the {shipped} model's trained student, control weights included (`{m.wan}`)"
    else:
        model = f"the transformer of `{m.wan}` with zero control weights"
    return f"{model}; {encoders_and_vae(tc)}"


def encoders_and_vae(tc: Any) -> str:
    """Where a stage's encoders and VAE come from, in words."""
    m = tc.model
    shipped = folder_preset(m.wan) if m.preset is None else None
    if m.preset is not None:
        out = f"the random encoders and VAE of model preset {m.preset}"
    elif shipped is not None:
        out = f"the {shipped} model's encoders and VAE"
    else:
        out = f"the encoders and VAE of `{m.wan}`"
    return out + (f" (the VAE replaced by `{m.vae}`)" if m.vae is not None else "")


def training_inputs(tc: Any, upstream: Result) -> str:
    """What a training stage's key stands for besides its config: the upstream model's digest, or the
    dataset's version, and then the model folder it starts from (its files' digest: new shipped weights
    rerun the stage)."""
    if tc.model.init is not None:
        return upstream["model_digest"]
    if tc.model.preset is None and is_model_folder(tc.model.wan):
        return digest(upstream["key"], files_digest(tc.model.wan))
    return upstream["key"]


def training_stage(config: RetrainConfig, stage: str, upstream: Result) -> Result:
    """One training stage of the config's chain (teacher, distill, then grpo and/or copo) from the dataset
    and the upstream stage's model, into ``<out>/train/<stage>-<key>``; skipped when its entry is fresh
    and its model still there."""
    chain = training_chain(config)
    if stage not in chain:
        raise ConfigError(f"training stage {stage!r} is not in the retrain chain of rl {config.rl!r}; "
                          f"expected one of {list(chain)}")  # fmt: skip
    before = chain[chain.index(stage) - 1] if chain.index(stage) else None
    t0, ledger = time.monotonic(), Ledger(config.root)
    init = upstream["outputs"].get("model")
    tc = train_config(config, stage, str(config.curation_dir / "dataset"), init)
    key = stage_key(tc, training_inputs(tc, upstream))
    entry = ledger.fresh(stage, key)
    if entry and Path(entry["outputs"]["model"]).is_dir():
        return skipped(stage, entry)
    run_dir = config.root / "train" / f"{stage}-{key}"
    tc = tc.model_copy(update={"run_dir": str(run_dir)})
    log.debug("%s: %d steps into %s", stage, tc.steps, run_dir)
    summary = run_training(tc, stage_settings(config, stage).nproc_per_node, progress=config.progress)
    figures: dict[str, Any] = {"steps": summary["steps"], **loss_figures(run_dir)}
    outputs = {"model": str(Path(summary["export"]).resolve()), "run folder": str(run_dir),
               "TensorBoard": str(run_dir / "tb")}  # fmt: skip
    if summary.get("rewards_plot"):
        outputs["reward curves"] = str(Path(summary["rewards_plot"]).resolve())
    main = get_stage(stage).main_loss  # the loss the one-line summary shows
    line = f"{summary['steps']} steps"
    if main in figures:
        line += f"; {main} {figures[main]['first']:.4g} -> {figures[main]['last']:.4g}"
    result = {"key": key, "summary": line, "start": start_weights(tc, before), "figures": figures,
              "outputs": outputs, "model_digest": files_digest(outputs["model"]),
              "seconds": time.monotonic() - t0}  # fmt: skip
    return {**ledger.put(stage, result), "status": "ran"}


def still_clip(pipe: Any, image: Any, trajectory: Any, prompt: str, seed: int = 0) -> tuple[Any, float]:
    """The reference image repeated for every frame of the drag (an evaluation ``clip_fn``)."""
    import numpy as np

    return np.repeat(image[None], trajectory.num_frames, axis=0), 0.0


def untrained_transformer(transformer: Any, seed: int) -> Any:
    """A random transformer of ``transformer``'s class and config (control weights zero, as every
    training starts): the model before any training, the yardstick the evaluation reports beside the
    trained one. Seeded by ``seed`` alone; leaves the global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = type(transformer).from_config(transformer.config)
    model = model.to(transformer.device)
    if model.dtype != transformer.dtype:  # diffusers warns on any dtype given to to(): only when needed
        model = model.to(transformer.dtype)
    return model.eval()


def _px(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} px"


def evaluation_stage(config: RetrainConfig, student: Result) -> Result:
    """The paper's six metrics of the final student on the benchmark (``ardrag eval``'s outputs)."""
    from ardrag.evaluation.benchmark import eval_set_config, write_procedural_benchmark
    from ardrag.evaluation.run import evaluate
    from ardrag.training.run import trained_pipeline

    t0, ledger = time.monotonic(), Ledger(config.root)
    model = student["outputs"]["model"]
    key = digest(student["model_digest"], config.eval.to_dict(), config.preset)
    if entry := ledger.fresh("evaluation", key):
        return skipped("evaluation", entry)
    out = config.root / "eval" / f"eval-{key}"
    final = training_chain(config)[-1]
    last = train_config(config, final, str(config.curation_dir / "dataset"), model)
    # the model preset of the models trained: random ones (model.preset), or the one whose model folder
    # they started from (the demo's toy): its evaluation set, and random metric networks
    preset = last.model.preset or folder_preset(last.model.wan)
    benchmark = config.eval.benchmark
    if benchmark is None:
        procedural = eval_set_config(preset).model_copy(update=config.eval.procedural)
        benchmark = str(write_procedural_benchmark(procedural, config.root / "eval" / "benchmark"))
    pipe = trained_pipeline(last, model)
    e = config.eval
    settings = {"preset": preset, "pipe": pipe, "benchmark": benchmark, "inception": e.inception,
                "i3d": e.i3d, "aesthetic_clip": e.aesthetic_clip, "aesthetic_head": e.aesthetic_head,
                "seed": e.seed}  # fmt: skip
    results = evaluate(out, progress=config.progress, **settings)
    # the same evaluation of the reference frame held still: what a model that ignores the drag scores
    still = evaluate(out / "still", progress=False, clip_fn=still_clip, **settings)
    # and of the untrained model: a random transformer of the same shape with the same encoders and VAE
    trained = pipe.transformer
    pipe.transformer = untrained_transformer(trained, e.seed)
    try:
        untrained = evaluate(out / "untrained", progress=False, **settings)
    finally:
        pipe.transformer = trained
    columns = results["columns"]
    error, still_error = results["consistency_error_px"], still["consistency_error_px"]
    untrained_error = untrained["consistency_error_px"]
    header = "| " + " | ".join(columns) + " |"
    row = "| " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in columns.values()) + " |"
    result = {
        "key": key,
        "summary": f"{len(results['clips'])} clips, {len(results['errors'])} with errors; tracking error "
        f"{_px(error)} (untrained model: {_px(untrained_error)}; the reference frame held still: "
        f"{_px(still_error)})",
        "start": f"the {final} stage's export `{model}`; {encoders_and_vae(last)}",
        "figures": {
            "clips": len(results["clips"]),
            "errors": len(results["errors"]),
            "tracking error (px)": error,
            "tracking error of the untrained model (px)": untrained_error,
            "tracking error of the reference frame held still (px)": still_error,
        },
        "table": "\n".join([header, "|" + " --- |" * len(columns), row]),
        "outputs": {
            "results": str(out / "results.md"),
            "videos (generated | reference)": str(out / "grid.mp4"),
            "videos of the untrained model": str(out / "untrained" / "grid.mp4"),
        },
        "seconds": time.monotonic() - t0,
    }
    if preset is not None:
        result["note"] = (f"{preset.capitalize()} preset: FID, FVD and the aesthetic score use "
                          "random networks; they exercise the pipeline and say nothing about "
                          "quality.")  # fmt: skip
    return {**ledger.put("evaluation", result), "status": "ran"}
