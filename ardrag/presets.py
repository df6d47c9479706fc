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
    # ardrag.data.sources.wan.WanConfig
    "wan": {
        # Random-weight pipeline built in memory: offline, ~0.3 s per clip on CPU; it makes noise.
        # Renders at 1/8 of the bucket (640x368 -> 80x48) and resizes up to the bucket.
        "tiny": {
            "preset": "tiny",
            "num_frames": 9,
            "num_inference_steps": 2,
            "dtype": "float32",
            "render_downscale": 8,
        },
        # Wan 2.1 I2V 14B 480P with the reference sampler's settings: 81 frames at 16 fps, 40 steps, CFG 5.
        "14b": {
            "model": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            "num_frames": 81,
            "fps": 16.0,
            "num_inference_steps": 40,
            "guidance_scale": 5.0,
            "dtype": "bfloat16",
        },
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
