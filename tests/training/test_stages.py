"""The stage registry: what ``ardrag train`` offers and runs, and that a new stage is one entry."""

import dataclasses

import pytest

from ardrag.cli import build_parser
from ardrag.errors import ConfigError
from ardrag.presets import TINY
from ardrag.training import stages
from ardrag.training.run import check_config, resolve_config, train
from ardrag.training.stages import STAGES, StageSpec, get_stage


def test_the_registry_names_the_paper_stages_in_order():
    assert list(STAGES) == ["teacher", "distill", "grpo", "copo", "tempact"]
    assert [s.export for s in STAGES.values()] == ["teacher", "student", "student", "student", "student"]
    assert [name for name, s in STAGES.items() if s.lora] == ["grpo", "copo", "tempact"]
    assert get_stage("copo").settings(resolve_config("copo", preset=TINY)).group_size == 3
    assert get_stage("tempact").settings(resolve_config("tempact", preset=TINY)).plans == 2
    assert get_stage("distill").settings(resolve_config("distill", preset=TINY)).latent_frames == 3
    assert get_stage("teacher").settings(resolve_config("teacher", preset=TINY)) is None
    with pytest.raises(ConfigError, match=r"unknown training stage 'ppo'; expected one of \['teacher'"):
        get_stage("ppo")
    with pytest.raises(ConfigError, match=r"stage = 'ppo': .*unknown stage 'ppo'"):
        resolve_config("ppo", preset=TINY)


def test_the_cli_offers_the_registry(capsys):
    parser = build_parser()
    assert [parser.parse_args(["train", name]).stage for name in STAGES] == list(STAGES)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "ppo"])
    err = capsys.readouterr().err
    assert "invalid choice: 'ppo'" in err and all(name in err.split("choose from")[1] for name in STAGES)


def test_stage_checks_come_from_the_entry():
    config = resolve_config("grpo", preset=TINY, overrides={"model": {"preset": None}})
    with pytest.raises(ConfigError, match="model.init is not set: GRPO starts from the distilled student"):
        check_config(config)
    config = resolve_config("distill", preset=TINY, overrides={"distill": {"latent_frames": 4}})
    with pytest.raises(ConfigError, match="distill.latent_frames = 4, but clips of data.max_frames = 9"):
        check_config(config)


def test_a_new_stage_is_one_entry(tmp_path, monkeypatch):
    """An entry under a new name, reusing the teacher's Stage with its own exported folder: ``ardrag train``
    offers it, the config accepts it and ``train`` runs and exports it."""
    entry = dataclasses.replace(STAGES["teacher"], name="warmup", export="warmup")
    monkeypatch.setitem(stages.STAGES, "warmup", entry)
    assert isinstance(entry, StageSpec)
    args = build_parser().parse_args(["train", "warmup", "--preset", TINY])
    assert args.stage == "warmup"
    config = resolve_config("warmup", preset=TINY, overrides={"run_dir": str(tmp_path), "steps": 1})
    summary = train(config, progress=False)
    assert summary["stage"] == "warmup" and summary["steps"] == 1
    assert summary["export"] == str(tmp_path / "warmup") and (tmp_path / "warmup" / "config.json").is_file()
