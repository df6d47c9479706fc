"""`ardrag curate` over real video files and the real (tiny) Wan pipeline, through the Prefect flow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import videos
import yaml

from ardrag.curation.store import CurationStore
from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.codec import get_decoder
from ardrag.data.shards import decode_sample, read_manifest, read_sample_file

ARDRAG = str(Path(sys.executable).with_name("ardrag"))


def curate(*args):
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run(
        [ARDRAG, "curate", *args, "--json"], capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


CASES = [  # (source fps, size, file name, nearest bucket)
    (10, (1296, 720), "wide-10fps.mp4", "640x368"),
    (20, (854, 480), "wide-20fps.mkv", "640x368"),
    (30, (368, 480), "tall-30fps.mov", "368x480"),
]


@pytest.mark.slow
def test_folder_source_gives_16fps_bucketed_clips_whose_tracks_follow_the_content(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    specs = {}
    for fps, size, name, _ in CASES:  # 5.6 s each: one 81-frame clip at 16 fps
        specs[name] = videos.write_video(
            folder / name, frames=int(fps * 5.6), fps=fps, size=size, content="textured-square"
        )
    out = tmp_path / "out"
    summary = curate("--source", "folder", "--input", str(folder), "--out", str(out))
    assert summary["inputs"] == 3 and summary["clips"] == 3
    store = CurationStore(out)
    by_name = {Path(r["description"]).name: r for r in store.records()}
    for fps, size, name, bucket in CASES:
        record = by_name[name]
        assert record["state"] == "processed", record
        (clip,) = record["clips"]
        assert clip["bucket"] == bucket and clip["num_frames"] == 81
        assert clip["state"] != "rejected", clip
        key, members = read_sample_file(out / clip["sample"])
        sample = decode_sample(key, members, get_decoder())
        assert sample.fps == 16.0 and sample.bucket == bucket
        assert sample.provenance.source.params["source_fps"] == pytest.approx(fps, rel=0.01)
        # Where the square's centre is in the clip: output frame k shows the source frame at k/16 s,
        # mapped through the same resize-and-crop.
        spec = specs[name]
        tf = ResizeCrop.fit(size[0], size[1], Bucket.parse(bucket))
        centres = np.array([spec.centers[spec.frame_at(k / 16)] for k in range(81)], np.float32)
        centres, _ = tf.apply_points(centres, np.ones(81, bool))
        moved = centres - centres[0]
        tracks, vis = sample.tracks, sample.visible
        errors = []
        for n in range(sample.num_points):
            first = int(np.argmax(vis[:, n]))
            seen = vis[:, n]
            disp = tracks[seen, n] - tracks[first, n]
            want = moved[seen] - moved[first]
            errors.append(np.linalg.norm(disp - want, axis=-1).max())
        # Every control point rides on the square: its motion matches the square's within 2 px.
        assert max(errors) < 2.0, (name, errors)
        assert np.abs(moved[-1]).max() > 40  # and the square really moved


@pytest.mark.slow
def test_bad_input_corpus_runs_through_the_flow_and_every_input_is_accounted(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    good = videos.write_video(folder / "good clip ✓.mp4", frames=96, fps=16, content="textured-square")
    videos.write_empty(folder / "empty.mp4")
    videos.write_text(folder / "notes.mp4")
    videos.write_audio_only(folder / "audio.m4a.mp4")
    videos.write_video(folder / "one-frame.mp4", frames=1, fps=16)
    videos.truncate(good.path, folder / "truncated.mp4", 0.5)
    videos.write_video(folder / "tiny.mp4", frames=96, fps=16, size=(16, 16))
    videos.write_video(folder / "odd size.webm", frames=136, fps=24, size=(1297, 721))  # 5.7 s
    videos.write_video(folder / "rotated.mp4", frames=96, fps=16, size=(320, 240), rotation=90)
    videos.write_audio_only(folder / "song.m4a")  # not a video extension: skipped, with its reason
    (folder / "readme.txt").write_text("no video of this name", encoding="utf-8")
    out = tmp_path / "out"
    config = tmp_path / "curation.yaml"
    config.write_text(yaml.safe_dump({}))
    summary = curate("--source", "folder", "--input", str(folder), "--out", str(out), "--config", str(config))
    assert summary["inputs"] == 9 and summary["inputs_missing"] == []
    records = {Path(r["description"]).name: r for r in CurationStore(out).records()}
    reasons = {name: r["reason"] for name, r in records.items() if r["state"] == "quarantined"}
    assert reasons == {
        "empty.mp4": "empty-file",
        "notes.mp4": "not-a-video",
        "audio.m4a.mp4": "no-video-stream",
        "one-frame.mp4": "too-short",
        "truncated.mp4": "unreadable",
        "tiny.mp4": "too-small",  # 16x16: under min_side (64), it would be upscaled 25 times
    }
    assert "16x16" in records["tiny.mp4"]["detail"] and "min_side = 64" in records["tiny.mp4"]["detail"]
    for name in ("good clip ✓.mp4", "odd size.webm", "rotated.mp4"):
        assert records[name]["state"] == "processed" and records[name]["clips"], name
    assert sum(summary["states"].values()) == summary["clips"] + 6
    skipped = {r["path"]: r for r in summary["skipped"]}
    assert set(skipped) == {"song.m4a", "readme.txt"} and summary["skipped_reasons"] == {
        "unsupported-extension": 2
    }
    assert ".m4a is not one of" in skipped["song.m4a"]["detail"]
    assert json.loads((out / "summary.json").read_text())["skipped"] == summary["skipped"]


@pytest.mark.slow
def test_wan_tiny_runs_the_real_pipeline_into_the_manifest(tmp_path):
    images = []
    for i, (w, h) in enumerate([(320, 240), (240, 320)]):
        rng = np.random.default_rng(i)
        path = tmp_path / f"ref-{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append({"image": str(path), "prompt": f"a red ball rolls to the right {i}", "seed": i})
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump(images))
    out = tmp_path / "out"
    summary = curate(
        "--source", "wan", "--preset", "tiny", "--input", str(jobs), "--out", str(out), "--auto-accept"
    )
    assert summary["inputs"] == 2 and summary["clips"] == 2 and summary["inputs_missing"] == []
    for record in CurationStore(out).records():
        assert record["kind"] == "wan" and record["state"] == "processed"
        (clip,) = record["clips"]
        # Rendered by the real pipeline at the nearest bucket (landscape and portrait reference images).
        assert clip["bucket"] in ("480x368", "368x480") and clip["num_frames"] == 9
        # Random weights render temporally incoherent noise: nothing moves coherently enough to track,
        # so the clip is accounted as rejected/static; trained weights would go on to be tracked.
        if clip["state"] == "rejected":
            assert clip["reason"] == "static"
        else:
            key, members = read_sample_file(out / clip["sample"])
            sample = decode_sample(key, members, get_decoder())
            assert (
                sample.provenance.source.kind == "wan" and sample.provenance.source.params["preset"] == "tiny"
            )
    manifest = read_manifest(out / "dataset")
    assert manifest["samples"] == summary["states"].get("accepted", 0)
