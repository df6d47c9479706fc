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
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ardrag.config import Config, build_config
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write, file_sha256

STAGES = ("curation", "annotation", "dataset", "teacher", "distill", "grpo", "evaluation")
TRAINING = ("teacher", "distill", "grpo")


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
    preset: Literal["tiny"] | None = Field(None, description="'tiny': toy models for training and eval")
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
    "preset": "tiny",
    "curation": {
        "source": "procedural",
        "preset": "tiny",
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
    from ardrag.training.run import _merge, _read_yaml

    data = dict(base or {})
    source = "<arguments>"
    if path is not None:
        data = _merge(data, _read_yaml(str(path)))
        source = str(path)
    return build_config(RetrainConfig, _merge(data, overrides or {}), source=source)


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
def train_config(config: RetrainConfig, stage: str, data_root: str, init: str | None) -> Any:
    """The resolved ``TrainConfig`` of a training stage (its run folder not yet set): the preset, the
    shared ``train`` fields, the stage's own, then the dataset and the upstream model."""
    from ardrag.training.config import TINY, TrainConfig
    from ardrag.training.run import _merge

    fields: dict[str, Any] = dict(TINY) if config.preset == "tiny" else {}
    for layer in (config.train, getattr(config, stage).config, {"stage": stage, "data": {"root": data_root}}):
        fields = _merge(fields, layer)
    if init is not None:
        fields = _merge(fields, {"model": {"init": init}})
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
