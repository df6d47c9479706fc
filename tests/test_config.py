import pytest
from pydantic import Field

from ardrag.config import Config, build_config, load_config, merge, write_resolved_config
from ardrag.data.build import ShardConfig
from ardrag.errors import ConfigError


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


class Nested(Config):
    toy: Toy = Toy()
    steps: int = 1


def test_merge_goes_key_by_key_at_every_depth():
    base = {"toy": {"frames": 9, "name": "a"}, "steps": 1, "list": [1, 2]}
    assert merge(base, {"toy": {"name": "b"}, "list": [3]}) == {
        "toy": {"frames": 9, "name": "b"},
        "steps": 1,
        "list": [3],
    }
    assert base["toy"] == {"frames": 9, "name": "a"}  # the base is not modified
    assert merge({"toy": 1}, {"toy": {"frames": 2}}) == {"toy": {"frames": 2}}  # a mapping replaces a value


def test_load_config_layers_preset_then_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("toy:\n  frames: 17\nsteps: 3\n")
    base = {"toy": {"frames": 5, "name": "preset"}, "steps": 2}
    config = load_config(Nested, path, {"steps": 4, "toy": None}, base=base)  # None: not given
    # the file wins over the preset field by field (its name survives), the overrides over both
    assert config == Nested(toy=Toy(frames=17, name="preset"), steps=4)
    assert load_config(Nested, None, {"steps": None}, base=base) == Nested(
        toy=Toy(frames=5, name="preset"), steps=2
    )
    assert load_config(Nested, None) == Nested()


def test_load_config_names_the_preset_or_the_file_in_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"--preset x:\n  - toy.frames = 0"):
        load_config(Nested, None, base={"toy": {"frames": 0}}, source="--preset x")
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml.*holds a list; expected a mapping"):
        load_config(Nested, path)
    with pytest.raises(ConfigError, match="missing.yaml' does not exist"):
        load_config(Nested, tmp_path / "missing.yaml")
