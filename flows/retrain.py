"""The retrain flow: curation -> annotation -> dataset version -> teacher -> distillation -> the RL stage
(the config's ``rl``: GRPO, AR-CoPO, or GRPO then AR-CoPO) -> evaluation, each a subflow that is skipped
when its inputs have not changed, ending with ``report.md`` and a markdown artifact of it.

A thin Prefect layer over :mod:`ardrag.retrain`, which defines the stages (keys, ledger, results,
summaries) and their order, and also runs them without Prefect (``ardrag retrain --local``). Here each
stage is a subflow over its library function; curation runs as the curate flow on the configured task
runner, annotation through the annotation subflows, and a new dataset version emits its event.

Started by hand (``ardrag retrain --config FILE``, ``ardrag demo``), on a schedule, or by a new dataset
version: the ``retrain`` deployment in ``prefect.yaml`` has a trigger on the event
``ardrag.dataset.version.created`` (:mod:`flows.events`). Rerunning with no new data skips every stage;
one new input reruns curation for that input alone, then every stage after it; another ``rl`` skips the
teacher, the distillation and any RL stage that starts from the same model as before.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ardrag.curation.pipeline import CurationConfig
from ardrag.retrain import stages
from ardrag.retrain.config import RetrainConfig, check_stage_inputs, load_retrain_config, training_chain
from ardrag.retrain.run import announced, finish, run_stages
from flows.curate import curate, task_runner
from flows.events import emit_dataset_version

log = logging.getLogger(__name__)  # also sent to the Prefect UI (extra loggers)


def _config(config: dict[str, Any]) -> RetrainConfig:
    return RetrainConfig.model_validate(config)


@flow(name="retrain-curation")
def curation_stage(config: dict[str, Any]) -> dict[str, Any]:
    """Curate the source's inputs into ``<out>/curation`` (the curate flow, as a subflow)."""
    cfg = _config(config)

    def run_curate(source_config: dict[str, Any], curation: CurationConfig) -> dict[str, Any]:
        run = curate.with_options(task_runner=task_runner(cfg.curation.runner, cfg.curation.workers))
        out = str(cfg.curation_dir)
        return run(cfg.curation.source, source_config, out, curation.to_dict(), announce=False)

    return stages.curation_stage(cfg, curate=run_curate)


def _label_studio(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from flows.annotate import annotation_pull, annotation_push

    pushed = annotation_push(str(folder))
    return pushed, annotation_pull(str(folder), announce=False)  # the dataset stage announces


def _auto_annotate(folder: Path) -> dict[str, Any]:
    from annotation.auto import auto_annotate  # imported when the mode runs

    return auto_annotate(folder)


ANNOTATORS = {"auto": _auto_annotate, "label-studio": _label_studio}


@flow(name="retrain-annotation")
def annotation_stage(config: dict[str, Any], curation: dict[str, Any]) -> dict[str, Any]:
    """Hard cases: wait for people (``none``), go to Label Studio and come back (``label-studio``), or
    are accepted without a person, labelled so (``auto``)."""
    return stages.annotation_stage(_config(config), curation, ANNOTATORS)


def _emit_version(root: Path, manifest: dict[str, Any]) -> None:
    emit_dataset_version(root, manifest, producer="retrain")


@flow(name="retrain-dataset")
def dataset_stage(config: dict[str, Any]) -> dict[str, Any]:
    """Check the curated shards and record their version; announce a new one."""
    return stages.dataset_stage(_config(config), on_dataset_version=_emit_version)


@flow(name="retrain-training", flow_run_name="retrain-{stage}")
def training_stage(config: dict[str, Any], stage: str, upstream: dict[str, Any]) -> dict[str, Any]:
    """One training stage of the config's chain (teacher, distill, grpo, copo) from the dataset and the
    upstream stage's model."""
    return stages.training_stage(_config(config), stage, upstream)


@flow(name="retrain-evaluation")
def evaluation_stage(config: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    """The paper's six metrics of the final student on the benchmark (``ardrag eval``'s outputs)."""
    return stages.evaluation_stage(_config(config), student)


SUBFLOWS = {
    "curation": curation_stage,
    "annotation": annotation_stage,
    "dataset": dataset_stage,
    "evaluation": evaluation_stage,
}


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
    c, chain = cfg.to_dict(), training_chain(cfg)

    def run_stage(stage: str, *upstream: dict[str, Any]) -> dict[str, Any]:
        """The stage's subflow between a start line and an end line (status, time, summary)."""
        if stage in chain:
            return announced(stage, training_stage, c, stage, *upstream)
        return announced(stage, SUBFLOWS[stage], c, *upstream)

    result = finish(cfg, run_stages(cfg, run_stage), time.monotonic() - t0)
    create_markdown_artifact(Path(result["report"]).read_text(encoding="utf-8"), key="retrain-report",
                             description=f"retrain report of {cfg.root}")  # fmt: skip
    return result


def run(config: RetrainConfig) -> dict[str, Any]:
    """Run the flow (on the API named by PREFECT_API_URL, else a temporary local one)."""
    logging.getLogger("ardrag").info("retrain into %s", config.root)
    return retrain(config.to_dict())
