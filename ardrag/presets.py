"""Named presets, in one place: family -> preset name -> field overrides of that family's config.

Families:

- ``procedural`` and ``wan``: the data sources' configs (:class:`~ardrag.data.sources.procedural.
  ProceduralConfig`, :class:`~ardrag.data.sources.wan.WanConfig`).
- ``model``: the models ardrag builds or loads. A preset with ``transformer`` is built in memory with
  random weights by :mod:`ardrag.model.tiny` (its value: fields over the tiny Wan transformer's config);
  one with ``hub_id`` is a diffusers Wan I2V model loaded by id (or from a local folder of it). One with
  ``weights`` also ships trained: ``ardrag/assets/<weights>/``, a model folder
  (:mod:`ardrag.model.model_folder`) that ``benchmarks/make_toy_model.py --ship`` writes. The ``toy``
  preset is both: as ``model.preset`` it is the architecture its recipe trains from, with random
  weights; ``--preset toy`` (``ardrag generate``, ``ardrag eval``) and ``model.wan: toy`` load the
  trained model. ``eval_set`` names the evaluation set (``datasets/eval/<eval_set>.yaml``) that
  ``ardrag eval`` uses for the preset when no benchmark is given.
- ``train``: a whole training config (:class:`~ardrag.training.config.TrainConfig`), under the file and
  the command line's values.

Every lookup goes through :func:`preset`, so an unknown name gets one clear error listing the known ones.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from ardrag.errors import ConfigError

TINY = "tiny"  # random weights at toy size, offline: tests and quick looks on a CPU
TOY = "toy"  # the tiny encoders with a wider transformer: the toy model, trained on a CPU and shipped
WAN_I2V_14B_480P = "wan2.1-i2v-14b-480p"  # the real model, the paper's base
DEFAULT_MODEL = WAN_I2V_14B_480P
DEFAULT_WAN = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"  # its hub id: the Wan I2V model loaded by default

SMALL = "small"  # two layers of the 1.3B transformer's width, random: real widths on a CPU
WAN_1_3B_RANDOM = "1.3b"  # the Wan 2.1 1.3B transformer's shape (with I2V inputs), random weights
WAN_14B_RANDOM = "14b"  # the Wan 2.1 I2V 14B transformer's shape, random weights

# Transformer fields of the Wan 2.1 shapes (diffusers' WanTransformer3DModel; the 1.3B model is text-to-
# video upstream: here it takes the I2V inputs, 36 channels and CLIP tokens, as AR-Drag's student does).
WAN_1_3B = {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30,
            "text_dim": 4096, "image_dim": 1280, "added_kv_proj_dim": 1536}  # fmt: skip
WAN_14B = {"num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40,
           "text_dim": 4096, "image_dim": 1280, "added_kv_proj_dim": 5120}  # fmt: skip
CLIP_VIT_H_14 = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                 "num_attention_heads": 16, "image_size": 224, "patch_size": 14}  # fmt: skip
UMT5_STAND_IN = {"d_model": 4096, "d_kv": 64, "d_ff": 1024, "num_layers": 1, "num_heads": 8}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "procedural": {
        "default": {},
        # Short clips for tests and quick looks.
        TINY: {"num_frames": 9},
    },
    # ardrag.data.captioners.vlm.VLMConfig: a random-weight LLaVA built in memory (tests, CPU)
    "captioner": {TINY: {}},
    "model": {
        # ardrag.model.tiny.TINY_TRANSFORMER_CONFIG as it is: 2 layers, 2 heads x 12.
        TINY: {"transformer": {}},
        # 4 layers, 4 heads x 32, ffn 256 (1.1 M parameters): the tiny preset's 24-wide tokens cannot hold
        # the 64 latent values of the patch they predict, and its teacher learns nothing visible.
        # Trained by benchmarks/make_toy_model.py (the VAE, teacher, students and GRPO of the toy
        # benchmarks) and shipped in ardrag/assets/toy; its clips look like ardrag.data.sources.toy's.
        TOY: {
            "transformer": {
                "num_attention_heads": 4,
                "attention_head_dim": 32,
                "num_layers": 4,
                "ffn_dim": 256,
                "added_kv_proj_dim": 128,  # the inner dim, heads x head_dim
            },
            "weights": TOY,
            "eval_set": TOY,
        },
        # Real shapes with random weights, for benchmarks of speed and memory (benchmarks/bench_realtime.py):
        # the Wan 2.1 transformer widths with I2V inputs, the real Wan VAE and CLIP ViT-H/14 shapes, and a
        # one-layer UMT5 stand-in of the real output width (4096; the prompt is encoded once per session).
        # "small" is two layers of the 1.3B width, with two-layer encoders: the CPU tests' real width.
        SMALL: {
            "transformer": {**WAN_1_3B, "num_layers": 2},
            "text_encoder": UMT5_STAND_IN,
            "image_encoder": {**CLIP_VIT_H_14, "num_hidden_layers": 2},
            "vae": {},  # the real Wan 2.1 VAE (AutoencoderKLWan's defaults)
            "image_size": 224,
        },
        WAN_1_3B_RANDOM: {
            "transformer": WAN_1_3B,
            "text_encoder": UMT5_STAND_IN,
            "image_encoder": CLIP_VIT_H_14,
            "vae": {},
            "image_size": 224,
        },
        WAN_14B_RANDOM: {
            "transformer": WAN_14B,
            "text_encoder": UMT5_STAND_IN,
            "image_encoder": CLIP_VIT_H_14,
            "vae": {},
            "image_size": 224,
        },
        WAN_I2V_14B_480P: {"hub_id": DEFAULT_WAN},
        "wan2.1-i2v-14b-720p": {"hub_id": "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"},
    },
    "wan": {
        # Random-weight pipeline built in memory: offline, ~0.3 s per clip on CPU; it makes noise.
        # Renders at 1/8 of the bucket (640x368 -> 80x48) and resizes up to the bucket.
        TINY: {
            "preset": TINY,
            "num_frames": 9,
            "num_inference_steps": 2,
            "dtype": "float32",
            "render_downscale": 8,
        },
        # Wan 2.1 I2V 14B 480P with the reference sampler's settings: 81 frames at 16 fps, 40 steps, CFG 5.
        "14b": {
            "model": DEFAULT_WAN,
            "num_frames": 81,
            "fps": 16.0,
            "num_inference_steps": 40,
            "guidance_scale": 5.0,
            "dtype": "bfloat16",
        },
    },
    # The whole training recipe at toy size, offline, a few seconds per step on CPU (`--preset tiny`).
    "train": {
        TINY: {
            "run_dir": "runs/tiny",
            "steps": 4,
            "batch_size": 1,
            "save_every": 2,
            "mixed_precision": "no",
            "data": {"procedural_clips": 4, "scale": 0.125, "max_frames": 9, "loader": {"decoder": "pyav"}},
            "model": {"preset": TINY},
            "optim": {"lr": 1e-4},
            "distill": {"latent_frames": 3, "cache_window": 2, "generator_every": 2},
            "grpo": {"group_size": 2, "latent_frames": 3, "cache_window": 2},
            "copo": {"group_size": 3, "anchors": 2, "latent_frames": 3, "cache_window": 2,
                     "replay": {"groups": 1, "size": 4}},
            # two step prompts over the 9 frames: the switch (and the fork) at latent frame 2, pixel frame 5
            "tempact": {"group_size": 2, "plans": 2, "latent_frames": 3, "cache_window": 2,
                        "planner": {"name": "fixed", "steps": [
                            {"start": 0, "end": 5, "text": "a kite climbs into the wind"},
                            {"start": 5, "end": 9, "text": "the kite dives towards the sea"}]}},
        },
    },
}


def preset(family: str, name: str) -> dict[str, Any]:
    """The overrides of preset ``name`` in ``family`` (a copy); a clear error lists the known names."""
    if family not in PRESETS:
        raise ConfigError(f"no presets for {family!r}; known families: {sorted(PRESETS)}")
    if name not in PRESETS[family]:
        raise ConfigError(
            f"preset {name!r} is unknown for {family}; expected one of {sorted(PRESETS[family])}"
        )
    return copy.deepcopy(PRESETS[family][name])


def check_preset(family: str, name: str | None) -> str | None:
    """``name`` when it names a preset of ``family`` (or is None); a pydantic field validator's body."""
    if name is not None and name not in PRESETS.get(family, {}):
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS.get(family, {}))}")
    return name


ASSETS = Path(__file__).resolve().parent / "assets"  # the trained models shipped with the package
MAKE_TOY = "python benchmarks/make_toy_model.py --out DIR --ship"  # the command that writes them


def random_models() -> list[str]:
    """The model presets built in memory with random weights (no download, no folder)."""
    return sorted(k for k, v in PRESETS["model"].items() if "transformer" in v)


def check_random_model(name: str | None) -> str | None:
    """``name`` when it names a model preset built with random weights (or is None); else ValueError."""
    if name is not None and name not in random_models():
        if name in PRESETS["model"]:
            raise ValueError(
                f"model preset {name!r} is a pretrained model ({PRESETS['model'][name]['hub_id']}), not "
                f"one built with random weights ({random_models()}): give it as the Wan model "
                "(model.wan, --model)"
            )
        raise ValueError(f"unknown model preset {name!r}; expected one of {random_models()}")
    return name


def shipped_models() -> list[str]:
    """The model presets whose trained weights ship with the package (``weights``)."""
    return sorted(k for k, v in PRESETS["model"].items() if "weights" in v)


def shipped_folder(name: str) -> Path:
    """The model folder of shipped model preset ``name``; a ConfigError naming the path and the command
    that writes it when the folder is not there."""
    entry = preset("model", name)
    if "weights" not in entry:
        raise ConfigError(f"model preset {name!r} has no shipped weights; these have: {shipped_models()}")
    folder = ASSETS / entry["weights"]
    if not (folder / "recipe.json").is_file():
        raise ConfigError(
            f"the {name} model's weights are not in {folder} (no recipe.json there): make them with "
            f"`{MAKE_TOY}` from a checkout, or install a package that ships them"
        )
    return folder


def wan_model(value: str) -> str:
    """What loads a Wan I2V model: a pretrained model preset's name becomes its hub id, a shipped one's
    its model folder (which must exist); any other value (a hub id, a local folder) is taken as it is."""
    entry = PRESETS["model"].get(value)
    if entry is None:
        return value
    if "weights" in entry:
        try:
            return str(shipped_folder(value))
        except ConfigError as err:
            raise ValueError(str(err)) from None
    if "hub_id" not in entry:
        raise ValueError(
            f"model preset {value!r} is built with random weights, not loaded: set it as the preset"
        )
    return entry["hub_id"]


def hub_id(name: str = DEFAULT_MODEL) -> str:
    """The diffusers hub id of a real model preset."""
    entry = preset("model", name)
    if "hub_id" not in entry:
        raise ConfigError(f"model preset {name!r} is built in memory; it has no hub id")
    return entry["hub_id"]


# Config field types that name presets: checked where a config is validated, with the errors above.
RandomModelPreset = Annotated[str | None, AfterValidator(check_random_model)]
WanModel = Annotated[str, AfterValidator(wan_model)]  # a hub id, a pretrained model preset or a folder
TrainPreset = Annotated[str | None, AfterValidator(functools.partial(check_preset, "train"))]
CaptionerPreset = Annotated[str | None, AfterValidator(functools.partial(check_preset, "captioner"))]
