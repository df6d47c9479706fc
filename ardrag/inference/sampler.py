"""The student's few-step frame sampler: the one definition that ``StreamSession``, both distillation
rollout modes, GRPO's rollouts and replay, evaluation and the benchmarks run.

**One latent frame** m is generated at the schedule's levels s_n = t_n / 1000 (``timesteps`` t_0 > ... >
t_{N-1}; diffusers' flow convention: x_s = (1 - s) x + s noise, the model predicts v = noise - x):

    x_0 ~ N(0, I)
    x0_n = x_n - s_n v(x_n, t_n)                          the prediction of the clean frame
    x_{n+1} = (1 - s_{n+1}) x0_n + s_{n+1} eps_n          re-noising, eps_n ~ N(0, I), for n < N - 1
    clean = x0_{N-1}

and one more pass, at ``write_timestep`` (0: the clean frame) on the clean frame, writes its keys and
values into the KV cache, where the frames after it read them. Each pass reads the cache of the frames
before m. Besides x, a frame's inputs are a mask and an image condition: at frame 0 the mask is 1 and the
condition is the reference's VAE latent, with the reference's CLIP tokens for cross-attention; after frame
0 the mask is 0 and Gaussian noise takes the place of both (the paper: the reference only conditions the
first frame). That noise is drawn **once per frame** and used by every pass of the frame, the cache write
included, in training and at inference alike.

**Draw order** (:class:`FrameNoise`, one stream per sample): per frame, the replacement noise (latent,
then CLIP tokens; none at frame 0), the starting noise, then eps_0, eps_1, ... as the steps need them.
``self_forcing`` distillation stops at its exit step and draws fewer. So a sample's frames depend only on
its own seed, never on its batch, and the same seed gives the same frames in every caller.

**Why the re-noising sampler** and not the flow ODE's Euler step x_{n+1} = x_n + (s_{n+1} - s_n) v (the
same as re-noising with the predicted noise, eps_n = (x_n - (1 - s_n) x0_n) / s_n, which ``kind="ode"``
keeps for comparison):

- The student is distilled on it: DMD and Self-Rollout (paper section 3.2, Algorithms 1 and 2) train the
  x0 prediction at each level from inputs made by re-noising its own earlier predictions, and
  ``self_rollout`` writes into the cache what this sampler produces. The ODE step feeds the student
  inputs whose noise part is its own noise estimate: inputs it never met in distillation. The measured
  tracking errors of the toy student under both kinds are in benchmarks/RESULTS.md ("The deployed
  sampler").
- Its stochastic transitions are already Gaussian with a tractable density: given x_n,
  x_{n+1} ~ N((1 - s_{n+1}) x0_theta(x_n), s_{n+1}^2 I). GRPO's selective stochasticity (paper section
  3.3) takes one such draw per frame as the policy's action (:class:`SelectiveNoise`), so the policy that
  RL optimises is the sampler that inference runs. The ODE sampler would need an SDE step that inference
  never takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ardrag.errors import ConfigError


class SampleRandom:
    """Per-sample generators: ``randn(*shape)`` returns (B, *shape), row i drawn from sample i's own
    stream; ``uniform()`` returns (B,).

    The generators live on ``device`` and draw there (no host-to-device copy per draw). What stays
    deterministic: the same seeds on the same device type give the same draws, so the same seed, device
    type and dtype give the same frames; on the CPU the draws are those of ``torch.Generator()``, as
    before generators took a device. CPU and CUDA generators are different algorithms (CUDA's is
    Philox), so a seed's CPU draws and CUDA draws differ, and frames generated on a GPU do not equal
    the CPU's for the same seed. On a GPU some kernels (reductions, attention backends) may also be
    non-deterministic from run to run, unless ``torch.use_deterministic_algorithms`` forbids them."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, rows: list[bool] | None = None) -> torch.Tensor:
        """(B, *shape); with ``rows``, only those samples draw (the others get zeros and keep their
        streams where they were), so a sample's draws never depend on the rest of its batch."""
        return torch.stack([
            torch.randn(shape, generator=g, device=self.device)
            if rows is None or rows[i] else torch.zeros(shape, device=self.device)
            for i, g in enumerate(self.generators)
        ])  # fmt: skip

    def uniform(self) -> torch.Tensor:
        return torch.cat([
            torch.rand(1, generator=g, dtype=torch.float64, device=self.device) for g in self.generators
        ])  # fmt: skip

    def choice(self, n: int) -> list[int]:
        return [int(torch.randint(n, (1,), generator=g, device=self.device)) for g in self.generators]

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, state: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, state, strict=True):
            g.set_state(s)


@dataclass(frozen=True)
class FrameSampler:
    """The schedule and the arithmetic of one latent frame (see the module docstring)."""

    timesteps: tuple[float, ...]
    write_timestep: float = 0.0
    kind: Literal["renoise", "ode"] = "renoise"  # "ode": for comparison only (GRPO refuses it)

    def __post_init__(self) -> None:
        ts = tuple(float(t) for t in self.timesteps)
        object.__setattr__(self, "timesteps", ts)
        decreasing = all(a > b for a, b in zip(ts, ts[1:], strict=False))
        if not ts or any(not 0 < t <= 1000 for t in ts) or not decreasing:
            raise ConfigError(f"sampler timesteps {list(ts)}; expected decreasing values in (0, 1000]")
        if not 0 <= self.write_timestep <= 1000:
            raise ConfigError(f"write timestep {self.write_timestep}; expected a value in [0, 1000]")
        if self.kind not in ("renoise", "ode"):
            raise ConfigError(f"sampler kind {self.kind!r}; expected 'renoise' or 'ode'")

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> FrameSampler:
        """From a config with ``timesteps`` (and optionally ``write_timestep`` and ``sampler``, the kind):
        the pipeline's generation config, or a training stage's."""
        fields = {"timesteps": tuple(config.timesteps),
                  "write_timestep": getattr(config, "write_timestep", 0.0),
                  "kind": getattr(config, "sampler", "renoise")}  # fmt: skip
        return cls(**{**fields, **overrides})

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def transitions(self) -> int:
        """The re-noising transitions of a frame (n -> n + 1 for n < N - 1): the candidates for GRPO's
        stochastic action."""
        return self.steps - 1

    def level(self, n: int) -> float:
        """s_n; 0 past the last step."""
        return self.timesteps[n] / 1000 if n < self.steps else 0.0

    def predict(self, x: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
        """x0_n = x_n - s_n v."""
        return x - self.level(n) * v

    def mean(self, x0: torch.Tensor, n: int) -> torch.Tensor:
        """The re-noising draw's mean, (1 - s_{n+1}) x0_n."""
        return (1 - self.level(n + 1)) * x0

    def std(self, n: int) -> float:
        """The re-noising draw's standard deviation, s_{n+1}."""
        return self.level(n + 1)

    def next(self, x: torch.Tensor, x0: torch.Tensor, n: int, eps: torch.Tensor) -> torch.Tensor:
        """x_{n+1} from x_n, its prediction x0_n and the draw eps_n (unused by ``ode``)."""
        if self.kind == "ode":
            eps = (x - (1 - self.level(n)) * x0) / self.level(n)  # the predicted noise
        return self.mean(x0, n) + self.std(n) * eps

    def run(
        self,
        predict: Callable[[torch.Tensor, int], torch.Tensor],
        x: torch.Tensor,
        renoise: Callable[[int], torch.Tensor],
        *,
        exit_step: int | None = None,
        grad: bool = False,
        stop_at_exit: bool = False,
        on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Denoise one frame from its starting noise ``x``: (clean frame, the exit step's prediction).

        ``predict(x_n, n)`` is the model's x0_n (call :meth:`predict` on its velocity); ``renoise(n)``
        draws eps_n, called only for the transitions taken, in order. ``exit_step``: its prediction is
        returned too, computed with gradients when ``grad`` (every other pass runs without), and the
        frame goes on from it detached; ``stop_at_exit`` ends the frame there (``self_forcing``: the
        exit prediction is the clean frame). ``on_step(n, x_n, x0_n, x_{n+1})`` sees every transition."""
        if exit_step is not None and not 0 <= exit_step < self.steps:
            raise ValueError(f"exit step {exit_step} outside the {self.steps}-step schedule")
        exit_x0 = None
        for n in range(self.steps):
            with torch.set_grad_enabled(grad and n == exit_step):
                x0 = predict(x, n)
            if n == exit_step:
                exit_x0, x0 = x0, x0.detach()
                if stop_at_exit:
                    return x0, exit_x0
            if n == self.steps - 1:
                return x0, exit_x0
            x_next = self.next(x, x0, n, renoise(n))
            if on_step is not None:
                on_step(n, x, x0, x_next)
            x = x_next
        raise AssertionError("unreachable")


def training_sampler(timesteps: list[float], pipe: Any) -> FrameSampler:
    """A training stage's sampler: its own schedule (``distill.timesteps``, ``grpo.timesteps``) with the
    pipeline's cache-write timestep and kind, so that what training writes into the cache is what
    ``StreamSession`` on that pipeline writes. A schedule other than the pipeline's is logged: the exported
    student then wants that schedule at inference (``generation.timesteps``)."""
    import logging

    config = getattr(pipe, "config", None)
    sampler = FrameSampler.from_config(config) if config is not None else FrameSampler(tuple(timesteps))
    if tuple(float(t) for t in timesteps) != sampler.timesteps:
        logging.getLogger(__name__).warning(
            "training schedule %s differs from the pipeline's generation timesteps %s: generate with the "
            "training schedule",
            list(timesteps),
            list(sampler.timesteps),
        )
    return FrameSampler(tuple(timesteps), sampler.write_timestep, sampler.kind)


class FrameNoise:
    """A frame's random inputs, from one stream per sample (``SampleRandom``), in the draw order of the
    module docstring."""

    def __init__(self, rng: SampleRandom):
        self.rng = rng

    def inputs(
        self, frame: int, ref_latent: torch.Tensor, clip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask (B, 4, 1, h, w), image condition (B, 16, 1, h, w), CLIP tokens) of latent frame
        ``frame``: the reference at frame 0; after it, noise in its place, drawn here once per frame."""
        shape = (ref_latent.shape[0], 4, 1, *ref_latent.shape[3:])
        like = {"device": ref_latent.device, "dtype": ref_latent.dtype}
        if frame == 0:
            return torch.ones(shape, **like), ref_latent, clip
        cond = self.rng.randn(*ref_latent.shape[1:]).to(ref_latent)
        tokens = self.rng.randn(*clip.shape[1:]).to(clip)
        return torch.zeros(shape, **like), cond, tokens

    def start(self, frame: int, like: torch.Tensor) -> torch.Tensor:
        """The frame's starting noise, shaped like ``like`` (B, 16, 1, h, w)."""
        return self.rng.randn(*like.shape[1:]).to(like)

    def renoise(self, frame: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """eps_n of the frame."""
        return self.rng.randn(*like.shape[1:]).to(like)

    def get_state(self) -> Any:
        return self.rng.get_state()

    def set_state(self, state: Any) -> None:
        self.rng.set_state(state)


class SelectiveNoise(FrameNoise):
    """GRPO's selective stochasticity on the deployed sampler: in frame m, row i's re-noising draw at
    transition ``steps[i, m]`` comes from ``action`` (the policy's stochastic action, whose density the
    log-probability covers); every other draw comes from ``rng`` (noise fixed by the condition's seed, the
    same for every rollout of its group when the rows share seeds). ``rng`` draws for every row at every
    transition, so each stream stays where it would be without the action. A frame's steps are all -1
    (no action: the frame is deterministic given ``rng``, as frame 0 and the frames past ``steps``' last
    column) or all re-noising transitions, 0 .. ``transitions`` - 1 (the last denoising step gives the
    clean frame and draws nothing)."""

    def __init__(self, rng: SampleRandom, action: SampleRandom, steps: torch.Tensor, transitions: int):
        super().__init__(rng)
        if steps.ndim != 2 or steps.shape[0] != len(rng) or len(action) != len(rng):
            raise ValueError(
                f"stochastic steps of shape {tuple(steps.shape)} for {len(rng)} rows and {len(action)} "
                "action streams; expected (rows, frames) and one action stream per row"
            )
        steps = steps.long().cpu()
        for m, col in enumerate(steps.T):
            none, acting = bool((col == -1).all()), bool(((col >= 0) & (col < transitions)).all())
            if not (none or acting):
                raise ValueError(
                    f"stochastic steps of frame {m} are {col.tolist()}; expected all -1 (no action) or all "
                    f"re-noising transitions in 0 .. {transitions - 1}"
                )
        self.action, self.steps = action, steps

    def picked(self, frame: int) -> torch.Tensor:
        """(B,) each row's stochastic transition in this frame (-1: none)."""
        return self.steps[:, frame] if frame < self.steps.shape[1] else torch.full((len(self.rng),), -1)

    def renoise(self, frame: int, n: int, like: torch.Tensor) -> torch.Tensor:
        eps = super().renoise(frame, n, like)
        rows = self.picked(frame) == n
        if not rows.any():
            return eps
        own = self.action.randn(*like.shape[1:], rows=rows.tolist()).to(like)
        return torch.where(rows.to(like.device).view(-1, *[1] * (like.ndim - 1)), own, eps)

    def get_state(self) -> Any:
        return self.rng.get_state(), self.action.get_state()

    def set_state(self, state: Any) -> None:
        self.rng.set_state(state[0])
        self.action.set_state(state[1])
