"""ardrag.retrain.config: a retrain config layers a base, a YAML file and overrides; a training stage's
config layers the preset, the shared ``train`` fields and the stage's own; a bad stage field fails up
front, naming the stage."""

import pytest
import yaml

from ardrag.errors import ConfigError
from ardrag.retrain.config import (
    DEMO,
    STAGES,
    TRAINING,
    RetrainConfig,
    check_stage_inputs,
    load_retrain_config,
    train_config,
)


def test_the_stages_in_order_around_the_training_chain():
    assert TRAINING == ("teacher", "distill", "grpo")
    assert STAGES == ("curation", "annotation", "dataset", *TRAINING, "evaluation")


def test_a_file_over_the_base_and_overrides_over_the_file(tmp_path):
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({"out": "from-file", "teacher": {"config": {"steps": 3}}}))
    config = load_retrain_config(path, {"out": str(tmp_path / "run")}, base=DEMO)
    assert config.root == tmp_path / "run" and config.curation_dir == tmp_path / "run" / "curation"
    assert config.teacher.config == {**DEMO["teacher"]["config"], "steps": 3}  # the file's over DEMO's
    assert config.distill.config == DEMO["distill"]["config"]
    assert config.curation.source_config["num_clips"] == 24


def test_a_stage_config_layers_preset_train_and_its_own_fields(tmp_path):
    train = {"seed": 3, "steps": 7}
    config = RetrainConfig.model_validate(
        {"preset": "tiny", "train": train, "teacher": {"config": {"steps": 9}}}
    )
    for stage in TRAINING:
        tc = train_config(config, stage, str(tmp_path / "data"), "/model")
        assert (tc.stage, tc.seed, tc.data.root, tc.model.init) == (
            stage,
            3,
            str(tmp_path / "data"),
            "/model",
        )
        assert tc.steps == (9 if stage == "teacher" else 7)


def test_a_bad_stage_field_fails_up_front_naming_the_stage():
    check_stage_inputs(RetrainConfig.model_validate({"preset": "tiny"}))
    config = RetrainConfig.model_validate({"preset": "tiny", "distill": {"config": {"stepz": 3}}})
    with pytest.raises(ConfigError, match=r"retrain stage distill: (?s:.*)stepz = 3"):
        check_stage_inputs(config)
