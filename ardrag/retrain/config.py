"""The retrain config (what to curate, annotate, train and evaluate, and where), the ``TrainConfig``
each training stage resolves from it, and the stages' names in order (:func:`training_chain`,
:func:`stage_names`: the RL stages are the config's ``rl``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ardrag.config import Config, build_config, load_config, merge
from ardrag.errors import ConfigError
from ardrag.presets import TINY, TOY, TrainPreset, preset

# the training chain: the teacher, the distillation, then the RL stages the config's ``rl`` names, each a
# stage of the registry (ardrag.training.stages) that starts from the one before's export
BEFORE_RL = ("teacher", "distill")
RL_STAGES: dict[str, tuple[str, ...]] = {"grpo": ("grpo",), "copo": ("copo",), "both": ("grpo", "copo")}


class CurationSettings(Config):
    dir: str | None = Field(None, description="curation folder (default <out>/curation)")
    source: Literal["procedural", "toy", "folder", "wan"] = "procedural"
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
    preset: TrainPreset = Field(
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
    rl: Literal["grpo", "copo", "both"] = Field(
        "grpo",
        description="the RL stage after distillation: grpo, copo (AR-CoPO), or both (grpo, then copo from "
        "GRPO's student)",
    )
    grpo: StageSettings = StageSettings()
    copo: StageSettings = StageSettings()
    eval: EvalSettings = EvalSettings()
    progress: bool = Field(True, description="progress bars on the console")

    @property
    def root(self) -> Path:
        return Path(self.out).resolve()

    @property
    def curation_dir(self) -> Path:
        return Path(self.curation.dir).resolve() if self.curation.dir else self.root / "curation"


# The embedded defaults of `ardrag demo`: clips with the toy model's look, the opencv tracker, and every
# training stage on the shipped toy model (model.wan: the toy preset, ardrag/assets/toy: its encoders, VAE,
# resolution and heatmap spots), the teacher starting from its trained student as a user's retrain starts
# from Wan's; a few minutes on a 2-core CPU.
DEMO: dict[str, Any] = {
    "out": "runs/demo",
    "preset": TINY,  # the tiny training preset: batch 1, 80x48 (0.125 of 640x368), 9 frames, cache of 2
    "curation": {
        # the toy's clips (benchmarks/bench_train_toy.py): 1-2 smooth sprites on a flat background,
        # intensity 1, 640x368 (trained at 80x48), 9 frames; a seed the toy recipe never drew. Normal speeds
        # stay under the 20 px a frame that routing leaves to a quick check (calibrated on real footage);
        # half the clips have a sprite that bursts at 24-32 px a frame: those wait for a person
        "source": "toy",
        "source_config": {
            "num_clips": 24, "seed": 7, "num_frames": 9, "buckets": ["640x368"], "min_sprites": 1,
            "max_sprites": 2, "min_sprite_size": 0.25, "max_sprite_size": 0.4, "min_speed": 8.0,
            "max_speed": 20.0, "fast_prob": 0.5, "min_fast_speed": 24.0, "max_fast_speed": 32.0,
            "occlusion_prob": 0.0, "leave_frame_prob": 0.0, "min_intensity": 1.0, "max_intensity": 1.0,
            "background": "flat", "sprite_texture": "smooth",
        },
        "config": {"auto_accept": True},  # easy clips accepted by rule (labelled auto-accept)
    },
    "train": {"save_every": 50, "log_every": 1, "model": {"preset": None, "wan": TOY}},
    # short, gentle stages: each starts from a model that already follows drags
    "teacher": {"config": {"steps": 100, "optim": {"lr": 1e-5}}},
    "distill": {"config": {"steps": 60, "optim": {"lr": 1e-5}, "distill": {"real_guidance": 1.0}}},
    "grpo": {"config": {"steps": 20, "optim": {"lr": 1e-5},
                        "grpo": {"reward_weights": {"aesthetic": 0.0, "motion": 1.0}, "motion_alpha": 0.04}}},
    # run with rl: copo (or both)
    "copo": {"config": {"steps": 20, "optim": {"lr": 1e-5},
                        "copo": {"reward_weights": {"aesthetic": 0.0, "motion": 1.0}, "motion_alpha": 0.04}}},
    "eval": {"procedural": {"num_clips": 8}},
}  # fmt: skip


def load_retrain_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                        base: dict[str, Any] | None = None) -> RetrainConfig:  # fmt: skip
    """``base`` (e.g. :data:`DEMO`), then the YAML file, then ``overrides``."""
    return load_config(RetrainConfig, path, overrides, base=base)


def training_chain(config: RetrainConfig) -> tuple[str, ...]:
    """The training stages in order: teacher, distill, then the RL stages of ``rl`` (grpo, copo, or
    grpo then copo); each starts from the one before's export."""
    return (*BEFORE_RL, *RL_STAGES[config.rl])


def stage_names(config: RetrainConfig) -> tuple[str, ...]:
    """Every stage of a retrain run in order, its training chain between the dataset and evaluation."""
    return ("curation", "annotation", "dataset", *training_chain(config), "evaluation")


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


def check_stage_inputs(config: RetrainConfig) -> None:
    """Fail before any compute on what can be checked up front: the training configs of the chain resolve."""
    for stage in training_chain(config):
        try:
            train_config(config, stage, str(config.curation_dir / "dataset"), None)
        except ConfigError as err:
            raise ConfigError(f"retrain stage {stage}: {err}") from None
