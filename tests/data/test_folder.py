"""The folder source on real video files: timing, size, rotation, scene cuts, content keys, bad inputs.

Every video here is written by :mod:`videos` with a square moving at a known speed, so the tests check
that the right source frame lands in each 16 fps output frame at the right place, not only shapes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import videos

from ardrag.data import probe
from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.clip import Clip, InputRejected
from ardrag.data.probe import TEST_HOOK_ENV, CfrTimeline
from ardrag.data.sample import KEY_PATTERN
from ardrag.data.sources import VideoSource
from ardrag.data.sources.folder import FolderConfig, FolderSource, detect_cuts, plan_clips
from ardrag.errors import ArdragError, ConfigError

CLIP = 16  # short clips keep the videos short and the tests fast
FPS = 16.0
TOLERANCE_PX = 1.5


def source(folder: Path, **overrides) -> FolderSource:
    return FolderSource(FolderConfig(folder=str(folder), clip_frames=CLIP, **overrides))


def clips_of(folder: Path, name: str | None = None, **overrides) -> list[Clip]:
    src = source(folder, **overrides)
    items = [i for i in src.inputs() if name is None or i.params["path"] == name]
    assert len(items) == 1, [i.params["path"] for i in items]
    return list(src.clips(items[0]))


def output_frames(duration: float) -> int:
    """Output frames k with k / 16 inside the video (1 ms of slack for rounded timestamps)."""
    return math.ceil((duration - 1e-3) * FPS)


def stitched(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """All clip frames, and the output frame index of each (from the clips' start frames)."""
    frames = np.concatenate([c.video for c in clips])
    index = np.concatenate([c.source.params["clip_start_frame"] + np.arange(len(c.video)) for c in clips])
    return frames, index


def assert_square_follows(clips: list[Clip], spec: videos.VideoSpec, display=lambda xy: xy) -> None:
    """The square in each output frame k is where the source frame shown at k / 16 has it, resized."""
    frames, index = stitched(clips)
    size = clips[0].source.params["size"]
    fit = ResizeCrop.fit(size[0], size[1], Bucket.parse(clips[0].bucket))
    for frame, k in zip(frames, index, strict=True):
        n = spec.frame_at(k / FPS)
        if spec.cut_frame is not None and n >= spec.cut_frame:
            continue
        want, _ = fit.apply_points(display(spec.centers[n]), np.array(True))
        got = videos.square_center(frame)
        assert got is not None, f"no square in output frame {k}"
        assert np.abs(np.subtract(got, want)).max() <= TOLERANCE_PX, (k, n, got, want)


# -- (a) real videos at 10, 20, 30 fps: constant 16 fps, nearest bucket, content in place -------------


@pytest.mark.parametrize(
    ("fps", "size", "bucket", "ext", "audio"),
    [
        (10, (1296, 720), "640x368", "mp4", False),
        (20, (854, 480), "640x368", "mkv", True),
        (30, (368, 480), "368x480", "mov", False),
        (25, (640, 480), "480x368", "webm", False),
        (24, (320, 240), "480x368", "avi", False),
    ],
)
def test_rates_and_sizes_resample_to_16fps_buckets(tmp_path, fps, size, bucket, ext, audio):
    spec = videos.write_video(tmp_path / f"v.{ext}", frames=int(2.5 * fps), fps=fps, size=size, audio=audio)
    clips = clips_of(tmp_path)
    n = output_frames(spec.duration)
    assert len(clips) == n // CLIP
    b = Bucket.parse(bucket)
    for i, c in enumerate(clips):
        assert c.bucket == bucket and c.video.shape == (CLIP, b.height, b.width, 3)
        assert c.fps == FPS and c.prompt == "" and KEY_PATTERN.fullmatch(c.key)
        assert c.key.endswith(f"-c{i:03d}") and c.source.kind == "folder" and c.source.seed is None
        p = c.source.params
        assert p["clip_start_frame"] == i * CLIP and p["scene"] == 0 and p["size"] == list(size)
        assert p["rotation"] == 0 and p["vfr"] is False and p["truncated"] is False
        assert p["source_fps"] == pytest.approx(fps, rel=0.01)
    summary = clips[0].extra["input"]
    assert summary["frames"] == n and summary["scenes"] == [[0, n]]
    left = n - len(clips) * CLIP
    assert summary["dropped"] == ([{"scene": 0, "start": n - left, "frames": left}] if left else [])
    assert_square_follows(clips, spec)


def test_variable_frame_rate_picks_the_frame_shown_at_each_time(tmp_path):
    spec = videos.write_video(tmp_path / "vfr.mp4", frames=40, fps=20, size=(320, 240), vfr=True)
    assert len(set(np.round(np.diff(spec.times), 3))) > 2  # really irregular
    clips = clips_of(tmp_path)
    assert clips[0].source.params["vfr"] is True
    n = clips[0].extra["input"]["frames"]
    assert output_frames(spec.times[-1]) <= n <= output_frames(spec.times[-1] + 2.0 / spec.fps)
    assert_square_follows(clips, spec)


def test_odd_size_tiny_and_huge_frames(tmp_path):
    odd = videos.write_video(tmp_path / "odd.mp4", frames=20, fps=16, size=(1297, 721))
    videos.write_video(tmp_path / "tiny.mp4", frames=20, fps=16, size=(16, 16))
    videos.write_video(tmp_path / "huge.mp4", frames=3, fps=2, size=(3840, 2160))
    clips = clips_of(tmp_path, "odd.mp4")
    assert clips[0].bucket == "640x368" and clips[0].source.params["size"] == [1297, 721]
    assert_square_follows(clips, odd)
    tiny = clips_of(tmp_path, "tiny.mp4")
    assert [c.bucket for c in tiny] == ["400x400"]
    huge = clips_of(tmp_path, "huge.mp4")  # 1.5 s at 2 fps: 24 output frames, each a repeat
    assert [c.bucket for c in huge] == ["640x368"] and huge[0].extra["input"]["frames"] == 24
    assert huge[0].source.params["size"] == [3840, 2160]
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path, "huge.mp4", max_pixels=3840 * 2160 - 1)
    assert err.value.reason == "too-large" and "3840x2160" in err.value.detail
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path, "tiny.mp4", min_side=32)
    assert err.value.reason == "too-small"
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path, "odd.mp4", max_duration_s=0.5)
    assert err.value.reason == "too-long"


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation):
    # coded landscape 480x368, shown portrait 368x480; the square moves right in the coded frames
    spec = videos.write_video(tmp_path / "r.mp4", frames=20, fps=16, size=(480, 368), rotation=rotation)
    clips = clips_of(tmp_path)
    assert clips[0].bucket == "368x480" and clips[0].source.params["size"] == [368, 480]
    w, h = spec.size
    if rotation == 90:  # counter-clockwise: the coded top-right corner goes to the top-left
        assert clips[0].source.params["rotation"] == 270
        display = lambda xy: np.array([xy[1], w - 1 - xy[0]])  # noqa: E731
    else:  # clockwise, as a phone held upright records ("rotate" tag 90)
        assert clips[0].source.params["rotation"] == 90
        display = lambda xy: np.array([h - 1 - xy[1], xy[0]])  # noqa: E731
    assert_square_follows(clips, spec, display)


def test_non_square_pixels_are_stretched_to_the_display_aspect(tmp_path):
    # 360x368 coded, each pixel 4:3 wide: shown as 480x368
    spec = videos.write_video(tmp_path / "sar.mp4", frames=20, fps=16, size=(360, 368), sar=Fraction(4, 3))
    clips = clips_of(tmp_path)
    assert clips[0].bucket == "480x368" and clips[0].source.params["size"] == [480, 368]
    assert clips[0].extra["input"]["source"]["sar"] == "4:3"
    assert_square_follows(clips, spec, lambda xy: np.array([(xy[0] + 0.5) * 4 / 3 - 0.5, xy[1]]))


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


# -- (c) scene cuts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30, 10])
def test_two_scenes_are_cut_at_the_boundary(tmp_path, fps):
    spec = videos.write_video(
        tmp_path / "two.mp4", frames=int(4 * fps), fps=fps, size=(640, 368), content="two-scenes", cut_at=2.0
    )
    clips = clips_of(tmp_path)
    n = output_frames(spec.duration)
    cut = next(k for k in range(n) if spec.frame_at(k / FPS) >= spec.cut_frame)
    assert cut == 32
    assert clips[0].extra["input"]["scenes"] == [[0, cut], [cut, n]]
    for c in clips:
        start = c.source.params["clip_start_frame"]
        scene = c.source.params["scene"]
        assert (start + len(c.video) <= cut) if scene == 0 else start >= cut
        colour = videos.RED if scene == 0 else videos.GREEN
        assert all(videos.square_center(f, colour) is not None for f in c.video)
    assert_square_follows([c for c in clips if c.source.params["scene"] == 0], spec)
    whole = clips_of(tmp_path, scene_cuts=False)
    assert whole[0].extra["input"]["scenes"] == [[0, n]]


def test_fast_motion_is_not_a_cut(tmp_path):
    videos.write_video(tmp_path / "fast.mp4", frames=40, fps=10, size=(640, 368), velocity=(120.0, 40.0))
    clips = clips_of(tmp_path)
    assert len(clips[0].extra["input"]["scenes"]) == 1


def test_detect_cuts_and_plan_clips_rules():
    scores = np.array([0, 5, 0, 6, 40, 0, 5, 6, 5], np.float32)
    src = np.array([0, 1, 1, 2, 3, 3, 4, 5, 6])
    assert detect_cuts(scores, src, threshold=15, ratio=3, window=2) == [4]
    assert detect_cuts(scores, src, threshold=50, ratio=3, window=2) == []
    motion = np.array([0, 20, 22, 18, 25, 21], np.float32)  # steady fast motion: no cut
    assert detect_cuts(motion, np.arange(6), threshold=15, ratio=3, window=2) == []
    windows, dropped = plan_clips([(0, 40), (40, 50)], clip_frames=16, stride=16, min_frames=16)
    assert windows == [(0, 16, 0), (16, 32, 0)]
    assert dropped == [{"scene": 0, "start": 32, "frames": 8}, {"scene": 1, "start": 40, "frames": 10}]
    windows, dropped = plan_clips([(0, 40)], clip_frames=16, stride=8, min_frames=6)
    assert windows == [(0, 16, 0), (8, 24, 0), (16, 32, 0), (24, 40, 0)] and dropped == []
    windows, dropped = plan_clips([(0, 42)], clip_frames=16, stride=16, min_frames=10)
    assert windows == [(0, 16, 0), (16, 32, 0), (32, 42, 0)] and dropped == []


# -- (d) inputs are deterministic and keyed by content ------------------------------------------------


def test_inputs_are_sorted_recursive_and_keyed_by_content(tmp_path, caplog):
    a = videos.write_video(tmp_path / "b.mp4", frames=20)
    (tmp_path / "sub").mkdir()
    videos.copy(a.path, tmp_path / "sub" / "A.MOV")  # same bytes, other name, upper-case extension
    videos.copy(a.path, tmp_path / "sub" / "b.mp4")  # same name and bytes: an input of its own too
    videos.copy(a.path, tmp_path / ".hidden.mp4")
    videos.write_text(tmp_path / "notes.txt")
    src = source(tmp_path)
    assert isinstance(src, VideoSource) and src.name == "folder"
    with caplog.at_level(logging.INFO):
        items = src.inputs()
    assert "sub/b.mp4 has the same name and bytes as b.mp4" in caplog.text
    assert [i.params["path"] for i in items] == ["b.mp4", "sub/A.MOV", "sub/b.mp4"]
    assert items == source(tmp_path).inputs()  # deterministic
    assert len({i.id for i in items}) == 3  # every file accounted, each with its own id
    assert items[0].content_hash == items[1].content_hash == items[2].content_hash
    assert items[0].id.startswith("b-") and items[0].kind == "folder"
    assert items[0].description == str(tmp_path / "b.mp4")
    os.rename(tmp_path / "b.mp4", tmp_path / "renamed.mp4")
    renamed = {i.params["path"]: i for i in source(tmp_path).inputs()}
    assert renamed["renamed.mp4"].content_hash == items[0].content_hash
    assert renamed["renamed.mp4"].id == "renamed-" + items[0].content_hash[:12]


def test_prompts_file_and_unicode_names(tmp_path):
    videos.write_video(tmp_path / "vidéo clip ✓.mp4", frames=20)
    videos.write_video(tmp_path / "other.mp4", frames=20, seed=3)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"vidéo clip ✓.mp4": "a red square slides right"}), encoding="utf-8")
    src = source(tmp_path, prompts=str(prompts))
    by_path = {i.params["path"]: i for i in src.inputs()}
    clip = next(src.clips(by_path["vidéo clip ✓.mp4"]))
    assert clip.prompt == "a red square slides right" and KEY_PATTERN.fullmatch(clip.key)
    assert clip.key.startswith("vid-o-clip-")
    assert next(src.clips(by_path["other.mp4"])).prompt == ""
    (tmp_path / "p.yaml").write_text("other.mp4: a square\n", encoding="utf-8")
    assert source(tmp_path, prompts=str(tmp_path / "p.yaml")).prompt_for("other.mp4") == "a square"
    (tmp_path / "bad.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        source(tmp_path, prompts=str(tmp_path / "bad.yaml"))


def test_a_file_changed_or_gone_after_listing_is_an_error_not_a_verdict(tmp_path):
    videos.write_video(tmp_path / "v.mp4", frames=20)
    src = source(tmp_path)
    [item] = src.inputs()
    with open(tmp_path / "v.mp4", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArdragError, match="changed"):
        next(src.clips(item))
    os.remove(tmp_path / "v.mp4")
    with pytest.raises(FileNotFoundError):
        next(src.clips(item))


def test_config_is_validated():
    with pytest.raises(ValueError, match="min_clip_frames"):
        FolderConfig(folder=".", clip_frames=16, min_clip_frames=20)
    with pytest.raises(ValueError):
        FolderConfig(folder=".", clip_frames=1)
    with pytest.raises(ValueError):
        FolderConfig(folder=".", unknown=1)
    assert FolderConfig(folder=".", extensions=[".MP4", "mov"]).extensions == ["mov", "mp4"]
    with pytest.raises(ConfigError, match="not a directory"):
        FolderSource(FolderConfig(folder="/nonexistent/folder"))
