"""Checkpoint folders of a training run: what they hold, how they are written, read back and pruned.

A checkpoint is ``<run_dir>/checkpoints/step-N``: safetensors weights per module (``<name>.safetensors``,
the EMA as ``ema_<main>.safetensors``), optimizer and scheduler states (``optim.pt``), every process's
RNG states (``rng-<rank>.pt``) and ``trainer.json`` (step, data position, world size, stage, config
digest). It is written into ``step-N.tmp`` and renamed when complete, so a killed run never leaves a
half checkpoint that a resume would take; :func:`checkpoint_dirs` lists only complete ones, and after a
save the latest ``keep`` stay (the latest and the one before it by default).

Sharded (FSDP) modules are gathered into the same files (:mod:`ardrag.training.parallel`); saving and
loading are then collective: every process calls them, rank 0 writes and reads, each process writes and
reads its own RNG file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.training.parallel import (
    full_optimizer_state,
    full_state_dict,
    is_sharded,
    load_full_optimizer_state,
    load_full_state_dict,
)

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
META = "trainer.json"
OPTIM = "optim.pt"
EXTRA = "extra.pt"


@dataclass(kw_only=True)
class TrainingState:
    """The live objects a checkpoint saves and restores (the position lives in ``trainer.json``)."""

    modules: dict[str, torch.nn.Module]  # each saved as <name>.safetensors
    optimizers: dict[str, torch.optim.Optimizer]
    optimizer_modules: dict[str, torch.nn.Module]  # the module whose parameters each optimizer steps
    schedulers: dict[str, Any]  # torch.optim.lr_scheduler schedulers, by optimizer name
    averages: dict[str, torch.nn.Module]  # file stem -> an unsharded EMA, written by rank 0 as it is
    extra: Any = None  # has extra_state() / load_extra_state(state): kept in extra.pt, written by rank 0


def checkpoint_dirs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first (``step-N``; ``.tmp`` folders are incomplete)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(done, key=lambda p: int(p.name[5:]))


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned; the CUDA states only where CUDA is available."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def save(
    run_dir: Path, state: TrainingState, meta: dict[str, Any], keep: int, rank: int = 0, world: int = 1
) -> Path:
    """Write ``step-<meta['step']>`` (through ``.tmp``, renamed when every process has written its part),
    then remove all but the latest ``keep`` checkpoints. Collective: every process calls it."""
    root = run_dir / CHECKPOINTS
    final, tmp = root / f"step-{meta['step']}", root / f"step-{meta['step']}.tmp"
    # gathered on every process (collective when sharded), written by rank 0
    weights = {name: full_state_dict(module) for name, module in state.modules.items()}
    owners = state.optimizer_modules
    optim = {k: full_optimizer_state(owners[k], o) for k, o in state.optimizers.items()}
    extra = state.extra.extra_state() if state.extra is not None else None
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, tensors in weights.items():
            save_file(tensors, str(tmp / f"{name}.safetensors"))
        for stem, average in state.averages.items():
            save_file({k: v.contiguous().cpu() for k, v in average.state_dict().items()},
                      str(tmp / f"{stem}.safetensors"))  # fmt: skip
        torch.save(
            {"optimizers": optim, "schedulers": {k: s.state_dict() for k, s in state.schedulers.items()}},
            tmp / OPTIM,
        )
        if extra is not None:
            torch.save(extra, tmp / EXTRA)
        atomic_write(tmp / META, json.dumps(meta, indent=2))
    _barrier(world)
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    _barrier(world)
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune(run_dir, keep)
        log.debug("saved %s", final)
    _barrier(world)
    return final


def prune(run_dir: str | os.PathLike[str], keep: int) -> None:
    """Remove all complete checkpoints but the latest ``keep``."""
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(path: Path, stage: str, world: int) -> dict[str, Any]:
    """``trainer.json`` of a checkpoint, refused when another stage or another number of processes
    wrote it."""
    meta = json.loads((path / META).read_text())
    if meta["stage"] != stage:
        raise ConfigError(f"{path} is a checkpoint of stage {meta['stage']!r}, not {stage!r}")
    if meta["world_size"] != world:
        raise ConfigError(
            f"{path} was written by {meta['world_size']} processes; resume with the same number "
            f"(now {world}) so that every process continues its own shards"
        )
    return meta


def load(path: Path, state: TrainingState, stage: str, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Restore ``state`` and this process's RNG from the checkpoint folder ``path``; returns its
    ``trainer.json`` (checked by :func:`read_meta`). Collective: every process calls it."""
    meta = read_meta(path, stage, world)
    for name, module in state.modules.items():
        load_into(module, path / f"{name}.safetensors", read=rank == 0 or not is_sharded(module))
    for stem, average in state.averages.items():
        average.load_state_dict(load_file(str(path / f"{stem}.safetensors")))
    # read onto the CPU: a GPU run saved its optimizer states as CUDA tensors of rank 0's device, which
    # every process would otherwise allocate there; loading them moves them to each parameter's device
    states = torch.load(path / OPTIM, map_location="cpu", weights_only=False)
    owners = state.optimizer_modules
    for k, o in state.optimizers.items():
        load_full_optimizer_state(owners[k], o, states["optimizers"][k])
    for k, s in state.schedulers.items():
        s.load_state_dict(states["schedulers"][k])
    if state.extra is not None and state.extra.extra_state() is not None:
        if not (path / EXTRA).is_file():
            raise ConfigError(f"checkpoint file {path / EXTRA} is missing (the stage's extra state)")
        state.extra.load_extra_state(torch.load(path / EXTRA, map_location="cpu", weights_only=False))
    rng = path / f"rng-{rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
    return meta


def load_into(module: torch.nn.Module, path: Path, read: bool = True) -> None:
    """Load a safetensors file into ``module``; a mismatch names the missing and unexpected keys. A
    sharded module is loaded collectively: rank 0 reads (``read``), the others receive."""
    if not read:
        load_full_state_dict(module, {})
        return
    if not path.is_file():
        raise ConfigError(f"checkpoint file {path} is missing")
    state = load_file(str(path))
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"other shapes {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shapes[:5]]}"
        )
    load_full_state_dict(module, state)
