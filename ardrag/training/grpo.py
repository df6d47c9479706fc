"""Stage 2: GRPO on the causal student with selective stochasticity (paper section 3.3), on the sampler
that inference runs.

**Rollouts.** For every condition (reference, prompt, trajectories) G rollouts are generated frame by
frame with the KV cache by the deployed sampler (:mod:`ardrag.inference.sampler`: x0 prediction,
re-noising to the next level, the noise in place of the reference drawn once per frame, the cache write
on the clean frame), the very code that ``StreamSession`` runs. A one-row rollout and a session given the
same draws give the same frames, bit for bit on CPU in float32 (tests/inference/test_sampler.py); a row of
a batched rollout agrees up to float rounding (batched matrix products round differently).

**Selective stochasticity.** The re-noising draw x_{n+1} = (1 - s_{n+1}) x0_theta(x_n) + s_{n+1} eps is
Gaussian around a model-dependent mean: N((1 - s_{n+1}) x0_theta(x_n), s_{n+1}^2 I). In each latent frame
after the first, exactly one transition n^ (drawn per frame from the condition's seed, shared by its G
rollouts, among the N - 1 re-noising transitions) is the policy's stochastic action: its eps comes from
each rollout's own stream (:class:`~ardrag.inference.sampler.SelectiveNoise`). Every other draw (the
other transitions' eps, the starting noise, the noise inputs) is fixed by the condition's seed and, with
``shared_noise`` (the default), the same for the G rollouts, as DanceGRPO shares its initial noise: the
rollouts of a group differ only by the draws that the log-probability covers. Without ``shared_noise``
every rollout draws its own, and reward differences that come from that noise, which no update can
credit, add to the advantages' noise. Kept per frame is what training needs: the action's input and
output, its index, the frame's inputs, the clean frame and the old log-probability; no activations.

**Log-probability** of the action: the diagonal Gaussian's, computed in float32 and averaged over the
frame's elements (public GRPO code does the same; it keeps ratios near 1). Replaying a rollout under
unchanged weights gives the same log-probability bit for bit, so the ratio is exactly 1 before an update.

**Loss** (Eq. 13, 14), over the frames that follow the reference (Eq. 14's sum; frame 0 regenerates the
reference, its motion reward is constant by construction, and it carries no action): per latent frame m,
the reward of rollout i is normalised by the mean and the standard deviation (population, + 1e-6) of
frame m's rewards over the G rollouts (equal rewards give zero advantage); with r = exp(log p_theta -
log p_old) of the frame's action, loss = mean over i, m of [-min(r A, clip(r, 1 - eps, 1 + eps) A) +
beta KL], KL in closed form for two Gaussians with the same std: ||mean_theta - mean_ref||^2 / (2 std^2),
averaged like the log-probability, against the frozen starting student. With ``updates_per_rollout`` > 1
the same rollouts serve several optimizer steps (the ratio moves away from 1 after the first).

**LoRA** (``lora`` set): the policy trains one adapter, ``"default"``, over frozen starting weights
(:mod:`ardrag.training.lora`); the reference stays the plain starting student, and the export is the
plain student with the adapter merged in (W0 + dW). A subclass stage names its own adapters and their
scales at the merge (:meth:`GRPOStage.lora_adapters`, :meth:`GRPOStage.lora_scales`).

**Deviations from the paper, and why:**
- The stochastic transition is the sampler's own re-noising draw, not an SDE step of the flow ODE (the
  paper's Eq. 4, with a noise level): the deployed sampler re-noises, so its draw is the policy's only
  randomness after the starting noise, and no noise level is needed. So the candidates are the N - 1
  re-noising transitions of a frame: the last denoising step gives the clean frame and draws nothing.
- Frame 0 carries no action and is left out of the loss: it regenerates the reference, its motion
  reward is constant, and Eq. 14 sums the frames after it.
- Rollouts run without classifier-free guidance (the student is distilled to run without it; the
  stage's pipeline has ``guidance_scale`` 1): a session generating with guidance > 1 runs another
  sampler than the one GRPO trained.
- Replay rebuilds each frame's KV cache from the rollout's clean frames without gradients: the
  log-probability of frame m differentiates through frame m's pass only, not through the cached frames
  before it (their gradient would need the whole rollout's graph kept, frame after frame).
- The log-probability and the KL are averaged over a frame's elements rather than summed (a constant
  factor that keeps the ratios near 1 and the clip range meaningful).
- The rewards of a rollout come from the whole decoded clip, mapped to latent frames
  (``ardrag.rewards.latent_frame_rewards``); the advantages are per latent frame, as in Eq. 13.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom, SelectiveNoise, training_sampler
from ardrag.model.transformer_ardrag import CausalARDragTransformer, KVCache
from ardrag.training.conditions import Conditions
from ardrag.training.trainer import Phase, Stage


# -- the rollouts --------------------------------------------------------------------------------
def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, std^2 I) per sample (std a number or one per sample), averaged over the non-batch
    dimensions, in float32."""
    x, mean = x.float(), mean.float()
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(-1, *[1] * (x.ndim - 1))
    lp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.mean(dim=tuple(range(1, lp.ndim)))


@dataclass
class FrameStep:
    """One latent frame of a rollout: its action (one per row, or none) and what replaying it needs."""

    frame: int
    step: torch.Tensor  # (B,) long: each row's stochastic transition n^ (-1: none, as in frame 0)
    x_in: torch.Tensor  # (B, 16, 1, h, w): x at level n^ (zeros where no action)
    x_out: torch.Tensor  # x at level n^ + 1, the action
    logp: torch.Tensor  # (B,) old log-probability
    mean: torch.Tensor  # the actions' Gaussian means under the rollout's weights
    std: torch.Tensor  # (B,)
    mask: torch.Tensor
    cond: torch.Tensor
    clip: torch.Tensor
    clean: torch.Tensor  # what was written into the cache

    @property
    def scored(self) -> bool:
        """Whether the frame carries actions (in every row, as ``SelectiveNoise`` requires): it enters the
        loss."""
        return bool((self.step >= 0).all())


@dataclass
class SelectiveRollout:
    frames: list[FrameStep]
    clean: torch.Tensor  # (B, 16, F, h, w)
    trace: list[tuple[int, int, list[str], torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cache: KVCache | None = None

    @property
    def scored(self) -> list[FrameStep]:
        """The frames that enter the loss (every frame after the first)."""
        return [f for f in self.frames if f.scored]


def _velocity(model: CausalARDragTransformer, c: Conditions, cache: KVCache, m: int, x: torch.Tensor,
              t: float | torch.Tensor, mask: torch.Tensor, cond: torch.Tensor, clip: torch.Tensor,
              write: bool = False) -> torch.Tensor:  # fmt: skip
    """v of latent frame m at timestep t (a number, or one per row)."""
    dtype = next(model.parameters()).dtype
    # float32 timesteps, as StreamSession passes them (bf16 would round 755 to 756)
    ts = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0]).contiguous()
    x_in = torch.cat([x, mask, cond], 1).to(dtype)
    v = model.forward_frame(x_in, ts, c.text.to(dtype), cache, clip.to(dtype),
                            control=c.control[:, :, m : m + 1].to(dtype), write=write)  # fmt: skip
    return v.float()


@torch.no_grad()
def selective_rollout(
    model: CausalARDragTransformer,
    c: Conditions,
    noise: FrameNoise,
    *,
    sampler: FrameSampler,
    window: int,
    frames: int | None = None,
    trace: bool = False,
) -> SelectiveRollout:
    """Generate ``frames`` latent frames (default: ``noise``'s stochastic steps', else ``c.frames``) with
    the deployed sampler and ``noise``'s draws: a :class:`SelectiveNoise` makes its picked transitions the
    policy's actions and records them; a plain :class:`FrameNoise` gives the deterministic sampler given
    the seeds (``trace`` records every transition, with each row's kind, for tests)."""
    if sampler.kind != "renoise":
        raise ValueError(f"GRPO's actions are re-noising draws; the sampler is {sampler.kind!r}")
    selective = isinstance(noise, SelectiveNoise)
    if frames is None:
        frames = noise.steps.shape[1] if selective else c.frames
    cache = model.new_cache(window)
    b = c.batch
    out = SelectiveRollout([], c.latents.new_zeros(0), cache=cache)
    clean_frames = []
    for m in range(frames):
        mask, cond, clip = noise.inputs(m, c.ref_latent, c.clip)
        # each row's action step: bookkeeping on the CPU, as SelectiveNoise keeps it
        picked = noise.picked(m) if selective else torch.full((b,), -1, device="cpu")
        x = noise.start(m, c.ref_latent)
        got = {"x_in": torch.zeros_like(x), "x_out": torch.zeros_like(x), "mean": torch.zeros_like(x)}

        def on_step(n: int, x: torch.Tensor, x0: torch.Tensor, x_next: torch.Tensor, m=m, picked=picked,
                    got=got) -> None:  # fmt: skip
            rows = (picked == n).to(x.device)
            if trace:
                out.trace.append((m, n, ["action" if r else "fixed" for r in rows.tolist()], x, x_next))
            if rows.any():
                sel = rows.view(-1, 1, 1, 1, 1)
                got["x_in"] = torch.where(sel, x, got["x_in"])
                got["x_out"] = torch.where(sel, x_next, got["x_out"])
                got["mean"] = torch.where(sel, sampler.mean(x0, n), got["mean"])

        def predict(x: torch.Tensor, n: int, m=m, mask=mask, cond=cond, clip=clip) -> torch.Tensor:
            v = _velocity(model, c, cache, m, x, sampler.timesteps[n], mask, cond, clip)
            return sampler.predict(x, v, n)

        clean, _ = sampler.run(predict, x, lambda n, m=m: noise.renoise(m, n, c.ref_latent), on_step=on_step)
        _velocity(model, c, cache, m, clean, sampler.write_timestep, mask, cond, clip, write=True)
        clean_frames.append(clean)
        std = torch.tensor([sampler.std(n) if n >= 0 else 1.0 for n in picked.tolist()], device=x.device)
        logp = gaussian_logprob(got["x_out"], got["mean"], std)
        out.frames.append(FrameStep(m, picked.long(), got["x_in"], got["x_out"], logp, got["mean"], std,
                                    mask, cond, clip, clean))  # fmt: skip
    out.clean = torch.cat(clean_frames, 2)
    return out


def replay(
    model: CausalARDragTransformer, c: Conditions, rollout: SelectiveRollout, *, sampler: FrameSampler,
    window: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """(log-probabilities (B, S), Gaussian means per scored frame) of the rollout's actions under
    ``model``'s current weights (with gradients when enabled): one forward per scored frame with each row
    at its own step; the cache is rebuilt from the rollout's clean frames, written without gradients."""
    cache = model.new_cache(window)
    logps, means = [], []
    for f in rollout.frames:
        if f.scored:
            t = torch.tensor([sampler.timesteps[n] for n in f.step.tolist()], device=f.x_in.device)
            v = _velocity(model, c, cache, f.frame, f.x_in, t, f.mask, f.cond, f.clip)
            mean = torch.zeros_like(f.x_in)
            for n in sorted(set(f.step.tolist())):  # the same arithmetic as the rollout, per step
                sel = (f.step == n).to(f.x_in.device).view(-1, 1, 1, 1, 1)
                mean = torch.where(sel, sampler.mean(sampler.predict(f.x_in, v, n), n), mean)
            logps.append(gaussian_logprob(f.x_out, mean, f.std))
            means.append(mean)
        with torch.no_grad():
            _velocity(model, c, cache, f.frame, f.clean, sampler.write_timestep, f.mask, f.cond, f.clip,
                      write=True)  # fmt: skip
    return torch.stack(logps, 1), means


# -- advantages and loss -------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-6) -> torch.Tensor:
    """Per-frame advantages (Eq. 13) of rewards (B * G, F), rows grouped by condition (G consecutive
    rows each): (r - mean) / (std + eps) over each group, per frame."""
    if rewards.ndim != 2 or rewards.shape[0] % group:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)}; expected (conditions x {group}, frames)")
    r = rewards.double().view(-1, group, rewards.shape[1])
    mean, std = r.mean(1, keepdim=True), r.std(1, correction=0, keepdim=True)
    return ((r - mean) / (std + eps)).view_as(rewards).to(torch.float32)


def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, means: list[torch.Tensor],
              ref_means: list[torch.Tensor], stds: list[torch.Tensor], clip_range: float, kl_beta: float,
              ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Eq. 14 as a loss to minimise; all per (rollout, frame), averaged."""
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    policy = -torch.minimum(unclipped, clipped)
    kl = torch.stack(
        [((mu.float() - ref.float()) ** 2).mean(dim=(1, 2, 3, 4))
         / (2 * torch.as_tensor(std, device=mu.device).float() ** 2)
         for mu, ref, std in zip(means, ref_means, stds, strict=True)], 1,
    )  # fmt: skip
    loss = (policy + kl_beta * kl).mean()
    return loss, {
        "policy": float(policy.mean().detach()), "kl": float(kl.mean().detach()),
        "ratio_max_dev": float((ratio.detach() - 1).abs().max()),
        "clip_fraction": float(((ratio.detach() - 1).abs() > clip_range).float().mean()),
    }  # fmt: skip


def stochastic_steps_for(seeds: list[int], frames: int, transitions: int) -> torch.Tensor:
    """(len(seeds), frames): each frame's stochastic transition (one of ``transitions``) for each seed;
    -1 in frame 0, which carries no action."""
    if transitions < 1:
        raise ValueError("GRPO's action is a re-noising transition: the schedule needs at least 2 steps")
    rows = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)  # on the CPU: every device picks the same steps
        first = torch.full((1,), -1, device="cpu")
        rows.append(torch.cat([first, torch.randint(transitions, (frames - 1,), generator=g, device="cpu")]))
    return torch.stack(rows)


def repeat_conditions(c: Conditions, group: int) -> Conditions:
    """Each condition G times in a row (the rollouts of one group are consecutive rows)."""

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat_interleave(group, 0)

    extra: dict[str, Any] = {}
    for name in ("tracks", "visible", "intensity"):
        value = getattr(c, name, None)
        extra[name] = None if value is None else np.repeat(value, group, axis=0)
    return Conditions(
        latents=rep(c.latents), control=rep(c.control), ref_latent=rep(c.ref_latent), clip=rep(c.clip),
        text=rep(c.text), text_neg=rep(c.text_neg),
        index=[i * group + g for i in c.index for g in range(group)],
        keys=[k for k in c.keys for _ in range(group)], **extra,
    )  # fmt: skip


# -- the stage -----------------------------------------------------------------------------------
def decode_video(pipe: Any, clean: torch.Tensor) -> np.ndarray:
    """Clean normalised latents (B, 16, F, h, w) -> uint8 videos (B, T, H, W, 3), decoded with the streaming
    decoder's cheaper convolutions and norms (``fast_vae``: the same frames up to float rounding)."""
    from ardrag.model.vae import denormalize_latents, fast_vae, to_uint8_frames

    with torch.no_grad(), fast_vae(pipe.vae):
        video = pipe.vae.decode(denormalize_latents(pipe.vae, clean.to(pipe.vae.dtype)), return_dict=False)[0]
    return to_uint8_frames(video).cpu().numpy()


def reward_tracker(name: str, device: torch.device) -> Any:
    """The motion reward's tracker (not yet set up), as the evaluation tracks: small videos upscaled
    first. A tracker with a network (CoTracker) runs on ``device``, the policy's; OpenCV's runs on the
    host."""
    from ardrag.data.trackers import CONFIGS
    from ardrag.data.trackers.scaled import metric_tracker

    networked = name in CONFIGS and "device" in CONFIGS[name].model_fields
    return metric_tracker(name, {"device": str(device)} if networked else None)


class GRPOStage(Stage):
    name = "grpo"
    main = "policy"

    def __init__(self, config: Any, pipe: Any, start: Any):
        import copy

        from ardrag.rewards import AestheticScorer

        # the stage's settings (``config.grpo``; a subclass's own section, e.g. ``config.copo``)
        self.config, self.pipe, self.rl = config, pipe, getattr(config, self.name)
        g = self.rl
        self.sampler = training_sampler(g.timesteps, pipe)  # the deployed sampler, with g's schedule
        self.policy = CausalARDragTransformer.from_config({**start.config, "cache_window": g.cache_window})
        self.policy.load_state_dict(start.state_dict())
        self.policy.to(start.device).train()
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        if config.lora is not None:  # the adapter trains, the starting weights stay (and the reference)
            from ardrag.training.lora import add_adapters

            add_adapters(self.policy, config.lora, self.lora_adapters())
        from ardrag.training import parallel

        if parallel.wanted(config):
            parallel.shard(self.policy)
            parallel.shard(self.reference)
        if g.aesthetic_clip is None or g.aesthetic_head is None:
            self.scorer = AestheticScorer.tiny(config.seed)  # check_config: random/toy models only
        else:
            self.scorer = AestheticScorer.from_paths(g.aesthetic_clip, g.aesthetic_head)
        # the reward's networks on the policy's device (score() moves each batch of frames there)
        self.scorer.clip.to(start.device)
        self.scorer.head.to(start.device)
        self.tracker = reward_tracker(g.tracker, start.device)
        self.tracker.setup()
        o = config.optim
        self._optimizer = torch.optim.AdamW(
            self.trained(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        self._collected: dict[int, dict[str, Any]] = {}

    def trained(self) -> list[torch.nn.Parameter]:
        """The policy's parameters the optimizer steps: every one, or with LoRA the adapter's."""
        return [p for p in self.policy.parameters() if p.requires_grad]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"policy": self.policy}

    def lora_adapters(self) -> list[str]:
        """The adapters the policy trains when ``config.lora`` is set (a subclass stage may train more)."""
        return ["default"]

    def lora_scales(self) -> dict[str, float]:
        """Each adapter's scale in the exported model, W0 + sum_a scale_a dW_a."""
        return {"default": 1.0}

    def export_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """With LoRA, the plain student with the adapters merged in (:meth:`lora_scales`)."""
        if self.config.lora is None:
            return model
        from ardrag.training.lora import merged

        return merged(model, self.lora_scales())

    def models(self) -> dict[str, torch.nn.Module]:
        return {**super().models(), "reference": self.reference, "aesthetic_clip": self.scorer.clip,
                "aesthetic_head": self.scorer.head}  # fmt: skip

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self._optimizer}

    def conditions(self, raw: dict[str, Any], index: list[int]) -> Conditions:
        """A loader batch's conditions, once each, without guidance (the RL stages sample without it)."""
        from ardrag.training.conditions import prepare

        d = self.config.data
        return prepare(self.pipe, raw, index, d.scale, d.max_frames, guided=False)

    def batch(self, raw: dict[str, Any], index: list[int]) -> Conditions:
        return repeat_conditions(self.conditions(raw, index), self.rl.group_size)

    def _kw(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "window": self.rl.cache_window}

    def rewards(self, c: Conditions, clean: torch.Tensor, **extra: Any) -> dict[str, torch.Tensor]:
        """Per-rollout, per-latent-frame rewards (B, F) of each registered reward, and their weighted sum;
        ``extra``: more arguments for every reward (a subclass stage's, e.g. step prompts)."""
        from ardrag.rewards import REWARDS, latent_frame_rewards

        g = self.rl
        videos = decode_video(self.pipe, clean)
        t = videos.shape[1]
        per: dict[str, list[np.ndarray]] = {name: [] for name in g.reward_weights}
        for i, video in enumerate(videos):
            kwargs = {
                "scorer": self.scorer, "tracker": self.tracker, "tracks": c.tracks[i, :t],
                "visible": c.visible[i, :t], "alpha": g.motion_alpha, "lam": g.motion_lambda, **extra,
            }  # fmt: skip
            for name in g.reward_weights:
                per[name].append(latent_frame_rewards(REWARDS[name](video, **kwargs)))
        # host-side numbers (the rewards are computed on decoded videos); the advantages move to the device
        out = {name: torch.tensor(np.stack(v), dtype=torch.float32, device="cpu") for name, v in per.items()}
        out["total"] = sum(g.reward_weights[name] * out[name] for name in g.reward_weights)
        return out

    def collect(self, c: Conditions, step: int) -> dict[str, Any]:
        """Rollouts (no gradients), rewards, advantages and the reference policy's means."""
        from ardrag.training.conditions import sample_seed

        g, kw = self.rl, self._kw()
        frames = min(g.latent_frames, c.frames)
        if frames < 2:
            raise ConfigError(
                f"clips {c.keys[:3]} have {c.frames} latent frame(s): GRPO's actions are in the frames "
                "after the reference, so it needs at least 2 (5 pixel frames; raise data.max_frames or "
                "drop short clips)"
            )
        # per condition, shared by its G rollouts
        seeds = [sample_seed(self.config.seed, step, i // g.group_size, 5) for i in c.index]
        transitions = kw["sampler"].transitions
        steps = stochastic_steps_for(seeds, frames, transitions)
        if g.shared_noise:  # every draw but the actions per condition; the actions per rollout
            shared = [sample_seed(self.config.seed, step, 3, i // g.group_size) for i in c.index]
            rng = SampleRandom(shared, c.latents.device)
        else:
            rng = c.random(self.config.seed, step, 3)
        noise = SelectiveNoise(rng, c.random(self.config.seed, step, 4), steps, transitions)
        rollout = selective_rollout(self.policy, c, noise, **kw)
        rewards = self.rewards(c, rollout.clean)
        with torch.no_grad():
            _, ref_means = replay(self.reference, c, rollout, **kw)
        scored = [f.frame for f in rollout.scored]
        advantages = group_advantages(rewards["total"][:, scored], g.group_size).to(c.latents.device)
        return {"rollout": rollout, "rewards": rewards, "ref_means": ref_means, "advantages": advantages,
                "scored": scored}  # fmt: skip

    def policy_loss(self, c: Conditions, got: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 14 on collected rollouts, under the policy's current weights (with gradients)."""
        g = self.rl
        rollout = got["rollout"]
        logp, means = replay(self.policy, c, rollout, **self._kw())
        old = torch.stack([f.logp for f in rollout.scored], 1)
        return grpo_loss(logp, old, got["advantages"], means, got["ref_means"],
                         [f.std for f in rollout.scored], g.clip_range, g.kl_beta)  # fmt: skip

    def loss(
        self, c: Conditions, micro: int, step: int, update: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if update == 0:
            self._collected[micro] = self.collect(c, step)
        got = self._collected[micro]
        loss, logs = self.policy_loss(c, got)
        if update == 0:
            # over the frames the loss sees (frame 0's motion reward is constant)
            logs.update({f"reward_{k}": float(v[:, got["scored"]].mean()) for k, v in got["rewards"].items()})
        if update == self.rl.updates_per_rollout - 1:
            self._collected.pop(micro, None)
        logs["loss"] = float(loss.detach())
        return loss, logs

    def phases(self, step: int) -> list[Phase]:
        params = self.trained()
        return [
            Phase("grpo" if u == 0 else f"grpo_update{u}", "policy", params,
                  lambda c, i, u=u: self.loss(c, i, step, u))
            for u in range(self.rl.updates_per_rollout)
        ]  # fmt: skip


def debiased_ema(values: list[float], smoothing: float) -> list[float]:
    """TensorBoard's smoothing: an EMA started at 0 and divided by ``1 - smoothing ** n`` after n values,
    i.e. at each step the exponentially weighted mean of the values so far. An EMA started at the first
    value instead gives that one value the weight of ~1 / (1 - smoothing) values for the first steps."""
    out, acc = [], 0.0
    for n, value in enumerate(values, 1):
        acc = smoothing * acc + (1 - smoothing) * value
        out.append(acc / (1 - smoothing**n))
    return out


def plot_rewards(losses: Path, out: Path, smoothing: float = 0.9, prefix: str = "grpo") -> Path | None:
    """Reward curves per step (each logged reward: motion and aesthetic first, then any other, e.g.
    TempAct's step following; raw and smoothed by an EMA), like the paper's Figure 6, from a run's
    losses.jsonl; None when nothing was logged."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (
        [json.loads(line) for line in losses.read_text().splitlines() if line.strip()]
        if losses.is_file()
        else []
    )
    first = (f"{prefix}/reward_motion", f"{prefix}/reward_aesthetic")
    logged = {k for r in rows for k in r if k.startswith(f"{prefix}/reward_")} - {f"{prefix}/reward_total"}
    names = [k for k in first if k in logged] + sorted(logged - set(first))
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        steps = [r["step"] for r in rows if name in r]
        raw = [r[name] for r in rows if name in r]
        smooth = debiased_ema(raw, smoothing)
        ax.plot(steps, raw, color="tab:blue", alpha=0.35, label="raw")
        ax.plot(steps, smooth, color="tab:blue", label=f"smoothed (EMA {smoothing})")
        ax.set_title(name.split("_", 1)[1] + " reward")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
