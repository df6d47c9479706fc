"""Named presets, in one place: family -> preset name -> field overrides of that family's config."""

from __future__ import annotations

from typing import Any

from ardrag.errors import ConfigError

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # ardrag.data.sources.procedural.ProceduralConfig
    "procedural": {
        "default": {},
        # Short clips for tests and quick looks.
        "tiny": {"num_frames": 9},
    },
}


def preset(family: str, name: str) -> dict[str, Any]:
    """The overrides of preset ``name`` in ``family``; a clear error lists the known names."""
    if family not in PRESETS:
        raise ConfigError(f"no presets for {family!r}; known families: {sorted(PRESETS)}")
    if name not in PRESETS[family]:
        raise ConfigError(
            f"preset {name!r} is unknown for {family}; expected one of {sorted(PRESETS[family])}"
        )
    return dict(PRESETS[family][name])
