"""``ardrag train STAGE``: check the configuration, build models and data, run the stage's loop.

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

from ardrag import presets
from ardrag.config import load_config
from ardrag.errors import ConfigError
from ardrag.training.config import TrainConfig
from ardrag.training.stages import get_stage

log = logging.getLogger(__name__)


def resolve_config(stage: str, path: str | None = None, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:  # fmt: skip
    """The run's config: the training preset, then the file, then ``overrides`` (e.g. ``run_dir``)."""
    if path is None and preset is None:
        names = ", ".join(sorted(presets.PRESETS["train"]))
        raise ConfigError(f"no configuration: pass --config FILE, --preset NAME ({names}), or both")
    base = presets.preset("train", preset) if preset is not None else None
    source = None if path is not None or preset is None else f"--preset {preset}"
    return load_config(TrainConfig, path, {"stage": stage, **(overrides or {})}, base=base, source=source)


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
    spec = get_stage(config.stage)
    if spec.init_required and config.model.init is None and config.model.preset is None:
        raise ConfigError(f"model.init is not set: {spec.init_required}")
    frames = 1 + (d.max_frames - 1) // 4
    settings = spec.settings(config)
    if getattr(settings, "latent_frames", 0) > frames:
        raise ConfigError(
            f"{spec.section}.latent_frames = {settings.latent_frames}, but clips of data.max_frames = "
            f"{d.max_frames} have {frames} latent frames"
        )
    if spec.check is not None:
        spec.check(config)
    if resume:
        from ardrag.training.checkpoint import checkpoint_dirs

        dirs = checkpoint_dirs(config.run_dir)
        if dirs:
            meta = json.loads((dirs[-1] / "trainer.json").read_text())
            if meta["stage"] != config.stage:
                raise ConfigError(
                    f"{dirs[-1]} is a checkpoint of stage {meta['stage']!r}; this run is {config.stage!r}"
                )


ENCODER_FIELDS = ("in_channels", "text_dim", "image_dim")  # what the encoders and the VAE fix
ARCHITECTURE_FIELDS = ("num_layers", "num_attention_heads", "attention_head_dim")


def build_models(config: TrainConfig, transformer: Any = None, vae: Any = None) -> tuple[Any, Any]:
    """(pipeline with encoders and VAE, the model the stage starts from: the teacher to train or distil
    from, or for GRPO the distilled student).

    The encoders and VAE come from ``model.preset`` (random weights) or ``model.wan``, the VAE from
    ``model.vae`` when set; the model from ``model.init``, else the Wan transformer with zero control
    weights, or, when ``model.wan`` is a model folder (e.g. ``toy``, the shipped toy model), its trained
    transformer, control weights included. Overrides replace them with built models: ``transformer`` an
    ``ARDragTransformer``, or a diffusers ``WanTransformer3DModel`` (then with zero control weights);
    ``vae`` an ``AutoencoderKLWan``.
    """
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.model.transformer_ardrag import ARDragTransformer

    m = config.model
    pipe = (
        ARDragPipeline.tiny(config.seed, m.preset)
        if m.preset is not None
        else ARDragPipeline.from_pretrained(m.wan)
    )
    if vae is not None:
        _set_vae(pipe, vae, "the vae override")
    else:
        _load_vae(config, pipe)
    if transformer is not None:
        if m.init is not None:
            log.info("model.init %r is not loaded: the transformer override stands in for it", m.init)
        teacher = (
            transformer
            if isinstance(transformer, ARDragTransformer)
            else ARDragTransformer.from_wan(transformer)
        )
        _check_fits(teacher, pipe, config, "the transformer override", ENCODER_FIELDS)
    elif m.init is not None:
        try:
            teacher = ARDragTransformer.from_pretrained(m.init)
        except (OSError, ValueError, RuntimeError) as err:
            raise ConfigError(f"model.init {m.init!r} could not be loaded as a teacher: {err}") from None
        _check_fits(teacher, pipe, config, f"model.init {m.init!r}", ENCODER_FIELDS + ARCHITECTURE_FIELDS)
    elif isinstance(pipe.wan.transformer, ARDragTransformer):  # a model folder's trained student
        teacher = ARDragTransformer.from_config(pipe.wan.transformer.config)
        teacher.load_state_dict(pipe.wan.transformer.state_dict())
    else:
        teacher = ARDragTransformer.from_wan(pipe.wan.transformer)
    return pipe, teacher.to(pipe.device)


def _check_fits(model: Any, pipe: Any, config: TrainConfig, what: str, keys: tuple[str, ...]) -> None:
    """``model``'s config has the ``keys`` of the pipeline's own Wan transformer."""
    base = pipe.wan.transformer.config
    for key in keys:
        if model.config[key] != base[key]:
            raise ConfigError(
                f"{what} does not fit {config.model.preset or config.model.wan}: "
                f"{key} is {model.config[key]}, the encoders' model has {base[key]}"
            )


def _load_vae(config: TrainConfig, pipe: Any) -> None:
    """Put the VAE of ``model.vae`` (e.g. one fitted for a toy run) into ``pipe``, when set."""
    if config.model.vae is None:
        return
    from diffusers import AutoencoderKLWan

    try:
        vae = AutoencoderKLWan.from_pretrained(config.model.vae)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.vae {config.model.vae!r} could not be loaded as a Wan VAE: {err}") from None
    _set_vae(pipe, vae, f"model.vae {config.model.vae!r}")


def _set_vae(pipe: Any, vae: Any, what: str) -> None:
    """Put ``vae`` (e.g. one fitted for a toy run) into ``pipe``, in its dtype and on its device."""
    if vae.config.z_dim != pipe.vae.config.z_dim:
        raise ConfigError(
            f"{what} has z_dim {vae.config.z_dim}; the transformer expects {pipe.vae.config.z_dim}"
        )
    pipe.wan.vae = (
        (vae if vae.dtype == pipe.vae.dtype else vae.to(dtype=pipe.vae.dtype)).to(pipe.vae.device).eval()
    )


def trained_pipeline(config: TrainConfig, export: str) -> Any:
    """The generation pipeline of a trained student: the encoders and VAE the run trained with (its
    ``model`` settings) and the causal transformer exported to ``export``."""
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.model.transformer_ardrag import CausalARDragTransformer

    if config.model.preset is not None:
        pipe = ARDragPipeline.tiny(config.seed, config.model.preset)
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


def train(config: TrainConfig, resume: bool = False, progress: bool = True, **models: Any) -> dict[str, Any]:
    """Run a stage; returns a summary (steps, last losses, checkpoint and export folders). ``models``: the
    overrides of :func:`build_models` (a ``transformer``, a ``vae``)."""
    from ardrag.data.loader import ShardedVideoDataset
    from ardrag.training.parallel import init_distributed
    from ardrag.training.trainer import Trainer

    rank, world, device = init_distributed()
    check_config(config, world, resume)
    spec = get_stage(config.stage)
    torch.manual_seed(config.seed)
    pipe, teacher = spec.build_models(config, **models)
    pipe.transformer.to(device), teacher.to(device), pipe.wan.to(device)
    stage = spec.build_stage(config, pipe, teacher)
    root = config.data.root or procedural_data(config, rank, world)
    loader_cfg = config.data.loader.model_copy(update={"batch_size": config.batch_size})
    dataset = ShardedVideoDataset(root, loader_cfg, rank=rank, world_size=world)

    def batches(epoch: int) -> Iterator[Any]:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=config.data.num_workers)
        return iter(loader)

    trainer = Trainer(config, stage, batches, rank=rank, world=world, device=device)
    history = trainer.run(resume=resume, progress=progress)
    export, plot, extra = None, None, {}
    from ardrag.training.parallel import full_state_dict, is_sharded

    main = trainer.modules[trainer.stage.main]
    whole = full_state_dict(main) if is_sharded(main) else None  # collective: every process gathers
    if rank == 0:
        export = export_model(config, trainer, whole)
        extra = stage.export_extra(config.run_path)
        plot = spec.plot(config) if spec.plot is not None else None
    return {
        "stage": config.stage, "steps": trainer.step, "run_dir": str(config.run_path),
        "last": history[-1] if history else None, "export": export, "rewards_plot": plot,
        "stopped_early": trainer.stopped_early, **({"exports": extra} if extra else {}),
    }  # fmt: skip


def export_model(config: TrainConfig, trainer: Any, state: dict[str, Any] | None = None) -> str:
    """Save the trained model (EMA weights when kept) as a diffusers folder, as the stage makes it
    (:meth:`~ardrag.training.trainer.Stage.export_model`: with LoRA, the plain model with the adapters
    merged in); ``state``: the whole state dict of a sharded model (gathered by every process
    beforehand)."""
    name = get_stage(config.stage).export
    model = trainer.modules[trainer.stage.main]
    if state is not None:  # sharded: an unsharded copy carries the gathered weights
        from ardrag.training.lora import fresh_like

        whole = fresh_like(model)
        whole.load_state_dict(state)
        model = whole
    elif trainer.ema is not None:
        import copy

        model = copy.deepcopy(model)
        model.load_state_dict(trainer.ema.shadow)
    model = trainer.stage.export_model(model)
    out = config.run_path / name
    tmp = out.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # a killed export leaves the previous one or none, never half of one
    log.debug("exported the %s to %s", name, out)
    return str(out)
