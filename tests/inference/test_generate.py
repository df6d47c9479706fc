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
