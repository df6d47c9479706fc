"""Stage: TempAct's executor RL (planner-executor RL for step-wise prompts; a digest is
``shared/reference/RL-AND-STREAMING-NOTES.md``, section 3), on the sampler that inference runs.

**Planning groups.** Each condition's caption is the instruction. The planner (:mod:`ardrag.planners`,
``tempact.planner``) samples ``plans`` plans for it, one seed each (:meth:`sample`); a plan the planner's
validation refuses falls back to the instruction as one step (format score 0), as TempAct's code does.
A plan maps the clip's pixel frames to step prompts, switched as ``ardrag generate --prompt-schedule``
switches them: a step's prompt from the latent frame that holds its start frame on (frames before the
first step follow the instruction), and at that frame the prompt switches as ``StreamSession.set_prompt``
switches it: ``keep`` leaves the KV cache as it is, ``recache`` writes the frames in the cache's view
again under the new prompt (LongLive), the same frames in the same order as the session
(tests/training/test_tempact.py checks the two bit for bit). Each step prompt is encoded alone, as the
session encodes one. With ``lookahead`` it is encoded joined with the next step's (TempAct's code); the
rewards always score against the step's own text.

**Execution groups** (:func:`plan_rollout`). For each plan, a fork frame f is drawn (seeded) among the
plan's switch frames after the first latent frame (TempAct forks at a prompt-switch boundary; a plan with
no switch forks at a frame drawn from 1 .. F - 1). Frames 0 .. f - 1 are generated once, at batch 1, by the
deployed sampler (:class:`~ardrag.inference.sampler.FrameSampler`, the ``_velocity`` pass that GRPO and
AR-CoPO share): the shared visual context. A recache at f runs once, on that context; then its KV cache
is repeated E times (``group_size``), and each continuation draws fresh noise for every remaining frame
and every re-noising step (TempAct's exploration; AR-CoPO would share it) and finishes the clip. The
plans of one instruction share these draws (the prefix's and each continuation's), so that their
rewards differ by the plan, not by the noise. Only frame f is recorded for training: its
every re-noising transition (all but the last denoising step), each a Gaussian action
N((1 - s') x0_theta(x_n), s'^2) whose log-probability is averaged over elements, as in GRPO.

**Rewards.** Executor (local): over the latent frames of the step that starts at f (to the next switch
or the clip's end), the weighted sum of the registered rewards (``reward_weights``; by default
``step_following``, the CLIP text-image similarity of each pixel frame with the step prompt active at it,
and ``aesthetic``), averaged over the window. Advantage: the reward minus its mean over the plan's E
continuations, divided by the standard deviation (Bessel-corrected) of all the rewards of the batch
(every process's, gathered) + 1e-6, clipped to +-``advantage_clip`` (TempAct's code). Planner
(global): the same weighted rewards over every latent frame after the first, each against its own step
prompt, averaged over the E continuations, minus ``format_penalty`` (1 - format score); plan
advantages are normalised per instruction over its P plans (population std + 1e-6; equal rewards give
zero).

**Executor loss**: GRPO's clipped objective (:func:`ardrag.training.grpo.grpo_loss`) over frame f's
transitions and the E continuations of every plan, with the KL to the starting student in closed form.
Replay rebuilds the prefix's cache from its stored clean frames and inputs under the same prompts and
switches, without gradients, and runs frame f's passes at the rollout's batch shape: unchanged weights
give the rollout's log-probabilities bit for bit, so the ratio is exactly 1 before an update.

**Planner credit** (``planner_credit``, an LM planner): a second phase per step trains the LM with a
sequence-level ratio (GSPO, as TempAct's code): log rho = the mean over the answer's tokens of
log pi_theta - log pi_old, the loss -min(rho A, clip(rho, 1 +- ``planner_clip_range``) A) with the plan
advantage clipped to +-1. TempAct's per-token KL on the planner is left out. Without it the plan
advantages are still computed and logged (``plan_adv_abs``), so a run shows how much the plans differ.

**Choices the sources leave open, made here:** the fork is drawn per plan and step (TempAct: once per
epoch from {6, 12} latent frames); the reward is a CLIP similarity and the aesthetic predictor in place of
a VLM judge and PickScore; the continuation always runs to the clip's end (``latent_frames`` caps it);
the plans of an instruction share their noise. The rollouts' KV cache has no attention sink (as GRPO's
and AR-CoPO's): a pipeline with ``attention_sink`` > 0 streams with one that training does not see.
The planner trains every weight of the LM (TempAct: LoRA); at the end of a run it is saved as
``<run_dir>/planner``, a folder the ``llm`` planner loads.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom
from ardrag.model.transformer_ardrag import CausalARDragTransformer
from ardrag.planners import latent_frame
from ardrag.training.conditions import Conditions, sample_seed
from ardrag.training.copo import _rank_world, _Rows, _select, neighbourhood_advantages, repeat_cache
from ardrag.training.grpo import GRPOStage, _velocity, gaussian_logprob, grpo_loss, repeat_conditions
from ardrag.training.trainer import Phase

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a frame's (mask, image condition, CLIP tokens)


# -- prompts per frame ---------------------------------------------------------------------------
def pixel_frames(latent_frames: int) -> int:
    return 1 + 4 * (latent_frames - 1)


@dataclass(frozen=True)
class Schedule:
    """A plan laid over a clip's latent frames: the texts to encode, and each frame's."""

    texts: tuple[str, ...]  # what the text encoder gets (with lookahead, joined with the next step's)
    steps: tuple[str, ...]  # each step's own prompt, what the rewards score against
    frame_step: tuple[int, ...]  # (F,) the step of each latent frame
    switches: tuple[int, ...]  # latent frames where a new step starts (after frame 0)

    @classmethod
    def from_plan(cls, plan: Any, frames: int, lookahead: bool = False, instruction: str | None = None,
                  ) -> Schedule:  # fmt: skip
        """``plan`` (an :class:`ardrag.planners.Plan` over ``pixel_frames(frames)`` frames) switched as
        ``ardrag generate`` switches its schedule: a step's prompt from the latent frame that holds its
        start frame (``PromptSwitch.latent_frame``) on. Frames before the first step follow
        ``instruction`` (``--prompt``'s part; required when the plan starts after frame 0)."""
        steps = [s.text for s in plan.steps]
        starts = [latent_frame(s.start) for s in plan.steps]
        if starts[0] > 0:
            if instruction is None:
                raise ValueError("the plan starts after frame 0; the frames before it need the instruction")
            steps, starts = [instruction, *steps], [0, *starts]
        frame_step = tuple(max(i for i, st in enumerate(starts) if st <= m) for m in range(frames))
        texts = tuple(
            f"{a} {b}" if lookahead and i + 1 < len(steps) else a
            for i, (a, b) in enumerate(zip(steps, [*steps[1:], ""], strict=True))
        )
        switches = tuple(m for m in range(1, frames) if frame_step[m] != frame_step[m - 1])
        return cls(texts, tuple(steps), frame_step, switches)

    def pixel_prompts(self, frames: int) -> list[str]:
        """The step prompt of each pixel frame of ``frames`` latent frames (a latent frame's pixel frames
        share its step)."""
        return [self.steps[self.frame_step[latent_frame(t)]] for t in range(pixel_frames(frames))]

    def window(self, fork: int) -> tuple[int, int]:
        """The latent frames [start, end) of the step that holds frame ``fork``."""
        end = next((s for s in self.switches if s > fork), len(self.frame_step))
        return fork, end


# -- the rollout ---------------------------------------------------------------------------------
class _Context:
    """A KV cache and the frames written into it that are still in view, what a recache writes again
    (``StreamSession`` keeps the same), for the training passes of one plan."""

    def __init__(self, model: CausalARDragTransformer, window: int, sampler: FrameSampler,
                 texts: torch.Tensor, schedule: Schedule, control: torch.Tensor, mode: str):  # fmt: skip
        self.model, self.window, self.sampler = model, window, sampler
        self.texts, self.schedule, self.control, self.mode = texts, schedule, control, mode
        self.cache = model.new_cache(window)
        self.rows = 1
        self.written: list[tuple[int, int, torch.Tensor, Inputs]] = []  # (cache index, frame, clean, inputs)

    def inputs_of(self, m: int) -> _Rows:
        """Frame m's text (its step's) and control, one row per continuation."""
        i = self.schedule.frame_step[m]
        return _Rows(self.texts[i : i + 1], self.control).expand(self.rows)

    def velocity(self, m: int, x: torch.Tensor, t: float | torch.Tensor, inputs: Inputs,
                 write: bool = False, prompt: int | None = None) -> torch.Tensor:  # fmt: skip
        """v of frame m (under frame ``prompt``'s text; default: its own)."""
        rows = self.inputs_of(m if prompt is None else prompt)
        return _velocity(self.model, rows, self.cache, m, x, t, *inputs, write=write)

    def write(self, m: int, clean: torch.Tensor, inputs: Inputs, prompt: int | None = None) -> None:
        """Frame m's cache write (``StreamSession._write``'s bookkeeping: the frames in view are kept)."""
        self.velocity(m, clean, self.sampler.write_timestep, inputs, write=True, prompt=prompt)
        self.written.append((self.cache.frames_written - 1, m, clean, inputs))
        view = set(self.cache.cached())
        self.written = [w for w in self.written if w[0] in view]

    def begin(self, m: int, fork: int, rows: int) -> None:
        """Before frame m: the prompt switch (``recache``: the frames in view written again, in time
        order, into a fresh cache under frame m's prompt; ``keep``: nothing), then at the fork the cache
        repeated for ``rows`` continuations (after the recache: it runs once, at batch 1)."""
        if self.mode == "recache" and m in self.schedule.switches:
            frames, self.written = self.written, []
            self.cache = self.model.new_cache(self.window)
            for _, k, clean, inputs in frames:
                self.write(k, clean, inputs, prompt=m)  # under the new prompt: frame m's
        if m == fork:
            self.cache = repeat_cache(self.cache, rows)
            self.rows = rows
            self.written = [
                (i, k, c.expand(rows, *c.shape[1:]), tuple(t.expand(rows, *t.shape[1:]) for t in x))
                for i, k, c, x in self.written
            ]  # fmt: skip


@dataclass
class PlanRollout:
    """One plan's execution group: the shared prefix, and frame f's recorded transitions per
    continuation (tensors [transition, continuation, ...])."""

    fork: int
    prefix: torch.Tensor  # (1, 16, fork, h, w)
    prefix_inputs: list[Inputs]  # each prefix frame's noise inputs (one row)
    fork_inputs: Inputs  # frame f's, one row per continuation
    x_in: torch.Tensor  # (S, E, 16, 1, h, w) x_n at each transition
    x_out: torch.Tensor  # x_{n+1}, the action
    std: torch.Tensor  # (S,)
    logp: torch.Tensor  # (E, S)
    clean: torch.Tensor | None  # (E, 16, F, h, w) every continuation's whole clip (dropped once scored)


@torch.no_grad()
def plan_rollout(
    model: CausalARDragTransformer, c: Conditions, row: int, *, texts: torch.Tensor, schedule: Schedule,
    sampler: FrameSampler, window: int, fork: int, end: int, shared: int, seeds: list[int], mode: str,
) -> PlanRollout:  # fmt: skip
    """Condition ``row`` under one plan (``texts``: (len(schedule.texts), 512, D), encoded): frames
    0 .. fork - 1 at batch 1 from the stream ``shared``, then len(seeds) continuations, each from its own
    stream, to frame ``end`` - 1 (the module docstring)."""
    if sampler.kind != "renoise":
        raise ValueError(f"TempAct's actions are re-noising draws; the sampler is {sampler.kind!r}")
    if not 1 <= fork < end <= c.frames:
        raise ValueError(f"fork at frame {fork}, end {end} for a clip of {c.frames} latent frames")
    e = len(seeds)
    ctx = _Context(model, window, sampler, texts, schedule, c.control[row : row + 1], mode)
    ref, tokens = c.ref_latent[row : row + 1], c.clip[row : row + 1]
    shared_noise = FrameNoise(SampleRandom([shared], c.latents.device))
    own = FrameNoise(SampleRandom(seeds, c.latents.device))
    rec: dict[str, list[torch.Tensor]] = {"x_in": [], "x_out": [], "mean": []}
    frames, inputs_of = [], []
    for m in range(end):
        ctx.begin(m, fork, e)
        noise = shared_noise if m < fork else own
        r, t = (
            (ref, tokens)
            if m < fork
            else (ref.expand(e, *ref.shape[1:]), tokens.expand(e, *tokens.shape[1:]))
        )
        inputs = noise.inputs(m, r, t)

        def on_step(n: int, x: torch.Tensor, x0: torch.Tensor, x_next: torch.Tensor, m=m) -> None:
            if m == fork:
                rec["x_in"].append(x)
                rec["x_out"].append(x_next)
                rec["mean"].append(sampler.mean(x0, n))

        clean, _ = sampler.run(
            lambda x, n, m=m, inputs=inputs: sampler.predict(
                x, ctx.velocity(m, x, sampler.timesteps[n], inputs), n
            ),
            noise.start(m, r), lambda n, m=m, noise=noise, r=r: noise.renoise(m, n, r), on_step=on_step,
        )  # fmt: skip
        ctx.write(m, clean, inputs)
        frames.append(clean)
        inputs_of.append(inputs)
    std = torch.tensor([sampler.std(n) for n in range(sampler.transitions)], device=ref.device)
    x_in, x_out, mean = (torch.stack(rec[k]) for k in ("x_in", "x_out", "mean"))
    logp = torch.stack([gaussian_logprob(x_out[n], mean[n], std[n]) for n in range(len(std))], 1)
    prefix = torch.cat(frames[:fork], 2)
    clean_all = torch.cat([prefix.expand(e, *prefix.shape[1:]), *frames[fork:]], 2)
    return PlanRollout(fork, prefix, inputs_of[:fork], inputs_of[fork], x_in, x_out, std, logp,
                       clean_all)  # fmt: skip


def replay_fork(
    model: CausalARDragTransformer, c: Conditions, row: int, r: PlanRollout, *, texts: torch.Tensor,
    schedule: Schedule, sampler: FrameSampler, window: int, mode: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """(log-probabilities (E, S), Gaussian means per transition) of frame f's recorded actions under
    ``model``'s current weights, with gradients when enabled: the prefix's cache is rebuilt from its
    clean frames (without gradients) under the plan's prompts and switches, as the rollout built it,
    then frame f's passes run at the rollout's batch shape."""
    e = r.x_in.shape[1]
    ctx = _Context(model, window, sampler, texts, schedule, c.control[row : row + 1], mode)
    with torch.no_grad():
        for m in range(r.fork):
            ctx.begin(m, r.fork, e)
            ctx.write(m, r.prefix[:, :, m : m + 1], r.prefix_inputs[m])
        ctx.begin(r.fork, r.fork, e)
    logps, means = [], []
    for n in range(len(r.std)):
        x = r.x_in[n]
        mean = sampler.mean(
            sampler.predict(x, ctx.velocity(r.fork, x, sampler.timesteps[n], r.fork_inputs), n), n
        )
        logps.append(gaussian_logprob(r.x_out[n], mean, r.std[n]))
        means.append(mean)
    return torch.stack(logps, 1), means


# -- advantages ----------------------------------------------------------------------------------
def executor_advantages(rewards: list[torch.Tensor], clip: float, world: int = 1, eps: float = 1e-6,
                        ) -> list[torch.Tensor]:  # fmt: skip
    """TempAct's: each execution group's rewards (E,) minus their mean, divided by the standard deviation
    (Bessel-corrected) of every reward of the batch (every process's: collective) + ``eps``, clipped to
    +-``clip``."""
    flat = torch.cat([r.double() for r in rewards]) if rewards else torch.zeros(0, dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        got: list[Any] = [None] * world
        dist.all_gather_object(got, flat.cpu())
        flat = torch.cat(got)
    std = flat.std() if flat.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
    return [((r.double() - r.double().mean()) / (std + eps)).clamp(-clip, clip).float() for r in rewards]


def plan_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(P,) plan rewards of one instruction -> (r - mean) / (population std + eps); one plan gets 0."""
    if rewards.numel() < 2:
        return torch.zeros(rewards.shape)
    return neighbourhood_advantages(rewards, "zscore", eps=eps)


# -- the stage -----------------------------------------------------------------------------------
@dataclass
class _PlanGroup:
    row: int
    schedule: Schedule
    texts: torch.Tensor
    rollout: PlanRollout
    ref_means: list[torch.Tensor]
    rewards: torch.Tensor  # (E,) executor
    advantages: torch.Tensor  # (E,)
    sample: Any  # the planner's PlanSample
    plan_reward: float = 0.0
    plan_advantage: float = 0.0


class TempActStage(GRPOStage):
    """GRPO's models, aesthetic scorer and reference student; TempAct's planning and execution groups."""

    name = "tempact"

    def __init__(self, config: Any, pipe: Any, start: Any):
        super().__init__(config, pipe, start)
        from ardrag.planners import get_planner
        from ardrag.rewards import TextImageScorer

        t = self.rl
        spec = dict(t.planner)
        self.planner = get_planner(spec.pop("name"), **spec)
        if hasattr(self.planner, "device"):  # an LM planner samples on the policy's device
            self.planner.device = str(start.device)
        if t.text_clip is None:
            self.text_scorer = TextImageScorer.tiny(config.seed)  # check_config: random/toy models only
        else:
            self.text_scorer = TextImageScorer.from_path(t.text_clip)
        self.text_scorer.model.to(start.device)
        self.rank, self.world = _rank_world()
        self._collected: dict[int, list[_PlanGroup]] = {}
        self._planner_optimizer = None
        if t.planner_credit:
            self.planner.setup()
            o = config.optim
            self._planner_optimizer = torch.optim.AdamW(
                self.planner.lm.parameters(), lr=t.planner_lr, betas=o.betas, weight_decay=o.weight_decay
            )

    def models(self) -> dict[str, torch.nn.Module]:
        out = {**super().models(), "text_clip": self.text_scorer.model}
        if self.rl.planner_credit:
            out["planner"] = self.planner.lm
        return out

    def modules(self) -> dict[str, torch.nn.Module]:
        out = super().modules()
        if self.rl.planner_credit:
            out["planner"] = self.planner.lm
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out = super().optimizers()
        if self._planner_optimizer is not None:
            out["planner"] = self._planner_optimizer
        return out

    def optimizer_modules(self) -> dict[str, torch.nn.Module]:
        return {"policy": self.policy, **({"planner": self.planner.lm} if self.rl.planner_credit else {})}

    def export_extra(self, run_dir: Path) -> dict[str, str]:
        """With planner credit, the trained planner LM and its tokenizer as ``<run_dir>/planner``, the
        folder the ``llm`` planner loads (``{name: llm, model: <run_dir>/planner}``); written atomically."""
        if not self.rl.planner_credit:
            return {}
        out = Path(run_dir) / "planner"
        tmp = out.with_name("planner.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.planner.lm.save_pretrained(str(tmp))
        self.planner.tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)  # a killed export leaves the previous folder or none, never half of one
        return {"planner": str(out)}

    def batch(self, raw: dict[str, Any], index: list[int]) -> Conditions:
        return self.conditions(raw, index)

    # -- collecting ------------------------------------------------------------------------------
    def frames(self, c: Conditions) -> int:
        frames = min(self.rl.latent_frames, c.frames)
        if frames < 2:
            raise ConfigError(
                f"clips {c.keys[:3]} have {c.frames} latent frame(s): TempAct forks after the reference "
                "frame, so it needs at least 2 (5 pixel frames; raise data.max_frames)"
            )
        return frames

    def encode(self, texts: tuple[str, ...]) -> torch.Tensor:
        """The texts' embeddings (n, 512, D), each encoded alone, as the session encodes a prompt (a batch
        padded to its longest text would round apart)."""
        return torch.cat([self.pipe.encode_prompt(text, guided=False)[0] for text in texts]).float()

    def fork_frame(self, schedule: Schedule, frames: int, seed: int) -> int:
        gen = torch.Generator().manual_seed(seed)
        choices = list(schedule.switches) or list(range(1, frames))
        return choices[int(torch.randint(len(choices), (1,), generator=gen))]

    def score(
        self, clean: torch.Tensor, c: Conditions, row: int, schedule: Schedule
    ) -> dict[str, np.ndarray]:
        """Per continuation and latent frame (E, F), each reward and the weighted total: GRPO's rewards of
        condition ``row`` with the plan's step prompt of every pixel frame."""
        prompts = schedule.pixel_prompts(clean.shape[2])
        c = repeat_conditions(_select(c, row), clean.shape[0])
        got = self.rewards(c, clean, text_scorer=self.text_scorer, frame_prompts=prompts)
        return {k: v.double().numpy() for k, v in got.items()}

    def collect(self, c: Conditions, step: int) -> tuple[list[_PlanGroup], dict[str, float]]:
        """Every condition's planning group, each plan's execution group, rewards and advantages."""
        t, kw = self.rl, self._kw()
        frames = self.frames(c)
        groups: list[_PlanGroup] = []
        logs: dict[str, list[float]] = {}
        plan_advs = []
        for row in range(c.batch):
            index, instruction = c.index[row], c.prompts[row]
            plan_rewards = []
            for p in range(t.plans):
                seed = sample_seed(self.config.seed, step, 21, index, p)
                sample = self.planner.sample(instruction, pixel_frames(frames), seed=seed)
                plan = sample.plan_or(instruction, pixel_frames(frames))
                schedule = Schedule.from_plan(plan, frames, t.lookahead, instruction)
                texts = self.encode(schedule.texts)
                fork = self.fork_frame(schedule, frames, sample_seed(self.config.seed, step, 22, index, p))
                # the plans of an instruction share their noise: their rewards differ by the plan
                seeds = [sample_seed(self.config.seed, step, 24, index, i) for i in range(t.group_size)]
                r = plan_rollout(self.policy, c, row, texts=texts, schedule=schedule, fork=fork, end=frames,
                                 shared=sample_seed(self.config.seed, step, 23, index), seeds=seeds,
                                 mode=t.switch_mode, **kw)  # fmt: skip
                with torch.no_grad():
                    _, ref_means = replay_fork(self.reference, c, row, r, texts=texts, schedule=schedule,
                                               mode=t.switch_mode, **kw)  # fmt: skip
                scores = self.score(r.clean, c, row, schedule)
                r.clean = None  # scored: the update needs the fork's transitions only
                lo, hi = schedule.window(fork)
                rewards = torch.tensor(scores["total"][:, lo:hi].mean(1), dtype=torch.float32)
                whole = float(scores["total"][:, 1:].mean())
                plan_rewards.append(whole - t.format_penalty * (1 - sample.format_score))
                groups.append(_PlanGroup(row, schedule, texts, r, ref_means, rewards, rewards, sample))
                for k, v in scores.items():
                    logs.setdefault(f"reward_{k}", []).append(float(v[:, lo:hi].mean()))
                logs.setdefault("format", []).append(sample.format_score)
                logs.setdefault("fork", []).append(float(fork))
                logs.setdefault("switches", []).append(float(len(schedule.switches)))
            advs = plan_advantages(torch.tensor(plan_rewards))
            for g, reward, adv in zip(groups[-t.plans :], plan_rewards, advs, strict=True):
                g.plan_reward, g.plan_advantage = float(reward), float(adv)
                plan_advs.append(float(adv))
            logs.setdefault("plan_reward", []).extend(plan_rewards)
        device = c.latents.device
        advs = executor_advantages([g.rewards for g in groups], t.advantage_clip, self.world)
        for g, a in zip(groups, advs, strict=True):
            g.advantages = a.to(device)
        out = {k: sum(v) / len(v) for k, v in logs.items()}
        out["plan_adv_abs"] = sum(abs(a) for a in plan_advs) / len(plan_advs)
        return groups, out

    # -- losses ----------------------------------------------------------------------------------
    def loss(
        self, c: Conditions, micro: int, step: int, update: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        t, kw = self.rl, self._kw()
        logs: dict[str, float] = {}
        if update == 0:
            self._collected[micro], logs = self.collect(c, step)
        losses = []
        figures: dict[str, float] = {}
        groups = self._collected[micro]
        for g in groups:
            r = g.rollout
            logp, means = replay_fork(self.policy, c, g.row, r, texts=g.texts, schedule=g.schedule,
                                      mode=t.switch_mode, **kw)  # fmt: skip
            adv = g.advantages[:, None].expand_as(logp)
            stds = [s.expand(logp.shape[0]) for s in r.std]
            loss, got = grpo_loss(logp, r.logp, adv, means, g.ref_means, stds, t.clip_range, t.kl_beta)
            losses.append(loss)
            for k, v in got.items():  # means over the plans; the largest deviation of the ratio
                mean = figures.get(k, 0.0) + v / len(groups)
                figures[k] = max(figures.get(k, v), v) if k == "ratio_max_dev" else mean
        loss = torch.stack(losses).mean()
        logs.update(figures)
        logs["loss"] = float(loss.detach())
        if update == t.updates_per_rollout - 1 and not t.planner_credit:
            self._collected.pop(micro, None)
        return loss, logs

    def planner_loss(self, c: Conditions, micro: int, step: int, update: int,
                     ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """GSPO on the plans' answer tokens, plan-level advantages clipped to +-1."""
        t = self.rl
        self.planner.lm.eval()  # the mode the old log-probabilities were taken in (no dropout)
        terms, ratios = [], []
        for g in self._collected[micro]:
            sample, adv = g.sample, g.plan_advantage
            if sample.answer_ids is None or sample.answer_ids.numel() == 0:
                continue
            logp = self.planner.answer_logprob(sample.prompt_ids, sample.answer_ids)
            ratio = torch.exp(logp - sample.old_logprob)
            a, eps = max(-1.0, min(1.0, adv)), t.planner_clip_range
            terms.append(-torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a))
            ratios.append(float((ratio.detach() - 1).abs()))
        if update == t.updates_per_rollout - 1:
            self._collected.pop(micro, None)
        if not terms:
            zero = sum(p.sum() * 0 for p in self.planner.lm.parameters())
            return zero, {"loss": 0.0, "ratio_max_dev": 0.0}
        loss = torch.stack(terms).mean()
        return loss, {"loss": float(loss.detach()), "ratio_max_dev": max(ratios)}

    def phases(self, step: int) -> list[Phase]:
        params = self.trained()
        out = []
        for u in range(self.rl.updates_per_rollout):
            suffix = "" if u == 0 else f"_update{u}"
            out.append(
                Phase(f"tempact{suffix}", "policy", params, lambda c, i, u=u: self.loss(c, i, step, u))
            )
            if self.rl.planner_credit:
                out.append(Phase(f"tempact_planner{suffix}", "planner", list(self.planner.lm.parameters()),
                                 lambda c, i, u=u: self.planner_loss(c, i, step, u)))  # fmt: skip
        return out
