"""The curation manifest (ardrag.curation.store): records written last and atomically, so a rerun skips
what is done and redoes the rest over the same names; clips between stages; people's reviews of
waiting samples; the summary that accounts for every input once."""

import json

import numpy as np
import pytest

from ardrag.curation.store import CurationStore
from ardrag.data.clip import Clip, SourceInput
from ardrag.data.sample import PromptInfo, SourceInfo
from ardrag.errors import ShardError

DIGEST = "settings-1"


def item(input_id: str = "a", content: str = "hash-a") -> SourceInput:
    return SourceInput(id=input_id, content_hash=content, kind="procedural")


def record(input_id: str, clips: list[dict], content: str | None = None, **fields) -> dict:
    """A record as the pipeline writes it (``ardrag.curation.pipeline.record``)."""
    row = {"id": input_id, "content_hash": content or f"hash-{input_id}", "config_digest": DIGEST}
    return {**row, "state": "processed", "reason": None, "clips": clips, **fields}


def clip_row(key: str, state: str, reason: str | None = None, bucket: str = "640x368", sha: str = "") -> dict:
    row = {"key": key, "state": state, "reason": reason, "bucket": bucket}
    return {**row, "sample": f"samples/{key}.tar", "sample_sha256": sha} if sha else row


def partials(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*.partial"))


def test_done_needs_the_same_content_and_settings(tmp_path):
    store = CurationStore(tmp_path)
    assert store.done(item(), DIGEST) is None  # never processed
    store.write_record(record("a", []))
    assert store.done(item(), DIGEST)["id"] == "a"
    assert store.done(item(content="hash-b"), DIGEST) is None  # the file changed: redo it
    assert store.done(item(), "settings-2") is None  # other settings: redo it


def test_a_rerun_overwrites_the_same_record_and_a_half_written_one_is_not_a_record(tmp_path):
    store = CurationStore(tmp_path)
    # a run killed while writing a's record leaves only the temporary file: a is not done
    (tmp_path / "records" / ".a.json.partial").write_text('{"id": "a", "sta', encoding="utf-8")
    assert store.records() == [] and store.done(item(), DIGEST) is None
    store.write_record(record("a", [], state="quarantined", reason="too-short"))
    store.write_record(record("b", []))
    store.write_record(record("a", [clip_row("a-c000", "accepted")], config_digest="settings-2"))
    assert [r["id"] for r in store.records()] == ["a", "b"]  # one record per input, sorted by id
    assert store.records()[0]["clips"][0]["key"] == "a-c000"  # the latest run's
    assert store.summary()["inputs"] == 2
    assert partials(tmp_path) == []  # the leftover was replaced, and no write leaves one


def test_a_record_removes_its_clips_between_stages(tmp_path):
    store = CurationStore(tmp_path)
    paths = [store.save_clip(make_clip(f"a-c00{i}")) for i in range(2)]
    other = store.save_clip(make_clip("b-c000", input_id="b"))
    store.write_record(
        record("a", [clip_row("a-c000", "accepted"), clip_row("a-c001", "rejected", "static")])
    )
    assert not any(p.exists() for p in paths) and other.exists()


def make_clip(key: str = "a-c000", input_id: str = "a", truth: bool = True, prompt_info=None) -> Clip:
    rng = np.random.default_rng(0)
    labels = {"speed": "fast", "occluded": [1, 0]}
    arrays = {
        "tracks": rng.uniform(0, 60, (5, 2, 2)).astype(np.float32),
        "visible": rng.random((5, 2)) > 0.3,
        "intensity": np.full((5, 2), 0.5, np.float32),
    }
    return Clip(
        key=key,
        input_id=input_id,
        video=rng.integers(0, 256, (5, 48, 64, 3), dtype=np.uint8),
        fps=16.0,
        prompt="a ball rolls",
        source=SourceInfo(kind="procedural", params={"index": 3}, seed=7),
        truth={**arrays, "labels": labels} if truth else None,
        extra={"input": {"frames": 5}},
        prompt_info=prompt_info,
    )


def test_a_clip_round_trips_between_stages(tmp_path):
    store = CurationStore(tmp_path)
    clip = make_clip(prompt_info=PromptInfo(source="sidecar", detail="a.txt"))
    path = store.save_clip(clip)
    assert path == store.clip_path("a-c000") and partials(tmp_path) == []
    back = store.load_clip(path)
    assert (back.key, back.input_id, back.fps, back.prompt, back.bucket) == (
        "a-c000",
        "a",
        16.0,
        "a ball rolls",
        "64x48",
    )
    assert np.array_equal(back.video, clip.video) and back.video.dtype == np.uint8
    assert back.source == clip.source and back.extra == clip.extra and back.prompt_info == clip.prompt_info
    assert set(back.truth) == {"tracks", "visible", "intensity", "labels"}
    for name in ("tracks", "visible", "intensity"):
        assert (
            np.array_equal(back.truth[name], clip.truth[name])
            and back.truth[name].dtype == clip.truth[name].dtype
        )
    assert back.truth["labels"] == clip.truth["labels"]
    bare = store.load_clip(store.save_clip(make_clip("b-c000", "b", truth=False)))
    assert bare.truth is None and bare.prompt_info is None


def test_a_clip_file_that_is_not_a_clip_is_a_shard_error_naming_it(tmp_path):
    store = CurationStore(tmp_path)
    path = store.save_clip(make_clip())
    path.write_bytes(b"not a numpy file")
    with pytest.raises(ShardError, match="a-c000.npz is unreadable"):
        store.load_clip(path)
    np.savez(path, video=np.zeros((1, 2, 2, 3), np.uint8))  # no metadata
    with pytest.raises(ShardError, match="a-c000.npz is unreadable"):
        store.load_clip(path)


@pytest.mark.parametrize("keep", [0.5, 0.999], ids=["half", "all-but-the-end"])
def test_a_truncated_clip_file_is_a_shard_error_naming_it(tmp_path, keep):
    store = CurationStore(tmp_path)
    path = store.save_clip(make_clip())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # a copy or a disk that stopped short
    with pytest.raises(ShardError, match="a-c000.npz is unreadable"):
        store.load_clip(path)


def test_reviews_are_validated(tmp_path):
    store = CurationStore(tmp_path)
    assert store.review("a-c000") is None
    with pytest.raises(ValueError, match="lacks 'version'"):
        store.write_review({"key": "a-c000", "state": "accepted"})
    with pytest.raises(ValueError, match="review state 'maybe'"):
        store.write_review({"key": "a-c000", "version": "v1", "state": "maybe"})
    assert store.review("a-c000") is None  # nothing written
    store.write_review({"key": "a-c000", "version": "v1", "state": "rejected", "reason": "blurry"})
    assert store.review("a-c000")["reason"] == "blurry" and partials(tmp_path) == []


@pytest.fixture
def reviewed(tmp_path):
    """Input a: clips decided by the pipeline and clips waiting for people, reviewed or not; input b
    quarantined; input c not part of the run asked about."""
    store = CurationStore(tmp_path)
    store.write_record(
        record(
            "a",
            [
                clip_row("a-c000", "accepted", "auto", sha="s0"),
                clip_row("a-c001", "rejected", "static"),
                clip_row("a-c002", "awaiting_verification", "hard-motion", bucket="368x640", sha="s2"),
                clip_row("a-c003", "awaiting_annotation", "no-tracks", sha="s3"),
                clip_row("a-c004", "awaiting_annotation", "no-tracks", sha="s4"),
                clip_row("a-c005", "awaiting_verification", "hard-motion", sha="s5-new"),
                clip_row("a-c006", "awaiting_annotation", "no-tracks"),  # no sample file: nothing to review
            ],
        )
    )
    store.write_record(record("b", [], state="quarantined", reason="too-short"))
    store.write_record(record("c", [clip_row("c-c000", "accepted", "auto", sha="t0")]))
    store.write_review({"key": "a-c002", "version": "s2", "state": "accepted", "status": "human-verified"})
    store.write_review({"key": "a-c003", "version": "s3", "state": "rejected", "reason": "wrong object"})
    store.write_review({"key": "a-c004", "version": "s4", "state": "invalid", "problems": ["no points"]})
    store.write_review({"key": "a-c005", "version": "s5-old", "state": "accepted"})  # of an older sample
    store.write_skipped(
        [
            {"path": "z.md", "reason": "unsupported-extension"},
            {"path": "a.m4a", "reason": "unsupported-extension"},
        ]
    )
    return store


def test_waiting_lists_the_clips_routed_to_people_with_their_current_review(reviewed):
    waiting = {c["key"]: c for c in reviewed.waiting()}
    assert sorted(waiting) == ["a-c002", "a-c003", "a-c004", "a-c005"]
    assert all(c["input_id"] == "a" for c in waiting.values())
    assert waiting["a-c002"]["review"]["state"] == "accepted"
    assert waiting["a-c003"]["review"]["state"] == "rejected"
    assert waiting["a-c004"]["review"]["state"] == "invalid"
    assert waiting["a-c005"]["review"] is None  # the review was of another version of the sample


def test_effective_state_follows_the_review_of_the_current_sample(reviewed):
    clips = {c["key"]: c for r in reviewed.records() for c in r["clips"]}
    got = {key: reviewed.effective_state(c) for key, c in clips.items()}
    assert got == {
        "a-c000": ("accepted", "auto"),
        "a-c001": ("rejected", "static"),
        "a-c002": ("accepted", "human-verified"),
        "a-c003": ("rejected", "person: wrong object"),
        "a-c004": ("awaiting_annotation", "annotation-invalid"),  # still waiting for a valid result
        "a-c005": ("awaiting_verification", "hard-motion"),
        "a-c006": ("awaiting_annotation", "no-tracks"),
        "c-c000": ("accepted", "auto"),
    }


def test_the_summary_accounts_for_every_input_once_and_clips_in_their_decided_state(reviewed):
    summary = reviewed.summary(["a", "b", "gone"], failed={"gone": "RuntimeError: boom"})
    assert summary["inputs"] == 2 and summary["clips"] == 7
    assert summary["inputs_missing"] == ["gone"] and summary["inputs_failed"] == {
        "gone": "RuntimeError: boom"
    }
    assert summary["input_states"] == {"failed": 1, "processed": 1, "quarantined": 1}
    assert summary["states"] == {
        "accepted": 2,
        "awaiting_annotation": 2,
        "awaiting_verification": 1,
        "quarantined": 1,  # the input, once: it has no clip
        "rejected": 2,
    }
    assert summary["reasons"] == {
        "annotation-invalid": 1,
        "auto": 1,
        "hard-motion": 1,
        "human-verified": 1,
        "no-tracks": 1,
        "person: wrong object": 1,
        "static": 1,
        "too-short": 1,
    }
    assert summary["buckets"] == {"368x640": 1, "640x368": 1}  # accepted clips only
    assert [r["path"] for r in summary["skipped"]] == ["a.m4a", "z.md"]
    assert summary["skipped_reasons"] == {"unsupported-extension": 2}
    everything = reviewed.summary()
    assert everything["inputs"] == 3 and everything["inputs_missing"] == [] and everything["clips"] == 8
    path = reviewed.write_summary(everything)
    assert json.loads(path.read_text(encoding="utf-8")) == everything


def test_sharding_and_skipped_files_are_rewritten_only_when_they_change(tmp_path):
    store = CurationStore(tmp_path)
    with pytest.raises(ShardError, match="no sharding.json"):
        store.sharding()
    assert store.skipped() == []
    store.write_sharding(["b", "a"], {"samples_per_shard": 8})
    store.write_skipped([{"path": "x.txt", "reason": "unsupported-extension"}])
    assert store.sharding() == {"inputs": ["a", "b"], "shards": {"samples_per_shard": 8}}
    files = [tmp_path / "sharding.json", tmp_path / "skipped.json"]
    before = [p.stat().st_ino for p in files]  # an atomic write replaces the file: a new inode
    store.write_sharding(["a", "b"], {"samples_per_shard": 8})
    store.write_skipped([{"path": "x.txt", "reason": "unsupported-extension"}])
    assert [p.stat().st_ino for p in files] == before
    store.write_sharding(["a"], {"samples_per_shard": 8})
    assert files[0].stat().st_ino != before[0] and store.sharding()["inputs"] == ["a"]
    assert partials(tmp_path) == []
