"""Training over processes: the process group, data-parallel averaging, and sharding the models.

Under ``torchrun`` the processes join one ``torch.distributed`` group (gloo on CPU, nccl on GPU;
:func:`init_distributed`) and leave it together (:func:`shutdown_distributed`). Without sharding every
process holds whole models, and after the backward passes of a phase the trainer averages the gradients
over processes (:func:`average_gradients`: one all-reduce per parameter, the same arithmetic as DDP
without its hooks, which do not fit phases that run the same modules several times); logged scalars are
averaged alike (:func:`average_scalars`).

``distributed: fsdp`` shards the models instead: each transformer block and then each model is
wrapped by PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and
optimizer states are split over the processes and gathered one block at a time for compute, which is
what lets several 1.3B-parameter models (generator, critic, frozen teacher) fit beside each other. The
causal student's entry points other than ``forward`` (``forward_frame``, ``forward_sequence``) are
registered so that they gather their parameters too. FSDP averages the gradients itself;
:func:`average_gradients` skips sharded parameters.

Checkpoints stay the same files as without sharding: full state dicts gathered to rank 0
(``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict``), written by rank 0,
and on resume read by rank 0 and broadcast. The sharding and state-dict functions are collective: all
processes call them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

_METHODS = ("forward_frame", "forward_sequence")


# -- the process group ---------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def shutdown_distributed() -> bool:
    """Leave the process group together: every process waits for the others, then destroys it; returns
    whether there was one. A process that exits while the others still talk to it (e.g. rank 0 writing
    files) can take gloo's threads down with ``terminate called without an active exception``, and
    torchrun then kills all."""
    if not dist.is_initialized():
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True


def exit_process(code: int = 0) -> None:
    """End a finished torchrun process at once, after flushing logs and output: on 2 CPU cores under
    load, gloo (torch 2.13) intermittently aborted in the interpreter's teardown (``terminate called
    without an active exception``) after all work and the process group's destruction were done, and
    torchrun turned that into a failed run. Nothing is left to run at this point: every file is written."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- data parallel: averaging over processes -----------------------------------------------------
def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of every gradient over the processes; sharded (FSDP) parameters are left alone: FSDP has
    reduced theirs already."""
    if world == 1:
        return
    from torch.distributed.tensor import DTensor

    for p in params:
        if isinstance(p, DTensor):
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def average_scalars(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """Mean of each logged scalar over the processes (every process gets the same values)."""
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / world for k, v in zip(keys, t.tolist(), strict=True)}


# -- sharding (``distributed: fsdp``) ------------------------------------------------------------


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def shard(model: nn.Module) -> nn.Module:
    """Wrap ``model`` (its ``blocks`` one by one when it has them, then the whole) with FSDP2."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for block in getattr(model, "blocks", []):
        fully_shard(block)
    fully_shard(model)
    for name in _METHODS:
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)
    return model


def wanted(config: Any) -> bool:
    """``distributed: fsdp`` with more than one process in the group."""
    return config.distributed == "fsdp" and dist.is_initialized() and dist.get_world_size() > 1


def reshard(module: nn.Module) -> None:
    """Free the gathered copy FSDP keeps of a root module after a forward without backward (a no-grad
    rollout): the trainer calls it after each optimizer step, so that no gathered copy outlives the
    weights it was gathered from."""
    if is_sharded(module) and hasattr(module, "reshard"):
        module.reshard()


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's whole state dict on CPU (on rank 0 when sharded; empty on the other ranks)."""
    if not is_sharded(module):
        return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return {
        k: v.contiguous() for k, v in get_model_state_dict(module, options=_options(cpu_offload=True)).items()
    }


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (read on rank 0; the others may pass an empty dict when sharded)."""
    if not is_sharded(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, state, options=_options(broadcast_from_rank0=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state, keyed by parameter names of ``model`` (rank 0 when sharded)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options(broadcast_from_rank0=True))


def full_gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's whole gradient (for tests and diagnostics)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in module.named_parameters():
        if p.grad is not None:
            g = p.grad
            out[name] = (g.full_tensor() if isinstance(g, DTensor) else g).detach().clone()
    return out
