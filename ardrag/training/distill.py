"""Stage 1b: DMD + adversarial distillation of the teacher into the causal few-step student, trained on
its own rollouts (paper section 3.2, Algorithms 1 and 2).

Models: the **generator** (the causal student, initialised from the teacher), the **real score** (the
frozen teacher, with classifier-free guidance ``real_guidance``), the **critic** or fake score (a copy of
the teacher trained by flow matching on the generator's samples) and a **discriminator** head on the
critic's last-block features.

**Rollout** (one exit step s per rollout, drawn from (seed, step) so every process agrees): every latent
frame starts from noise and is denoised at ``timesteps`` with the KV cache of the frames before it, by the
deployed sampler (:mod:`ardrag.inference.sampler`: x0 prediction, re-noising to the next level, the
noise in place of the reference drawn once per frame, the cache write); only step s runs with gradients,
and its prediction of the clean frame is the frame's output (what the losses see). What enters the cache
is the switch:

- ``self_rollout`` (Algorithm 1): after step s the frame goes on, without gradients, through every
  remaining step (re-noised from step s's prediction, as at inference), and the fully denoised frame is
  written: the cache holds exactly what the student would have produced at inference.
- ``self_forcing`` (Algorithm 2): step s's prediction is written, the remaining steps are skipped.

Cache writes run without gradients on a detached latent, and the cache only ever replaces its tensors
(``torch.cat`` and slicing, never in-place), so no graph is kept alive by the cache and no tensor saved
for backward is modified. Passes that read the cache are never recomputed (gradient checkpointing
applies to bidirectional passes only), so no backward sees a cache mutated since its forward.

**Losses**, per step (``generator_every``: critic steps per generator step):

- critic phase (every step): flow matching on the generator's samples (a rollout without gradients),
  plus ``discriminator_weight`` x the non-saturating discriminator loss (real clips vs the samples,
  both noised to the same level);
- generator phase (every ``generator_every``-th step, step 0 included): ``dmd_weight`` x DMD (the
  gradient (fake - real) of the clean-frame predictions, normalised by mean |x - real|, applied as
  0.5 ||x - sg(x - grad)||^2) + ``generator_adv_weight`` x the non-saturating generator loss.

**Where the paper is silent or we differ, and why:**
- One exit step per training step, shared by the batch and every process (drawn from (seed, step)),
  rather than one per rollout: the processes must agree on the passes that carry gradients.
- The cache is written by a separate pass on the finished frame at t = 0 (the sampler's
  ``write_timestep``), without gradients, as the public causal ports do; the paper does not say how its
  cache is filled.
- The DMD gradient is normalised by mean |x - x_real| and applied through 0.5 ||x - sg(x - grad)||^2,
  the critic is trained by flow matching and the adversarial head sits on its last block: DMD2's public
  recipe, which the paper cites without stating these details.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ardrag.inference.sampler import FrameNoise, FrameSampler, training_sampler
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer, KVCache
from ardrag.training import parallel
from ardrag.training.conditions import (
    Conditions,
    SampleRandom,
    image_condition,
    prepare,
    sample_seed,
    shift_sigma,
)
from ardrag.training.config import TrainConfig
from ardrag.training.trainer import Phase, Stage


class Discriminator(nn.Module):
    """A logit per sample from a transformer's token features (B, L, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens.float()).mean(dim=(1, 2))


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No gradients for these modules' parameters in the graphs built inside. Sharded (FSDP) modules
    are left as they are: FSDP keeps its own gathered parameters, which a toggle of the sharded ones
    does not reach, and a gradient computed for them anyway is cleared with the other optimizer's
    ``zero_grad`` before that optimizer's next phase."""
    if any(parallel.is_sharded(m) for m in modules):
        yield
        return
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(modules, flags, strict=True):
            for p, f in zip(m.parameters(), fl, strict=True):
                p.requires_grad_(f)


@dataclass
class Rollout:
    video: torch.Tensor  # (B, 16, F, h, w): each frame's exit-step prediction of the clean latent
    written: list[torch.Tensor] = field(default_factory=list)  # per frame, the latent written to the cache
    cache: KVCache | None = None


def rollout(
    generator: CausalARDragTransformer,
    c: Conditions,
    rng: SampleRandom,
    *,
    timesteps: list[float],
    frames: int,
    window: int,
    exit_step: int,
    mode: str,
    grad: bool,
    sampler: FrameSampler | None = None,
) -> Rollout:
    """Generate ``frames`` latent frames one at a time with the deployed sampler (see the module
    docstring); ``sampler``: its cache-write timestep and kind (default: the re-noising sampler writing at
    t = 0), ``timesteps`` its schedule."""
    if mode not in ("self_rollout", "self_forcing"):
        raise ValueError(f"rollout mode {mode!r}; expected 'self_rollout' or 'self_forcing'")
    base = sampler or FrameSampler(tuple(timesteps))
    sampler = FrameSampler(tuple(timesteps), base.write_timestep, base.kind)
    if not 0 <= exit_step < sampler.steps:
        raise ValueError(f"exit step {exit_step} outside the {sampler.steps}-step schedule")
    noise = FrameNoise(rng)
    cache = generator.new_cache(window)
    dtype = next(generator.parameters()).dtype
    b = c.batch
    text = c.text.to(dtype)
    outputs, written = [], []
    for m in range(frames):
        control = c.control[:, :, m : m + 1].to(dtype)
        mask, cond, clip = noise.inputs(m, c.ref_latent, c.clip)
        clip = clip.to(dtype)

        def velocity(x: torch.Tensor, t: float, *, write: bool = False, mask=mask, cond=cond, clip=clip,
                     control=control) -> torch.Tensor:  # fmt: skip
            ts = torch.full((b,), t, device=x.device, dtype=torch.float32)  # as StreamSession passes them
            x_in = torch.cat([x, mask, cond], 1).to(dtype)
            return generator.forward_frame(x_in, ts, text, cache, clip, control=control, write=write).float()

        clean, exit_x0 = sampler.run(
            lambda x, n, velocity=velocity: sampler.predict(x, velocity(x, sampler.timesteps[n]), n),
            noise.start(m, c.ref_latent),
            lambda n, m=m: noise.renoise(m, n, c.ref_latent),
            exit_step=exit_step, grad=grad, stop_at_exit=mode == "self_forcing",
        )  # fmt: skip
        outputs.append(exit_x0)
        with torch.no_grad():
            velocity(clean, sampler.write_timestep, write=True)
        written.append(clean)
    return Rollout(torch.cat(outputs, 2), written, cache)


def _last_block_features(model: ARDragTransformer) -> tuple[list[torch.Tensor], Any]:
    store: list[torch.Tensor] = []
    handle = model.blocks[-1].register_forward_hook(lambda _m, _i, out: store.append(out))
    return store, handle


class DistillStage(Stage):
    name = "distill"
    main = "generator"

    def __init__(self, config: TrainConfig, pipe: Any, teacher: ARDragTransformer):
        self.config, self.pipe, d = config, pipe, config.distill
        self.sampler = training_sampler(d.timesteps, pipe)  # the deployed sampler, with d's schedule
        self.teacher = teacher.eval().requires_grad_(False)
        self.generator = CausalARDragTransformer.from_config(
            {**teacher.config, "cache_window": d.cache_window}
        ).to(teacher.device)
        self.generator.load_state_dict(teacher.state_dict())
        self.generator.train()
        self.critic = ARDragTransformer.from_config(teacher.config).to(teacher.device)
        self.critic.load_state_dict(teacher.state_dict())
        self.critic.train()
        if config.model.gradient_checkpointing:
            self.critic.enable_gradient_checkpointing()
        self.discriminator = Discriminator(
            teacher.config.num_attention_heads * teacher.config.attention_head_dim
        ).to(teacher.device)
        if parallel.wanted(config):
            for model in (self.generator, self.critic, self.discriminator, self.teacher):
                parallel.shard(model)
        self._critic_side = nn.ModuleDict({"critic": self.critic, "discriminator": self.discriminator})
        o = config.optim
        self._optimizers = {
            "generator": torch.optim.AdamW(
                self.generator.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
            ),
            "critic": torch.optim.AdamW(
                [*self.critic.parameters(), *self.discriminator.parameters()],
                lr=d.critic_lr or o.lr, betas=o.betas, weight_decay=o.weight_decay,
            ),
        }  # fmt: skip

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic, "discriminator": self.discriminator}

    def models(self) -> dict[str, nn.Module]:
        return {**super().models(), "teacher": self.teacher}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def optimizer_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self._critic_side}

    def batch(self, raw: dict[str, Any], index: list[int]) -> Conditions:
        dc = self.config.data
        return prepare(
            self.pipe, raw, index, dc.scale, dc.max_frames, guided=self.config.distill.real_guidance > 1
        )

    # -- pieces ----------------------------------------------------------------------------------
    def exit_step(self, step: int) -> int:
        return sample_seed(self.config.seed, step, 7) % len(self.config.distill.timesteps)

    def rollout(self, c: Conditions, step: int, phase: int, grad: bool) -> Rollout:
        d = self.config.distill
        return rollout(
            self.generator, c, c.random(self.config.seed, step, phase, 1),
            timesteps=d.timesteps, frames=min(d.latent_frames, c.frames), window=d.cache_window,
            exit_step=self.exit_step(step), mode=d.rollout, grad=grad,
            sampler=self.sampler,
        )  # fmt: skip

    def _noised(self, c: Conditions, x: torch.Tensor, rng: SampleRandom) -> tuple[torch.Tensor, ...]:
        """(sigma (B,), noise, x_sigma, mask, image condition) for x at a DMD noise level."""
        d = self.config.distill
        u = d.dmd_t_min + (d.dmd_t_max - d.dmd_t_min) * rng.uniform()
        s = shift_sigma(u, d.shift).to(x.device, torch.float32)
        noise = rng.randn(*x.shape[1:])
        mask, cond = image_condition(c, x.shape[2], rng)
        sv = s.view(-1, 1, 1, 1, 1)
        return s, noise, (1 - sv) * x + sv * noise, mask, cond

    @staticmethod
    def _velocity(
        model: ARDragTransformer, x_t: torch.Tensor, s: torch.Tensor, mask: torch.Tensor,
        cond: torch.Tensor, text: torch.Tensor, c: Conditions, frames: int,
    ) -> torch.Tensor:  # fmt: skip
        dtype = next(model.parameters()).dtype
        return model(
            torch.cat([x_t, mask, cond], 1).to(dtype), (1000 * s).to(dtype), text.to(dtype), c.clip.to(dtype),
            control=c.control[:, :, :frames].to(dtype), return_dict=False,
        )[0].float()  # fmt: skip

    def generator_loss(self, c: Conditions, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        d = self.config.distill
        x = self.rollout(c, step, phase=1, grad=True).video
        frames = x.shape[2]
        s, noise, x_t, mask, cond = self._noised(c, x.detach(), c.random(self.config.seed, step, 1, 2))
        sv = s.view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            v_real = self._velocity(self.teacher, x_t, s, mask, cond, c.text, c, frames)
            if d.real_guidance > 1:
                v_unc = self._velocity(self.teacher, x_t, s, mask, cond, c.text_neg, c, frames)
                v_real = v_unc + d.real_guidance * (v_real - v_unc)
            x0_real = x_t - sv * v_real
            x0_fake = x_t - sv * self._velocity(self.critic, x_t, s, mask, cond, c.text, c, frames)
            scale = (x.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            direction = torch.nan_to_num((x0_fake - x0_real) / scale)
        dmd = 0.5 * F.mse_loss(x, (x - direction).detach())
        total, logs = d.dmd_weight * dmd, {"dmd": float(dmd.detach())}
        if d.generator_adv_weight > 0:
            store, handle = _last_block_features(self.critic)
            try:  # the critic and discriminator are frozen by the phase's context (see phases())
                self._velocity(self.critic, (1 - sv) * x + sv * noise, s, mask, cond, c.text, c, frames)
                adv = F.softplus(-self.discriminator(store[-1])).mean()
            finally:
                handle.remove()
            total = total + d.generator_adv_weight * adv
            logs["adv"] = float(adv.detach())
        logs["loss"] = float(total.detach())
        return total, logs

    def critic_loss(self, c: Conditions, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        d = self.config.distill
        with torch.no_grad():
            x = self.rollout(c, step, phase=0, grad=False).video
        frames = x.shape[2]
        rng = c.random(self.config.seed, step, 0, 2)
        s, noise, x_t, mask, cond = self._noised(c, x, rng)
        store, handle = _last_block_features(self.critic)
        try:
            v = self._velocity(self.critic, x_t, s, mask, cond, c.text, c, frames)
            flow = F.mse_loss(v, noise - x)
            total, logs = flow, {"flow": float(flow.detach())}
            if d.discriminator_weight > 0:
                sv = s.view(-1, 1, 1, 1, 1)
                real = (1 - sv) * c.latents[:, :, :frames] + sv * rng.randn(*x.shape[1:])
                self._velocity(self.critic, real, s, mask, cond, c.text, c, frames)
                fake_logit, real_logit = self.discriminator(store[0]), self.discriminator(store[1])
                disc = F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()
                total = total + d.discriminator_weight * disc
                logs["disc"] = float(disc.detach())
        finally:
            handle.remove()
        logs["loss"] = float(total.detach())
        return total, logs

    def phases(self, step: int) -> list[Phase]:
        critic = Phase("critic", "critic", [*self.critic.parameters(), *self.discriminator.parameters()],
                       lambda c, _i: self.critic_loss(c, step))  # fmt: skip
        if step % self.config.distill.generator_every:
            return [critic]
        # Frozen around the losses *and* their backward: a checkpointed critic recomputes its blocks in
        # the backward pass and must see the same requires_grad flags as in the forward.
        generator = Phase("generator", "generator", list(self.generator.parameters()),
                          lambda c, _i: self.generator_loss(c, step),
                          context=lambda: frozen(self.critic, self.discriminator))  # fmt: skip
        return [critic, generator]
