"""End-to-end retraining without Prefect: its config, the keys that decide which stages rerun, the ledger
of finished stages, and the report. ``flows/retrain.py`` runs the stages as Prefect subflows on top.

The stages, in order: curation -> annotation -> dataset version -> teacher -> distill -> grpo ->
evaluation. Each has a *key*, a digest of exactly what its result depends on:

- curation: the source and curation settings and every input's content hash;
- annotation: the clips waiting for a person (key and sample version) and the annotation mode;
- dataset: the version of the curated shards (a digest of the accepted samples);
- teacher / distill / grpo: the upstream result (dataset version, or the sha256 of the upstream
  stage's exported weights) and the stage's resolved training config;
- evaluation: the final student's weights and the evaluation settings.

A stage whose key equals the one in its ledger entry (``<out>/stages/<stage>.json``, written last,
atomically) is skipped. A training stage's run folder is named by its key, so a killed run resumes from
its checkpoints, and a run with new inputs starts afresh beside the old one (nothing is overwritten).

Every stage is a plain function here (``curation_stage`` ... ``evaluation_stage``: key, skip rule,
result, summary, figures, notes), :func:`run_stages` holds their order, and :func:`run_local` runs them
all in this process. What the library may not import comes in as hooks: the annotation package's calls
(``annotators``, by annotation mode) and the dataset-version event (``on_dataset_version``). The flow
passes its subflows and Prefect's event; the local runner (``ardrag retrain --local``) the plain calls.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ardrag.config import Config, build_config, load_config, merge
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write, file_sha256
from ardrag.presets import TINY, check_preset, preset
from ardrag.training.stages import STAGES as REGISTRY
from ardrag.training.stages import get_stage

if TYPE_CHECKING:
    from ardrag.curation.pipeline import CurationConfig

log = logging.getLogger(__name__)

# the training chain: the stage registry's stages in its order (ardrag.training.stages); every stage
# starts from the one before's export
TRAINING = tuple(REGISTRY)
STAGES = ("curation", "annotation", "dataset", *TRAINING, "evaluation")

Result = dict[str, Any]
# source settings, curation settings -> the curation summary (``CurationStore.summary``)
Curate = Callable[[dict[str, Any], "CurationConfig"], dict[str, Any]]
# the curation folder -> what the mode's stage reads (see :func:`annotation_stage`)
Annotator = Callable[[Path], Any]
# the dataset folder and its manifest, when the dataset stage recorded a new version with samples
OnDatasetVersion = Callable[[Path, dict[str, Any]], Any]


class CurationSettings(Config):
    dir: str | None = Field(None, description="curation folder (default <out>/curation)")
    source: Literal["procedural", "folder", "wan"] = "procedural"
    preset: str | None = Field(None, description="named source preset (ardrag.presets), e.g. tiny")
    source_config: dict[str, Any] = Field(default_factory=dict, description="the source's config fields")
    config: dict[str, Any] = Field(default_factory=dict, description="CurationConfig fields")
    runner: Literal["local", "dask"] = "local"
    workers: int = Field(2, ge=1)


class StageSettings(Config):
    config: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields of this stage, over `train` and the preset"
    )
    nproc_per_node: int = Field(1, ge=1, description="> 1: run the stage under torchrun")


class EvalSettings(Config):
    benchmark: str | None = Field(None, description="benchmark.jsonl or its folder (default: procedural)")
    procedural: dict[str, Any] = Field(
        default_factory=dict, description="overrides of datasets/eval/procedural.yaml (e.g. num_clips)"
    )
    inception: str | None = None
    i3d: str | None = None
    aesthetic_clip: str | None = None
    aesthetic_head: str | None = None
    seed: int = 0


class RetrainConfig(Config):
    out: str = Field("runs/retrain", description="curation, stages, training runs, evaluation, report")
    preset: str | None = Field(
        None, description="a training preset (ardrag.presets), e.g. the tiny one: toy models, train and eval"
    )
    curation: CurationSettings = CurationSettings()
    annotation: Literal["none", "label-studio", "auto"] = Field(
        "none",
        description="none: hard cases wait; label-studio: push and pull (Label Studio settings from the "
        "environment); auto: accept them without a person, labelled auto-annotated",
    )
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields of every stage")
    teacher: StageSettings = StageSettings()
    distill: StageSettings = StageSettings()
    grpo: StageSettings = StageSettings()
    eval: EvalSettings = EvalSettings()
    progress: bool = Field(True, description="progress bars on the console")

    @field_validator("preset")
    @classmethod
    def _preset(cls, name: str | None) -> str | None:
        return check_preset("train", name)

    @property
    def root(self) -> Path:
        return Path(self.out).resolve()

    @property
    def curation_dir(self) -> Path:
        return Path(self.curation.dir).resolve() if self.curation.dir else self.root / "curation"


# The embedded defaults of `ardrag demo`: procedural clips, the opencv tracker, the tiny models, a few
# minutes on a 2-core CPU.
DEMO: dict[str, Any] = {
    "out": "runs/demo",
    "preset": TINY,
    "curation": {
        "source": "procedural",
        "preset": TINY,
        # half the clips have a sprite that bursts at 24-32 px a frame, past what routing leaves to a
        # quick check (20 px a frame, calibrated on real footage): those wait for a person
        "source_config": {"num_clips": 24, "fast_prob": 0.5, "min_fast_speed": 24.0, "max_fast_speed": 32.0},
        "config": {"auto_accept": True},  # easy clips accepted by rule (labelled auto-accept)
    },
    "train": {"save_every": 50, "log_every": 1},
    "teacher": {"config": {"steps": 150}},
    "distill": {"config": {"steps": 100}},
    "grpo": {"config": {"steps": 40}},
    "eval": {"procedural": {"num_clips": 8}},
}


def load_retrain_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                        base: dict[str, Any] | None = None) -> RetrainConfig:  # fmt: skip
    """``base`` (e.g. :data:`DEMO`), then the YAML file, then ``overrides``."""
    return load_config(RetrainConfig, path, overrides, base=base)


# -- keys and the ledger -------------------------------------------------------------------------------
def digest(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def files_digest(folder: str | os.PathLike[str]) -> str:
    """A digest of a folder's files (relative names and sha256s): the identity of an exported model.
    Computed once, when the stage that exported it finishes, and kept in its ledger entry."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return digest([(str(p.relative_to(root)), file_sha256(p)[0]) for p in files])


class Ledger:
    """One JSON file per finished stage: its key, outputs and figures. Written last, so an entry means
    the stage's outputs are complete."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root) / "stages"

    def get(self, stage: str) -> dict[str, Any] | None:
        path = self.root / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def fresh(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stage's entry when it was made from the same inputs (``key``), else None."""
        entry = self.get(stage)
        return entry if entry is not None and entry.get("key") == key else None

    def put(self, stage: str, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {**entry, "stage": stage, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / f"{stage}.json", json.dumps(entry, indent=1, sort_keys=True))
        return entry


# -- training stages -----------------------------------------------------------------------------------
def stage_settings(config: RetrainConfig, stage: str) -> StageSettings:
    """A training stage's settings: its field of the retrain config, the defaults for a registered stage
    that has none."""
    settings = getattr(config, stage, None)
    return settings if isinstance(settings, StageSettings) else StageSettings()


def train_config(config: RetrainConfig, stage: str, data_root: str, init: str | None) -> Any:
    """The resolved ``TrainConfig`` of a training stage (its run folder not yet set): the preset, the
    shared ``train`` fields, the stage's own, then the dataset and the upstream model."""
    from ardrag.training.config import TrainConfig

    fields: dict[str, Any] = preset("train", config.preset) if config.preset is not None else {}
    for layer in (
        config.train,
        stage_settings(config, stage).config,
        {"stage": stage, "data": {"root": data_root}},
    ):
        fields = merge(fields, layer)
    if init is not None:
        fields = merge(fields, {"model": {"init": init}})
    return build_config(TrainConfig, fields, source=f"the retrain config's {stage} stage")


def stage_key(config: Any, upstream: str) -> str:
    """A training stage's key: the upstream result and the config less where it runs."""
    fields = config.to_dict()
    fields.pop("run_dir")
    fields["data"].pop("root")  # stands in the key as the dataset version
    fields["model"].pop("init")  # ... or as the upstream weights' digest
    return digest(upstream, fields)


def run_training(config: Any, nproc_per_node: int = 1, progress: bool = True) -> dict[str, Any]:
    """Train one stage into ``config.run_dir``, resuming from its checkpoints when it has some; with
    ``nproc_per_node`` > 1 under torchrun (its resolved config written to the run folder first)."""
    run = Path(config.run_dir)
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*"))
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


def loss_figures(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Mean of each logged scalar over the first and the last 10 % of a run's steps (``losses.jsonl``)."""
    path = Path(run_dir) / "losses.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out: dict[str, dict[str, float]] = {}
    names = sorted({k for r in rows for k in r if k != "step" and not k.endswith("grad_norm")})
    for name in names:
        values = [r[name] for r in rows if isinstance(r.get(name), int | float)]
        if values:
            n = max(1, len(values) // 10)
            out[name] = {"first": statistics.fmean(values[:n]), "last": statistics.fmean(values[-n:])}
    return out


# -- the report ----------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(root: str | os.PathLike[str], results: list[dict[str, Any]], seconds: float) -> Path:
    """``report.md``: every stage with its status, time and figures, and where the plots and videos are."""
    root = Path(root)
    lines = ["# ardrag retrain report", "", f"Folder: `{root}`; wall time {seconds / 60:.1f} min.", "",
             "| stage | status | seconds | key | summary |", "| --- | --- | ---: | --- | --- |"]  # fmt: skip
    for r in results:
        lines.append(f"| {r['stage']} | {r['status']} | {r.get('seconds', 0.0):.1f} | `{r.get('key', '')}` | "
                     f"{r.get('summary', '')} |")  # fmt: skip
    for r in results:
        lines += ["", f"## {r['stage']} ({r['status']})", ""]
        if r.get("note"):
            lines += [r["note"], ""]
        for name, value in (r.get("figures") or {}).items():
            if isinstance(value, dict) and {"first", "last"} <= set(value):
                lines.append(f"- {name}: first 10 % {_fmt(value['first'])}, last 10 % {_fmt(value['last'])}")
            elif isinstance(value, dict):
                lines.append(f"- {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
            else:
                lines.append(f"- {name}: {_fmt(value)}")
        for name, path in (r.get("outputs") or {}).items():
            lines.append(f"- {name}: `{path}`")
        if r.get("table"):
            lines += ["", r["table"]]
    return atomic_write(root / "report.md", "\n".join(lines) + "\n")


def check_stage_inputs(config: RetrainConfig) -> None:
    """Fail before any compute on what can be checked up front: the training configs resolve."""
    for stage in TRAINING:
        try:
            train_config(config, stage, str(config.curation_dir / "dataset"), None)
        except ConfigError as err:
            raise ConfigError(f"retrain stage {stage}: {err}") from None


# -- the stages ----------------------------------------------------------------------------------------
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
            f"pass annotators={{{mode!r}: ...}} to ardrag.retrain.run_local (the `ardrag retrain --local` "
            "command does), or set annotation: none"
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


def training_stage(config: RetrainConfig, stage: str, upstream: Result) -> Result:
    """One training stage (teacher, distill or grpo) from the dataset and the upstream stage's model,
    into ``<out>/train/<stage>-<key>``; skipped when its entry is fresh and its model still there."""
    t0, ledger = time.monotonic(), Ledger(config.root)
    init = upstream["outputs"].get("model")
    tc = train_config(config, stage, str(config.curation_dir / "dataset"), init)
    key = stage_key(tc, upstream["key"] if init is None else upstream["model_digest"])
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
    result = {"key": key, "summary": line, "figures": figures, "outputs": outputs,
              "model_digest": files_digest(outputs["model"]), "seconds": time.monotonic() - t0}  # fmt: skip
    return {**ledger.put(stage, result), "status": "ran"}


def evaluation_stage(config: RetrainConfig, student: Result) -> Result:
    """The paper's six metrics of the final student on the benchmark (``ardrag eval``'s outputs)."""
    from ardrag.evaluation.benchmark import procedural_config, write_procedural_benchmark
    from ardrag.evaluation.run import evaluate
    from ardrag.training.run import trained_pipeline

    t0, ledger = time.monotonic(), Ledger(config.root)
    model = student["outputs"]["model"]
    key = digest(student["model_digest"], config.eval.to_dict(), config.preset)
    if entry := ledger.fresh("evaluation", key):
        return skipped("evaluation", entry)
    out = config.root / "eval" / f"eval-{key}"
    benchmark = config.eval.benchmark
    if benchmark is None:
        procedural = procedural_config().model_copy(update=config.eval.procedural)
        benchmark = str(write_procedural_benchmark(procedural, config.root / "eval" / "benchmark"))
    last = train_config(config, TRAINING[-1], str(config.curation_dir / "dataset"), model)
    pipe = trained_pipeline(last, model)
    e = config.eval
    results = evaluate(out, preset=last.model.preset, pipe=pipe, benchmark=benchmark, inception=e.inception,
                       i3d=e.i3d, aesthetic_clip=e.aesthetic_clip, aesthetic_head=e.aesthetic_head,
                       seed=e.seed, progress=config.progress)  # fmt: skip
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
    if config.preset is not None:
        result["note"] = (f"{config.preset.capitalize()} preset: FID, FVD and the aesthetic score use random "
                          "networks; they exercise the pipeline and say nothing about quality.")  # fmt: skip
    return {**ledger.put("evaluation", result), "status": "ran"}


# -- the order -----------------------------------------------------------------------------------------
def announced(stage: str, run: Callable[..., Result], *args: Any) -> Result:
    """Run a stage between a start line and an end line (status, time, summary)."""
    log.info("%s: started", stage)
    result = run(*args)
    took = f" in {result['seconds']:.0f} s" if result.get("seconds") else ""
    if result["status"] == "skipped":
        took = " (its inputs have not changed)"
    log.info("%s: %s%s; %s", stage, result["status"], took, result.get("summary", ""))
    return result


def run_stages(run_stage: Callable[..., Result]) -> list[Result]:
    """Every stage in order; ``run_stage(stage, *upstream_results)`` runs one (the local runner calls
    the functions above, the flow its subflows). Training waits for a dataset with samples."""
    results = [run_stage("curation")]
    if results[-1]["status"] == "incomplete":
        log.warning("curation is incomplete: the stages after it use what was accepted; the failed "
                    "inputs are retried by the next run (see the report)")  # fmt: skip
    results.append(run_stage("annotation", results[0]))
    results.append(run_stage("dataset"))
    if not results[-1].get("samples"):
        note = "the dataset has no samples yet: nothing to train on (see the annotation stage)"
        results += [{"stage": s, "status": "blocked", "summary": note} for s in (*TRAINING, "evaluation")]
    else:
        upstream = results[-1]
        for stage in TRAINING:
            upstream = run_stage(stage, upstream)
            results.append(upstream)
        results.append(run_stage("evaluation", upstream))
    for r, name in zip(results, STAGES, strict=True):
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
        **{stage: functools.partial(training_stage, config, stage) for stage in TRAINING},
        "evaluation": functools.partial(evaluation_stage, config),
    }
    results = run_stages(lambda stage, *upstream: announced(stage, steps[stage], *upstream))
    return finish(config, results, time.monotonic() - t0)
