"""The training loop every stage shares: data, accumulation, distributed gradients, EMA, checkpoints.

A stage (:mod:`ardrag.training.teacher`, :mod:`ardrag.training.distill`) names its modules, its
optimizers and, per step, its update phases: each phase is a loss over a micro-batch and the optimizer
that steps on it (the distillation alternates critic and generator phases). The loop does the rest:

- **Distributed**: under ``torchrun`` each process takes its share of the shards; after the backward
  passes of a phase the gradients are averaged over processes, and the losses alike
  (:mod:`ardrag.training.parallel`, which also shards the models under ``distributed: fsdp``).
- **Accumulation**: ``grad_accum`` micro-batches per optimizer step; bf16 autocast on GPU.
- **Devices**: every model a stage runs (:meth:`Stage.models`: trained, frozen, encoders, reward
  networks) must be on the process's device when the trainer is built, and every tensor of each
  micro-batch when a step starts; a clear error names the first that is not
  (:func:`ardrag.training.run.train` moves the models there before it builds the stage).
- **EMA** of the stage's main model (``ema_decay`` > 0); with LoRA adapters it follows the adapters (the
  frozen weights stay as they are).
- **Checkpoints** every ``save_every`` steps and at the end (:mod:`ardrag.training.checkpoint`: written
  atomically, the latest ``keep_checkpoints`` kept). ``resume`` continues from the latest: the same
  batches in the same order, the same random draws (they are seeded per step and sample), so the
  losses after a resume are those of a run that never stopped.
- **Logs**: a tqdm bar, TensorBoard scalars (``<run_dir>/tb``), ``<run_dir>/losses.jsonl`` (one line
  per step) and the resolved ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ardrag.config import write_resolved_config
from ardrag.console import Progress
from ardrag.errors import ConfigError
from ardrag.fsutil import atomic_write
from ardrag.training import checkpoint
from ardrag.training.checkpoint import checkpoint_dirs
from ardrag.training.config import TrainConfig
from ardrag.training.parallel import average_gradients, average_scalars, reshard

log = logging.getLogger(__name__)
BAR_FIGURES = ("loss", "reward_total")  # the figures on the progress bar


@dataclass
class Phase:
    """One update: ``loss(micro_batch, micro_index)`` -> (loss tensor, scalars to log), stepped by
    ``optimizer`` over ``params``."""

    name: str
    optimizer: str
    params: list[torch.nn.Parameter]
    loss: Callable[[Any, int], tuple[torch.Tensor, dict[str, float]]]
    context: Callable[[], Any] | None = None  # entered around the losses and their backward passes


class Stage:
    """What a training stage provides (see the module docstring)."""

    name = "stage"
    main = "model"  # the module the EMA follows

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def models(self) -> dict[str, torch.nn.Module]:
        """Every model a step runs, trained or frozen: the trainer checks that they are on the process's
        device. By default the trained modules and the pipeline's encoders and VAE (``self.pipe``)."""
        out = dict(self.modules())
        wan = getattr(getattr(self, "pipe", None), "wan", None)
        for name in ("vae", "text_encoder", "image_encoder"):
            model = getattr(wan, name, None)
            if isinstance(model, torch.nn.Module):
                out[f"pipe.{name}"] = model
        return out

    def optimizer_modules(self) -> dict[str, torch.nn.Module]:
        """The module whose parameters each optimizer steps (by default the module of the same name)."""
        return {name: self.modules()[name] for name in self.optimizers()}

    def phases(self, step: int) -> list[Phase]:
        raise NotImplementedError

    def batch(self, raw: dict[str, Any], index: list[int]) -> Any:
        """The model inputs of a loader batch whose samples have these global indices."""
        return raw

    def export_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """What ``ardrag train`` saves as the run's diffusers folder, given ``model``: the main module, or
        an unsharded copy of it holding the weights to export (the EMA's, or those gathered from shards).
        By default that model; a stage training LoRA adapters returns the merged plain model."""
        return model

    def export_extra(self, run_dir: Path) -> dict[str, str]:
        """Folders saved beside the exported model at the end of a run (name -> path; e.g. a trained
        planner LM), on the first process only; by default none."""
        return {}

    def extra_state(self) -> dict[str, Any] | None:
        """State beside the modules and optimizers that a checkpoint must keep (e.g. a replay buffer),
        the same on every process; None: nothing."""
        return None

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


# -- devices -------------------------------------------------------------------------------------
def same_device(actual: torch.device, expected: torch.device) -> bool:
    """``actual`` is ``expected``; an ``expected`` without an index (``cuda``) takes the current one."""
    if actual.type != expected.type:
        return False
    if expected.index is None and actual.type == "cuda":
        return actual.index in (None, torch.cuda.current_device())
    return expected.index is None or actual.index == expected.index


def check_model_devices(models: dict[str, torch.nn.Module], device: torch.device) -> None:
    """Every parameter and buffer of ``models`` on ``device``; an error names the first that is not."""
    for name, model in models.items():
        for what, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not same_device(tensor.device, device):
                raise ValueError(
                    f"the stage's model {name!r} has {what} on {tensor.device}; the process's device is "
                    f"{device}: move the models there before building the stage (as "
                    "ardrag.training.run.train does)"
                )


def check_batch_devices(batch: Any, device: torch.device) -> None:
    """Every tensor of a stage's micro-batch (a dataclass, a dict or a tensor) on ``device``."""
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = [(f.name, getattr(batch, f.name)) for f in dataclasses.fields(batch)]
    elif isinstance(batch, dict):
        items = list(batch.items())
    else:
        items = [("batch", batch)]
    for name, value in items:
        if isinstance(value, torch.Tensor) and not same_device(value.device, device):
            raise ValueError(
                f"the batch's {name!r} is on {value.device}; the process's device is {device}: the stage's "
                "batch() must put its inputs there"
            )


# -- EMA -----------------------------------------------------------------------------------------
class EMA(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.float(), 1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        for k, v in state.items():
            self.shadow[k].copy_(v)


class Trainer:
    def __init__(self, config: TrainConfig, stage: Stage, loader_factory: Callable[[int], Iterator[Any]],
                 rank: int = 0, world: int = 1, device: torch.device | None = None):  # fmt: skip
        """``loader_factory(epoch)`` yields this process's batches of that epoch, in a fixed order."""
        self.config, self.stage = config, stage
        self.rank, self.world, self.device = rank, world, device or torch.device("cpu")
        self.loader_factory = loader_factory
        self.run_dir = config.run_path
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0  # micro-batches consumed in the current epoch
        self.modules = stage.modules()
        check_model_devices(stage.models(), self.device)
        self.optimizers = stage.optimizers()
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self._warmup)
            for name, opt in self.optimizers.items()
        }
        self.ema = EMA(self.modules[stage.main], config.ema_decay) if config.ema_decay > 0 else None
        self._iter: Iterator[Any] | None = None
        self._writer: Any = None
        self._purge_step: int | None = None  # TensorBoard drops events from this step on (a resume)
        self.stopped_early = False  # the time limit ended the run before config.steps

    def _warmup(self, step: int) -> float:
        warm = self.config.optim.warmup_steps
        return 1.0 if warm == 0 else min(1.0, (step + 1) / warm)

    # -- data ------------------------------------------------------------------------------------
    def _next_batch(self, micro: int) -> tuple[Any, list[int]]:
        """The next micro-batch (``micro`` of the current step) and its samples' global indices."""
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.loader_factory(self.epoch))
                for _ in range(self.batches_in_epoch):  # resume: skip what was consumed
                    next(self._iter)
            try:
                raw = next(self._iter)
            except StopIteration:
                self.epoch, self.batches_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batches_in_epoch += 1
            position = self.step * self.config.grad_accum + micro  # micro-steps since the start
            start = (position * self.world + self.rank) * self.config.batch_size
            return raw, list(range(start, start + len(raw["key"])))
        raise ConfigError("the dataset yields no batch for this process: too few samples or shards")

    # -- one step --------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[Any]) -> dict[str, float]:
        """Every phase of the current step over these micro-batches; returns the logged scalars."""
        logs: dict[str, float] = {}
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.config.mixed_precision == "bf16" and self.device.type == "cuda"
            else nullcontext()
        )
        for mb in micro_batches:
            check_batch_devices(mb, self.device)
        for phase in self.stage.phases(self.step):
            opt = self.optimizers[phase.optimizer]
            opt.zero_grad(set_to_none=True)
            with phase.context() if phase.context is not None else nullcontext():
                for i, mb in enumerate(micro_batches):
                    with autocast:
                        loss, scalars = phase.loss(mb, i)
                    (loss / len(micro_batches)).backward()
                    for k, v in scalars.items():
                        key = f"{phase.name}/{k}"
                        logs[key] = logs.get(key, 0.0) + v / len(micro_batches)
            params = [p for group in opt.param_groups for p in group["params"]]  # sharded ones under FSDP
            average_gradients(params, self.world)
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.optim.max_grad_norm)
            logs[f"{phase.name}/grad_norm"] = float(norm)
            opt.step()
            for module in self.modules.values():
                reshard(module)
            self.schedulers[phase.optimizer].step()
            # the EMA follows the main module whichever optimizer stepped it (e.g. one per adapter)
            main = self.modules[self.stage.main]
            if self.ema is not None and self.stage.optimizer_modules()[phase.optimizer] is main:
                self.ema.update(main)
        return average_scalars(logs, self.world, self.device)

    def run(self, resume: bool = False, progress: bool = True) -> list[dict[str, float]]:
        """Train to ``config.steps``; returns the logged scalars of the steps this call ran."""
        if resume:
            self.load_latest()
        elif checkpoint_dirs(self.run_dir):
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue, or another run_dir"
            )
        if self.rank == 0:
            write_resolved_config(self.config, self.run_dir)
        history, started = [], time.monotonic()
        figures: dict[str, str] = {}  # the latest of each (distillation's generator steps every few steps)
        bar = Progress(total=self.config.steps, initial=self.step, desc=f"train {self.stage.name}",
                       unit="step", enabled=progress and self.rank == 0, logger=log)  # fmt: skip
        while self.step < self.config.steps:
            batches = [self.stage.batch(*self._next_batch(j)) for j in range(self.config.grad_accum)]
            logs = self.train_step(batches)
            self.step += 1
            history.append({"step": self.step, **logs})
            self._log(logs)
            figures.update({k: f"{v:.4g}" for k, v in logs.items() if k.endswith(BAR_FIGURES)})
            bar.set_postfix(figures)
            bar.update(1)
            if self._out_of_time(started):
                self.stopped_early = True
                log.info("time limit of %s min reached at step %d: saving, then stopping (--resume "
                         "continues)", self.config.time_limit_minutes, self.step)  # fmt: skip
            if (
                self.step % self.config.save_every == 0
                or self.step == self.config.steps
                or self.stopped_early
            ):
                self.save()
            if self.stopped_early:
                break
        bar.close()
        if self._writer is not None:
            self._writer.close()
        return history

    def _out_of_time(self, started: float) -> bool:
        """Whether ``time_limit_minutes`` has passed; rank 0 decides for all, so every process stops at
        the same step."""
        limit = self.config.time_limit_minutes
        if limit is None:
            return False
        flag = torch.tensor([int(time.monotonic() - started >= 60 * limit)], device=self.device)
        if self.world > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _log(self, logs: dict[str, float]) -> None:
        if self.rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "losses.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, **logs}) + "\n")
        if self.step % self.config.log_every == 0:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self._purge_step)
            for k, v in logs.items():
                self._writer.add_scalar(k, v, self.step)
            self._writer.flush()

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self) -> checkpoint.TrainingState:
        averages = {f"ema_{self.stage.main}": self.ema} if self.ema is not None else {}
        return checkpoint.TrainingState(
            modules=self.modules,
            optimizers=self.optimizers,
            optimizer_modules=self.stage.optimizer_modules(),
            schedulers=self.schedulers,
            averages=averages,
            extra=self.stage,
        )

    def save(self) -> Path:
        """Checkpoint the current step (collective: every process calls it)."""
        meta = {
            "step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.world, "stage": self.stage.name, "config_digest": self.config.digest(),
        }  # fmt: skip
        return checkpoint.save(self.run_dir, self._state(), meta, self.config.keep_checkpoints,
                               rank=self.rank, world=self.world)  # fmt: skip

    def load_latest(self) -> bool:
        """Continue from the latest complete checkpoint; False when there is none."""
        dirs = checkpoint_dirs(self.run_dir)
        if not dirs:
            log.info("no checkpoint in %s: starting from step 0", self.run_dir)
            return False
        path = dirs[-1]
        meta = checkpoint.load(path, self._state(), self.stage.name, rank=self.rank, world=self.world)
        self.step, self.epoch, self.batches_in_epoch = meta["step"], meta["epoch"], meta["batches_in_epoch"]
        self._iter = None
        self._purge_step = self.step + 1
        losses = self.run_dir / "losses.jsonl"
        if self.rank == 0 and losses.is_file():  # steps logged after this checkpoint are redone: drop them
            kept = [ln for ln in losses.read_text().splitlines() if _logged_step(ln) <= self.step]
            atomic_write(losses, "".join(ln + "\n" for ln in kept))
        log.info("resumed from %s (step %d)", path, self.step)
        return True


def _logged_step(line: str) -> float:
    """The step of a losses.jsonl line; a line cut short by a kill counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
