"""Stage: AR-CoPO (arXiv 2603.17461) on the causal student, on the sampler that inference runs: chunk
forking, Neighbor GRPO's contrastive surrogate (arXiv 2511.16955) at the forked chunk only, and a
semi-on-policy replay buffer. A digest of both papers is ``shared/reference/RL-AND-STREAMING-NOTES.md``.

**Forking** (per condition, :func:`fork_rollout`). The clip's latent frames are cut into chunks of
``chunk_frames`` (our frame-wise student: 1). A chunk k >= 1 is drawn from the condition's seed (chunk 0
holds the reference frame, whose regeneration carries no motion to reward). The prefix, chunks 0 .. k - 1,
is rolled out once, at batch 1, by the deployed sampler (:mod:`ardrag.inference.sampler`: the x0
prediction, the re-noising, the cache write on the clean frame, as ``StreamSession`` runs it); its KV cache
is then repeated G times. Chunk k's starting noise is forked into G neighbours,
``eps_i = sqrt(1 - sigma^2) eps* + sigma delta_i`` (each still standard normal, pairwise correlation
1 - sigma^2), and every candidate is continued deterministically for ``horizon`` chunks (default: to the
clip's end). Every other draw (the noise inputs, the re-noising of every step of every frame, the other
chunks' starting noise) comes from one stream drawn at batch 1 and repeated, so the candidates differ only
by ``delta_i``: the prefix is the same tensor for all, and any reward difference comes from chunk k.
Without the fork (``sigma`` aside) the shared stream draws exactly what a plain deterministic rollout of
the condition would.

**Rewards and advantages.** The registered rewards (motion, aesthetic) of each candidate's decoded clip
(prefix + fork + continuation; the tracks start at frame 0), per latent frame as in GRPO, then one
sequence-level reward per candidate: the weighted total's mean over the latent frames from chunk k to the
end of the continuation (frames before k are the same for all candidates). Advantages are normalised over
the neighbourhood: AR-CoPO's z-score (population std + 1e-6; equal rewards give zero advantage), or
Neighbor GRPO's quasi-norm reweighting ``A_i = G^(1/p) a_i / (sum_k |a_k|^p)^(1/p)`` with centred rewards
a_i (p = 2 is the z-score; the constant G^(1/p), unreported, makes deviations of equal size +-1).

**The surrogate** (:func:`contrastive_loss`, the consistency-sampler form of AR-CoPO): at each of chunk
k's denoising steps n (all T of them; AR-CoPO leaves open how many are replayed) and frames, the
candidates' old clean predictions ``x0_old^(i) = F_old(x_n^(i))`` are constants; an anchor a's prediction
under the current weights, ``x0_theta^(a) = F_theta(x_n^(a))`` from its stored input and the prefix's
cache, gives distances ``d_i = mean((x0_old^(i) - x0_theta^(a))^2)`` (a mean over elements, so that tau
does not depend on the resolution) and the leaping policy ``pi_theta(i) = softmax_i(-d_i / tau)``.
``pi_old`` is the same with the anchor's own old prediction, so that the ratio ``pi_theta / pi_old`` is
exactly 1 before an update. The objective is PPO's clipped one with the group's advantages, averaged over
anchors (``anchors`` of the G, drawn per group and update: symmetric anchor sampling), steps and frames.
``tau`` is a number or ``auto``: per group and step, the mean old distance over all pairs of candidates,
fixed when the group is collected (a softmax neither one-hot nor uniform; the papers do not report tau).
The KL to the starting student: ``mean((x0_theta^(a) - x0_ref^(a))^2) / tau``, the KL per element between
the Gaussians whose log-density the surrogate's -d / tau is (AR-CoPO uses none; ``kl_beta`` 0 drops it).

**Gradients** reach only chunk k's computation: the prefix's cache is rebuilt from its stored clean
frames without gradients, under the current weights (as GRPO's replay rebuilds it), the continuation is
not replayed at all, and the candidates' old predictions are constants. The replay runs all G candidates
at the rollout's batch shape (only the anchors' rows carry gradient), so that unchanged weights give the
rollout's predictions bit for bit.

**Semi-on-policy** (``replay``): a buffer of groups. What enters: groups rolled out by the starting
student (``source: reference``, the paper's buffer of reference rollouts: each micro-batch's conditions,
the first of the global batch first, until the buffer is full) or the on-policy groups as they are
collected (``source: on_policy``; a group can then be replayed in the step that collected it). It holds
``size`` groups (the oldest leave first); ``max_age`` drops entries older than that many steps (a
reference source then rolls new ones). Each update replays ``groups`` buffer groups per on-policy
condition, drawn without replacement (with replacement only when the buffer is smaller) from a generator
seeded by the step, the micro-batch and the update. The on-policy groups and the buffer groups are two
phases of a step, each its own optimizer step (the paper trains the two branches separately), so a step
takes 2 x ``updates_per_rollout`` optimizer steps with both branches on (and ``optim.warmup_steps``
counts those). Under several processes the buffer is the same on every process (each push is gathered,
in the order of the global batch) and the draw is global, each process taking its share, so that N
processes train on what one process with the same global batch would (``ddp``; ``fsdp`` is refused:
conditions fork at different chunks, so processes run different numbers of passes). The buffer lives
on the host, and is saved in every checkpoint (``extra.pt``): a resumed run samples what an
uninterrupted one would. An entry keeps the candidates' inputs and predictions at the forked chunk, the
prefix's clean latents, the condition's text and control, and the seed of its noise inputs (drawn again
at replay, on the device they were drawn on). With ``lora`` and ``separate_adapters`` the two branches
train two adapters (on-policy: ``on_policy``, rollouts and update; buffer: ``replay``), merged at export
as ``W0 + dW_replay + merge_scale dW_on_policy`` (the paper's merge).

**Choices the papers leave open, made here:** the fork never takes chunk 0; one sequence reward is the
mean over the frames from the fork to the end of the continuation; all T steps of the chunk are replayed;
distances are means over elements; tau is ``auto`` by default; the KL term above (AR-CoPO has none, the
issue asks for one; ``kl_beta`` 0 removes it); anchors are drawn per update; the prefix's cache is rebuilt
under the current weights for buffer groups too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch

from ardrag.errors import ConfigError
from ardrag.inference.sampler import FrameNoise, FrameSampler, SampleRandom
from ardrag.model.transformer_ardrag import CausalARDragTransformer, KVCache
from ardrag.training.conditions import Conditions, sample_seed
from ardrag.training.grpo import GRPOStage, _velocity, repeat_conditions
from ardrag.training.trainer import Phase

ON_POLICY, REPLAY = "on_policy", "replay"  # the adapters of separate_adapters


# -- forking -------------------------------------------------------------------------------------
class _Rows(NamedTuple):
    """What a model pass reads of a condition (``_velocity``'s ``c``): its text and control, as rows."""

    text: torch.Tensor
    control: torch.Tensor

    def expand(self, rows: int) -> _Rows:
        return _Rows(*(t.expand(rows, *t.shape[1:]) for t in self))


def repeat_cache(cache: KVCache, rows: int) -> KVCache:
    """The cache of a batch-1 prefix, repeated along the batch axis: each row continues its own copy."""
    out = KVCache(len(cache.keys), cache.window, cache.sink)
    out.keys = [None if k is None else k.repeat(rows, *[1] * (k.ndim - 1)) for k in cache.keys]
    out.values = [None if v is None else v.repeat(rows, *[1] * (v.ndim - 1)) for v in cache.values]
    out.frames_written = cache.frames_written
    return out


def neighbours(base: torch.Tensor, deltas: torch.Tensor, sigma: float) -> torch.Tensor:
    """Neighbor GRPO's variance-preserving neighbourhood of ``base`` (1, ...): sqrt(1 - sigma^2) base +
    sigma delta_i, one row per delta."""
    return math.sqrt(1 - sigma**2) * base + sigma * deltas


@dataclass
class Group:
    """One condition's neighbourhood: what the update and the buffer need (no activations, no cache).
    Tensors of the chunk's frames are indexed [frame of the chunk, step, candidate, ...]."""

    index: int  # the condition's global sample index
    step: int  # the training step it was rolled out at (its age in the buffer)
    fork: int  # first latent frame of the forked chunk
    chunk: int  # latent frames in the chunk
    text: torch.Tensor  # (1, 512, D)
    control: torch.Tensor  # (1, 16, fork + chunk, h, w)
    prefix: torch.Tensor  # (1, 16, fork, h, w) clean frames before the fork
    seed: int  # the shared stream's: the frames' noise inputs are drawn again from it (noise_inputs)
    ref_latent: torch.Tensor  # (1, 16, 1, h, w) the reference frame's latent
    clip_ref: torch.Tensor  # (1, tokens, D) the reference image's CLIP tokens
    x_in: torch.Tensor  # (chunk, T, G, 16, 1, h, w) each candidate's input at each step
    x0_old: torch.Tensor  # the rollout policy's clean predictions from those inputs
    x0_ref: torch.Tensor  # the starting student's
    clean: torch.Tensor  # (chunk, G, 16, 1, h, w) the chunk's clean frames (written into the cache)
    rewards: torch.Tensor  # (G,) sequence-level total
    advantages: torch.Tensor  # (G,)
    tau: torch.Tensor  # (chunk, T) the softmax temperature per frame and step

    @property
    def size(self) -> int:
        return self.x_in.shape[2]

    def to(self, device: torch.device | str, copy: bool = False) -> Group:
        """On ``device``; ``copy``: tensors of their own (not views that keep a whole batch alive)."""
        tensors = [f.name for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]
        return replace(self, **{k: getattr(self, k).detach().to(device, copy=copy) for k in tensors})

    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ForkRollout:
    """A condition's forked rollout: the prefix and the candidates' recorded chunk, and every candidate's
    clean clip (G, 16, end, h, w) for the rewards."""

    fork: int
    chunk: int
    prefix: torch.Tensor
    x_in: torch.Tensor
    x0: torch.Tensor
    clean_chunk: torch.Tensor
    clean: torch.Tensor


@torch.no_grad()
def fork_rollout(
    model: CausalARDragTransformer, c: Conditions, row: int, *, sampler: FrameSampler, window: int,
    fork: int, chunk: int, end: int, noise: FrameNoise, deltas: SampleRandom, sigma: float,
) -> ForkRollout:  # fmt: skip
    """Condition ``row`` of ``c``: latent frames 0 .. fork - 1 at batch 1, then len(deltas) candidates whose
    starting noise in frames fork .. fork + chunk - 1 is the neighbourhood of the shared draw, continued to
    frame ``end`` - 1. ``noise`` (one row) draws everything else once for all candidates."""
    if sampler.kind != "renoise":
        raise ValueError(f"AR-CoPO forks the deployed re-noising sampler; the sampler is {sampler.kind!r}")
    if not (1 <= fork and fork + chunk <= end <= c.frames):
        raise ValueError(f"fork at frame {fork}, chunk of {chunk}, end {end} for a clip of {c.frames} frames")
    g = len(deltas)
    one = _Rows(c.text[row : row + 1], c.control[row : row + 1])
    ref, tokens = c.ref_latent[row : row + 1], c.clip[row : row + 1]
    cache = model.new_cache(window)
    prefix, clean_g = [], []
    x_in = [[] for _ in range(chunk)]
    x0s = [[] for _ in range(chunk)]
    for m in range(end):
        mask, cond, clip = noise.inputs(m, ref, tokens)
        x = noise.start(m, ref)
        forked = m >= fork
        if m == fork:
            cache = repeat_cache(cache, g)
        if forked:
            mask, cond, clip = (t.expand(g, *t.shape[1:]) for t in (mask, cond, clip))
            x = (
                neighbours(x, deltas.randn(*x.shape[1:]).to(x), sigma)
                if m < fork + chunk
                else x.expand(g, *x.shape[1:])
            )
        rows = one.expand(g) if forked else one
        record = m - fork if fork <= m < fork + chunk else None

        def predict(x: torch.Tensor, n: int, m=m, mask=mask, cond=cond, clip=clip, rows=rows, record=record,
                    cache=cache) -> torch.Tensor:  # fmt: skip
            x0 = sampler.predict(
                x, _velocity(model, rows, cache, m, x, sampler.timesteps[n], mask, cond, clip), n
            )
            if record is not None:
                x_in[record].append(x)
                x0s[record].append(x0)
            return x0

        def renoise(n: int, m=m, forked=forked) -> torch.Tensor:
            eps = noise.renoise(m, n, ref)
            return eps.expand(g, *eps.shape[1:]) if forked else eps

        clean, _ = sampler.run(predict, x, renoise)
        _velocity(model, rows, cache, m, clean, sampler.write_timestep, mask, cond, clip, write=True)
        (clean_g if forked else prefix).append(clean)
    prefix_t = torch.cat(prefix, 2) if prefix else ref.new_zeros(1, ref.shape[1], 0, *ref.shape[3:])
    clean_all = torch.cat([prefix_t.expand(g, *prefix_t.shape[1:]), *clean_g], 2)
    return ForkRollout(
        fork, chunk, prefix_t, torch.stack([torch.stack(s) for s in x_in]),
        torch.stack([torch.stack(s) for s in x0s]), torch.stack(clean_g[:chunk]), clean_all,
    )  # fmt: skip


def noise_inputs(seed: int, ref: torch.Tensor, tokens: torch.Tensor, frames: int, transitions: int,
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Each frame's noise inputs (mask, image condition, CLIP tokens) as :func:`fork_rollout` drew them
    from the shared stream ``seed`` (one row, on ``ref``'s device): the stream is drawn again in the
    sampler's order (a frame's inputs, its starting noise, one re-noising draw per transition), so a
    group stores a seed instead of its frames' noise."""
    noise = FrameNoise(SampleRandom([seed], ref.device))
    out = []
    for m in range(frames):
        out.append(noise.inputs(m, ref, tokens))
        noise.start(m, ref)
        for n in range(transitions):
            noise.renoise(m, n, ref)
    return out


def replay_chunk(model: CausalARDragTransformer, group: Group, *, sampler: FrameSampler,
                 window: int) -> torch.Tensor:  # fmt: skip
    """The clean predictions (chunk, T, G, ...) of the group's candidates from their stored inputs under
    ``model``'s current weights, with gradients when enabled: the prefix's cache is rebuilt from its clean
    frames and each chunk frame's cache write uses the stored clean frame, all without gradients."""
    g = group.size
    one = _Rows(group.text, group.control)
    inputs = noise_inputs(group.seed, group.ref_latent, group.clip_ref, group.fork + group.chunk,
                          sampler.transitions)  # fmt: skip
    cache = model.new_cache(window)
    with torch.no_grad():
        for m in range(group.fork):
            _velocity(model, one, cache, m, group.prefix[:, :, m : m + 1], sampler.write_timestep, *inputs[m],
                      write=True)  # fmt: skip
    cache = repeat_cache(cache, g)
    rows = one.expand(g)
    out = []
    for j in range(group.chunk):
        m = group.fork + j
        mask, cond, clip = (t.expand(g, *t.shape[1:]) for t in inputs[m])
        steps = []
        for n in range(sampler.steps):
            x = group.x_in[j, n]
            steps.append(sampler.predict(x, _velocity(model, rows, cache, m, x, sampler.timesteps[n], mask,
                                                      cond, clip), n))  # fmt: skip
        out.append(torch.stack(steps))
        if j < group.chunk - 1:
            with torch.no_grad():
                _velocity(model, rows, cache, m, group.clean[j], sampler.write_timestep, mask, cond, clip,
                          write=True)  # fmt: skip
    return torch.stack(out)


# -- advantages, temperature and loss ------------------------------------------------------------
def neighbourhood_advantages(rewards: torch.Tensor, kind: str = "zscore", p: float = 0.8,
                             eps: float = 1e-6) -> torch.Tensor:  # fmt: skip
    """Advantages of one neighbourhood's rewards (G,): the z-score (population std + eps), or Neighbor
    GRPO's quasi-norm reweighting G^(1/p) a / (||a||_p + eps) of the centred rewards a. Equal rewards give
    zero advantage."""
    if rewards.ndim != 1 or rewards.numel() < 2:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)}; expected (G,) with G >= 2")
    r = rewards.double()
    a = r - r.mean()
    if kind == "zscore":
        out = a / (r.std(correction=0) + eps)
    elif kind == "quasi_norm":
        out = len(r) ** (1 / p) * a / (a.abs().pow(p).sum().pow(1 / p) + eps)
    else:
        raise ValueError(f"advantage {kind!r}; expected 'zscore' or 'quasi_norm'")
    return out.float()


def _distances(candidates: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Mean squared distances (S, B, G) from anchors (S, B, ...) to candidates (S, G, ...), in float32."""
    diff = candidates.float()[:, None] - anchors.float()[:, :, None]
    return diff.pow(2).mean(dim=tuple(range(3, diff.ndim)))


def auto_tau(x0: torch.Tensor) -> torch.Tensor:
    """(chunk, T): the mean distance over all pairs of distinct candidates of each frame and step, from
    the old predictions (chunk, T, G, ...); tiny when the candidates coincide."""
    flat = x0.flatten(0, 1)
    d = _distances(flat, flat)  # (S, G, G)
    g = d.shape[-1]
    mean = d.sum((1, 2)) / (g * (g - 1))
    return mean.clamp_min(1e-12).view(x0.shape[:2])


def contrastive_loss(pred: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, anchors: torch.Tensor,
                     advantages: torch.Tensor, tau: torch.Tensor, clip_range: float, kl_beta: float,
                     ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The clipped Neighbor GRPO surrogate with the KL to the starting student, as a loss to minimise.
    ``pred``, ``old``, ``ref``: (chunk, T, G, ...) clean predictions (current weights, the rollout's,
    the starting student's); ``anchors`` (B,) candidate indices; ``advantages`` (G,); ``tau`` (chunk, T)."""
    pred, old, ref = pred.flatten(0, 1), old.flatten(0, 1), ref.flatten(0, 1)  # (S, G, ...)
    tau = tau.flatten().float().to(pred.device)[:, None, None]
    new_anchor = pred[:, anchors]
    logp = torch.log_softmax(-_distances(old, new_anchor) / tau, -1)  # (S, B, G)
    logp_old = torch.log_softmax(-_distances(old, old[:, anchors]) / tau, -1)
    ratio = torch.exp(logp - logp_old)
    adv = advantages.float().to(pred.device)[None, None]
    policy = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_range, 1 + clip_range) * adv)
    kl = (new_anchor.float() - ref[:, anchors].float()).pow(2).mean(dim=tuple(range(2, new_anchor.ndim)))
    kl = kl / tau[..., 0]
    loss = policy.mean() + kl_beta * kl.mean()
    p_old = logp_old.exp()
    entropy = -(p_old * logp_old).sum(-1) / math.log(p_old.shape[-1])
    return loss, {
        "policy": float(policy.mean().detach()), "kl": float(kl.mean().detach()),
        "ratio_dev": float((ratio.detach() - 1).abs().mean()),  # a mean: processes average what they log
        "clip_fraction": float(((ratio.detach() - 1).abs() > clip_range).float().mean()),
        "entropy_old": float(entropy.mean()), "tau": float(tau.mean()),
    }  # fmt: skip


# -- the replay buffer ---------------------------------------------------------------------------
class ReplayBuffer:
    """Groups on the host, oldest first; at most ``size`` (the oldest leave first)."""

    def __init__(self, size: int):
        self.size = size
        self.entries: list[Group] = []
        self.pushed = 0  # groups that ever entered

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, groups: list[Group]) -> None:
        self.entries.extend(g.to("cpu", copy=True) for g in groups)
        self.pushed += len(groups)
        del self.entries[: max(0, len(self.entries) - self.size)]

    def drop_stale(self, step: int, max_age: int | None) -> int:
        """Drop the entries rolled out more than ``max_age`` steps before ``step``; returns how many."""
        if max_age is None:
            return 0
        kept = [e for e in self.entries if step - e.step <= max_age]
        dropped = len(self.entries) - len(kept)
        self.entries = kept
        return dropped

    def draw(self, n: int, seed: int) -> list[int]:
        """``n`` entry positions from a generator seeded by ``seed``: without replacement, with it only
        when the buffer holds fewer than ``n``."""
        if not self.entries:
            raise RuntimeError("the replay buffer is empty")
        gen = torch.Generator().manual_seed(seed)
        if n <= len(self.entries):
            return torch.randperm(len(self.entries), generator=gen)[:n].tolist()
        return torch.randint(len(self.entries), (n,), generator=gen).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "pushed": self.pushed, "entries": [e.state() for e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved entries, the newest ``size`` of them (the configured size holds, not the saved)."""
        self.pushed = state["pushed"]
        self.entries = [Group(**e) for e in state["entries"]][-self.size :]


def _gather(groups: list[Group], world: int) -> list[Group]:
    """Every process's groups, in rank order (the order of the global batch); collective."""
    if world == 1:
        return groups
    import torch.distributed as dist

    got: list[Any] = [None] * world
    dist.all_gather_object(got, [g.to("cpu") for g in groups])
    return [g for part in got for g in part]


# -- the stage -----------------------------------------------------------------------------------
class CoPOStage(GRPOStage):
    """GRPO's models, rewards and reference student; AR-CoPO's rollouts, loss and buffer."""

    name = "copo"

    def __init__(self, config: Any, pipe: Any, start: Any):
        super().__init__(config, pipe, start)
        self.buffer = ReplayBuffer(self.rl.replay.size)
        self._groups: dict[int, list[Group]] = {}
        self._filled: tuple[int, set[int]] = (-1, set())  # the step, and its micro-batches pushed from
        self.rank, self.world = _rank_world()
        if self.separate:
            self._branch_optimizers_init()

    # -- the phases ------------------------------------------------------------------------------
    def batch(self, raw: dict[str, Any], index: list[int]) -> Conditions:
        return self.conditions(raw, index)

    def _branch_optimizers_init(self) -> None:
        """With separate adapters, one optimizer per branch over its adapter (the stage's single one
        otherwise)."""
        from ardrag.training.lora import adapter_parameters

        o = self.config.optim
        self._branch_optimizers = {
            name: torch.optim.AdamW(adapter_parameters(self.policy, name), lr=o.lr, betas=o.betas,
                                    weight_decay=o.weight_decay)
            for name in (ON_POLICY, REPLAY)
        }  # fmt: skip

    @property
    def separate(self) -> bool:
        """Whether the two branches train adapters of their own (``lora`` with ``separate_adapters``)."""
        return self.config.lora is not None and self.rl.separate_adapters

    def lora_adapters(self) -> list[str]:
        return [ON_POLICY, REPLAY] if self.separate else super().lora_adapters()

    def lora_scales(self) -> dict[str, float]:
        """The paper's merge: W0 + dW_replay + merge_scale dW_on_policy."""
        return {REPLAY: 1.0, ON_POLICY: self.rl.merge_scale} if self.separate else super().lora_scales()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._branch_optimizers if self.separate else super().optimizers()

    def optimizer_modules(self) -> dict[str, torch.nn.Module]:
        return {name: self.policy for name in self.optimizers()}

    def adapters(self, branch: str) -> list[str] | None:
        """The LoRA adapters a branch trains and rolls out with (None: no LoRA, or one adapter)."""
        return [branch] if self.separate else None

    def phases(self, step: int) -> list[Phase]:
        out = []
        for u in range(self.rl.updates_per_rollout):
            suffix = "" if u == 0 else f"_update{u}"
            if self.rl.on_policy:
                out.append(
                    self._phase(f"copo{suffix}", ON_POLICY, lambda c, i, u=u: self.loss(c, i, step, u))
                )
            if self.rl.replay.groups:
                out.append(self._phase(f"copo_replay{suffix}", REPLAY,
                                       lambda c, i, u=u: self.replay_loss(c, i, step, u)))  # fmt: skip
        return out

    def _phase(self, name: str, branch: str, loss: Any) -> Phase:
        adapters = self.adapters(branch)
        if adapters is None:
            return Phase(name, "policy", [p for p in self.policy.parameters() if p.requires_grad], loss)
        from ardrag.training import lora

        return Phase(name, branch, lora.adapter_parameters(self.policy, branch), loss,
                     context=lambda: lora.active(self.policy, adapters))  # fmt: skip

    # -- collecting ------------------------------------------------------------------------------
    def fork_frames(self, c: Conditions, row: int, step: int) -> tuple[int, int]:
        """(first frame of the forked chunk, end of the continuation) of condition ``row``."""
        g = self.rl
        frames = min(g.latent_frames, c.frames)
        chunks = frames // g.chunk_frames
        if chunks < 2:
            raise ConfigError(
                f"clip {c.keys[row]!r} has {c.frames} latent frame(s): with chunk_frames {g.chunk_frames} "
                "AR-CoPO needs two chunks at least (the first holds the reference); raise data.max_frames "
                "or copo.latent_frames, or lower copo.chunk_frames"
            )
        gen = torch.Generator().manual_seed(sample_seed(self.config.seed, step, 11, c.index[row]))
        k = int(torch.randint(1, chunks, (1,), generator=gen))
        last = chunks if g.horizon is None else min(chunks, k + 1 + g.horizon)
        return k * g.chunk_frames, last * g.chunk_frames

    def roll_group(self, model: Any, c: Conditions, row: int, step: int, tag: int,
                   ) -> tuple[Group, dict[str, float]]:  # fmt: skip
        """Condition ``row``'s neighbourhood rolled out by ``model`` (the policy, or the reference for the
        buffer: ``tag`` keeps their draws apart), with rewards, advantages and the reference's
        predictions; and the mean rewards over the candidates' continuations, to log."""
        g, kw = self.rl, self._kw()
        fork, end = self.fork_frames(c, row, step)
        index = c.index[row]
        seed = sample_seed(self.config.seed, step, tag, index)
        noise = FrameNoise(SampleRandom([seed], c.latents.device))
        seeds = [sample_seed(self.config.seed, step, tag + 1, index, i) for i in range(g.group_size)]
        deltas = SampleRandom(seeds, c.latents.device)
        r = fork_rollout(model, c, row, fork=fork, chunk=g.chunk_frames, end=end, noise=noise, deltas=deltas,
                         sigma=g.sigma, **kw)  # fmt: skip
        group = Group(
            index=index, step=step, fork=fork, chunk=g.chunk_frames, text=c.text[row : row + 1],
            control=c.control[row : row + 1, :, : fork + g.chunk_frames], prefix=r.prefix, seed=seed,
            ref_latent=c.ref_latent[row : row + 1], clip_ref=c.clip[row : row + 1], x_in=r.x_in,
            x0_old=r.x0, x0_ref=r.x0, clean=r.clean_chunk,
            rewards=torch.zeros(g.group_size), advantages=torch.zeros(g.group_size),
            tau=auto_tau(r.x0) if g.tau == "auto" else torch.full(r.x0.shape[:2], float(g.tau)),
        )  # fmt: skip
        if model is not self.reference:
            with torch.no_grad():
                group.x0_ref = replay_chunk(self.reference, group, **kw)
        rewards = self.rewards(repeat_conditions(_select(c, row), g.group_size), r.clean)
        group.rewards = rewards["total"][:, fork:end].mean(1)
        group.advantages = neighbourhood_advantages(group.rewards, g.advantage, g.quasi_norm_p)
        return group, {k: float(v[:, fork:end].mean()) for k, v in rewards.items()}

    def _fill(self, c: Conditions, micro: int, step: int) -> None:
        """The step's buffer pushes from the reference (once per micro-batch; collective)."""
        rp = self.rl.replay
        if self._filled[0] != step:
            self._filled = (step, set())
            self.buffer.drop_stale(step, rp.max_age)
        if not rp.groups or rp.source != "reference" or micro in self._filled[1]:
            return
        self._filled[1].add(micro)
        free = rp.size - len(self.buffer)
        if free <= 0:  # the same decision on every process: the buffer is the same everywhere
            return
        # the first ``free`` conditions of the global batch enter, each rolled by the process holding it
        first, _ = self._global_rows(c.batch)
        with torch.no_grad():
            pushes = [self.roll_group(self.reference, c, row, step, 8)[0] for row in range(c.batch)
                      if first + row < free]  # fmt: skip
        self.buffer.push(_gather(pushes, self.world))

    def _global_rows(self, rows: int) -> tuple[int, int]:
        """(the global position of this process's first condition in the micro-batch, the global
        micro-batch's size): processes may hold batches of different sizes (an epoch's last); collective."""
        if self.world == 1:
            return 0, rows
        import torch.distributed as dist

        sizes: list[Any] = [None] * self.world
        dist.all_gather_object(sizes, rows)
        return sum(sizes[: self.rank]), sum(sizes)

    # -- losses ----------------------------------------------------------------------------------
    def _anchors(self, group: Group, step: int, update: int, branch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(
            sample_seed(self.config.seed, step, 13, update, branch, group.index)
        )
        return torch.randperm(group.size, generator=gen)[: self.rl.anchors]

    def group_loss(self, groups: list[Group], step: int, update: int, branch: int,
                   ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        g, kw = self.rl, self._kw()
        losses, logs = [], {}
        for group in groups:
            pred = replay_chunk(self.policy, group, **kw)
            anchors = self._anchors(group, step, update, branch)
            loss, got = contrastive_loss(pred, group.x0_old, group.x0_ref, anchors, group.advantages,
                                         group.tau, g.clip_range, g.kl_beta)  # fmt: skip
            losses.append(loss)
            for k, v in got.items():  # means over the groups
                logs[k] = logs.get(k, 0.0) + v / len(groups)
        loss = torch.stack(losses).mean()
        logs["loss"] = float(loss.detach())
        return loss, logs

    def loss(
        self, c: Conditions, micro: int, step: int, update: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The on-policy branch: fresh neighbourhoods (collected at the first update) from the policy."""
        self._fill(c, micro, step)
        rewards: dict[str, float] = {}
        if update == 0:
            groups = []
            for row in range(c.batch):
                with torch.no_grad():
                    group, got = self.roll_group(self.policy, c, row, step, 3)
                groups.append(group)
                for k, v in got.items():
                    rewards[k] = rewards.get(k, 0.0) + v / c.batch
            self._groups[micro] = groups
            if self.rl.replay.groups and self.rl.replay.source == "on_policy":
                self.buffer.push(_gather(groups, self.world))
        groups = self._groups[micro]
        loss, logs = self.group_loss(groups, step, update, 0)
        if update == 0:
            logs.update({f"reward_{k}": v for k, v in rewards.items()})
            logs["fork"] = sum(g.fork for g in groups) / len(groups)
        if update == self.rl.updates_per_rollout - 1:
            self._groups.pop(micro, None)
        return loss, logs

    def replay_loss(self, c: Conditions, micro: int, step: int, update: int,
                    ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """The semi-on-policy branch: buffer groups, this process's share of a global draw."""
        self._fill(c, micro, step)
        k, (first, rows) = self.rl.replay.groups, self._global_rows(c.batch)
        picked = self.buffer.draw(k * rows, sample_seed(self.config.seed, step, 17, micro, update))
        mine = picked[k * first : k * (first + c.batch)]
        device = c.latents.device
        loss, logs = self.group_loss([self.buffer.entries[i].to(device) for i in mine], step, update, 1)
        logs["buffer"] = float(len(self.buffer))
        return loss, logs

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any] | None:
        return {"buffer": self.buffer.state_dict()} if self.rl.replay.groups else None

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])


def _select(c: Conditions, row: int) -> Conditions:
    """Condition ``row`` alone."""
    return Conditions(**{f.name: None if (v := getattr(c, f.name)) is None else v[row : row + 1]
                         for f in fields(c)})  # fmt: skip


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
