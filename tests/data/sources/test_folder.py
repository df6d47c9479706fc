"""The folder source on real video files: timing, size, rotation, scene cuts, content keys, bad inputs.
The decoder child process itself (its verdicts on damaged files, hangs, crashes) is tested in
tests/data/test_probe.py.

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
from factories import folder_clips, folder_source

from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.clip import Clip, InputRejected
from ardrag.data.sample import KEY_PATTERN
from ardrag.data.sources import VideoSource
from ardrag.data.sources.folder import (
    CLIP_LENGTHS,
    FolderConfig,
    FolderSource,
    detect_cuts,
    fitting_length,
    plan_clips,
)
from ardrag.errors import ArdragError, ConfigError

CLIP = 17  # the shortest clip (4k+1 frames): short videos keep the tests fast
FPS = 16.0
TOLERANCE_PX = 1.5


def source(folder: Path, **overrides) -> FolderSource:
    return folder_source(folder, CLIP, **overrides)


def clips_of(folder: Path, name: str | None = None, **overrides) -> list[Clip]:
    return folder_clips(folder, CLIP, name, **overrides)


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
    with pytest.raises(InputRejected) as err:  # the default refuses what would be upscaled 25 times
        clips_of(tmp_path, "tiny.mp4")
    assert (
        err.value.reason == "too-small"
        and "16x16" in err.value.detail
        and "min_side = 64" in err.value.detail
    )
    tiny = clips_of(tmp_path, "tiny.mp4", min_side=16)
    assert [c.bucket for c in tiny] == ["400x400"]
    huge = clips_of(tmp_path, "huge.mp4")  # 1.5 s at 2 fps: 24 output frames, each a repeat
    assert [c.bucket for c in huge] == ["640x368"] and huge[0].extra["input"]["frames"] == 24
    assert huge[0].source.params["size"] == [3840, 2160]
    with pytest.raises(InputRejected) as err:
        clips_of(tmp_path, "huge.mp4", max_pixels=3840 * 2160 - 1)
    assert err.value.reason == "too-large" and "3840x2160" in err.value.detail
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
    windows, dropped = plan_clips([(0, 40), (40, 50)], clip_frames=17, stride=17, min_frames=17)
    assert windows == [(0, 17, 0), (17, 34, 0)]
    assert dropped == [{"scene": 0, "start": 34, "frames": 6}, {"scene": 1, "start": 40, "frames": 10}]
    windows, dropped = plan_clips([(0, 41)], clip_frames=17, stride=8, min_frames=17)
    assert windows == [(0, 17, 0), (8, 25, 0), (16, 33, 0), (24, 41, 0)] and dropped == []
    # a window cut short keeps the longest 4k+1 length that fits: 80 frames give 77, not nothing
    windows, dropped = plan_clips([(0, 80)], clip_frames=81, stride=81, min_frames=17)
    assert windows == [(0, 77, 0)] and dropped == [{"scene": 0, "start": 77, "frames": 3}]
    windows, dropped = plan_clips([(0, 160)], clip_frames=81, stride=81, min_frames=17)
    assert windows == [(0, 81, 0), (81, 158, 0)]
    windows, _ = plan_clips([(0, 100)], clip_frames=81, stride=81, min_frames=33)
    assert windows == [(0, 81, 0)]  # the 19 frames left are under min_frames
    assert fitting_length(16) == 0 and fitting_length(17) == 17 and fitting_length(52) == 49


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
    assert clip.prompt_info.source == "prompts-file" and clip.prompt_info.detail == "prompts.json"
    assert clip.key.startswith("vid-o-clip-")
    other = next(src.clips(by_path["other.mp4"]))
    assert other.prompt == "" and other.prompt_info.source == "none"
    (tmp_path / "bad.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        source(tmp_path, prompts=str(tmp_path / "bad.yaml"))


def test_prompts_come_from_a_sidecar_then_the_folders_prompts_file(tmp_path):
    for name, seed in (("walk.mp4", 1), ("sub/run.mp4", 2), ("jump.mp4", 3), ("none.mp4", 4)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        videos.write_video(tmp_path / name, frames=20, seed=seed)
    (tmp_path / "walk.txt").write_text("  a man\nwalks a dog \n", encoding="utf-8")
    rows = [
        {"file": "walk.mp4", "prompt": "loses to the sidecar"},
        {"file": "sub/run.mp4", "prompt": "a run"},
        {"file": "jump.mp4", "prompt": "a jump"},
    ]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    src = source(tmp_path)
    by_path = {i.params["path"]: i for i in src.inputs()}
    got = {p: (c.prompt, c.prompt_info.source, c.prompt_info.detail)
           for p, item in by_path.items() for c in [next(src.clips(item))]}  # fmt: skip
    assert got == {
        "walk.mp4": ("a man walks a dog", "sidecar", "walk.txt"),
        "sub/run.mp4": ("a run", "prompts-file", "prompts.jsonl"),
        "jump.mp4": ("a jump", "prompts-file", "prompts.jsonl"),
        "none.mp4": ("", "none", ""),
    }
    assert src.skipped() == []  # the sidecar and the prompts file are not inputs, nor skipped
    # the prompt is part of the input's content: editing it redoes that input alone
    (tmp_path / "walk.txt").write_text("a man walks a cat", encoding="utf-8")
    again = {i.params["path"]: i for i in source(tmp_path).inputs()}
    assert again["walk.mp4"].content_hash != by_path["walk.mp4"].content_hash
    assert again["walk.mp4"].id == by_path["walk.mp4"].id
    assert again["jump.mp4"].content_hash == by_path["jump.mp4"].content_hash
    # CSV, in the folder when there is no JSONL
    (tmp_path / "prompts.jsonl").unlink()
    (tmp_path / "prompts.csv").write_text('file,prompt,notes\njump.mp4,"a jump, high",x\n', encoding="utf-8")
    csv_src = source(tmp_path)
    jump = {i.params["path"]: i for i in csv_src.inputs()}["jump.mp4"]
    assert next(csv_src.clips(jump)).prompt == "a jump, high"


def test_unsupported_files_are_listed_as_skipped_with_their_reason(tmp_path):
    videos.write_video(tmp_path / "v.mp4", frames=20)
    videos.write_audio_only(tmp_path / "song.m4a")
    (tmp_path / "readme.md").write_text("notes", encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    src = source(tmp_path)
    assert [i.params["path"] for i in src.inputs()] == ["v.mp4"]
    skipped = {r["path"]: r for r in src.skipped()}
    assert set(skipped) == {"song.m4a", "readme.md"}  # hidden files are not the user's content
    assert skipped["song.m4a"]["reason"] == "unsupported-extension"
    assert ".m4a" in skipped["song.m4a"]["detail"] and "mp4" in skipped["song.m4a"]["detail"]
    assert [i.params["path"] for i in source(tmp_path, extensions=["mp4", "m4a"]).inputs()] == [
        "song.m4a",
        "v.mp4",
    ]


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
    with pytest.raises(ValueError, match="min_clip_frames = 21 is larger than clip_frames = 17"):
        FolderConfig(folder=".", clip_frames=17, min_clip_frames=21)
    for bad in (1, 16, 32, 85):
        with pytest.raises(ValueError, match=f"clip_frames = {bad}: expected 4k\\+1 frames from 17 to 81"):
            FolderConfig(folder=".", clip_frames=bad)
    assert CLIP_LENGTHS[0] == 17 and CLIP_LENGTHS[-1] == 81 and all(n % 4 == 1 for n in CLIP_LENGTHS)
    assert FolderConfig(folder=".").clip_frames == 81 and FolderConfig(folder=".").min_clip_frames == 17
    with pytest.raises(ValueError):
        FolderConfig(folder=".", unknown=1)
    assert FolderConfig(folder=".", extensions=[".MP4", "mov"]).extensions == ["mov", "mp4"]
    with pytest.raises(ConfigError, match="not a directory"):
        FolderSource(FolderConfig(folder="/nonexistent/folder"))


def test_a_captioner_prompts_the_clips_that_have_no_prompt_and_says_so(tmp_path):
    videos.write_video(tmp_path / "a.mp4", frames=40, seed=1)
    videos.write_video(tmp_path / "b.mp4", frames=40, seed=2)
    (tmp_path / "b.txt").write_text("a square, by a person", encoding="utf-8")
    tiny = {"captioner": "transformers", "captioner_config": {"preset": "tiny", "max_new_tokens": 6}}
    src = source(tmp_path, **tiny)
    by_path = {i.params["path"]: i for i in src.inputs()}
    clips = list(src.clips(by_path["a.mp4"]))
    assert len(clips) == 2  # 40 frames at 16 fps: two clips of 17, each captioned from its own frames
    for clip in clips:
        assert clip.prompt and len(clip.prompt.split()) == 6
        assert clip.prompt_info.source == "captioner" and clip.prompt_info.detail == "tiny-llava@seed=0"
    again = list(source(tmp_path, **tiny).clips(by_path["a.mp4"]))
    assert [c.prompt for c in again] == [c.prompt for c in clips]  # greedy: the same frames, the same words
    side = next(src.clips(by_path["b.mp4"]))
    assert side.prompt == "a square, by a person" and side.prompt_info.source == "sidecar"
    with pytest.raises(ValueError, match="captioner"):
        FolderConfig(folder=".", captioner="no-such-captioner")
