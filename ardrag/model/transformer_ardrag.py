"""AR-Drag's transformer: diffusers' Wan 2.1 I2V transformer with a motion-control input, bidirectional
(the teacher) or block-causal with a KV cache (the student), one latent frame at a time.

How the trajectory latent enters (paper Eq. 6 leaves it open): through its own zero-initialised patch
embedding whose output is added to the base patch embedding's. A 3-D convolution is linear in its input
channels, so this is exactly "extra input channels of the patch embedding, zero-initialised"; keeping it
a separate module leaves every base key with its base shape, so a Wan I2V checkpoint loads unchanged
(:meth:`ARDragTransformer.from_wan`) and, before fine-tuning, the model computes what the base computes.

The causal student (:class:`CausalARDragTransformer`) keeps the same parameter names; only the
self-attention processors change. Decisions, documented here:

- **Cache:** per layer, the keys (before RoPE) and values of the last ``window`` clean frames (7 in the
  paper); a frame attends to those and to itself. The oldest frame is evicted, the first one included:
  the paper evicts the oldest and gives the reference image to frame 0 only, so nothing is pinned.
- **RoPE:** keys are stored before the rotation, and every step rotates the window with positions
  counted from the oldest cached frame (0 .. cached). Attention depends only on position differences, so
  this equals absolute positions, never grows past the RoPE table on long streams, and never wraps.
- **Writes:** a denoising step reads the cache; the clean frame is then run once with ``write=True``
  (at t = 0 by default, as in Self-Forcing) to append its keys and values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ardrag.errors import ConfigError
from ardrag.model.device import cast_keeping_fp32


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on (B, S, H, D) with interleaved pairs (as diffusers applies it)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class _FrameWindow:
    """What both caches share: the rolling ``window`` of frames beside ``sink`` pinned ones, and which
    frames that leaves in view."""

    def __init__(self, window: int, sink: int):
        if window < 1:
            raise ConfigError(f"KV cache window is {window}; expected at least 1 frame")
        if sink < 0:
            raise ConfigError(f"attention sink is {sink} frames; expected 0 or more")
        self.window, self.sink = window, sink
        self.frames_written = 0

    def cached(self) -> list[int]:
        """The frames in view, in time order: the sink's, then the rolling window's."""
        pinned = list(range(min(self.frames_written, self.sink)))
        return pinned + list(range(max(self.sink, self.frames_written - self.window), self.frames_written))

    @property
    def cached_frames(self) -> int:
        pinned = min(self.frames_written, self.sink)
        return pinned + min(self.frames_written - pinned, self.window)


class KVCache(_FrameWindow):
    """Keys (before RoPE) and values of the last ``window`` clean frames, per layer, concatenated on every
    write: the reference cache (training's rollouts run it; :class:`RingKVCache` is the streaming one).
    ``sink``: the first ``sink`` frames stay pinned beside the rolling window (StreamingLLM's attention
    sink), so a frame sees at most ``sink + window`` cached frames."""

    def __init__(self, num_layers: int, window: int, sink: int = 0):
        super().__init__(window, sink)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def read(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.keys[layer], self.values[layer]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append one frame's keys and values, evicting the oldest frame beyond the window (never a
        sink frame)."""
        n = keys.shape[1]
        old_k, old_v = self.keys[layer], self.values[layer]
        k = keys if old_k is None else torch.cat([old_k, keys], 1)
        v = values if old_v is None else torch.cat([old_v, values], 1)
        pinned = min(self.frames_written, self.sink) * n
        rolling = self.window * n
        if k.shape[1] - pinned > rolling:
            k = torch.cat([k[:, :pinned], k[:, -rolling:]], 1) if pinned else k[:, -rolling:]
            v = torch.cat([v[:, :pinned], v[:, -rolling:]], 1) if pinned else v[:, -rolling:]
        self.keys[layer], self.values[layer] = k, v

    def snapshot(self) -> dict[str, Any]:
        """The cache's state (the tensors are never modified in place, so references suffice)."""
        return {"keys": list(self.keys), "values": list(self.values), "frames": self.frames_written}

    def restore(self, state: dict[str, Any]) -> None:
        self.keys, self.values = list(state["keys"]), list(state["values"])
        self.frames_written = state["frames"]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)


class RingKVCache(_FrameWindow):
    """The streaming cache: per layer, preallocated buffers of fixed shape, written in place.

    - ``raw``: the keys before RoPE of ``sink + window`` frame slots. Frame f < sink lives in slot f;
      a later frame in slot ``sink + (f - sink) % window``, over the frame ``window`` before it.
    - ``keys``: those slots rotated with their window-relative positions, plus one slot for the frame
      being denoised once the ring is full. The slots are rotated once per frame (``rotated_at``), not
      once per pass.
    - ``values``: the slots' values, plus that extra slot.

    While the ring fills, the slots fill in time order: a frame attends to the prefix of the buffer up
    to its own slot, the frames in the reference cache's order (the same sums, bit for bit). Once it is
    full, every pass has the same shapes, and the slots are in ring order: attention does not depend on
    the keys' order, but float32 sums taken in another order round differently, so the frames match the
    reference cache's to float32 reordering error. A write saves the slot it overwrites, so
    :meth:`restore` can undo the last write (``StreamSession.regenerate`` after ``flush``)."""

    def __init__(self, num_layers: int, window: int, sink: int = 0):
        super().__init__(window, sink)
        self.slots = sink + window
        self.raw: list[torch.Tensor | None] = [None] * num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.rotated_at = [-1] * num_layers
        self.tokens = 0  # tokens per frame, fixed by the first pass
        self._undo: list[tuple[int, int, torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    def slot_of(self, frame: int) -> int:
        return frame if frame < self.sink else self.sink + (frame - self.sink) % self.window

    @property
    def current_slot(self) -> int:
        """Where the frame being denoised goes: the slot it will be written to while the ring is not yet
        full (the slots fill in time order, so the frames seen are a prefix of the buffer), the extra
        slot after the ring once it is."""
        return min(self.frames_written, self.slots)

    def positions(self) -> list[int]:
        """The window-relative RoPE position of each slot up to the current one, then the current
        frame's: 0, 1, ... while the ring fills; a permutation of 0 .. slots once it is full."""
        cached = self.cached()
        pos = [0] * self.current_slot
        for rank, frame in enumerate(cached):
            pos[self.slot_of(frame)] = rank
        return pos + [len(cached)]

    def allocate(self, layer: int, key: torch.Tensor) -> None:
        b, n, h, d = key.shape
        if self.tokens and n != self.tokens:
            raise ConfigError(f"a frame of {n} tokens for a cache of {self.tokens}-token frames")
        self.tokens = n
        like = {"device": key.device, "dtype": key.dtype}
        self.raw[layer] = torch.zeros(b, self.slots * n, h, d, **like)
        self.keys[layer] = torch.zeros(b, (self.slots + 1) * n, h, d, **like)
        self.values[layer] = torch.zeros(b, (self.slots + 1) * n, h, d, **like)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Put frame ``frames_written``'s keys (before RoPE) and values into its slot, keeping what
        the slot held for :meth:`restore`."""
        n, s = self.tokens, self.slot_of(self.frames_written)
        part = slice(s * n, (s + 1) * n)
        raw, values = self.raw[layer], self.values[layer]
        self._undo[layer] = (self.frames_written, s, raw[:, part].clone(), values[:, part].clone())
        raw[:, part].copy_(key)
        values[:, part].copy_(value)
        self.rotated_at[layer] = -1

    def snapshot(self) -> dict[str, Any]:
        """The frame count: the slots of the written frames change only by a later write, which
        :meth:`restore` undoes."""
        return {"frames": self.frames_written}

    def restore(self, state: dict[str, Any]) -> None:
        frames = state["frames"]
        if frames == self.frames_written - 1:
            for layer, undo in enumerate(self._undo):
                if undo is None or undo[0] != frames:
                    raise ConfigError("the ring KV cache can undo only its last write")
                _, s, raw, values = undo
                part = slice(s * self.tokens, (s + 1) * self.tokens)
                self.raw[layer][:, part].copy_(raw)
                self.values[layer][:, part].copy_(values)
                self._undo[layer] = None
        elif frames != self.frames_written:
            raise ConfigError(
                f"cannot restore the ring KV cache to frame {frames} from frame {self.frames_written}; "
                "it keeps one write to undo"
            )
        self.frames_written = frames
        self.rotated_at = [-1] * len(self.rotated_at)

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (*self.raw, *self.keys, *self.values) if t is not None
        )


@dataclass
class CrossCache:
    """Cross-attention keys and values, per layer: the text's for the whole session (both guidance
    branches when batched), the image tokens' for the current frame (the reference's CLIP tokens at
    frame 0, a fresh noise draw after it: :meth:`new_frame` drops them)."""

    text: list[tuple[torch.Tensor, torch.Tensor] | None]
    image: list[tuple[torch.Tensor, torch.Tensor] | None]
    pending: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    @classmethod
    def empty(cls, num_layers: int) -> CrossCache:
        return cls([None] * num_layers, [None] * num_layers)

    def new_frame(self) -> None:
        self.image = [None] * len(self.image)

    @property
    def needs_text(self) -> bool:
        return self.text[0] is None

    @property
    def needs_image(self) -> bool:
        return self.image[0] is None


@dataclass
class _AttentionContext:
    mask: torch.Tensor | None = None  # full-sequence mode: True where a query may attend
    cache: KVCache | None = None  # frame mode
    write: bool = False
    rope_keys: tuple[torch.Tensor, torch.Tensor] | None = None  # frame mode: cached frames + this one
    rope_query: tuple[torch.Tensor, torch.Tensor] | None = None
    rope_once: bool = True  # ring cache: rotate the cached slots once per frame
    cross: CrossCache | None = None  # cached cross-attention keys and values


class CausalWanAttnProcessor:
    """Self-attention of one layer of the student: masked over a full sequence, or over the KV cache."""

    def __init__(self, layer: int):
        self.layer = layer
        self.ctx: _AttentionContext | None = None

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        ctx = self.ctx or _AttentionContext()
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        mask = ctx.mask
        if isinstance(ctx.cache, RingKVCache):
            return self._ring(attn, ctx, query, key, value)
        if ctx.cache is None:
            query, key = apply_rope(query, *rotary_emb), apply_rope(key, *rotary_emb)
        else:
            past_k, past_v = ctx.cache.read(self.layer)
            if ctx.write:
                ctx.cache.write(self.layer, key, value)
            if past_k is not None:
                key, value = torch.cat([past_k, key], 1), torch.cat([past_v, value], 1)
            query, key = apply_rope(query, *ctx.rope_query), apply_rope(key, *ctx.rope_keys)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask
        )
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _ring(
        self, attn: nn.Module, ctx: _AttentionContext, query: torch.Tensor, key: torch.Tensor,
        value: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Attention over a :class:`RingKVCache`: the current frame's keys and values go into its slot
        (:attr:`RingKVCache.current_slot`), the cached slots are rotated once per frame (every pass
        without ``rope_once``), and the frame attends to the slots up to its own: no mask."""
        out = self._ring_attention(ctx, query, key, value)
        return attn.to_out[1](attn.to_out[0](out.type_as(query)))

    @torch.compiler.disable
    def _ring_attention(
        self, ctx: _AttentionContext, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """The cache's bookkeeping and the attention, outside ``torch.compile``: the slot index and the
        frame count are Python integers that would otherwise recompile the block at every frame."""
        ring, layer = ctx.cache, self.layer
        if ring.values[layer] is None:
            ring.allocate(layer, key)
        cos, sin = ctx.rope_keys
        cached = ring.current_slot * ring.tokens  # the slots before the current frame's
        span = cached + ring.tokens
        keys, values = ring.keys[layer], ring.values[layer]
        if not ctx.rope_once or ring.rotated_at[layer] != ring.frames_written:
            keys[:, :cached] = apply_rope(ring.raw[layer][:, :cached], cos[:, :cached], sin[:, :cached])
            ring.rotated_at[layer] = ring.frames_written
        keys[:, cached:span] = apply_rope(key, cos[:, cached:], sin[:, cached:])
        values[:, cached:span] = value
        query = apply_rope(query, cos[:, cached:], sin[:, cached:])
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), keys[:, :span].transpose(1, 2), values[:, :span].transpose(1, 2)
        )
        if ctx.write:
            ring.write(layer, key, value)
        return out.transpose(1, 2).flatten(2, 3)


class CachedCrossAttnProcessor:
    """Cross-attention of one layer (text and image tokens, as diffusers' ``WanAttnProcessor``) with the
    keys and values from a :class:`CrossCache`: computed from the embedded tokens the pass brings
    (``CrossCache.pending``) when the cache lacks them, reused otherwise. Without a cache, diffusers'
    processor runs."""

    def __init__(self, layer: int, base: Any):
        self.layer, self.base = layer, base
        self.ctx: _AttentionContext | None = None

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        cross = self.ctx.cross if self.ctx is not None else None
        if cross is None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        text_kv, image_kv = self._keys_values(attn, cross)
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, *text_kv).transpose(1, 2).flatten(2, 3).type_as(query)
        if image_kv is not None:
            img = F.scaled_dot_product_attention(query, *image_kv).transpose(1, 2).flatten(2, 3)
            out = out + img.type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    @torch.compiler.disable
    def _keys_values(self, attn: nn.Module, cross: CrossCache) -> tuple[Any, Any]:
        """The layer's (text keys, values) and (image keys, values), computed where the cache lacks
        them; outside ``torch.compile``, whose guards would see the cache change every frame."""
        layer, (text, image) = self.layer, cross.pending
        if cross.text[layer] is None:
            k = attn.norm_k(attn.to_k(text)).unflatten(2, (attn.heads, -1))
            v = attn.to_v(text).unflatten(2, (attn.heads, -1))
            cross.text[layer] = (k.transpose(1, 2), v.transpose(1, 2))
        if attn.add_k_proj is None:
            return cross.text[layer], None
        if cross.image[layer] is None:
            k = attn.norm_added_k(attn.add_k_proj(image)).unflatten(2, (attn.heads, -1))
            v = attn.add_v_proj(image).unflatten(2, (attn.heads, -1))
            cross.image[layer] = (k.transpose(1, 2), v.transpose(1, 2))
        return cross.text[layer], cross.image[layer]


class ARDragTransformer(WanTransformer3DModel):
    """The bidirectional teacher: Wan 2.1 I2V plus a zero-initialised control patch embedding."""

    causal = False  # the student subclass sets True: block-causal self-attention processors

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 36,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = 1280,
        added_kv_proj_dim: int | None = 5120,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        control_channels: int = 16,
        cache_window: int = 7,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        if cache_window + 1 > rope_max_seq_len:
            raise ConfigError(f"cache_window {cache_window} needs rope_max_seq_len > {cache_window}")
        inner = num_attention_heads * attention_head_dim
        self.control_embedding = nn.Conv3d(control_channels, inner, kernel_size=patch_size, stride=patch_size)
        nn.init.zeros_(self.control_embedding.weight)
        nn.init.zeros_(self.control_embedding.bias)
        if self.causal:
            for i, block in enumerate(self.blocks):
                block.attn1.set_processor(CausalWanAttnProcessor(i))
                block.attn2.set_processor(CachedCrossAttnProcessor(i, block.attn2.processor))

    @classmethod
    def from_wan(
        cls, base: WanTransformer3DModel | str, control_channels: int = 16, cache_window: int = 7, **load: Any
    ) -> ARDragTransformer:
        """This model from a Wan I2V transformer: a loaded one, or a hub id / local folder (``load`` goes
        to ``from_pretrained``, e.g. ``subfolder``, ``torch_dtype``). Base weights are copied, the control
        weights are zero, so the result computes what the base computes."""
        if isinstance(base, str):
            load.setdefault("subfolder", "transformer")
            base = WanTransformer3DModel.from_pretrained(base, **load)
        config = {k: v for k, v in base.config.items() if not k.startswith("_")}
        model = cls.from_config(
            {**config, "control_channels": control_channels, "cache_window": cache_window}
        )
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or set(missing) != {"control_embedding.weight", "control_embedding.bias"}:
            raise ConfigError(f"the base checkpoint does not fit: missing {missing}, unexpected {unexpected}")
        # the base's dtype, with the modules Wan keeps in float32 (norms, time embedding, RoPE) kept so
        return model if model.dtype == base.dtype else cast_keeping_fp32(model, base.dtype)

    # -- shared body -------------------------------------------------------------------------------
    def _embed(self, hidden_states: torch.Tensor, control: torch.Tensor | None) -> torch.Tensor:
        x = self.patch_embedding(hidden_states)
        if control is not None:
            if control.shape[2:] != hidden_states.shape[2:]:
                raise ConfigError(
                    f"control latent has shape {tuple(control.shape)}; expected frames and size "
                    f"{tuple(hidden_states.shape[2:])} like the video latent"
                )
            x = x + self.control_embedding(control.to(x.dtype))
        return x.flatten(2).transpose(1, 2).contiguous()

    def _body(
        self,
        hidden_states: torch.Tensor,
        control: torch.Tensor | None,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
        checkpoint: bool = False,
        cross: CrossCache | None = None,
    ) -> torch.Tensor:
        """``checkpoint``: recompute each block in the backward pass (diffusers' gradient checkpointing).
        Only for plain bidirectional passes: a masked or cached pass hands its mask and KV cache to the
        processors for the duration of the forward, so a recompute would see none (or a cache mutated
        since), and those passes never checkpoint. ``cross``: cross-attention keys and values cached
        across passes (the frame mode's fast path)."""
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        x = self._embed(hidden_states, control)
        ts_seq_len = None
        if timestep.ndim == 2:  # one timestep per token (a per-frame schedule)
            ts_seq_len = timestep.shape[1]
            timestep = timestep.flatten()
        if cross is None:
            temb, proj, ehs, ehs_img = self.condition_embedder(
                timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
            )
            if ehs_img is not None:
                ehs = torch.concat([ehs_img, ehs], dim=1)
        else:  # embed only the tokens whose keys and values the cache lacks (none: zero text tokens)
            text = encoder_hidden_states if cross.needs_text else encoder_hidden_states[:, :0]
            image = encoder_hidden_states_image if cross.needs_image else None
            temb, proj, ehs, ehs_img = self.condition_embedder(
                timestep, text, image, timestep_seq_len=ts_seq_len
            )
            cross.pending, ehs = (ehs if cross.needs_text else None, ehs_img), None
        proj = proj.unflatten(2, (6, -1)) if ts_seq_len is not None else proj.unflatten(1, (6, -1))
        for block in self.blocks:
            if checkpoint and torch.is_grad_enabled():
                x = self._gradient_checkpointing_func(block, x, ehs, proj, rotary_emb)
            else:
                x = block(x, ehs, proj, rotary_emb)
        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)
        x = x.reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | Transformer2DModelOutput:
        """The base model's forward plus ``control`` (B, control_channels, F, h, w) latents."""
        out = self._body(
            hidden_states, control, timestep, encoder_hidden_states, encoder_hidden_states_image,
            self.rope(hidden_states), checkpoint=self.gradient_checkpointing,
        )  # fmt: skip
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


class CausalARDragTransformer(ARDragTransformer):
    """The student: the same weights, block-causal self-attention, one latent frame at a time."""

    causal = True

    @contextlib.contextmanager
    def _attention(self, ctx: _AttentionContext) -> Iterator[None]:
        """Hand ``ctx`` (mask or cache) to every self-attention processor for one forward pass."""
        for block in self.blocks:
            block.attn1.processor.ctx = block.attn2.processor.ctx = ctx
        try:
            yield
        finally:
            for block in self.blocks:
                block.attn1.processor.ctx = block.attn2.processor.ctx = None

    def new_cache(self, window: int | None = None, sink: int = 0) -> KVCache:
        return KVCache(len(self.blocks), window or self.config.cache_window, sink)

    def frame_mask(
        self, num_frames: int, tokens_per_frame: int, window: int | None, device: Any
    ) -> torch.Tensor:
        """Block-causal mask over ``num_frames``: frame i sees frames i - window .. i (all before it
        when ``window`` is None), every token of a frame sees the whole frame."""
        frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
        seen = frame[None, :] <= frame[:, None]
        if window is not None:
            seen &= frame[None, :] >= frame[:, None] - window
        return seen

    def forward_sequence(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        window: int | None = None,
    ) -> torch.Tensor:
        """All frames at once under the block-causal (optionally sliding-window) mask, absolute RoPE
        positions; ``timestep`` (B,) or per frame (B, F). The reference for frame-by-frame generation."""
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        n = (h // p_h) * (w // p_w)
        if timestep.ndim == 2:
            timestep = timestep.repeat_interleave(n, dim=1)
        with self._attention(
            _AttentionContext(mask=self.frame_mask(f // p_t, n, window, hidden_states.device))
        ):
            return self._body(
                hidden_states, control, timestep, encoder_hidden_states, encoder_hidden_states_image,
                self.rope(hidden_states),
            )  # fmt: skip

    def forward_frame(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        cache: KVCache | RingKVCache,
        encoder_hidden_states_image: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        write: bool = False,
        *,
        cross: CrossCache | None = None,
        rope_once: bool = True,
    ) -> torch.Tensor:
        """One latent frame (B, C, 1, h, w) attending to the cached frames and itself; with ``write``
        its keys and values join the cache (the oldest frame beyond the window leaves).

        The streaming fast path: a :class:`RingKVCache` (rotated once per frame unless ``rope_once`` is
        False) and ``cross``, a :class:`CrossCache` whose keys and values the pass reuses or fills."""
        if hidden_states.ndim != 5 or hidden_states.shape[2] != 1:
            raise ConfigError(
                f"forward_frame takes one latent frame (B, C, 1, h, w); got {tuple(hidden_states.shape)}"
            )
        _, _, _, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        n = (h // p_h) * (w // p_w)
        if isinstance(cache, RingKVCache):
            cos, sin = self.rope_at(tuple(cache.positions()), h // p_h, w // p_w, hidden_states.device)
            ctx = _AttentionContext(
                cache=cache, write=write, rope_keys=(cos, sin), rope_once=rope_once, cross=cross
            )
        else:
            cached = cache.cached_frames
            cos, sin = self._rope_frames(cached + 1, h // p_h, w // p_w, hidden_states.device)
            ctx = _AttentionContext(
                cache=cache, write=write, rope_keys=(cos, sin), rope_query=(cos[:, -n:], sin[:, -n:]),
                cross=cross,
            )  # fmt: skip
        with self._attention(ctx):
            out = self._body(
                hidden_states, control, timestep, encoder_hidden_states, encoder_hidden_states_image, None,
                cross=cross,
            )  # fmt: skip
        if write:
            cache.frames_written += 1
        return out

    def new_ring_cache(self, window: int | None = None, sink: int = 0) -> RingKVCache:
        return RingKVCache(len(self.blocks), window or self.config.cache_window, sink)

    def rope_at(
        self, positions: tuple[int, ...], pph: int, ppw: int, device: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for frames at these window-relative ``positions`` (a ring cache's slots, then the
        current frame) of a pph x ppw grid; computed once per arrangement and kept, so a stream builds no
        table and copies nothing to the device per frame (a ring has at most a few dozen arrangements)."""
        key = (positions, pph, ppw, str(device))
        tables = self.__dict__.setdefault("_rope_at", {})
        if key not in tables:
            n, frames = pph * ppw, max(positions) + 1
            cos, sin = self._rope_frames(frames, pph, ppw, device)
            if positions != tuple(range(len(positions))):  # a full ring: the slots out of time order
                index = torch.tensor(positions, device=device)
                cos = cos.view(frames, n, -1)[index].reshape(1, len(positions) * n, 1, -1)
                sin = sin.view(frames, n, -1)[index].reshape(1, len(positions) * n, 1, -1)
            tables[key] = (cos, sin)
        return tables[key]

    def _rope_frames(self, frames: int, pph: int, ppw: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables for frame positions 0 .. frames-1 of a pph x ppw grid (window-relative)."""
        rope = self.rope
        if frames > rope.max_seq_len:
            raise ConfigError(
                f"{frames} frames in one attention window exceed the RoPE table ({rope.max_seq_len})"
            )
        split = [rope.t_dim, rope.h_dim, rope.w_dim]
        out = []
        for table in (rope.freqs_cos, rope.freqs_sin):
            t, hh, ww = table.split(split, dim=1)
            grid = torch.cat(
                [
                    t[:frames].view(frames, 1, 1, -1).expand(frames, pph, ppw, -1),
                    hh[:pph].view(1, pph, 1, -1).expand(frames, pph, ppw, -1),
                    ww[:ppw].view(1, 1, ppw, -1).expand(frames, pph, ppw, -1),
                ],
                dim=-1,
            )
            out.append(grid.reshape(1, frames * pph * ppw, 1, -1).to(device))
        return out[0], out[1]
