"""Inspecting a dataset (ardrag.data.inspect): counts per bucket from intact shards, and each damaged,
missing, unlisted or half-written shard named with its reason. Writing shards is tested in
test_shards.py."""

import tarfile

import pytest
from factories import three_samples, write_samples

from ardrag.data.inspect import inspect_dataset
from ardrag.data.shards import MEMBERS


@pytest.mark.parametrize("cut", ["mid-member", "at-member-boundary"])
def test_truncated_tar_is_reported_by_inspect(tmp_path, cut):
    manifest = write_samples(tmp_path, three_samples())
    victim = tmp_path / manifest["shards"][1]["path"]
    data = victim.read_bytes()
    if cut == "mid-member":
        victim.write_bytes(data[: len(data) // 2])
    else:  # a clean cut after the first sample: tarfile alone would not notice
        with tarfile.open(victim) as tar:
            members = tar.getmembers()
        end = members[len(MEMBERS)].offset
        victim.write_bytes(data[:end])
    report = inspect_dataset(tmp_path)
    assert [p["shard"] for p in report["problems"]] == [manifest["shards"][1]["path"]]
    assert "truncated" in report["problems"][0]["reason"]
    assert report["samples"] == 1 and report["buckets"] == {"400x400": 1}
    assert report["manifest_samples"] == 3


def test_inspect_clean_dataset(tmp_path):
    manifest = write_samples(tmp_path, three_samples())
    report = inspect_dataset(tmp_path)
    assert report["problems"] == []
    assert report["samples"] == 3 and report["version"] == manifest["version"]


def test_inspect_flags_unlisted_and_missing(tmp_path):
    manifest = write_samples(tmp_path, three_samples())
    (tmp_path / manifest["shards"][0]["path"]).unlink()
    (tmp_path / "shards" / "640x368" / "shard-000009.tar").write_bytes(b"")
    reasons = {p["shard"]: p["reason"] for p in inspect_dataset(tmp_path)["problems"]}
    assert reasons[manifest["shards"][0]["path"]] == "missing file"
    assert reasons["shards/640x368/shard-000009.tar"] == "not listed in the manifest"


def test_altered_content_of_the_same_size_is_found_by_its_hash_only_when_verifying(tmp_path):
    manifest = write_samples(tmp_path, three_samples())
    victim = tmp_path / manifest["shards"][0]["path"]
    with tarfile.open(victim) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".mp4"))
    data = bytearray(victim.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF  # inside a member: the tar itself still reads
    victim.write_bytes(bytes(data))
    (problem,) = inspect_dataset(tmp_path)["problems"]
    assert problem == {
        "shard": manifest["shards"][0]["path"],
        "reason": "content differs from the manifest's sha256",
    }
    unverified = inspect_dataset(tmp_path, verify_hashes=False)
    assert unverified["problems"] == [] and unverified["samples"] == 3


def test_without_a_manifest_the_shards_on_disk_are_counted_by_their_folder(tmp_path):
    write_samples(tmp_path, three_samples())
    (tmp_path / "manifest.json").unlink()
    report = inspect_dataset(tmp_path)
    assert [p["shard"] for p in report["problems"]] == ["manifest.json"]
    assert report["samples"] == 3 and report["buckets"] == {"400x400": 1, "640x368": 2}
    assert report["name"] is report["version"] is report["manifest_samples"] is None
