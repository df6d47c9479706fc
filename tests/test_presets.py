"""Named presets in one place: lookups, their errors, and that nothing else spells a preset's name."""

import re
from pathlib import Path

import pytest

from ardrag.errors import ConfigError
from ardrag.presets import (
    DEFAULT_WAN,
    PRESETS,
    SMALL,
    TINY,
    TOY,
    WAN_1_3B_RANDOM,
    WAN_14B_RANDOM,
    check_preset,
    check_random_model,
    hub_id,
    preset,
    random_models,
    shipped_folder,
    shipped_models,
    wan_model,
)

ROOT = Path(__file__).resolve().parents[1]
CODE = ("ardrag", "flows", "annotation", "studio", "benchmarks", "datasets")


def test_presets_in_one_place():
    assert preset("procedural", TINY)["num_frames"] == 9
    with pytest.raises(ConfigError, match="expected one of"):
        preset("procedural", "huge")
    with pytest.raises(ConfigError, match="no presets"):
        preset("nothing", TINY)


def test_a_preset_is_a_copy():
    preset("train", TINY)["data"]["max_frames"] = 81
    assert preset("train", TINY)["data"]["max_frames"] == 9


def test_model_presets_are_built_or_loaded():
    assert random_models() == sorted([TINY, TOY, SMALL, WAN_1_3B_RANDOM, WAN_14B_RANDOM])
    assert hub_id() == DEFAULT_WAN
    assert hub_id("wan2.1-i2v-14b-720p").endswith("720P-Diffusers")
    with pytest.raises(ConfigError, match="built in memory; it has no hub id"):
        hub_id(TINY)
    assert check_random_model(None) is None and check_random_model(TOY) == TOY
    with pytest.raises(ValueError, match=r"'wan2.1-i2v-14b-480p' is a pretrained model \(Wan-AI/.*model.wan"):
        check_random_model("wan2.1-i2v-14b-480p")
    with pytest.raises(
        ValueError,
        match=r"unknown model preset 'huge'; expected one of \['1.3b', '14b', 'small', 'tiny', 'toy'\]",
    ):
        check_random_model("huge")
    assert wan_model("wan2.1-i2v-14b-720p") == hub_id("wan2.1-i2v-14b-720p")
    assert wan_model("/weights/wan") == "/weights/wan" and wan_model(DEFAULT_WAN) == DEFAULT_WAN
    with pytest.raises(ValueError, match="'tiny' is built with random weights, not loaded"):
        wan_model(TINY)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; expected one of \['tiny'\]"):
        check_preset("train", "huge")


def test_the_toy_preset_ships_its_trained_weights(tmp_path, monkeypatch):
    """As model.preset the toy is its architecture with random weights; as model.wan (and --preset in
    generate and eval) its model folder in the package, which must be there."""
    import ardrag.presets as presets

    assert shipped_models() == [TOY] and TOY in random_models()
    monkeypatch.setattr(presets, "ASSETS", tmp_path)
    for call in (lambda: shipped_folder(TOY), lambda: wan_model(TOY)):
        with pytest.raises((ConfigError, ValueError), match=f"toy model's weights are not in {tmp_path}/toy"):
            call()
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "recipe.json").write_text("{}")
    assert shipped_folder(TOY) == tmp_path / "toy" and wan_model(TOY) == str(tmp_path / "toy")
    with pytest.raises(ConfigError, match="'tiny' has no shipped weights"):
        shipped_folder(TINY)


def test_a_config_names_a_preset_that_exists():
    from ardrag.training.run import resolve_config

    with pytest.raises(ConfigError, match="preset 'huge' is unknown for train"):
        resolve_config("teacher", preset="huge")
    with pytest.raises(ConfigError, match=r"model.preset = 'huge': .*unknown model preset"):
        resolve_config("teacher", preset=TINY, overrides={"model": {"preset": "huge"}})


def _code_files():
    for top in CODE:
        yield from (p for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".toml"))
    yield from (ROOT / name for name in ("prefect.yaml", "pyproject.toml", "docker-compose.yml"))


def test_only_presets_spell_a_preset_name_or_the_wan_hub_id():
    quoted = re.compile(r"""["']tiny["']""")
    spelled = {
        str(p.relative_to(ROOT)) for p in _code_files() if quoted.search(p.read_text(encoding="utf-8"))
    }
    assert spelled == {"ardrag/presets.py"}
    with_id = [
        str(p.relative_to(ROOT)) for p in _code_files() if DEFAULT_WAN in p.read_text(encoding="utf-8")
    ]
    assert with_id == ["ardrag/presets.py"]
    assert sum(DEFAULT_WAN in str(v) for family in PRESETS.values() for v in family.values()) >= 1
