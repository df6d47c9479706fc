"""The curation stages in a plain loop (no Prefect) on procedural clips."""

import json

import numpy as np
import pytest

from ardrag.config import build_config
from ardrag.curation.pipeline import CurationConfig, run_local
from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.inspect import inspect_dataset
from ardrag.data.shards import decode_sample, read_sample_file
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
