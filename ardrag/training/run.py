"""``ardrag train teacher|distill``: check the configuration, build models and data, run the loop.

Everything that can be wrong without computing is checked first (:func:`check_config`), so a bad run
fails in seconds with a message naming the field, the value and what was expected. At the end the
trained model is exported as a diffusers folder: ``<run_dir>/teacher`` (the EMA weights when kept)
for ``model.init`` of the distillation, ``<run_dir>/student`` for ``ardrag generate --checkpoint``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ardrag.config import build_config
from ardrag.errors import ConfigError
from ardrag.training.config import TINY, TrainConfig

log = logging.getLogger(__name__)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(stage: str, path: str | None = None, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:  # fmt: skip
    """The run's config: the preset, then the file, then ``overrides`` (e.g. ``run_dir``)."""
    if preset not in (None, "tiny"):
        raise ConfigError(f"--preset {preset!r} is unknown; expected 'tiny' or none")
    data: dict[str, Any] = dict(TINY) if preset == "tiny" else {}
    source = "--preset tiny" if preset else "<arguments>"
    if path is not None:
        data = _merge(data, _read_yaml(path))
        source = str(path)
    data = _merge(data, {"stage": stage, **(overrides or {})})
    if path is None and preset is None:
        raise ConfigError("no configuration: pass --config FILE, --preset tiny, or both")
    return build_config(TrainConfig, data, source=source)


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist (expected a YAML file)")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} holds a {type(data).__name__}; expected a mapping")
    return data


def check_config(config: TrainConfig, world: int = 1, resume: bool = False) -> None:
    """Fail before any compute on what can be seen without it."""
    d = config.data
    if d.root is not None:
        manifest = Path(d.root) / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"data.root {d.root!r}: no sharded dataset there (expected {manifest})")
        samples = json.loads(manifest.read_text()).get("samples", 0)
        if samples < world * config.batch_size:
            raise ConfigError(
                f"data.root {d.root!r} holds {samples} samples; {world} process(es) x batch_size "
                f"{config.batch_size} need at least {world * config.batch_size}"
            )
    if config.model.vae is not None and not Path(config.model.vae).is_dir():
        raise ConfigError(
            f"model.vae {config.model.vae!r} is not a folder (expected a saved AutoencoderKLWan)"
        )
    if config.model.init is not None and not Path(config.model.init).is_dir():
        raise ConfigError(f"model.init {config.model.init!r} is not a folder (expected an exported teacher)")
    frames = 1 + (d.max_frames - 1) // 4
    if config.stage == "distill":
        if config.model.init is None and config.model.preset is None:
            raise ConfigError(
                "model.init is not set: distillation starts from the fine-tuned teacher; set it to the "
                "folder teacher training exported (<run_dir>/teacher)"
            )
        if config.distill.latent_frames > frames:
            raise ConfigError(
                f"distill.latent_frames = {config.distill.latent_frames}, but clips of data.max_frames = "
                f"{d.max_frames} have {frames} latent frames"
            )
    if config.stage == "grpo":
        g = config.grpo
        if config.model.init is None and config.model.preset is None:
            raise ConfigError(
                "model.init is not set: GRPO starts from the distilled student; set it to the folder the "
                "distillation exported (<run_dir>/student)"
            )
        if config.model.preset is None and (g.aesthetic_clip is None or g.aesthetic_head is None):
            raise ConfigError(
                "grpo.aesthetic_clip and grpo.aesthetic_head are not set: the aesthetic reward needs a CLIP "
                "ViT-L/14 folder and LAION's aesthetic MLP weights (local paths)"
            )
        if g.latent_frames > frames:
            raise ConfigError(
                f"grpo.latent_frames = {g.latent_frames}, but clips of data.max_frames = {d.max_frames} "
                f"have {frames} latent frames"
            )
    if resume:
        from ardrag.training.trainer import checkpoint_dirs

        dirs = checkpoint_dirs(config.run_dir)
        if dirs:
            meta = json.loads((dirs[-1] / "trainer.json").read_text())
            if meta["stage"] != config.stage:
                raise ConfigError(
                    f"{dirs[-1]} is a checkpoint of stage {meta['stage']!r}; this run is {config.stage!r}"
                )


def build_models(config: TrainConfig) -> tuple[Any, Any]:
    """(pipeline with encoders and VAE, the model the stage starts from: the teacher to train or distil
    from, or for GRPO the distilled student)."""
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.model.transformer_ardrag import ARDragTransformer

    if config.model.preset == "tiny":
        pipe = ARDragPipeline.tiny(config.seed)
    else:
        pipe = ARDragPipeline.from_pretrained(config.model.wan)
    _load_vae(config, pipe)
    if config.model.init is not None:
        try:
            teacher = ARDragTransformer.from_pretrained(config.model.init)
        except (OSError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"model.init {config.model.init!r} could not be loaded as a teacher: {err}"
            ) from None
        base = pipe.wan.transformer.config
        for key in ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "text_dim"):
            if teacher.config[key] != base[key]:
                raise ConfigError(
                    f"model.init {config.model.init!r} does not fit "
                    f"{config.model.preset or config.model.wan}: "
                    f"{key} is {teacher.config[key]}, the encoders' model has {base[key]}"
                )
    else:
        teacher = ARDragTransformer.from_wan(pipe.wan.transformer)
    return pipe, teacher.to(pipe.device)


def _load_vae(config: TrainConfig, pipe: Any) -> None:
    """Put the VAE of ``model.vae`` (e.g. one fitted for a toy run) into ``pipe``, when set."""
    if config.model.vae is not None:
        from diffusers import AutoencoderKLWan

        try:
            vae = AutoencoderKLWan.from_pretrained(config.model.vae)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"model.vae {config.model.vae!r} could not be loaded as a Wan VAE: {err}"
            ) from None
        if vae.config.z_dim != pipe.vae.config.z_dim:
            raise ConfigError(
                f"model.vae {config.model.vae!r} has z_dim {vae.config.z_dim}; the transformer expects "
                f"{pipe.vae.config.z_dim}"
            )
        pipe.wan.vae = (
            (vae if vae.dtype == pipe.vae.dtype else vae.to(dtype=pipe.vae.dtype)).to(pipe.vae.device).eval()
        )


def trained_pipeline(config: TrainConfig, export: str) -> Any:
    """The generation pipeline of a trained student: the encoders and VAE the run trained with (its
    ``model`` settings) and the causal transformer exported to ``export``."""
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.model.transformer_ardrag import CausalARDragTransformer

    if config.model.preset == "tiny":
        pipe = ARDragPipeline.tiny(config.seed)
        pipe.transformer = CausalARDragTransformer.from_pretrained(export).eval()
    else:
        pipe = ARDragPipeline.from_pretrained(config.model.wan, checkpoint=export)
    _load_vae(config, pipe)
    return pipe


def procedural_data(config: TrainConfig, rank: int, world: int) -> str:
    """Write (once) the procedural dataset the config asks for; returns its folder."""
    from ardrag.data.build import existing_dataset, write_dataset
    from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource

    out = config.run_path / "data"
    cfg = ProceduralConfig(num_clips=config.data.procedural_clips, seed=config.seed,
                           num_frames=config.data.max_frames, buckets=["640x368"])  # fmt: skip
    if rank == 0 and existing_dataset(out, cfg, _shards(cfg, world)) is None:
        write_dataset(
            ProceduralSource(cfg).samples(), out, cfg, shards=_shards(cfg, world), name="procedural",
            total=cfg.num_clips, progress=False,
        )  # fmt: skip
    if world > 1:
        torch.distributed.barrier()
    return str(out)


def _shards(cfg: Any, world: int) -> Any:
    """Two shards at least, so that two processes both get data."""
    from ardrag.data.build import ShardConfig

    return ShardConfig(shard_samples=max(1, cfg.num_clips // 2))


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run a stage; returns a summary (steps, last losses, checkpoint and export folders)."""
    from ardrag.data.loader import ShardedVideoDataset
    from ardrag.training.trainer import Trainer, init_distributed

    rank, world, device = init_distributed()
    check_config(config, world, resume)
    torch.manual_seed(config.seed)
    pipe, teacher = build_models(config)
    pipe.transformer.to(device), teacher.to(device), pipe.wan.to(device)
    if config.stage == "teacher":
        from ardrag.training.teacher import TeacherStage

        stage: Any = TeacherStage(config, pipe, teacher)
    elif config.stage == "distill":
        from ardrag.training.distill import DistillStage

        stage = DistillStage(config, pipe, teacher)
    else:
        from ardrag.training.grpo import GRPOStage

        stage = GRPOStage(config, pipe, teacher)
    root = config.data.root or procedural_data(config, rank, world)
    loader_cfg = config.data.loader.model_copy(update={"batch_size": config.batch_size})
    dataset = ShardedVideoDataset(root, loader_cfg, rank=rank, world_size=world)

    def batches(epoch: int) -> Iterator[Any]:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=config.data.num_workers)
        return iter(loader)

    trainer = Trainer(config, stage, batches, rank=rank, world=world, device=device)
    history = trainer.run(resume=resume, progress=progress)
    export, plot = None, None
    from ardrag.training.parallel import full_state_dict, is_sharded

    main = trainer.modules[trainer.stage.main]
    whole = full_state_dict(main) if is_sharded(main) else None  # collective: every process gathers
    if rank == 0:
        export = export_model(config, trainer, whole)
        if config.stage == "grpo":
            from ardrag.training.grpo import plot_rewards

            path = plot_rewards(config.run_path / "losses.jsonl", config.run_path / "rewards.png",
                                config.grpo.smoothing)  # fmt: skip
            plot = None if path is None else str(path)
    return {
        "stage": config.stage, "steps": trainer.step, "run_dir": str(config.run_path),
        "last": history[-1] if history else None, "export": export, "rewards_plot": plot,
        "stopped_early": trainer.stopped_early,
    }  # fmt: skip


def export_model(config: TrainConfig, trainer: Any, state: dict[str, Any] | None = None) -> str:
    """Save the trained model (EMA weights when kept) as a diffusers folder; ``state``: the whole state
    dict of a sharded model (gathered by every process beforehand)."""
    name = "teacher" if config.stage == "teacher" else "student"
    model = trainer.modules[trainer.stage.main]
    if state is not None:  # sharded: an unsharded copy carries the gathered weights
        whole = type(model).from_config(model.config)
        whole.load_state_dict(state)
        model = whole
    elif trainer.ema is not None:
        import copy

        model = copy.deepcopy(model)
        model.load_state_dict(trainer.ema.shadow)
    out = config.run_path / name
    tmp = out.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # a killed export leaves the previous one or none, never half of one
    log.debug("exported the %s to %s", name, out)
    return str(out)
