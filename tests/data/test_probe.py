"""The decoder child process (ardrag.data.probe), driven through the folder source as curation drives
it: the constant-rate timeline, the bad-input corpus (each file processed or rejected with its reason), a
hanging, stuck or crashing decoder, and the work folders a killed run leaves behind.

Every video here is written by :mod:`videos`. The folder source's own behaviour (timing, buckets,
rotation, scene cuts, prompts) is tested in sources/test_folder.py.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
import videos
from factories import folder_clips, folder_source

from ardrag.data import probe
from ardrag.data.clip import Clip, InputRejected
from ardrag.data.probe import TEST_HOOK_ENV, CfrTimeline
from ardrag.data.sample import KEY_PATTERN
from ardrag.data.sources.folder import FolderSource

CLIP = 17  # the shortest clip (4k+1 frames): short videos keep the tests fast


def source(folder: Path, **overrides) -> FolderSource:
    return folder_source(folder, CLIP, **overrides)


def clips_of(folder: Path, name: str | None = None, **overrides) -> list[Clip]:
    return folder_clips(folder, CLIP, name, **overrides)


def test_cfr_timeline_counts_slots():
    timeline = CfrTimeline(16.0)
    # 30 fps: frame i at i/30; slot k shows the latest frame at or before k/16
    shown = []
    for i in range(1, 31):
        shown += [i - 1] * timeline.slots_before(Fraction(i, 30))
    assert shown == [math.floor(k * 30 / 16 + 1e-9) for k in range(16)]


# -- (b) the bad-input corpus: processed, or rejected with the expected reason; nothing else ----------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("corpus")
    fine = videos.write_video(root / "fine.mp4", frames=64, fps=16, faststart=True)
    plain = videos.write_video(root / "plain.mp4", frames=48, fps=16)
    expected: dict[str, object] = {"fine.mp4": "ok", "plain.mp4": "ok"}
    videos.write_empty(root / "empty.mp4")
    expected["empty.mp4"] = "empty-file"
    videos.write_text(root / "text.mp4")
    expected["text.mp4"] = "not-a-video"
    videos.write_audio_only(root / "audio.mp4")
    videos.write_audio_only(root / "audio.mkv")
    expected["audio.mp4"] = expected["audio.mkv"] = "no-video-stream"
    videos.write_video(root / "one-frame.mp4", frames=1, fps=16)
    expected["one-frame.mp4"] = "too-short"
    videos.truncate(plain.path, root / "cut-index.mp4", 0.5)  # the index is at the end: lost
    expected["cut-index.mp4"] = "unreadable"
    videos.truncate(fine.path, root / "cut-tail.mp4", 0.85)  # index first: the first frames decode
    expected["cut-tail.mp4"] = "truncated"
    videos.truncate(fine.path, root / "cut-head.mp4", 0.02)
    expected["cut-head.mp4"] = {"unreadable", "too-short"}
    for seed in range(3):
        videos.damage(fine.path, root / f"damaged-{seed}.mp4", seed, count=8, start=0.6)
        expected[f"damaged-{seed}.mp4"] = {"ok", "truncated", "unreadable", "too-short"}
    videos.write_video(root / "vidéo clip ✓.mp4", frames=20, fps=16)
    expected["vidéo clip ✓.mp4"] = "ok"
    return root, expected


def test_bad_inputs_are_processed_or_rejected_with_their_reason(corpus):
    root, expected = corpus
    spool = root.parent / "spool"
    spool.mkdir(exist_ok=True)
    src = source(root, decode_timeout_s=30, tmp_dir=str(spool))
    items = src.inputs()
    assert sorted(i.params["path"] for i in items) == sorted(expected)
    for item in items:
        name = item.params["path"]
        try:
            clips = list(src.clips(item))
        except InputRejected as err:
            outcome, detail = err.reason, err.detail
            assert name in detail or str(root / name) in detail, detail
        else:
            assert clips, name
            outcome = "truncated" if clips[0].source.params["truncated"] else "ok"
            for c in clips:
                assert KEY_PATTERN.fullmatch(c.key) and c.key.startswith(item.id)
        want = expected[name]
        assert outcome in (want if isinstance(want, set) else {want}), (name, outcome)
    assert not list(spool.iterdir())  # every work folder removed, rejected or not


def test_truncated_file_keeps_the_frames_that_decode(corpus):
    root, _ = corpus
    clips = clips_of(root, "cut-tail.mp4")
    meta = clips[0].extra["input"]["source"]
    assert clips[0].source.params["truncated"] is True
    assert 16 <= meta["frames_decoded"] < meta["frames_declared"] == 64
    assert meta["decode_error"] and meta["duration_s"] < meta["duration_declared_s"] == 4.0


def test_too_short_names_the_duration(corpus):
    root, _ = corpus
    with pytest.raises(InputRejected) as err:
        clips_of(root, "one-frame.mp4")
    assert err.value.reason == "too-short" and "0.06 s" in err.value.detail


def test_a_hanging_decoder_is_killed(tmp_path, monkeypatch):
    videos.write_video(tmp_path / "v.mp4", frames=20)
    monkeypatch.setenv(TEST_HOOK_ENV, "hang")
    (tmp_path / "spool").mkdir()
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path, decode_timeout_s=1.0, tmp_dir=str(tmp_path / "spool"))
    assert err.value.reason == "decode-timeout" and "v.mp4" in err.value.detail
    assert not list((tmp_path / "spool").iterdir())


def test_a_decoder_stuck_after_its_result_is_killed_and_its_result_used(tmp_path, monkeypatch):
    videos.write_video(tmp_path / "v.mp4", frames=20)
    monkeypatch.setenv(TEST_HOOK_ENV, "hang-at-exit")
    monkeypatch.setattr(probe, "EXIT_GRACE_S", 0.3)
    assert len(clips_of(tmp_path, decode_timeout_s=30)) == 1


# -- (e) a crashing decoder costs its input, not the run ---------------------------------------------


def test_a_crashing_decoder_is_rejected_and_the_parent_survives(tmp_path, monkeypatch):
    videos.write_video(tmp_path / "v.mp4", frames=20)
    monkeypatch.setenv(TEST_HOOK_ENV, "crash")
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path)
    assert err.value.reason == "decoder-crashed" and "SIGSEGV" in err.value.detail
    monkeypatch.delenv(TEST_HOOK_ENV)
    assert len(clips_of(tmp_path)) == 1  # the same process goes on


def test_a_killed_runs_temporary_folders_are_removed_at_the_next_start(tmp_path):
    import subprocess
    import sys

    spool = tmp_path / "spool"
    spool.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = spool / f"{probe.WORKDIR_PREFIX}{int(dead.stdout)}-abc"
    live = spool / f"{probe.WORKDIR_PREFIX}{os.getpid()}-def"
    for d in (stale, live):
        d.mkdir()
        (d / "frames.u8").write_bytes(b"\0" * 100)
    videos.write_video(tmp_path / "v.mp4", frames=20)
    src = source(tmp_path, tmp_dir=str(spool))
    assert src.recover() == [str(stale)]
    assert not stale.exists() and live.exists()  # a running process keeps its folder
