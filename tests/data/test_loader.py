import collections
import warnings

import pytest
import torch
from factories import make_sample

from ardrag.data.loader import LoaderConfig, ShardedVideoDataset, ShardWarning, make_loader
from ardrag.data.shards import DatasetWriter, read_manifest

SIZES = [(64, 48), (64, 96), (80, 48)]  # sizes decord 0.6 decodes (it fails at width 48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    with DatasetWriter(root, shard_samples=2) as w:
        for i in range(15):
            wd, ht = SIZES[i % 3]
            w.write(make_sample(f"s-{i:02d}", width=wd, height=ht, frames=5, points=1 + i % 4, seed=i))
    return root


def _keys(batches):
    return [k for b in batches for k in b["key"]]


def _all_keys(root):
    return sorted(k for s in read_manifest(root)["shards"] for k in s["keys"])


def test_each_key_once_per_epoch_with_two_workers(dataset):
    loader = make_loader(dataset, LoaderConfig(seed=3), num_workers=2)
    epochs = []
    for epoch in range(2):
        loader.dataset.set_epoch(epoch)
        keys = _keys(loader)
        assert sorted(keys) == _all_keys(dataset)
        assert len(keys) == len(set(keys)) == 15
        epochs.append(keys)
    assert epochs[0] != epochs[1]  # reshuffled


def test_two_ranks_two_workers_cover_every_key_once(dataset):
    seen = []
    for rank in range(2):
        loader = make_loader(dataset, LoaderConfig(), num_workers=2, rank=rank, world_size=2)
        seen.append(_keys(loader))
    assert seen[0] and seen[1]
    union = seen[0] + seen[1]
    assert sorted(union) == _all_keys(dataset)
    assert not set(seen[0]) & set(seen[1])


def test_shard_split_is_a_partition(dataset):
    ds = ShardedVideoDataset(dataset)
    parts = [ds.shards_for(c, 4) for c in range(4)]
    paths = [s["path"] for p in parts for s in p]
    assert sorted(paths) == sorted(s["path"] for s in ds.shards) and len(paths) == len(set(paths))


def test_batches_never_mix_buckets(dataset):
    loader = make_loader(dataset, LoaderConfig(batch_size=3, seed=1), num_workers=2)
    batches = list(loader)
    assert sorted(_keys(batches)) == _all_keys(dataset)
    for b in batches:
        video = b["video"]
        wd, ht = (int(v) for v in b["bucket"].split("x"))
        assert video.shape[2:] == (ht, wd, 3) and video.dtype == torch.uint8
        assert b["tracks"].shape[:2] == (len(b["key"]), 5)
        n = b["num_points"]
        assert b["tracks"].shape[2] == int(n.max())
        for i in range(len(b["key"])):  # padded points are off
            assert not b["visible"][i, :, n[i] :].any()
            assert (b["intensity"][i, :, n[i] :] == 0).all()
    full = [b for b in batches if len(b["key"]) == 3]
    assert len(full) >= 3


def test_drop_last_keeps_only_full_batches(dataset):
    ds = ShardedVideoDataset(dataset, LoaderConfig(batch_size=4, drop_last=True))
    sizes = [len(b["key"]) for b in ds]
    assert sizes and set(sizes) == {4}


def test_shuffle_off_reads_in_shard_order(dataset):
    ds = ShardedVideoDataset(dataset, LoaderConfig(shuffle=False))
    keys = _keys(ds)
    expected = [
        k for s in sorted(read_manifest(dataset)["shards"], key=lambda s: s["path"]) for k in s["keys"]
    ]
    assert keys == expected


def test_bucket_filter(dataset):
    ds = ShardedVideoDataset(dataset, LoaderConfig(buckets=["64x96"]))
    keys = _keys(ds)
    assert len(keys) == 5 and ds.num_samples == 5


def test_both_decoders_give_the_same_frames(dataset, caplog):
    def first_batches(decoder):
        cfg = LoaderConfig(shuffle=False, decoder=decoder, fallback_decoder=None)
        return list(ShardedVideoDataset(dataset, cfg))

    by_decord, by_pyav = first_batches("decord"), first_batches("pyav")
    assert "decoding with" not in caplog.text  # no fallback: decord itself decoded these
    assert {b["bucket"] for b in by_decord} == {"64x48", "64x96", "80x48"}
    for a, b in zip(by_decord, by_pyav, strict=True):
        assert a["key"] == b["key"]
        assert (a["video"].int() - b["video"].int()).abs().max() <= 2


def test_truncated_shard_is_skipped_with_a_warning(tmp_path):
    with DatasetWriter(tmp_path, shard_samples=2) as w:
        for i in range(6):
            w.write(make_sample(f"t-{i}", frames=5, seed=i))
    manifest = read_manifest(tmp_path)
    victim = tmp_path / manifest["shards"][1]["path"]
    victim.write_bytes(victim.read_bytes()[:5000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = _keys(ShardedVideoDataset(tmp_path))
    assert sorted(keys) == ["t-0", "t-1", "t-4", "t-5"]
    messages = [str(w.message) for w in caught if issubclass(w.category, ShardWarning)]
    assert len(messages) == 1 and manifest["shards"][1]["path"] in messages[0]


def _rewrite_shard(root, edit):
    """Rewrite the first shard member by member through ``edit(name, data) -> data`` and refresh the
    manifest's size and digest, so that only the edited content is off."""
    import io
    import json
    import tarfile

    from ardrag.fsutil import file_sha256

    manifest = read_manifest(root)
    path = root / manifest["shards"][0]["path"]
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            data = edit(m.name, data)
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    manifest["shards"][0]["sha256"], manifest["shards"][0]["bytes"] = file_sha256(path)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_undecodable_sample_is_skipped_not_fatal(tmp_path):
    import hashlib
    import json

    with DatasetWriter(tmp_path, shard_samples=10) as w:
        for i in range(3):
            w.write(make_sample(f"u-{i}", frames=5, seed=i))
    garbage = b"garbage" * 100

    def edit(name, data):  # a video no decoder reads, with a matching checksum: the decoders fail
        if name == "u-1.mp4":
            return garbage
        if name == "u-1.json":
            meta = json.loads(data)
            meta["checksums"]["mp4"] = hashlib.sha256(garbage).hexdigest()
            return json.dumps(meta).encode()
        return data

    _rewrite_shard(tmp_path, edit)
    with pytest.warns(ShardWarning, match="skipping sample 'u-1': DecodeError"):
        keys = _keys(ShardedVideoDataset(tmp_path, LoaderConfig(shuffle=False)))
    assert keys == ["u-0", "u-2"]


def test_counts_per_bucket_match_manifest(dataset):
    counts = collections.Counter()
    for b in make_loader(dataset, LoaderConfig(batch_size=2), num_workers=0):
        counts[b["bucket"]] += len(b["key"])
    assert dict(counts) == read_manifest(dataset)["buckets"]


def test_unknown_bucket_filter_is_an_error(dataset):
    from ardrag.errors import ArdragError

    with pytest.raises(ArdragError, match=r"buckets \['640x368'\] are not in the dataset"):
        ShardedVideoDataset(dataset, LoaderConfig(buckets=["640x368"]))
    with pytest.raises(ValueError, match="seed"):
        LoaderConfig(seed=-1)


def test_persistent_workers_reshuffle_every_epoch(dataset):
    loader = make_loader(dataset, LoaderConfig(seed=5), num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in range(3):
        loader.dataset.set_epoch(epoch)
        keys = _keys(loader)
        assert sorted(keys) == _all_keys(dataset)
        epochs.append(keys)
    assert len({tuple(e) for e in epochs}) == 3


def test_samples_for_counts_what_each_rank_reads(dataset):
    for workers in (1, 2):
        counts = []
        for rank in range(2):
            ds = ShardedVideoDataset(dataset, LoaderConfig(), rank=rank, world_size=2)
            ds.set_epoch(1)
            counts.append(ds.samples_for(rank, workers))
            loader = make_loader(dataset, LoaderConfig(), num_workers=workers, rank=rank, world_size=2)
            loader.dataset.set_epoch(1)
            assert len(_keys(loader)) == counts[-1]
        assert sum(counts) == 15


def test_corrupt_header_mid_shard_is_reported(tmp_path):
    import tarfile

    with DatasetWriter(tmp_path, shard_samples=4) as w:
        for i in range(4):
            w.write(make_sample(f"h-{i}", frames=5, seed=i))
    path = tmp_path / read_manifest(tmp_path)["shards"][0]["path"]
    with tarfile.open(path) as tar:
        offset = tar.getmember("h-1.json").offset
    data = bytearray(path.read_bytes())
    data[offset + 150] ^= 0xFF  # inside the header (checksum no longer matches): tarfile stops there
    path.write_bytes(bytes(data))
    with pytest.warns(ShardWarning, match="ended early: 3 listed samples missing"):
        keys = _keys(ShardedVideoDataset(tmp_path, LoaderConfig(shuffle=False)))
    assert keys == ["h-0"]


def test_bit_rot_in_videos_never_stops_an_epoch(tmp_path):
    with DatasetWriter(tmp_path, shard_samples=20) as w:
        for i in range(12):
            w.write(make_sample(f"r-{i:02d}", frames=5, seed=i))
    rng = __import__("numpy").random.default_rng(0)

    def edit(name, data):  # damage every other video, same length
        if not (name.endswith(".mp4") and int(name[2:4]) % 2):
            return data
        data = bytearray(data)
        for pos in rng.integers(0, len(data), size=20):
            data[pos] ^= int(rng.integers(1, 256))
        return bytes(data)

    _rewrite_shard(tmp_path, edit)
    for decoder in ("decord", "pyav"):  # decord would segfault on some of these without the checksums
        with pytest.warns(ShardWarning, match="does not match its sha256"):
            keys = _keys(ShardedVideoDataset(tmp_path, LoaderConfig(shuffle=False, decoder=decoder)))
        assert keys == [f"r-{i:02d}" for i in range(0, 12, 2)]


SPAWNED_RANK = """
import json, os, sys
import torch.distributed as dist
from ardrag.data.loader import LoaderConfig, make_loader

def main(rank, root, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    loader = make_loader(root, LoaderConfig(), num_workers=2, multiprocessing_context="spawn")
    keys = [k for b in loader for k in b["key"]]
    with open(f"{out}-{rank}.json", "w") as f:
        json.dump(keys, f)
    dist.destroy_process_group()

if __name__ == "__main__":
    import torch.multiprocessing as mp
    mp.spawn(main, args=tuple(sys.argv[1:]), nprocs=2)
"""


@pytest.mark.slow
def test_spawned_workers_under_two_ranks_read_each_key_once(dataset, tmp_path):
    import json
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(SPAWNED_RANK)
    out = tmp_path / "keys"
    init = f"file://{tmp_path / 'pg'}"
    subprocess.run([sys.executable, str(script), str(dataset), init, str(out)], check=True, timeout=300)
    per_rank = [json.loads((tmp_path / f"keys-{r}.json").read_text()) for r in range(2)]
    union = per_rank[0] + per_rank[1]
    assert sorted(union) == _all_keys(dataset)
    assert len(union) == len(set(union))
