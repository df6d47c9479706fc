"""A studio stream records what its steps used, so `ardrag generate` remakes its frames from the downloads."""

import json

import numpy as np
import pytest

from ardrag.errors import ConfigError
from ardrag.inference.generate import load_pipeline, stream_clip
from ardrag.inference.trajectory import load_reference, load_trajectory, parse_trajectory
from ardrag.presets import TINY
from studio.stream import StudioStream, fit_image


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(TINY, None, "unused", 0, "cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return (rng.random((150, 200, 3)) * 255).astype(np.uint8)  # not the model's size: fitted like generate


def run(stream, steps):
    for _ in range(steps):
        job = stream.plan_step()
        stream.finish(job, job.run())


def make(pipe, image, seed=0):
    p, fitted = fit_image(pipe, image)
    return StudioStream(p, fitted, "a patch slides", seed=seed)


def test_the_downloads_replay_to_the_same_frames(pipe, image, tmp_path):
    """Points added, dragged again, re-weighted and removed mid-stream, a prompt switch and a regenerate:
    the trajectory JSON and the reference PNG give `stream_clip` (what `ardrag generate` runs) the
    same frames, bit for bit."""
    s = make(pipe, image, seed=5)
    s.drags.drag(None, [[10, 10], [40, 30]], 8, s.next_frame)
    run(s, 2)
    s.drags.drag(None, [[60, 40]], 1, s.next_frame)  # a pin appears at frame 5
    s.drags.drag(1, [[40, 30], [20, 50], [5, 5]], 12, s.next_frame)
    run(s, 1)
    s.set_prompt("the patch turns back")
    s.drags.set_intensity(2, 0.4, s.next_frame)
    run(s, 2)
    s.drags.remove(2, s.next_frame)
    s.drags.drag(None, [[30, 30], [31, 50]], 4, s.next_frame)  # takes the removed point's column
    run(s, 1)
    s.drags.drag(1, [[5, 5], [90, 60]], 4, s.next_frame)  # changed since the last step: the redo uses it
    job = s.plan_regenerate()
    s.finish(job, job.run())
    run(s, 1)
    assert len(s.frames) == 1 + 4 * 6 and [x.start for x in s.steps] == [0, 1, 5, 9, 13, 17, 21]

    (tmp_path / "trajectory.json").write_text(json.dumps(s.trajectory()))
    (tmp_path / "reference.png").write_bytes(s.reference_png())
    traj = load_trajectory(tmp_path / "trajectory.json")
    assert traj.num_points == 2 and [p.frame for p in traj.prompts] == [0, 9]
    ref = load_reference(tmp_path / "reference.png")
    video, _ = stream_clip(
        pipe.at_size(s.width, s.height), ref, traj, "ignored: frame 0's prompt wins", seed=5
    )
    assert np.array_equal(video, s.video())


def test_a_drag_changes_the_frames_after_it_and_not_before(pipe, image):
    runs = []
    for second in (False, True):
        s = make(pipe, image)
        s.drags.drag(None, [[10, 10], [40, 30]], 8, s.next_frame)
        run(s, 3)
        if second:
            s.drags.drag(1, [[40, 30], [80, 60]], 4, s.next_frame)
        run(s, 2)
        runs.append(s.video())
    assert np.array_equal(runs[0][:9], runs[1][:9])
    assert not np.array_equal(runs[0][9:], runs[1][9:])


def test_regenerate_redoes_the_last_step_only(pipe, image):
    s = make(pipe, image)
    s.drags.drag(None, [[10, 10], [40, 30]], 8, s.next_frame)
    run(s, 3)
    before = s.video().copy()
    job = s.plan_regenerate()  # nothing changed: the same frames (the session rolls its noise back)
    s.finish(job, job.run())
    assert np.array_equal(s.video(), before)
    s.drags.drag(1, [[30, 20], [90, 60]], 2, s.next_frame)
    job = s.plan_regenerate()
    assert job.step.start == 5 and s.next_frame == 9
    s.finish(job, job.run())
    assert np.array_equal(s.video()[:5], before[:5]) and not np.array_equal(s.video()[5:], before[5:])


def test_limits_and_empty_downloads(pipe, image):
    s = make(pipe, image)
    s.max_frames = 5
    for what in (s.trajectory, s.mp4):
        with pytest.raises(ConfigError, match="nothing generated yet"):
            what()
    with pytest.raises(ConfigError, match="nothing to regenerate"):
        s.plan_regenerate()
    run(s, 2)
    with pytest.raises(ConfigError, match="maximum of 5 frames"):
        s.plan_step()
    data = s.trajectory()  # no point was drawn: one hidden point
    traj = parse_trajectory(data)
    assert traj.num_points == 1 and not traj.visible.any()
    assert s.mp4()[4:8] == b"ftyp"
    for bad in ("", "   ", 3, "x" * 2001):
        with pytest.raises(ConfigError, match="prompt"):
            s.set_prompt(bad)


def test_a_prompt_before_the_first_frame_is_the_starting_prompt(pipe, image):
    s = make(pipe, image)
    s.set_prompt("a calm scene")
    run(s, 1)
    s.set_prompt("a calm scene")  # the prompt in force: no switch
    run(s, 1)
    s.set_prompt("a storm")
    s.set_prompt("a storm again")  # the latest before the step wins
    run(s, 1)
    assert s.trajectory()["prompts"] == [
        {"frame": 0, "text": "a calm scene", "mode": "recache"},
        {"frame": 5, "text": "a storm again", "mode": "recache"},
    ]


def test_a_prompt_back_to_the_one_in_flight_cancels_the_switch(pipe, image):
    s = make(pipe, image)
    run(s, 1)
    s.set_prompt("a storm")
    in_flight = s.plan_step()  # carries the switch to "a storm"
    s.set_prompt("a patch slides")  # back to the first prompt while that step runs: a switch again
    assert s.pending_prompt == "a patch slides"
    s.finish(in_flight, in_flight.run())
    s.set_prompt("a storm")  # the prompt in force: no switch
    assert s.pending_prompt is None and s.current_prompt == "a storm"
