import collections
import warnings

import pytest
import torch
from factories import make_sample

from ardrag.data.loader import LoaderConfig, ShardedVideoDataset, ShardWarning, make_loader
from ardrag.data.shards import DatasetWriter, read_manifest

SIZES = [(64, 48), (48, 64), (80, 48)]


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
    ds = ShardedVideoDataset(dataset, LoaderConfig(buckets=["48x64"]))
    keys = _keys(ds)
    assert len(keys) == 5 and ds.num_samples == 5


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_both_decoders_give_the_same_frames(dataset, decoder):
    ds = ShardedVideoDataset(dataset, LoaderConfig(shuffle=False, decoder=decoder))
    first = next(iter(ds))
    ref = next(iter(ShardedVideoDataset(dataset, LoaderConfig(shuffle=False))))
    assert first["key"] == ref["key"]
    assert (first["video"].int() - ref["video"].int()).abs().max() <= 2


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


def test_undecodable_sample_is_skipped_not_fatal(tmp_path):
    import io
    import tarfile

    with DatasetWriter(tmp_path, shard_samples=10) as w:
        for i in range(3):
            w.write(make_sample(f"u-{i}", frames=5, seed=i))
    manifest = read_manifest(tmp_path)
    path = tmp_path / manifest["shards"][0]["path"]
    # Rewrite the shard with the middle sample's video replaced by garbage (same manifest size check
    # is then refreshed, so only the decode fails).
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            if m.name == "u-1.mp4":
                data = b"garbage" * 100
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    manifest["shards"][0]["bytes"] = path.stat().st_size
    (tmp_path / "manifest.json").write_text(__import__("json").dumps(manifest))
    with pytest.warns(ShardWarning, match="u-1"):
        keys = _keys(ShardedVideoDataset(tmp_path, LoaderConfig(shuffle=False)))
    assert keys == ["u-0", "u-2"]


def test_counts_per_bucket_match_manifest(dataset):
    counts = collections.Counter()
    for b in make_loader(dataset, LoaderConfig(batch_size=2), num_workers=0):
        counts[b["bucket"]] += len(b["key"])
    assert dict(counts) == read_manifest(dataset)["buckets"]
