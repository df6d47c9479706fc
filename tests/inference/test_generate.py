"""`ardrag generate`: an mp4 with the trajectory's frame count; bad input stops before any model loads."""

import json
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

import ardrag.inference.generate as gen
from ardrag.errors import ConfigError


@pytest.fixture
def inputs(tmp_path):
    image = (np.random.default_rng(0).random((360, 640, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "ref.png"), image)
    t = 10
    traj = {
        "width": 640,
        "height": 360,
        "fps": 16,
        "points": [{"x": list(np.linspace(100, 300, t)), "y": [180.0] * t}],
    }
    (tmp_path / "traj.json").write_text(json.dumps(traj))
    return tmp_path, traj


def frame_count(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_generate_tiny_writes_the_trajectorys_frames_and_an_overlay(inputs):
    d, _ = inputs
    files = ["--ref", str(d / "ref.png"), "--traj", str(d / "traj.json"), "--out", str(d / "out.mp4")]
    cmd = [
        sys.executable,
        "-m",
        "ardrag.cli",
        "generate",
        *files,
        "--prompt",
        "a dog runs",
        "--preset",
        "tiny",
    ]
    cmd += ["--overlay", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 10 and frame_count(d / "out.mp4") == 10
    assert frame_count(d / "out.overlay.mp4") == 10


def test_latent_chunks_cover_the_frames():
    assert gen.latent_chunks(1) == [(0, 1)]
    assert gen.latent_chunks(10) == [(0, 1), (1, 5), (5, 9), (9, 13)]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t["points"][0].update(y=[1.0, 2.0]), "points[0].y has 2 entries"),
        (lambda t: t["points"][0]["x"].__setitem__(3, float("nan")), "points[0].x[3] is nan"),
        (lambda t: t["points"][0]["x"].__setitem__(2, 5000.0), "points[0].x[2] is 5000"),
        (lambda t: t["points"][0].update(x=[], y=[]), "expected at least one frame"),
    ],
)
def test_bad_trajectories_fail_before_any_model_loads(inputs, monkeypatch, change, message):
    d, traj = inputs
    change(traj)
    (d / "traj.json").write_text(json.dumps(traj))
    monkeypatch.setattr(gen, "load_pipeline", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as err:
        gen.generate(d / "ref.png", d / "traj.json", "x", d / "out.mp4", preset="tiny")
    assert message in str(err.value)
    assert not (d / "out.mp4").exists()


def test_unreadable_image_fails_before_any_model_loads(inputs, monkeypatch):
    d, _ = inputs
    (d / "bad.png").write_bytes(b"not an image")
    monkeypatch.setattr(gen, "load_pipeline", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="could not be decoded"):
        gen.generate(d / "bad.png", d / "traj.json", "x", d / "out.mp4", preset="tiny")


def test_preset_toy_generates_with_the_shipped_model_folder(inputs, tmp_path, monkeypatch):
    """``--preset toy`` loads ardrag/assets/toy (here a folder of random weights in its place), at its
    resolution; ``--checkpoint`` swaps in another student; ``--preset tiny`` stays random."""
    from factories import toy_model_folder

    import ardrag.presets as presets
    from ardrag.model.pipeline import ARDragPipeline
    from ardrag.presets import TOY

    d, _ = inputs
    monkeypatch.setattr(presets, "ASSETS", tmp_path / "assets")
    with pytest.raises(ConfigError) as err:  # not made yet: the path and the command that makes it
        gen.generate(d / "ref.png", d / "traj.json", "x", d / "out.mp4", preset=TOY)
    assert str(tmp_path / "assets" / "toy") in str(err.value)
    assert "python benchmarks/make_toy_model.py --out DIR --ship" in str(err.value)
    assert not (d / "out.mp4").exists()

    toy = toy_model_folder(tmp_path / "assets" / "toy")
    written = gen.generate(d / "ref.png", d / "traj.json", "x", d / "out.mp4", preset=TOY, progress=False)
    assert (written["width"], written["height"], written["frames"]) == (80, 48, 10)
    assert frame_count(d / "out.mp4") == 10
    other = ARDragPipeline.tiny(4, TOY).transformer
    other.save_pretrained(str(tmp_path / "student"))
    pipe = gen.load_pipeline(TOY, str(tmp_path / "student"), "unused", seed=0)
    assert pipe.transformer.state_dict()["proj_out.weight"].equal(other.state_dict()["proj_out.weight"])
    assert pipe.vae.state_dict().keys() == toy.vae.state_dict().keys()
    with pytest.raises(ConfigError, match="exclude each other: the preset is random weights"):
        gen.load_pipeline("tiny", str(tmp_path / "student"), "unused", seed=0)
    assert gen.load_pipeline("tiny", None, "unused", seed=0).config.width == 96


def test_the_sink_option_pins_the_first_frame_in_the_sessions_cache(inputs, monkeypatch):
    d, _ = inputs
    sessions, real = [], gen.StreamSession

    def spy(*args, **kwargs):
        sessions.append(real(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(gen, "StreamSession", spy)
    summary = gen.generate(d / "ref.png", d / "traj.json", "a dog runs", d / "out.mp4", preset="tiny", sink=1,
                           progress=False)  # fmt: skip
    assert summary["attention_sink"] == 1 and summary["frames"] == 10
    assert [s.caches[0].sink for s in sessions] == [1]
    with pytest.raises(ConfigError, match=r"--sink -1: expected a number of latent frames >= 0"):
        gen.generate(d / "ref.png", d / "traj.json", "a dog runs", d / "out.mp4", preset="tiny", sink=-1)


def test_a_prompt_schedule_switches_from_its_latent_frame_and_leaves_the_frames_before(inputs):
    """`ardrag generate --preset tiny --prompt-schedule FILE` runs and reports the switch; the library's
    stream with it leaves the frames before the switch's latent frame as they were: 10 pixel frames are
    latent frames 0, 1-4, 5-8, 9, and a switch at pixel frame 6 (latent frame 2) keeps pixel frames 0-4."""
    from ardrag.inference.trajectory import parse_trajectory
    from ardrag.model.pipeline import ARDragPipeline

    d, traj = inputs
    switch = {"frame": 6, "text": "the dog turns back", "mode": "keep"}
    (d / "schedule.json").write_text(json.dumps([switch]))
    cmd = [sys.executable, "-m", "ardrag.cli", "generate", "--ref", str(d / "ref.png"), "--traj",
           str(d / "traj.json"), "--prompt", "a dog runs", "--preset", "tiny", "--json", "--out",
           str(d / "out.mp4"), "--prompt-schedule", str(d / "schedule.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["prompts"] == [{**switch, "latent_frame": 2}] and frame_count(d / "out.mp4") == 10

    pipe = ARDragPipeline.tiny()
    image = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    small = {**traj, "width": 96, "height": 64,
             "points": [{"x": list(np.linspace(10, 60, 10)), "y": [30.0] * 10}]}  # fmt: skip
    plain, _ = gen.stream_clip(pipe, image, parse_trajectory(small), "a dog runs")
    for mode in ("keep", "recache"):
        scheduled = parse_trajectory({**small, "prompts": [{**switch, "mode": mode}]})
        switched, _ = gen.stream_clip(pipe, image, scheduled, "a dog runs")
        np.testing.assert_array_equal(switched[:5], plain[:5])
        assert not np.array_equal(switched[5:], plain[5:]), mode


@pytest.mark.parametrize(
    "prompts, message",
    [
        ([{"frame": 10, "text": "x"}], r"prompts\[0\].frame is 10; expected a pixel frame in 0 .. 9"),
        ([{"frame": 5, "text": "a"}, {"frame": 7, "text": "b"}],
         r"prompts\[1\].frame is 7 \(latent frame 2\), but prompts\[0\] at frame 5 holds latent frame 2 on"),
        ([{"frame": 6, "text": "a"}, {"frame": 2, "text": "b"}],
         r"prompts\[1\].frame is 2 \(latent frame 1\)"),
        ([{"frame": 2, "text": " "}], r"prompts\[0\].text is .*; expected a non-empty prompt"),
        ([{"frame": 2, "text": "a", "mode": "rebuild"}],
         r"prompts\[0\].mode is .*rebuild.*; expected one of"),
        ([{"frame": 2, "txt": "a"}], r"prompts\[0\] has unknown key 'txt'"),
        ({"frame": 2}, r"prompts is .*; expected a list of switches"),
    ],
)  # fmt: skip
def test_bad_prompt_schedules_fail_before_any_model_loads(inputs, monkeypatch, prompts, message):
    d, traj = inputs
    monkeypatch.setattr(gen, "load_pipeline", lambda *a: pytest.fail("a model was loaded"))
    (d / "traj.json").write_text(json.dumps({**traj, "prompts": prompts}))
    with pytest.raises(ConfigError, match=message):
        gen.generate(d / "ref.png", d / "traj.json", "x", d / "out.mp4", preset="tiny")
    if isinstance(prompts, dict):  # a schedule file may be {"prompts": [...]}: another message
        return
    (d / "traj.json").write_text(json.dumps(traj))  # the same rules for --prompt-schedule
    (d / "schedule.json").write_text(json.dumps(prompts))
    with pytest.raises(ConfigError, match=message):
        gen.generate(d / "ref.png", d / "traj.json", "x", d / "out.mp4", preset="tiny",
                     prompt_schedule=d / "schedule.json")  # fmt: skip
