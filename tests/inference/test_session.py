"""Streaming generation with the tiny preset: causal in the controls, regenerate() redoes one frame."""

import numpy as np
import pytest
import torch
from inference_helpers import controls

from ardrag.errors import ConfigError
from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.model.pipeline import ARDragPipeline


def run(pipe, reference, plan, seed=0):
    session = StreamSession(pipe, reference, "a red square slides right", seed=seed)
    return session, [session.step(points) for points in plan]


def test_frames_come_out_one_latent_frame_at_a_time(pipe, reference):
    session, frames = run(pipe, reference, [controls(k) for k in range(10)])
    assert [len(f) for f in frames] == [1] + [4] * 9
    assert frames[0].shape[1:] == (64, 96, 3) and frames[0].dtype == np.uint8
    assert session.caches[0].frames_written == 9  # the last frame's write waits for the next step
    session.flush()
    assert session.caches[0].cached_frames == 7 and session.caches[0].frames_written == 10  # bounded


def test_the_deferred_cache_write_gives_the_same_stream_whenever_it_runs(pipe, reference):
    plan = [controls(i) for i in range(4)]
    _, lazy = run(pipe, reference, plan)
    session = StreamSession(pipe, reference, "a red square slides right")
    eager = []
    for points in plan:
        eager.append(session.step(points))
        session.flush()
        session.flush()  # a second flush writes nothing more
        assert session.caches[0].frames_written == session.frame
    for a, b in zip(lazy, eager, strict=True):
        np.testing.assert_array_equal(a, b)


def test_changing_the_control_at_frame_k_changes_no_earlier_frame(pipe, reference):
    k = 3
    plan = [controls(i) for i in range(5)]
    moved = [*plan[:k], controls(k, x0=70.0), plan[k + 1]]
    _, a = run(pipe, reference, plan)
    _, b = run(pipe, reference, moved)
    for i in range(k):
        np.testing.assert_array_equal(a[i], b[i])
    assert not np.array_equal(a[k], b[k])


def test_regenerate_changes_only_the_last_frame_and_the_stream_goes_on_as_if_chosen_first(pipe, reference):
    plan = [controls(i) for i in range(4)]
    other = controls(3, x0=70.0)
    session, frames = run(pipe, reference, plan)
    session.flush()  # already written: regenerate must roll the write back too
    redone = session.regenerate(other)
    after = session.step(controls(4))
    _, direct = run(pipe, reference, [*plan[:3], other, controls(4)])
    np.testing.assert_array_equal(redone, direct[3])
    np.testing.assert_array_equal(after, direct[4])
    assert not np.array_equal(redone, frames[3])


def test_guidance_keeps_two_caches_or_one_batched(reference):
    """The reference path keeps one cache per guidance branch; the fast path runs both branches as one
    batch-2 pass over one cache."""
    guided = ARDragPipeline.tiny(guidance_scale=3.0)
    for options, caches, rows in ((StreamOptions.reference(), 2, 1), (StreamOptions(), 1, 2)):
        session = StreamSession(guided, reference, "a red square slides right", options=options)
        frames = [session.step(controls(i)) for i in range(2)]
        session.flush()
        assert len(session.caches) == caches and all(c.frames_written == 2 for c in session.caches)
        assert all(v.shape[0] == rows for v in session.caches[0].values)
        assert frames[1].shape == (4, 64, 96, 3)


@pytest.mark.parametrize(
    "points, message",
    [
        (np.zeros((4, 1, 2), np.float32), r"expected \(1, N, 2\)"),
        (np.full((1, 1, 2), np.nan, np.float32), "not all finite"),
        (np.zeros((1, 0, 2), np.float32), r"expected \(1, N, 2\)"),
    ],
)
def test_bad_controls_fail_before_compute(pipe, reference, points, message):
    session = StreamSession(pipe, reference, "x")
    with pytest.raises(ConfigError, match=message):
        session.step(points)
    assert session.frame == 0 and session.caches[0].frames_written == 0


def test_the_reference_is_encoded_with_frame_0s_controls_as_the_pipeline_encodes_it(pipe, reference):
    """One batched streaming-encoder call encodes the reference and frame 0's heatmap (both a first
    chunk): the reference latent is encode_reference()'s up to float32 rounding, and regenerating
    frame 0 redoes that call from the start."""
    session = StreamSession(pipe, reference, "a red square slides right")
    assert session.ref_latent is None
    first = session.step(controls(0))
    expected, clip = pipe.encode_reference(reference)
    assert session.ref_latent.shape == expected.shape
    assert (session.ref_latent - expected).abs().max().item() <= 1e-5
    assert torch.equal(session.clip, clip)
    np.testing.assert_array_equal(session.regenerate(controls(0)), first)
    _, direct = run(pipe, reference, [controls(0), controls(1)])
    np.testing.assert_array_equal(session.step(controls(1)), direct[1])


def test_a_bad_reference_fails_when_the_session_starts(pipe):
    with pytest.raises(ConfigError, match=r"expected uint8 \(64, 96, 3\)"):
        StreamSession(pipe, np.zeros((64, 96, 3), np.float32), "x")
