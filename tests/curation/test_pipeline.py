"""The curation stages in a plain loop (no Prefect) on procedural clips."""

import json

import numpy as np
import pytest
import yaml

from ardrag.config import build_config
from ardrag.curation.pipeline import CurationConfig, run_local
from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.inspect import inspect_dataset
from ardrag.data.shards import decode_sample, read_manifest, read_sample_file
from ardrag.data.sources import build_source
from ardrag.errors import ConfigError

SOURCE = {"num_clips": 8, "num_frames": 17, "seed": 3}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cur")
    source = build_source("procedural", SOURCE)
    summary = run_local(source, out, CurationConfig(auto_accept=True), progress=False)
    return out, source, summary


def test_every_input_ends_in_exactly_one_state(curated):
    out, source, summary = curated
    assert summary["inputs"] == 8 and summary["clips"] == 8 and summary["inputs_missing"] == []
    assert sum(summary["states"].values()) == 8
    assert sum(summary["reasons"].values()) == 8
    records = CurationStore(out).records()
    assert sorted(r["id"] for r in records) == sorted(i.id for i in source.inputs())
    for r in records:
        assert r["state"] == "processed" and len(r["clips"]) == 1


def test_samples_carry_tracker_provenance_and_selected_tracks(curated):
    out, _, _ = curated
    store = CurationStore(out)
    stored = 0
    for r in store.records():
        clip = r["clips"][0]
        if clip["state"] == "rejected":
            assert "sample" not in clip
            continue
        key, members = read_sample_file(store.root / clip["sample"])
        sample = decode_sample(key, members, get_decoder())
        assert sample.provenance.tracker.name == "opencv"
        assert sample.provenance.source.kind == "procedural"
        assert 1 <= sample.num_points <= 8
        assert np.all(sample.intensity == 1.0)
        stored += 1
    assert stored >= 1
    assert not list((out / "clips").glob("*.npz"))  # intermediate clips are gone once recorded


def test_accepted_samples_are_sharded(curated):
    out, _, summary = curated
    report = inspect_dataset(out / "dataset")
    assert report["problems"] == []
    assert report["samples"] == summary["states"].get("accepted", 0)
    assert report["buckets"] == summary["buckets"]


def test_rerun_does_no_new_work_and_added_inputs_run_alone(curated, tmp_path):
    out, _, _ = curated
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    run_local(build_source("procedural", SOURCE), out, CurationConfig(auto_accept=True), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == before
    bigger = build_source("procedural", {**SOURCE, "num_clips": 10})
    summary = run_local(bigger, out, CurationConfig(auto_accept=True), progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    assert {k: after[k] for k in before} == before
    assert len(after) == 10 and summary["inputs"] == 10


def test_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match="tracker = 'sift': Value error, expected one of"):
        build_config(CurationConfig, {"tracker": "sift"})


def test_summary_json_written(curated):
    out, _, summary = curated
    assert json.loads((out / "summary.json").read_text())["inputs"] >= 8


class _Flaky:
    """The procedural source, with one input that fails (a bug or an outage, not bad data)."""

    name = "procedural"

    def __init__(self, inner, bad_index):
        self.inner, self.bad_index, self.config = inner, bad_index, inner.config

    def settings_digest(self):
        return self.inner.settings_digest()

    def inputs(self):
        return self.inner.inputs()

    def clips(self, item):
        if item.params["index"] == self.bad_index:
            raise RuntimeError("the GPU fell off the bus")
        return self.inner.clips(item)


def test_a_failing_input_stops_only_itself_and_is_retried(tmp_path):
    inner = build_source("procedural", {**SOURCE, "num_clips": 4})
    summary = run_local(_Flaky(inner, 2), tmp_path, CurationConfig(auto_accept=True), progress=False)
    bad = inner.inputs()[2].id
    assert summary["inputs"] == 3 and summary["inputs_missing"] == [bad]
    assert summary["inputs_failed"] == {bad: "RuntimeError: the GPU fell off the bus"}
    assert summary["input_states"] == {"failed": 1, "processed": 3}
    summary = run_local(inner, tmp_path, CurationConfig(auto_accept=True), progress=False)
    assert summary["inputs"] == 4 and summary["inputs_missing"] == [] and summary["inputs_failed"] == {}


def test_dataset_follows_sample_content_and_only_the_current_inputs(tmp_path):
    source = build_source("procedural", {**SOURCE, "num_clips": 6})
    first = run_local(source, tmp_path, CurationConfig(auto_accept=True), progress=False)
    v1 = read_manifest(tmp_path / "dataset")
    assert v1["samples"] == first["states"].get("accepted", 0) > 0
    # Another touch force changes every accepted sample: the dataset must be rebuilt.
    run_local(source, tmp_path, CurationConfig(auto_accept=True, intensity=0.25), progress=False)
    v2 = read_manifest(tmp_path / "dataset")
    assert v2["version"] != v1["version"]
    # Other inputs into the same directory: the dataset holds the accepted samples of this run only.
    other = build_source("procedural", {**SOURCE, "num_clips": 3, "seed": 9})
    third = run_local(other, tmp_path, CurationConfig(auto_accept=True, intensity=0.25), progress=False)
    v3 = read_manifest(tmp_path / "dataset")
    assert v3["samples"] == third["states"].get("accepted", 0)
    assert all(k.startswith("proc-0009-") for s in v3["shards"] for k in s["keys"])


def test_settings_digest_follows_what_changes_clips(tmp_path):
    from ardrag.curation.pipeline import config_digest, settings_digest

    (tmp_path / "v").mkdir()
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("a.mp4: a red square\n")

    def digest(**kw):
        return settings_digest(
            build_source("folder", {"folder": str(tmp_path / "v"), "prompts": str(prompts), **kw})
        )

    base = digest()
    assert digest(decode_threads=1, decode_timeout_s=5) == base  # how, not what
    assert digest(clip_frames=41) != base
    # the prompt text is part of each input's content hash instead: editing one redoes that input alone
    (tmp_path / "v" / "a.mp4").write_bytes(b"not decoded here")
    (tmp_path / "v" / "b.mp4").write_bytes(b"nor this")

    def hashes():
        src = build_source("folder", {"folder": str(tmp_path / "v"), "prompts": str(prompts)})
        return {i.params["path"]: i.content_hash for i in src.inputs()}

    before = hashes()
    prompts.write_text("a.mp4: a blue square\n")
    after = hashes()
    assert digest() == base and after["a.mp4"] != before["a.mp4"] and after["b.mp4"] == before["b.mp4"]
    cfg = CurationConfig()
    assert config_digest("s", cfg) == config_digest(
        "s", cfg.model_copy(update={"shards": cfg.shards.model_copy(update={"shard_samples": 3})})
    )
    assert config_digest("s", cfg) != config_digest("s", cfg.model_copy(update={"intensity": 0.5}))


def test_a_curation_file_holds_the_source_settings_with_paths_relative_to_it(tmp_path):
    from ardrag.curation.pipeline import load_curation_file
    from ardrag.errors import ConfigError

    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "curation.yaml"
    source = {"clip_frames": 33, "prompts": "prompts.jsonl", "tmp_dir": "/abs/spool"}
    path.write_text(yaml.safe_dump({"source": source, "routing": {"hard_speed_px": 12}}))
    config, source = load_curation_file(path)
    assert config.routing.hard_speed_px == 12
    assert source == {"clip_frames": 33, "prompts": str(conf / "prompts.jsonl"), "tmp_dir": "/abs/spool"}
    path.write_text("source: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"curation.yaml': source = \[1, 2\]; expected a mapping"):
        load_curation_file(path)
    path.write_text("routing:\n  hard_speed_px: -1\n")
    with pytest.raises(ConfigError, match=r"curation.yaml:\n  - routing.hard_speed_px = -1"):
        load_curation_file(path)
