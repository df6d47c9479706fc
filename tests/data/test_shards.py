import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from factories import make_sample, three_samples, write_samples

from ardrag.data.codec import get_decoder, psnr
from ardrag.data.inspect import inspect_dataset
from ardrag.data.shards import MANIFEST, MEMBERS, DatasetWriter, read_manifest, read_shard
from ardrag.errors import ShardError

TESTS = Path(__file__).resolve().parents[1]


def test_round_trip_sample_shard_sample(tmp_path):
    samples = three_samples()
    manifest = write_samples(tmp_path, samples)
    assert manifest["samples"] == 3 and manifest["buckets"] == {"400x400": 1, "640x368": 2}
    assert [s["path"] for s in manifest["shards"]] == [
        "shards/400x400/shard-000000.tar",
        "shards/640x368/shard-000000.tar",
    ]
    read = {s.key: s for e in manifest["shards"] for s in read_shard(tmp_path / e["path"])}
    assert set(read) == {"a-0", "a-1", "b-0"}
    for orig in samples:
        back = read[orig.key]
        np.testing.assert_array_equal(back.tracks, orig.tracks)
        np.testing.assert_array_equal(back.visible, orig.visible)
        np.testing.assert_array_equal(back.intensity, orig.intensity)
        np.testing.assert_array_equal(back.reference, orig.reference)  # lossless PNG
        assert back.prompt == orig.prompt and back.fps == orig.fps and back.bucket == orig.bucket
        assert back.provenance == orig.provenance
        assert back.video.shape == orig.video.shape
        assert psnr(orig.video, back.video) >= 35.0


def test_members_are_webdataset_style_and_pickle_free(tmp_path):
    manifest = write_samples(tmp_path, three_samples()[:1])
    with tarfile.open(tmp_path / manifest["shards"][0]["path"]) as tar:
        names = tar.getnames()
        assert names == [f"a-0.{m}" for m in MEMBERS]
        meta = json.loads(tar.extractfile("a-0.json").read())
        assert meta["num_frames"] == 9 and meta["bucket"] == "640x368"
        npy = tar.extractfile("a-0.tracks.npy").read()
        assert np.load(__import__("io").BytesIO(npy), allow_pickle=False).dtype == np.float32


def test_webdataset_library_reads_the_shards(tmp_path):
    import webdataset as wds

    manifest = write_samples(tmp_path, three_samples())
    url = str(tmp_path / manifest["shards"][1]["path"])
    items = list(wds.WebDataset(url, shardshuffle=False, empty_check=False))
    assert [i["__key__"] for i in items] == ["a-0", "a-1"]
    assert set(MEMBERS) <= set(items[0])


@pytest.mark.parametrize("member", ["mp4", "tracks.npy", "prompt.txt"])
def test_damaged_member_is_caught_by_its_checksum_before_decoding(member):
    from ardrag.data.shards import decode_sample, encode_sample

    s = make_sample("c-0")
    members = encode_sample(s)
    damaged = bytearray(members[member])
    damaged[len(damaged) // 2] ^= 0x01
    members[member] = bytes(damaged)
    with pytest.raises(ShardError, match=f"member '{member}' does not match its sha256"):
        decode_sample("c-0", members, get_decoder())


def test_same_samples_same_version_and_bytes(tmp_path):
    m1 = write_samples(tmp_path / "one", three_samples())
    m2 = write_samples(tmp_path / "two", three_samples())
    assert m1["version"] == m2["version"]
    m3 = write_samples(tmp_path / "three", three_samples()[:2])
    assert m3["version"] != m1["version"]


def test_shards_roll_over_at_shard_samples(tmp_path):
    samples = [make_sample(f"k-{i}", seed=i) for i in range(5)]
    manifest = write_samples(tmp_path, samples, shard_samples=2)
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 1]
    assert [s["keys"] for s in manifest["shards"]] == [["k-0", "k-1"], ["k-2", "k-3"], ["k-4"]]
    assert not list(tmp_path.rglob("*.partial"))


def test_duplicate_key_and_existing_dataset_refused(tmp_path):
    with pytest.raises(ShardError, match="duplicate sample key 'k'"):
        with DatasetWriter(tmp_path) as w:
            w.write(make_sample("k"))
            w.write(make_sample("k"))
    assert not (tmp_path / MANIFEST).exists()
    assert not list(tmp_path.rglob("*.partial"))
    write_samples(tmp_path, [make_sample("k")])
    with pytest.raises(ShardError, match="already holds a dataset"):
        DatasetWriter(tmp_path)
    write_samples(tmp_path, [make_sample("j")], overwrite=True)
    assert read_manifest(tmp_path)["shards"][0]["keys"] == ["j"]


def test_older_format_is_refused_with_a_clear_error(tmp_path):
    from ardrag.data.loader import ShardedVideoDataset

    write_samples(tmp_path, three_samples()[:1])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["format_version"] = 1
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="shard format version 1, this ardrag reads version 2"):
        ShardedVideoDataset(tmp_path)
    assert "format version 1" in inspect_dataset(tmp_path)["problems"][0]["reason"]


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from factories import make_sample
from ardrag.data.shards import DatasetWriter
w = DatasetWriter({root!r}, shard_samples=2)
for i in range(100):
    w.write(make_sample(f"k-{{i}}", seed=i, width=320, height=192))
    print(i, flush=True)
    time.sleep(0.05)
w.close()
"""


@pytest.mark.slow
def test_killed_writer_leaves_no_incomplete_file_under_a_final_name(tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(TESTS), root=str(root))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Kill once the third sample is written: shard 0 is final, shard 1 is half written.
        for line in proc.stdout:
            if line.strip() == "2":
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (root / MANIFEST).exists()
    finals = sorted(root.rglob("*.tar"))
    partials = sorted(root.rglob("*.partial"))
    assert [p.name for p in finals] == ["shard-000000.tar"]
    assert [p.name for p in partials] == [".shard-000001.tar.partial"]
    # Every file under a final name is complete.
    samples = list(read_shard(finals[0], get_decoder()))
    assert [s.key for s in samples] == ["k-0", "k-1"]
    report = inspect_dataset(root)
    assert any("interrupted" in p["reason"] for p in report["problems"])
    assert any(p["shard"] == MANIFEST for p in report["problems"])

    # A new writer clears the leftovers and finishes a complete dataset.
    with DatasetWriter(root, shard_samples=2) as w:
        for i in range(3):
            w.write(make_sample(f"k-{i}", seed=i, width=320, height=192))
    assert not list(root.rglob("*.partial"))
    assert inspect_dataset(root)["problems"] == []
