import pytest
from pydantic import Field

from ardrag.config import Config, build_config, load_config, write_resolved_config
from ardrag.data.build import ShardConfig
from ardrag.errors import ConfigError
from ardrag.presets import preset


class Toy(Config):
    frames: int = Field(default=9, ge=1)
    name: str = "x"


def test_yaml_parses_into_the_same_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("frames: 17\nname: hello\n")
    assert load_config(Toy, path) == Toy(frames=17, name="hello")
    assert load_config(Toy, path, {"frames": 5, "name": None}).frames == 5


def test_errors_name_file_field_and_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("frames: -3\n")
    with pytest.raises(ConfigError, match=r"(?s)c.yaml.*frames = -3: Input should be greater than or equal"):
        load_config(Toy, path)
    path.write_text("frams: 3\n")
    with pytest.raises(ConfigError, match=r"frams = 3: Extra inputs are not permitted"):
        load_config(Toy, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Toy, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Toy, tmp_path / "missing.yaml")
    path.write_text("frames: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Toy, path)


def test_nested_errors_use_dotted_paths():
    with pytest.raises(ConfigError, match=r"encode\.crf = 99"):
        build_config(ShardConfig, {"encode": {"crf": 99}})


def test_resolved_config_round_trips(tmp_path):
    cfg = ShardConfig(shard_samples=7)
    path = write_resolved_config(cfg, tmp_path)
    assert load_config(ShardConfig, path) == cfg
    assert cfg.digest() == load_config(ShardConfig, path).digest() != ShardConfig().digest()


def test_presets_in_one_place():
    assert preset("procedural", "tiny")["num_frames"] == 9
    with pytest.raises(ConfigError, match="expected one of"):
        preset("procedural", "huge")
    with pytest.raises(ConfigError, match="no presets"):
        preset("nothing", "tiny")
