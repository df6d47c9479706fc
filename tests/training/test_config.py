"""Bad training configurations (ardrag.training.config, and the checks of ardrag.training.run.check_config
against the files a configuration names) fail before any compute, with the field, the value and what
was expected."""

import json

import pytest
import yaml
from diffusers import WanTransformer3DModel

from ardrag.cli import main
from ardrag.errors import ConfigError
from ardrag.model.tiny import TINY_TRANSFORMER_CONFIG
from ardrag.model.transformer_ardrag import ARDragTransformer
from ardrag.training.run import check_config, resolve_config, train


def fails(capsys, tmp_path, stage, config, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    code = main(["train", stage, "--preset", "tiny", "--config", str(path), "--run-dir", str(run_dir), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    for part in expected:
        assert part in err, err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "losses.jsonl").exists()  # no compute
    return err


def test_cache_of_zero_frames(capsys, tmp_path):
    fails(capsys, tmp_path, "distill", {"distill": {"cache_window": 0}},
          ["distill.cache_window = 0", "expected at least 1"])  # fmt: skip


def test_unknown_rollout_mode(capsys, tmp_path):
    fails(capsys, tmp_path, "distill", {"distill": {"rollout": "teacher_forcing"}},
          ["distill.rollout = 'teacher_forcing'", "'self_rollout' or 'self_forcing'"])  # fmt: skip


def test_missing_dataset(capsys, tmp_path):
    fails(capsys, tmp_path, "teacher", {"data": {"root": str(tmp_path / "nowhere")}},
          [f"data.root '{tmp_path / 'nowhere'}'", "no sharded dataset there"])  # fmt: skip


def test_checkpoint_of_another_shape(capsys, tmp_path):
    other = ARDragTransformer.from_wan(WanTransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, "num_layers": 3}))
    other.save_pretrained(str(tmp_path / "teacher"))
    fails(capsys, tmp_path, "distill", {"model": {"init": str(tmp_path / "teacher")}},
          ["does not fit", "num_layers is 3", "has 2"])  # fmt: skip


def test_init_that_is_not_a_folder_and_distill_without_a_teacher(tmp_path):
    config = resolve_config("distill", preset="tiny", overrides={"model": {"init": str(tmp_path / "x")}})
    with pytest.raises(ConfigError, match="model.init .* is not a folder"):
        check_config(config)
    config = resolve_config("distill", preset="tiny", overrides={"model": {"preset": None}})
    with pytest.raises(ConfigError, match="distillation starts from the fine-tuned teacher"):
        check_config(config)


def test_resuming_a_run_of_the_other_stage(tmp_path):
    config = resolve_config("teacher", preset="tiny", overrides={"run_dir": str(tmp_path), "steps": 1,
                                                                  "save_every": 1})  # fmt: skip
    train(config, progress=False)
    meta = json.loads((tmp_path / "checkpoints" / "step-1" / "trainer.json").read_text())
    assert meta["stage"] == "teacher"
    distill = resolve_config("distill", preset="tiny", overrides={"run_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="checkpoint of stage 'teacher'; this run is 'distill'"):
        check_config(distill, resume=True)
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        train(resolve_config("teacher", preset="tiny", overrides={"run_dir": str(tmp_path)}), progress=False)


def test_clip_length_and_frames(tmp_path):
    with pytest.raises(ConfigError, match=r"data.max_frames = 8.*4k \+ 1"):
        resolve_config("teacher", preset="tiny", overrides={"data": {"max_frames": 8}})
    config = resolve_config("distill", preset="tiny", overrides={"distill": {"latent_frames": 4}})
    with pytest.raises(ConfigError, match="latent_frames = 4, but clips of data.max_frames = 9 have 3"):
        check_config(config)
    with pytest.raises(ConfigError, match="no configuration"):
        resolve_config("teacher")


def test_grpo_configuration_errors(tmp_path):
    real = {"model": {"preset": None, "init": str(tmp_path)}}
    with pytest.raises(ConfigError, match="grpo.aesthetic_clip and grpo.aesthetic_head are not set"):
        check_config(resolve_config("grpo", preset="tiny", overrides=real))
    with pytest.raises(ConfigError, match="GRPO starts from the distilled student"):
        check_config(resolve_config("grpo", preset="tiny", overrides={"model": {"preset": None}}))
    with pytest.raises(ConfigError, match=r"rewards \['beauty'\]; expected a mapping of names in"):
        resolve_config("grpo", preset="tiny", overrides={"grpo": {"reward_weights": {"beauty": 1.0}}})
    with pytest.raises(ConfigError, match="grpo.group_size"):
        resolve_config("grpo", preset="tiny", overrides={"grpo": {"group_size": 1}})
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"grpo": {"latent_frames": 5}}))
    with pytest.raises(ConfigError, match="grpo.latent_frames = 5, but clips of data.max_frames = 9 have 3"):
        check_config(resolve_config("grpo", str(path), preset="tiny"))
