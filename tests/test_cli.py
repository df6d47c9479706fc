"""The acceptance path through the real console script: procedural -> shards -> inspect -> loader."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ardrag.config import load_config
from ardrag.data.codec import psnr
from ardrag.data.loader import LoaderConfig, ShardedVideoDataset, make_loader
from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource

ARDRAG = str(Path(sys.executable).with_name("ardrag"))


def run(*args, check=True):
    out = subprocess.run([ARDRAG, *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"ardrag {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "D"
    summary = json.loads(run("procedural", "--num", "40", "--out", str(root), "--json", "-q").stdout)
    assert summary["samples"] == 40
    return root


def _keys(batches):
    return [k for b in batches for k in b["key"]]


@pytest.mark.slow
def test_inspect_reports_40_samples_over_at_least_3_buckets(dataset):
    report = json.loads(run("shards", "inspect", str(dataset), "--json").stdout)
    assert report["samples"] == 40 and report["problems"] == []
    assert len(report["buckets"]) >= 3 and sum(report["buckets"].values()) == 40
    assert isinstance(report["version"], str) and len(report["version"]) == 16


@pytest.mark.slow
def test_loader_two_workers_each_key_once_per_epoch(dataset):
    loader = make_loader(dataset, LoaderConfig(), num_workers=2)
    for epoch in range(2):
        loader.dataset.set_epoch(epoch)
        keys = _keys(loader)
        assert len(keys) == len(set(keys)) == 40


@pytest.mark.slow
def test_loader_two_ranks_two_workers_union_is_every_key(dataset):
    per_rank = [
        _keys(make_loader(dataset, LoaderConfig(), num_workers=2, rank=r, world_size=2)) for r in range(2)
    ]
    union = per_rank[0] + per_rank[1]
    assert len(union) == len(set(union)) == 40


@pytest.mark.slow
def test_round_trip_against_the_generator(dataset):
    config = load_config(ProceduralConfig, dataset / "config.yaml")
    source = ProceduralSource(config)
    ds = ShardedVideoDataset(dataset, LoaderConfig(shuffle=False))
    checked, scores = 0, []
    for batch in ds:
        key = batch["key"][0]
        orig = source.make_clip(int(key.rsplit("-", 1)[1]))
        assert orig.key == key
        n = orig.num_points
        np.testing.assert_array_equal(batch["tracks"][0, :, :n].numpy(), orig.tracks)
        np.testing.assert_array_equal(batch["visible"][0, :, :n].numpy(), orig.visible)
        np.testing.assert_array_equal(batch["intensity"][0, :, :n].numpy(), orig.intensity)
        assert batch["prompt"][0] == orig.prompt
        np.testing.assert_array_equal(batch["reference"][0].numpy(), orig.reference)
        scores.append(psnr(orig.video, batch["video"][0].numpy()))
        checked += 1
        if checked == 8:
            break
    assert checked == 8
    assert min(scores) >= 35.0, scores


@pytest.mark.slow
def test_rerun_is_a_no_op_and_other_config_is_refused(dataset):
    before = (dataset / "manifest.json").read_text()
    out = run("procedural", "--num", "40", "--out", str(dataset), "-q")
    assert "nothing to do" in out.stderr
    assert (dataset / "manifest.json").read_text() == before
    out = run("procedural", "--num", "41", "--out", str(dataset), "-q", check=False)
    assert out.returncode == 2 and "built with other settings" in out.stderr
    out = run("procedural", "--num", "40", "--out", str(dataset), "--shard-samples", "3", "-q", check=False)
    assert out.returncode == 2 and "built with other settings" in out.stderr
    assert (dataset / "manifest.json").read_text() == before


def test_bad_arguments_give_clear_errors(tmp_path):
    out = run("procedural", "--num", "0", "--out", str(tmp_path / "x"), check=False)
    assert out.returncode == 2 and "num_clips = 0" in out.stderr
    out = run("procedural", "--num", "2", "--out", str(tmp_path / "y"), "--preset", "huge", check=False)
    assert out.returncode == 2 and "preset 'huge'" in out.stderr
    out = run("shards", "inspect", str(tmp_path / "nothing"), "--json", check=False)
    assert out.returncode == 1
    assert "manifest.json is missing" in json.loads(out.stdout)["problems"][0]["reason"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("[]")
    out = run("shards", "inspect", str(bad), "--json", check=False)
    assert out.returncode == 1 and "expected a JSON object" in json.loads(out.stdout)["problems"][0]["reason"]
    (bad / "manifest.json").write_text("{not json")
    out = run("procedural", "--num", "2", "--out", str(bad), check=False)
    assert out.returncode == 2 and "manifest.json is not valid JSON" in out.stderr


def test_help_lists_the_commands():
    out = run("--help")
    assert "procedural" in out.stdout and "shards" in out.stdout


def test_generate_and_eval_take_device_and_dtype_and_generate_a_size():
    from ardrag.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["generate", "--ref", "r", "--traj", "t", "--prompt", "p", "--out", "o.mp4",
                              "--device", "cpu", "--dtype", "bfloat16", "--size", "368x480"])  # fmt: skip
    assert (args.device, args.dtype, args.size) == ("cpu", "bfloat16", "368x480")
    args = parser.parse_args(["eval", "--out", "x", "--dtype", "float16"])
    assert (args.device, args.dtype) == (None, "float16")  # None: resolved by ardrag.model.device
    defaults = parser.parse_args(["generate", "--ref", "r", "--traj", "t", "--prompt", "p", "--out", "o.mp4"])
    assert (defaults.device, defaults.dtype, defaults.size) == (None, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--out", "x", "--dtype", "fp8"])
