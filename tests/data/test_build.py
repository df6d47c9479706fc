"""Writing a dataset (ardrag.data.build): the config that made it written beside it and hashed with the
shard settings into the manifest, a finished dataset of the same settings found again, one of other
settings refused, and a failed write leaving nothing a rerun would take."""

import pytest
import yaml
from factories import make_sample

from ardrag.config import Config
from ardrag.data.build import ShardConfig, existing_dataset, write_dataset
from ardrag.data.shards import read_manifest
from ardrag.errors import ShardError


class Made(Config):
    """What made the samples (a source's config in real use)."""

    seed: int = 0


def samples(n=3):
    return [make_sample(f"s-{i}", seed=i, width=64, height=48, frames=5) for i in range(n)]


def test_the_dataset_is_written_with_its_config_and_found_again_with_the_same_settings(tmp_path):
    shards = ShardConfig(shard_samples=2)
    manifest = write_dataset(samples(), tmp_path, Made(seed=1), shards=shards, name="toy", progress=False)
    assert manifest == read_manifest(tmp_path)
    assert manifest["name"] == "toy" and manifest["samples"] == 3 and len(manifest["shards"]) == 2
    assert manifest["config"] == {"seed": 1}
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"seed": 1}
    assert existing_dataset(tmp_path, Made(seed=1), ShardConfig(shard_samples=2)) == manifest


@pytest.mark.parametrize(
    ("config", "shards"),
    [(Made(seed=2), ShardConfig()), (Made(seed=1), ShardConfig(shard_samples=2))],
    ids=["other-source-settings", "other-shard-settings"],
)
def test_a_dataset_of_other_settings_is_refused(tmp_path, config, shards):
    write_dataset(samples(), tmp_path, Made(seed=1), progress=False)
    assert existing_dataset(tmp_path, Made(seed=1)) is not None  # the default shard settings
    with pytest.raises(
        ShardError, match="built with other settings.*choose another --out or pass --overwrite"
    ):
        existing_dataset(tmp_path, config, shards)


def test_no_dataset_and_a_failed_write_are_none(tmp_path):
    assert existing_dataset(tmp_path / "empty", Made()) is None

    def failing():
        yield from samples(2)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        write_dataset(failing(), tmp_path / "out", Made(), progress=False)
    assert existing_dataset(tmp_path / "out", Made()) is None
    assert not list((tmp_path / "out").rglob("*.tar")) and not list((tmp_path / "out").rglob("*.partial"))
    manifest = write_dataset(samples(2), tmp_path / "out", Made(), progress=False)  # the rerun
    assert manifest["samples"] == 2
