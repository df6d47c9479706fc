"""ardrag.retrain.config: a retrain config layers a base, a YAML file and overrides; its ``rl`` picks the
RL stages of the training chain; a training stage's config layers the preset, the shared ``train`` fields
and the stage's own; a bad stage field fails up front, naming the stage."""

import pytest
import yaml

from ardrag.errors import ConfigError
from ardrag.retrain.config import (
    DEMO,
    RetrainConfig,
    check_stage_inputs,
    load_retrain_config,
    stage_names,
    train_config,
    training_chain,
)
from ardrag.training.stages import STAGES as REGISTRY


@pytest.mark.parametrize(
    ("rl", "chain"),
    [
        (None, ("teacher", "distill", "grpo")),  # the default
        ("grpo", ("teacher", "distill", "grpo")),
        ("copo", ("teacher", "distill", "copo")),
        ("both", ("teacher", "distill", "grpo", "copo")),
    ],
)
def test_the_stages_in_order_around_the_training_chain_that_rl_picks(rl, chain):
    config = RetrainConfig.model_validate({} if rl is None else {"rl": rl})
    assert training_chain(config) == chain and set(chain) <= set(REGISTRY)
    assert stage_names(config) == ("curation", "annotation", "dataset", *chain, "evaluation")


def test_an_unknown_rl_names_the_field_the_value_and_the_choices(tmp_path):
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({"rl": "ppo"}))
    with pytest.raises(ConfigError, match=r"retrain.yaml(?s:.*)rl = 'ppo': Input should be 'grpo', 'copo' or "
                                          r"'both'"):  # fmt: skip
        load_retrain_config(path)


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
    for stage in training_chain(config.model_copy(update={"rl": "both"})):
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
    # only the stages of the chain: copo's settings wait for rl copo or both
    bad_copo = {"preset": "tiny", "copo": {"config": {"copo": {"anchors": 9}}}}
    check_stage_inputs(RetrainConfig.model_validate(bad_copo))
    for rl in ("copo", "both"):
        with pytest.raises(ConfigError, match=r"retrain stage copo: (?s:.*)anchors is 9 with group_size 3"):
            check_stage_inputs(RetrainConfig.model_validate({**bad_copo, "rl": rl}))


def test_the_demo_defaults_resolve_with_each_rl():
    for rl in ("grpo", "copo", "both"):
        demo = load_retrain_config(None, {"rl": rl}, base=DEMO)
        check_stage_inputs(demo)
        assert demo.rl == rl and train_config(demo, "copo", "/data", "/model").copo.motion_alpha == 0.04
    assert load_retrain_config(None, base=DEMO).rl == "grpo"
