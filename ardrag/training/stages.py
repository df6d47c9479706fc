"""The stage registry: a training stage's name maps to everything ``ardrag train NAME`` and the retrain
flow need to run it (torchtitan's train specs): its config section, how its models are built, its
:class:`~ardrag.training.trainer.Stage`, what it exports and the checks it needs before any compute.

A new stage is one entry in :data:`STAGES` (and its section in :class:`~ardrag.training.config.TrainConfig`
when it has settings of its own). The entries import nothing heavy: the ``Stage`` class is named by its
import path and loaded when a run builds it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ardrag.errors import ConfigError

if TYPE_CHECKING:
    from ardrag.training.config import TrainConfig
    from ardrag.training.trainer import Stage


def _build_models(config: TrainConfig, **overrides: Any) -> tuple[Any, Any]:
    from ardrag.training.run import build_models

    return build_models(config, **overrides)


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    name: str
    stage: str  # "module:Class" of its Stage, imported when built
    export: str  # the exported model's folder in the run folder: "teacher" or "student"
    main_loss: str  # the logged figure a summary shows first
    section: str | None = None  # its TrainConfig field, when it has settings of its own
    # what model.init must be, when the stage cannot start from the Wan transformer itself
    init_required: str | None = None
    # (config) -> (pipeline with encoders and VAE, the model the stage starts from); overrides (a
    # transformer, a VAE) pass through to it
    build_models: Callable[..., tuple[Any, Any]] = _build_models
    check: Callable[[TrainConfig], None] | None = None  # stage-specific checks before any compute
    plot: Callable[[TrainConfig], str | None] | None = None  # a figure written after training, its path
    lora: bool = False  # whether its student may train LoRA adapters (config.lora) instead of every weight

    def settings(self, config: TrainConfig) -> Any:
        """The stage's own config section (None when it has none)."""
        return None if self.section is None else getattr(config, self.section)

    def build_stage(self, config: TrainConfig, pipe: Any, model: Any) -> Stage:
        module, cls = self.stage.split(":")
        return getattr(importlib.import_module(module), cls)(config, pipe, model)


def _check_rewards(config: TrainConfig) -> None:
    """Real models need the aesthetic reward's weights; a model preset's models (random ones, or a model
    folder's such as the shipped toy) get a random aesthetic network, as their evaluation does."""
    from ardrag.model.model_folder import folder_preset

    g, m = getattr(config, config.stage), config.model
    random_scorer = m.preset is not None or folder_preset(m.wan) is not None
    if not random_scorer and (g.aesthetic_clip is None or g.aesthetic_head is None):
        raise ConfigError(
            f"{config.stage}.aesthetic_clip and {config.stage}.aesthetic_head are not set: the aesthetic "
            "reward needs a CLIP ViT-L/14 folder and LAION's aesthetic MLP weights (local paths)"
        )
    if config.stage == "tempact" and not random_scorer and g.text_clip is None:
        raise ConfigError(
            "tempact.text_clip is not set: the step-following reward needs a CLIP folder with text and "
            "vision towers (a local path)"
        )


def _plot_rewards(config: TrainConfig) -> str | None:
    from ardrag.training.grpo import plot_rewards

    path = plot_rewards(config.run_path / "losses.jsonl", config.run_path / "rewards.png",
                        getattr(config, config.stage).smoothing, prefix=config.stage)  # fmt: skip
    return None if path is None else str(path)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="teacher",
            stage="ardrag.training.teacher:TeacherStage",
            export="teacher",
            main_loss="teacher/loss",
        ),
        StageSpec(
            name="distill",
            stage="ardrag.training.distill:DistillStage",
            export="student",
            main_loss="generator/dmd",
            section="distill",
            init_required="distillation starts from the fine-tuned teacher; set it to the folder teacher "
            "training exported (<run_dir>/teacher)",
        ),
        StageSpec(
            name="grpo",
            stage="ardrag.training.grpo:GRPOStage",
            export="student",
            main_loss="grpo/reward_motion",
            section="grpo",
            init_required="GRPO starts from the distilled student; set it to the folder the distillation "
            "exported (<run_dir>/student)",
            check=_check_rewards,
            plot=_plot_rewards,
            lora=True,
        ),
        StageSpec(
            name="copo",
            stage="ardrag.training.copo:CoPOStage",
            export="student",
            main_loss="copo/reward_total",
            section="copo",
            init_required="AR-CoPO starts from the distilled (or GRPO-trained) student; set it to that "
            "stage's export (<run_dir>/student)",
            check=_check_rewards,
            plot=_plot_rewards,
            lora=True,
        ),
        StageSpec(
            name="tempact",
            stage="ardrag.training.tempact:TempActStage",
            export="student",
            main_loss="tempact/reward_total",
            section="tempact",
            init_required="TempAct's executor RL starts from the distilled (or RL-trained) student; set it "
            "to that stage's export (<run_dir>/student)",
            check=_check_rewards,
            plot=_plot_rewards,
            lora=True,
        ),
    )
}


def get_stage(name: str) -> StageSpec:
    """The registry's entry for ``name``; a clear error lists the known stages."""
    if name not in STAGES:
        raise ConfigError(f"unknown training stage {name!r}; expected one of {list(STAGES)}")
    return STAGES[name]
