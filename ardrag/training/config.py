"""Training configuration: one YAML file per run, checked as a whole before any compute.

``ardrag train STAGE --config FILE`` parses the file into :class:`TrainConfig` (``STAGE``: a name in
:mod:`ardrag.training.stages`); ``--preset NAME`` starts from a training preset of :mod:`ardrag.presets`
(the tiny one: random tiny models, a procedural dataset written on the fly, a few steps).
:func:`~ardrag.training.run.check_config` then looks at everything that can be wrong without computing:
the dataset exists and has samples, checkpoints to start from exist and fit the model, the run folder's
earlier checkpoints fit this config when resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ardrag.config import Config
from ardrag.data.loader import LoaderConfig
from ardrag.presets import DEFAULT_WAN, RandomModelPreset, WanModel


class DataConfig(Config):
    root: str | None = Field(None, description="sharded dataset folder (WebDataset tars + manifest)")
    procedural_clips: int = Field(
        0, ge=0, description="> 0 and no root: write this many procedural clips into the run folder"
    )
    loader: LoaderConfig = LoaderConfig()
    num_workers: int = Field(0, ge=0)
    scale: float = Field(
        1.0, gt=0, le=1, description="train at the bucket's size times this (rounded to multiples of 16)"
    )
    max_frames: int = Field(
        81, ge=1, description="pixel frames per training clip (4k + 1; longer clips are cut)"
    )

    @field_validator("max_frames")
    @classmethod
    def _causal_layout(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"{v} does not fit the VAE's causal layout; expected 4k + 1 (e.g. 9, 33, 81)")
        return v

    @model_validator(mode="after")
    def _some_data(self) -> DataConfig:
        if self.root is None and self.procedural_clips == 0:
            raise ValueError("no dataset: set data.root to a sharded dataset, or data.procedural_clips > 0")
        return self


class ModelConfig(Config):
    preset: RandomModelPreset = Field(
        None, description="a model preset built with random weights (ardrag.presets), instead of wan"
    )
    wan: WanModel = Field(DEFAULT_WAN, description="Wan I2V hub id, model preset or folder (encoders, VAE)")
    init: str | None = Field(
        None,
        description="teacher: ardrag transformer folder to start from (default: the Wan transformer "
        "with zero control weights); distill: the fine-tuned teacher's folder (required unless tiny)",
    )
    vae: str | None = Field(
        None, description="an AutoencoderKLWan folder replacing the Wan model's (or the tiny preset's) VAE"
    )
    gradient_checkpointing: bool = False


class OptimConfig(Config):
    lr: float = Field(1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)


def check_schedule(v: list[float]) -> list[float]:
    """A sampler schedule: decreasing timesteps in (0, 1000]."""
    if any(not 0 < t <= 1000 for t in v) or any(a <= b for a, b in zip(v[:-1], v[1:], strict=True)):
        raise ValueError(f"{v}: expected decreasing timesteps in (0, 1000], e.g. [1000, 755, 522]")
    return v


class DistillConfig(Config):
    rollout: Literal["self_rollout", "self_forcing"] = "self_rollout"
    timesteps: list[float] = Field(default_factory=lambda: [1000.0, 755.0, 522.0], min_length=1)
    cache_window: int = Field(7, description="KV cache frames (oldest evicted)")
    latent_frames: int = Field(
        21, ge=1, description="latent frames per rollout (the clip's, at most: 81 pixel frames = 21)"
    )
    real_guidance: float = Field(3.0, ge=1.0, description="classifier-free guidance of the real score")
    generator_every: int = Field(5, ge=1, description="critic steps per generator step")
    critic_lr: float | None = Field(None, gt=0, description="default: optim.lr")
    dmd_weight: float = Field(1.0, ge=0)
    generator_adv_weight: float = Field(0.1, ge=0)
    discriminator_weight: float = Field(0.05, ge=0)
    dmd_t_min: float = Field(0.02, ge=0, lt=1, description="DMD noise levels drawn from [min, max]")
    dmd_t_max: float = Field(0.98, gt=0, le=1)
    shift: float = Field(3.0, gt=0, description="flow shift of the DMD and critic noise levels")

    @field_validator("cache_window")
    @classmethod
    def _window(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"KV cache of {v} frames; expected at least 1 (the paper: 7)")
        return v

    @field_validator("timesteps")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        return check_schedule(v)


class RLConfig(Config):
    """What the RL stages (``grpo``, ``copo``) share: the group, the deployed sampler's schedule, the
    clipped objective and the rewards."""

    group_size: int = Field(4, ge=2, description="G: rollouts per condition")
    timesteps: list[float] = Field(
        default_factory=lambda: [1000.0, 755.0, 522.0],
        min_length=2,
        description="the deployed sampler's schedule; the action is one of its re-noising transitions",
    )
    cache_window: int = Field(7, ge=1)
    latent_frames: int = Field(21, ge=2, description="latent frames per rollout (frame 0 carries no action)")
    clip_range: float = Field(1e-3, gt=0, description="epsilon of the clipped importance ratio")
    kl_beta: float = Field(0.04, ge=0, description="weight of the KL to the starting student")
    updates_per_rollout: int = Field(1, ge=1, description="optimizer steps on the same rollouts")
    reward_weights: dict[str, float] = Field(default_factory=lambda: {"aesthetic": 1.0, "motion": 1.0})
    motion_alpha: float = Field(0.01, gt=0, description="offset, in squared fractions of the frame")
    motion_lambda: float = Field(100.0, gt=0)
    tracker: str = "opencv"
    aesthetic_clip: str | None = Field(None, description="CLIP ViT-L/14 folder (required unless tiny)")
    aesthetic_head: str | None = Field(None, description="LAION aesthetic MLP weights (.pth/.safetensors)")
    smoothing: float = Field(0.9, ge=0, lt=1, description="EMA factor of the smoothed reward curves")

    @field_validator("timesteps")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        return check_schedule(v)

    @field_validator("reward_weights")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        from ardrag.rewards import REWARDS

        unknown = sorted(set(v) - set(REWARDS))
        if unknown or not v:
            raise ValueError(f"rewards {unknown or '{}'}; expected a mapping of names in {sorted(REWARDS)}")
        return v


class GRPOConfig(RLConfig):
    shared_noise: bool = Field(
        True,
        description="a condition's G rollouts share every draw but their actions (starting noise, noise "
        "inputs, the other transitions' re-noising), so that they differ only by what the "
        "log-probability covers",
    )


class ReplayConfig(Config):
    """AR-CoPO's semi-on-policy branch: a buffer of rollout groups replayed beside the on-policy ones."""

    groups: int = Field(
        0, ge=0, description="buffer groups replayed per on-policy condition and update; 0: on-policy only"
    )
    size: int = Field(
        100, ge=1, description="groups the buffer holds (the paper: 100); the oldest leave first"
    )
    source: Literal["reference", "on_policy"] = Field(
        "reference",
        description="what enters: groups rolled out by the starting student (the paper), or the on-policy "
        "groups as they are collected",
    )
    max_age: int | None = Field(
        None, ge=1, description="steps an entry may stay before it is dropped (and, from the reference, "
        "rolled again); null: never (the paper)",
    )  # fmt: skip


class CoPOConfig(RLConfig):
    """AR-CoPO: chunk forking and Neighbor GRPO's contrastive surrogate (ardrag.training.copo)."""

    group_size: int = Field(8, ge=2, description="G: neighbour candidates per condition (the paper: 12)")
    clip_range: float = Field(1e-4, gt=0, description="epsilon of the clipped ratio (the paper: 1e-4)")
    updates_per_rollout: int = Field(2, ge=1, description="updates per iteration (the paper: 2)")
    chunk_frames: int = Field(1, ge=1, description="latent frames per chunk (our student: 1)")
    horizon: int | None = Field(
        None, ge=0, description="chunks generated after the forked one; null: to the end of the clip"
    )
    sigma: float = Field(
        0.5, gt=0, lt=1,
        description="neighbourhood: eps_i = sqrt(1 - sigma^2) eps* + sigma delta_i (the paper: 0.5)",
    )
    anchors: int = Field(4, ge=1, description="anchors per group (symmetric anchor sampling; the paper: 4)")
    tau: float | Literal["auto"] = Field(
        "auto",
        description="temperature of the softmax distance; auto: per group and step, the mean old distance "
        "over all pairs of candidates",
    )
    advantage: Literal["zscore", "quasi_norm"] = Field(
        "zscore", description="zscore (AR-CoPO) or Neighbor GRPO's quasi-norm reweighting"
    )
    quasi_norm_p: float = Field(0.8, gt=0, description="p of the quasi-norm reweighting (the paper: 0.8)")
    on_policy: bool = Field(True, description="train on fresh groups (false: the replay buffer alone)")
    replay: ReplayConfig = ReplayConfig()
    separate_adapters: bool = Field(
        False,
        description="with lora: the on-policy and the replay branches train their own adapters, merged "
        "at export as W0 + dW_replay + merge_scale dW_on_policy (the paper)",
    )
    merge_scale: float = Field(
        0.8, ge=0, description="scale of the on-policy adapter at the merge (the paper: 0.8)"
    )

    @field_validator("tau")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if v != "auto" and not v > 0:
            raise ValueError(f"tau is {v}; expected a positive number or 'auto'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CoPOConfig:
        if self.anchors > self.group_size:
            raise ValueError(
                f"anchors is {self.anchors} with group_size {self.group_size}; expected at most group_size"
            )
        if self.latent_frames <= self.chunk_frames:
            raise ValueError(
                f"latent_frames is {self.latent_frames} with chunk_frames {self.chunk_frames}; expected more "
                "than one chunk (the first holds the reference frame and is never forked)"
            )
        if not self.on_policy and self.replay.source == "on_policy":
            raise ValueError("on_policy is false and replay.source is 'on_policy': the buffer would never "
                             "fill; expected replay.source 'reference'")  # fmt: skip
        if not self.on_policy and self.replay.groups == 0:
            raise ValueError("on_policy is false and replay.groups is 0: nothing to train on; expected "
                             "replay.groups >= 1")  # fmt: skip
        return self


class TempActConfig(RLConfig):
    """TempAct's executor RL: planning groups of plans, execution groups forked from one shared visual
    context at a prompt switch (ardrag.training.tempact)."""

    group_size: int = Field(
        4, ge=2, description="E: continuations per plan, forked from its shared prefix (TempAct: 8)"
    )
    plans: int = Field(2, ge=1, description="P: plans per instruction, the planning group (TempAct: 4)")
    planner: dict[str, Any] = Field(
        default_factory=lambda: {"name": "llm", "model": "Qwen/Qwen3-1.7B", "temperature": 1.0, "top_p": 0.7},
        description="a planner of ardrag.planners: its name and settings; plans are sampled, one seed each",
    )
    switch_mode: Literal["keep", "recache"] = Field(
        "keep",
        description="the KV cache at a prompt switch: kept (TempAct's Self-Forcing variant) or written "
        "again under the new prompt (LongLive's recache), as StreamSession.set_prompt does",
    )
    lookahead: bool = Field(
        False,
        description="encode each step's prompt joined with the next step's (TempAct's code); the rewards "
        "score against the step's own prompt",
    )
    clip_range: float = Field(1e-3, gt=0, description="epsilon of the clipped ratio")
    kl_beta: float = Field(5e-4, ge=0, description="weight of the KL to the starting student (TempAct: 5e-4)")
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"step_following": 1.0, "aesthetic": 0.1},
        description="the executor's rewards over the window of the step the fork starts",
    )
    text_clip: str | None = Field(
        None, description="a CLIP folder (text and vision towers) for step following (required unless tiny)"
    )
    advantage_clip: float = Field(2.0, gt=0, description="executor advantages clipped to +-this (TempAct: 2)")
    planner_credit: bool = Field(
        False,
        description="train the planner too (an LM planner): plan-level advantages from whole-video rewards, "
        "a sequence-level clipped ratio on its answer tokens",
    )
    planner_lr: float = Field(1e-5, gt=0, description="the planner's learning rate (TempAct: 1e-5 .. 2e-5)")
    planner_clip_range: float = Field(5e-4, gt=0, description="the planner's clipped ratio (TempAct: 5e-4)")
    format_penalty: float = Field(
        0.5, ge=0, description="a plan's reward loses this times (1 - format score) (TempAct: 0.5)"
    )

    @field_validator("planner")
    @classmethod
    def _planner(cls, v: dict[str, Any]) -> dict[str, Any]:
        from ardrag.planners import get_planner

        if not isinstance(v.get("name"), str):
            raise ValueError(f"planner is {v!r}; expected a mapping with a 'name' (one of ardrag.planners)")
        get_planner(v["name"], **{k: x for k, x in v.items() if k != "name"})  # LMs load on first use
        return v

    @model_validator(mode="after")
    def _credit(self) -> TempActConfig:
        if self.planner_credit and self.planner["name"] == "fixed":
            raise ValueError("planner_credit is true with the fixed planner; expected an LM planner ('llm' "
                             "or the tiny one), whose answers can be trained")  # fmt: skip
        return self


class LoRAConfig(Config):
    """Low-rank adapters (peft) on the student of an RL stage; null in TrainConfig: full fine-tuning. No
    dropout: the RL stages replay their rollouts, and a ratio of exactly 1 before an update needs the
    same function at rollout and replay."""

    rank: int = Field(64, ge=1, description="r (AR-CoPO: 64)")
    alpha: float = Field(128.0, gt=0, description="scaling alpha / r (AR-CoPO: 128)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        min_length=1,
        description="names of the Linear layers that get adapters (peft's target_modules)",
    )


class TrainConfig(Config):
    stage: str = Field(description="a name in the stage registry (ardrag.training.stages)")
    run_dir: str = Field("runs/train", description="checkpoints, TensorBoard logs, resolved config")
    seed: int = Field(0, ge=0)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1, description="samples per process and micro-step")
    grad_accum: int = Field(1, ge=1)
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="several processes: replicate the models (ddp) or shard them (fsdp, FSDP2)"
    )
    mixed_precision: Literal["no", "bf16"] = Field("bf16", description="bf16 autocast, on GPU only")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="0: no EMA")
    save_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    time_limit_minutes: float | None = Field(
        None, gt=0, description="save and stop after this many minutes of training (--resume continues)"
    )
    flow_shift: float = Field(3.0, gt=0, description="teacher: shift of the training noise levels")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    distill: DistillConfig = DistillConfig()
    grpo: GRPOConfig = GRPOConfig()
    copo: CoPOConfig = CoPOConfig()
    tempact: TempActConfig = TempActConfig()
    lora: LoRAConfig | None = Field(
        None,
        description="RL stages: train LoRA adapters (peft) instead of every weight; null: full fine-tuning",
    )

    @field_validator("stage")
    @classmethod
    def _registered(cls, name: str) -> str:
        from ardrag.training.stages import STAGES

        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {list(STAGES)}")
        return name

    @model_validator(mode="after")
    def _lora_for_rl(self) -> TrainConfig:
        from ardrag.training.stages import STAGES

        if self.lora is not None and not STAGES[self.stage].lora:
            rl = [name for name, spec in STAGES.items() if spec.lora]
            raise ValueError(f"lora is set for stage {self.stage!r}; expected null there (LoRA is for {rl})")
        return self

    @model_validator(mode="after")
    def _copo_settings(self) -> TrainConfig:
        if self.stage not in ("copo", "tempact"):
            return self
        if self.stage == "copo" and self.copo.separate_adapters and self.lora is None:
            raise ValueError("copo.separate_adapters is true with lora null; expected a lora section (the "
                             "adapters are LoRA adapters) or separate_adapters false")  # fmt: skip
        if self.distributed == "fsdp":
            raise ValueError(
                f"distributed is 'fsdp' for stage {self.stage}; expected 'ddp': each condition forks at its "
                "own chunk, so processes run different numbers of passes and FSDP's per-pass gathers "
                "would not pair up"
            )
        return self

    @model_validator(mode="after")
    def _step_prompts(self) -> TrainConfig:
        for name in ("grpo", "copo"):
            if self.stage == name and "step_following" in getattr(self, name).reward_weights:
                raise ValueError(
                    f"{name}.reward_weights names step_following; expected it only in tempact, whose plans "
                    "give the step prompts it scores against"
                )
        return self

    @model_validator(mode="after")
    def _fsdp_without_ema(self) -> TrainConfig:
        if self.distributed == "fsdp" and self.ema_decay > 0:
            raise ValueError("ema_decay > 0 with distributed: fsdp is not supported yet; use ddp or no EMA")
        return self

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)
