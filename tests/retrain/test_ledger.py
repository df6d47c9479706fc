"""ardrag.retrain.ledger: an entry put is the entry got, and fresh only for its own key; a training stage's
key follows its config and upstream, not where it runs; a folder's digest follows its files' names and
contents."""

import json

from ardrag.retrain.config import RetrainConfig, train_config
from ardrag.retrain.ledger import Ledger, digest, files_digest, stage_key


def test_an_entry_put_is_got_back_and_fresh_only_for_its_key(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.get("dataset") is None and ledger.fresh("dataset", "k1") is None
    put = ledger.put("dataset", {"key": "k1", "samples": 3})
    assert put["stage"] == "dataset" and put["samples"] == 3 and put["time"].endswith("Z")
    assert json.loads((tmp_path / "stages" / "dataset.json").read_text()) == put
    assert Ledger(tmp_path).get("dataset") == put  # a new ledger over the same folder reads it
    assert ledger.fresh("dataset", "k1") == put
    assert ledger.fresh("dataset", "k2") is None  # other inputs: not fresh
    assert ledger.get("teacher") is None  # one file per stage
    ledger.put("dataset", {"key": "k2"})  # a rerun replaces the entry
    assert ledger.fresh("dataset", "k1") is None and ledger.fresh("dataset", "k2")["key"] == "k2"


def test_a_digest_is_stable_and_follows_its_parts():
    assert digest({"a": 1, "b": 2}, "x") == digest({"b": 2, "a": 1}, "x")  # key order does not count
    assert digest({"a": 1}, "x") != digest({"a": 2}, "x") != digest({"a": 1}, "y")
    assert len(digest("x")) == 16


def test_a_stage_key_follows_the_config_and_upstream_not_where_it_runs(tmp_path):
    config = RetrainConfig.model_validate({"out": str(tmp_path), "preset": "tiny"})
    tc = train_config(config, "teacher", str(tmp_path / "data"), None)
    key = stage_key(tc, "v1")
    assert key == stage_key(tc.model_copy(), "v1")
    assert stage_key(tc.model_copy(update={"steps": tc.steps + 1}), "v1") != key
    assert stage_key(tc, "v2") != key  # a new dataset version or upstream model
    elsewhere = train_config(config, "teacher", str(tmp_path / "other"), str(tmp_path / "model"))
    assert stage_key(elsewhere.model_copy(update={"run_dir": str(tmp_path / "run")}), "v1") == key
    more = RetrainConfig.model_validate({"out": str(tmp_path), "preset": "tiny", "train": {"seed": 1}})
    assert stage_key(train_config(more, "teacher", str(tmp_path / "data"), None), "v1") != key


def test_a_folders_digest_follows_its_files_names_and_contents(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "weights.bin").write_bytes(b"\x00\x01")
        (tmp_path / name / "sub" / "config.json").write_text("{}")
    a, b = tmp_path / "a", tmp_path / "b"
    assert files_digest(a) == files_digest(b)  # the same files anywhere: the same model
    (b / "weights.bin").write_bytes(b"\x00\x02")
    assert files_digest(b) != files_digest(a)
    (b / "weights.bin").write_bytes(b"\x00\x01")
    (b / "sub" / "config.json").rename(b / "sub" / "other.json")
    assert files_digest(b) != files_digest(a)
