"""Captioners: one small protocol and an explicit registry from name to implementation.

Curation asks a captioner for a clip's prompt when no sidecar file gives one. ``transformers`` runs a
vision-language model (a hub id or a local folder) on one frame of the clip
(:class:`~ardrag.data.captioners.vlm.TransformersCaptioner`); its tiny preset is a random-weight
LLaVA for tests. Captioners load models in ``setup()``, so they pickle to workers before loading.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ardrag.config import build_config
from ardrag.data.captioners.vlm import (
    TransformersCaptioner,
    TransformersCaptionerConfig,
    build_tiny,
    save_tiny,
)
from ardrag.errors import ConfigError


@runtime_checkable
class Captioner(Protocol):
    """Gives a clip a text prompt. ``setup()`` loads the model once (idempotent, safe to call from
    several threads); ``caption`` runs it if needed. ``version`` names the model, for provenance."""

    name: str
    version: str
    thread_safe: bool

    def setup(self) -> None: ...

    def caption(self, video: np.ndarray) -> str:
        """video: uint8 (T, H, W, 3) RGB. One stripped line; "" when the model wrote nothing."""
        ...


CAPTIONERS: dict[str, type] = {"transformers": TransformersCaptioner}
CONFIGS: dict[str, type] = {"transformers": TransformersCaptionerConfig}


def get_captioner(name: str, config_dict: dict[str, Any] | None = None) -> Captioner:
    """The captioner ``name`` built from a plain dict of config fields (validated; unknown keys fail).
    Call ``setup()`` on the result before captioning (in the worker, when there are workers)."""
    if name not in CAPTIONERS:
        raise ConfigError(f"captioner {name!r} is unknown; expected one of {sorted(CAPTIONERS)}")
    config = build_config(CONFIGS[name], config_dict, source=f"captioner {name!r}")
    return CAPTIONERS[name](config)


__all__ = [
    "CAPTIONERS",
    "CONFIGS",
    "Captioner",
    "TransformersCaptioner",
    "TransformersCaptionerConfig",
    "build_tiny",
    "get_captioner",
    "save_tiny",
]
