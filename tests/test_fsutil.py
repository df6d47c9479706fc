"""Durable writes (ardrag.fsutil): a reader sees the old file or the whole new one, never a part; a link
at the temporary name is not written through; digests read in chunks equal hashlib's."""

import hashlib
import os

from ardrag.fsutil import atomic_write, file_sha256, publish


def test_atomic_write_writes_text_or_bytes_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write(tmp_path / "a.json", '{"é": 1}')
    assert path == tmp_path / "a.json" and path.read_bytes() == '{"é": 1}'.encode()
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_leftover_temporary_file_is_replaced(tmp_path):
    (tmp_path / ".a.txt.partial").write_text("half of an old write, longer than the new one")
    atomic_write(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert not (tmp_path / ".a.txt.partial").exists()


def test_a_link_at_the_temporary_name_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    os.symlink(target, tmp_path / ".a.txt.partial")
    atomic_write(tmp_path / "a.txt", "new")
    assert target.read_text() == "keep me"
    assert (tmp_path / "a.txt").read_text() == "new" and not (tmp_path / "a.txt").is_symlink()


def test_publish_renames_the_temporary_file_over_the_final_one(tmp_path):
    final, tmp = tmp_path / "shard.tar", tmp_path / ".shard.tar.partial"
    final.write_bytes(b"old")
    tmp.write_bytes(b"new")
    publish(tmp, final)
    assert final.read_bytes() == b"new" and not tmp.exists()


def test_file_sha256_reads_past_one_chunk(tmp_path):
    data = os.urandom((1 << 20) + 12345)  # one whole 1 MiB chunk and part of another
    (tmp_path / "big").write_bytes(data)
    assert file_sha256(tmp_path / "big") == (hashlib.sha256(data).hexdigest(), len(data))
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == (hashlib.sha256(b"").hexdigest(), 0)
