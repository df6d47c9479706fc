"""Keep each sample's model inputs for the whole run: frozen encoders make them again every epoch.

:func:`~ardrag.training.conditions.prepare` is deterministic (posterior modes, rendered heatmaps, frozen
text and image encoders), so a sample's :class:`~ardrag.training.conditions.Conditions` are the same every
time it comes back. At toy sizes its VAE encodings cost several times the transformer's step; a
:class:`ConditionsCache` attached to a stage makes them once per sample, one sample at a time, and builds
each batch from the kept ones. Several stages can share one cache (a teacher, then its students), when
they share the pipeline and the data settings; stages that want negative prompts keep entries apart.

Memory: every sample's latents, control latents and text embeddings stay in memory, so this is for
small datasets (toy runs, tests), not for a real training set. The loader still runs every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ardrag.training.conditions import Conditions


class ConditionsCache:
    """Model inputs per (sample key, with negative prompts); see the module docstring."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, bool], Conditions] = {}
        self._owner: tuple[Any, float, int] | None = None  # (pipeline, data.scale, data.max_frames)

    def __len__(self) -> int:
        return len(self.entries)

    def conditions(self, guided: bool = False) -> list[Conditions]:
        """The kept one-sample inputs, in the order they were first made."""
        return [c for (_, g), c in self.entries.items() if g == guided]

    def attach(self, stage: Any, guided: bool = False) -> Any:
        """Route ``stage.batch`` through this cache and return the stage. ``guided``: the stage's inputs
        hold negative prompts (a distillation with ``distill.real_guidance > 1``); it keys the entries,
        and a stage whose inputs disagree with it fails on its first batch."""
        d = stage.config.data
        owner = (stage.pipe, d.scale, d.max_frames)
        if self._owner is None:
            self._owner = owner
        elif owner[0] is not self._owner[0] or owner[1:] != self._owner[1:]:
            raise ValueError(
                f"this cache holds inputs of another pipeline or data settings (scale, max_frames = "
                f"{self._owner[1:]}); stage {stage.name!r} has scale, max_frames = {owner[1:]}: use a "
                "cache of its own"
            )
        make = stage.batch

        def batch(raw: dict[str, Any], index: list[int]) -> Conditions:
            return self.batch(make, raw, index, guided)

        stage.batch = batch
        return stage

    def batch(self, make: Any, raw: dict[str, Any], index: list[int], guided: bool) -> Conditions:
        """The inputs of a loader batch: each sample's from the cache, or ``make`` (a stage's own
        ``batch``) on that sample alone, kept; then joined in the batch's order with its indices."""
        parts = []
        for j, key in enumerate(raw["key"]):
            if (key, guided) not in self.entries:
                one = {k: v[j : j + 1] if isinstance(v, torch.Tensor | list) else v for k, v in raw.items()}
                c = make(one, [0])
                if (c.text_neg is not None) != guided:
                    raise ValueError(
                        f"the stage's inputs {'lack' if guided else 'hold'} negative prompts; attach it "
                        f"with guided={c.text_neg is not None}"
                    )
                self.entries[key, guided] = c
            parts.append(self.entries[key, guided])
        return join(parts, index, list(raw["key"]))


def join(parts: list[Conditions], index: list[int], keys: list[str]) -> Conditions:
    """One batch of the samples' inputs ``parts``, with the batch's global ``index`` and ``keys``; the
    point axis of the targets (tracks, visibility, intensity) padded to the longest, as the loader's
    ``collate`` pads it (padded points are invisible, of intensity 0)."""

    def cat(name: str) -> Any:
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            return None
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values)
        n = max(v.shape[2] for v in values)  # (1, T, N, ...)
        return np.concatenate([np.pad(v, [(0, 0), (0, 0), (0, n - v.shape[2])] + [(0, 0)] * (v.ndim - 3))
                               for v in values])  # fmt: skip

    return Conditions(
        latents=cat("latents"), control=cat("control"), ref_latent=cat("ref_latent"), clip=cat("clip"),
        text=cat("text"), text_neg=cat("text_neg"), index=list(index), keys=keys, tracks=cat("tracks"),
        visible=cat("visible"), intensity=cat("intensity"),
    )  # fmt: skip
