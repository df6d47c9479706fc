"""The CoTracker adapter: conversions both ways, the published online window protocol, loading once per
process under locks, streaming long clips window by window, pickling to workers.

CoTracker itself cannot be installed here (it is not on PyPI and the tests run offline), so these tests
run the adapter against the stand-ins of ``cotracker_fakes``, which follow the published predictor API
(``cotracker/predictor.py`` of facebookresearch/co-tracker), or against ``torch.hub.load`` replaced by a
counting factory. They check the adapter's side of the contract, not CoTracker's accuracy or speed.
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from cotracker_fakes import (
    StandInOnlinePredictor,
    StandInPredictor,
    expected_tracks,
    install_fake_cotracker,
    stamped_video,
)

from ardrag.data.trackers import CoTrackerTracker, get_tracker
from ardrag.data.trackers import cotracker as cotracker_module

QUERIES = np.array([[0, 10.0, 20.0], [7, 30.0, 12.0], [19, 50.0, 40.0]], np.float32)
OFFLINE = {"checkpoint": "stand-in/scaled_offline.pth"}
ONLINE = {"checkpoint": "stand-in/scaled_online.pth", "mode": "online"}


@pytest.fixture(autouse=True)
def empty_model_cache(monkeypatch):
    """Each test starts in a 'fresh process': no CoTracker model loaded yet."""
    monkeypatch.setattr(cotracker_module, "_MODELS", {})


@pytest.fixture
def fake_cotracker(monkeypatch):
    """A ``cotracker`` package with ``predictor.CoTrackerPredictor`` / ``CoTrackerOnlinePredictor``."""
    return install_fake_cotracker(monkeypatch)


@pytest.fixture
def counting_hub(monkeypatch) -> list[tuple[str, str]]:
    """No cotracker package; ``torch.hub.load`` builds a stand-in slowly and records each call."""
    monkeypatch.setitem(sys.modules, "cotracker", None)  # not installed: the hub fetches the code
    loaded: list[tuple[str, str]] = []

    def slow_load(repo, entrypoint, *args, **kwargs):
        loaded.append((repo, entrypoint))
        time.sleep(0.2)  # a real load takes seconds: long enough for a second caller to arrive
        return StandInOnlinePredictor() if entrypoint.endswith("online") else StandInPredictor()

    monkeypatch.setattr(torch.hub, "load", slow_load)
    return loaded


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; re-raise the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        barrier.wait()
        try:
            results[k] = calls[k]()
        except BaseException as err:  # handed to the test's thread below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (a deadlock?)"
    if errors:
        raise errors[0]
    return results


def assert_stand_in_result(result, queries: np.ndarray, frames: int) -> None:
    tracks, visible = expected_tracks(queries, frames)
    np.testing.assert_allclose(result.tracks, tracks, atol=1e-4)
    np.testing.assert_array_equal(result.visible, visible)


# -- conversions and the published protocol --------------------------------------------------------
def test_cotracker_offline_converts_both_ways(fake_cotracker):
    tracker = get_tracker("cotracker", OFFLINE)
    tracker.setup()
    assert isinstance(tracker._model, StandInPredictor)
    assert tracker._model.checkpoint == "stand-in/scaled_offline.pth" and tracker._model.window_len == 60
    video = stamped_video(frames=20)
    result = tracker.track(video, QUERIES)
    tracks, visible = expected_tracks(QUERIES, 20)
    np.testing.assert_allclose(result.tracks, tracks, atol=1e-4)
    np.testing.assert_array_equal(result.visible, visible)
    np.testing.assert_array_equal(result.confidence, visible.astype(np.float32))
    assert StandInPredictor.calls == [{"frames": 20, "backward_tracking": True}]  # the whole clip


def test_cotracker_online_follows_the_published_window_protocol(fake_cotracker):
    tracker = get_tracker("cotracker", ONLINE)
    tracker.setup()
    assert isinstance(tracker._model, StandInOnlinePredictor) and tracker._model.step == 8
    video = stamped_video(frames=20)
    result = tracker.track(video, QUERIES)
    assert_stand_in_result(result, QUERIES, 20)  # frames before t > 0 via reversal
    calls = StandInOnlinePredictor.calls
    forward = calls[: len(calls) // 2]
    assert forward[0]["first"] and [c["start"] for c in forward[1:]] == [0, 8]
    assert all(c["frames"] <= 16 for c in calls if not c["first"])


@pytest.mark.parametrize("frames", [5, 8, 9, 16, 17, 33])
def test_cotracker_online_covers_every_clip_length(fake_cotracker, frames):
    tracker = get_tracker("cotracker", {"checkpoint": "x.pth", "mode": "online"})
    queries = np.array([[0, 10.0, 20.0], [frames - 1, 30.0, 12.0]], np.float32)
    result = tracker.track(stamped_video(frames=frames), queries)
    assert_stand_in_result(result, queries, frames)


def test_cotracker_loads_from_torch_hub_without_a_checkpoint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cotracker", None)  # not installed: the hub fetches the code
    loaded = []

    def fake_load(repo, entrypoint, *args, **kwargs):
        loaded.append((repo, entrypoint))
        return StandInPredictor()

    monkeypatch.setattr(torch.hub, "load", fake_load)
    tracker = CoTrackerTracker()
    assert tracker.version == "cotracker3_offline@hub:facebookresearch/co-tracker"
    tracker.setup()
    assert loaded == [("facebookresearch/co-tracker", "cotracker3_offline")]
    result = tracker.track(stamped_video(frames=6), QUERIES[:1])
    assert result.tracks.shape == (6, 1, 2)
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone._model is None  # the model does not travel to workers


def test_cotracker_without_package_fails_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cotracker", None)
    with pytest.raises(ImportError, match="pip install git\\+https://github.com/facebookresearch/co-tracker"):
        get_tracker("cotracker", {"checkpoint": "/models/scaled_offline.pth"})


def test_cotracker_hub_failure_names_the_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(RuntimeError, match="no network.*checkpoint"):
        CoTrackerTracker().setup()


def test_a_failed_load_is_not_cached(monkeypatch):
    monkeypatch.setitem(sys.modules, "cotracker", None)
    attempts = []

    def flaky_load(repo, entrypoint, *args, **kwargs):
        attempts.append(entrypoint)
        if len(attempts) == 1:
            raise OSError("connection reset")
        return StandInPredictor()

    monkeypatch.setattr(torch.hub, "load", flaky_load)
    tracker = CoTrackerTracker()
    with pytest.raises(RuntimeError, match="connection reset"):
        tracker.setup()
    assert tracker._model is None
    tracker.setup()
    assert isinstance(tracker._model, StandInPredictor) and len(attempts) == 2


# -- loading once per process ------------------------------------------------------------------------
def test_setup_from_two_threads_loads_once(fake_cotracker, monkeypatch):
    monkeypatch.setattr(StandInPredictor, "build_delay", 0.2)
    loads = []
    load = cotracker_module._load
    monkeypatch.setattr(cotracker_module, "_load", lambda config: loads.append(config) or load(config))
    tracker = get_tracker("cotracker", OFFLINE)
    run_together(tracker.setup, tracker.setup)
    assert StandInPredictor.built == ["stand-in/scaled_offline.pth"]
    assert len(loads) == 1  # the second caller waited on the tracker's lock, not on the process cache
    assert isinstance(tracker._model, StandInPredictor)


def test_track_from_two_threads_loads_from_the_hub_once(counting_hub):
    tracker = CoTrackerTracker()  # the curation flow's two worker threads share it; neither set it up
    video = stamped_video(frames=20)
    results = run_together(lambda: tracker.track(video, QUERIES), lambda: tracker.track(video, QUERIES))
    assert counting_hub == [("facebookresearch/co-tracker", "cotracker3_offline")]
    for result in results:
        assert_stand_in_result(result, QUERIES, 20)


def test_two_trackers_with_the_same_settings_started_together_load_once(fake_cotracker, monkeypatch):
    monkeypatch.setattr(StandInOnlinePredictor, "build_delay", 0.2)
    a, b = get_tracker("cotracker", ONLINE), get_tracker("cotracker", ONLINE)
    run_together(a.setup, b.setup)
    assert StandInOnlinePredictor.built == ["stand-in/scaled_online.pth"]
    assert a._model is b._model and a._run_lock is b._run_lock


def test_trackers_share_a_model_only_for_the_same_settings(fake_cotracker):
    def model(config: dict) -> Any:
        tracker = get_tracker("cotracker", config)
        tracker.setup()
        return tracker._model

    offline = model(OFFLINE)
    assert model(OFFLINE) is offline
    assert model({**OFFLINE, "backward_tracking": False}) is offline  # a call option, not the model's
    assert model({**OFFLINE, "online_window": 8}) is offline  # not used by the offline predictor
    online = model(ONLINE)
    others = [
        online,
        model({**OFFLINE, "checkpoint": "other/scaled_offline.pth"}),
        model({**OFFLINE, "offline_window": 30}),
        model({**ONLINE, "online_window": 8}),
    ]
    assert len({id(m) for m in [offline, *others]}) == 5
    assert len(StandInPredictor.built) + len(StandInOnlinePredictor.built) == 5
    assert others[-1].window_len == 8 and others[2].window_len == 30


def test_trackers_sharing_an_online_model_take_turns(fake_cotracker, monkeypatch):
    """The shared online predictor keeps state between calls: interleaved windows would mix two clips."""
    monkeypatch.setattr(StandInOnlinePredictor, "call_delay", 0.002)
    a, b = get_tracker("cotracker", ONLINE), get_tracker("cotracker", ONLINE)
    qa = np.array([[0, 10.0, 20.0], [25, 30.0, 12.0]], np.float32)
    qb = np.array([[3, 40.0, 30.0], [39, 20.0, 10.0]], np.float32)
    va, vb = stamped_video(frames=40, seed=1), stamped_video(frames=40, seed=2)
    va[:, 0, 0, 0] = np.arange(40) + 1
    vb[:, 0, 0, 0] = np.arange(40)[::-1] + 1  # b's frames carry other stamps: a mix shows
    ra, _ = run_together(lambda: a.track(va, qa), lambda: b.track(vb, qb))
    assert a._model is b._model and len(StandInOnlinePredictor.built) == 1
    assert_stand_in_result(ra, qa, 40)


# -- streaming long clips ----------------------------------------------------------------------------
def whole_clip_reference(video: np.ndarray, queries: np.ndarray, window_len: int = 16):
    """The online path as it was before streaming: the whole clip as one float tensor (and its flipped
    copy), windows sliced from it, the first step given the whole clip."""
    model = StandInOnlinePredictor(window_len=window_len)
    step, T = model.step, len(video)
    qt = queries[:, 0].astype(np.int64)
    clip = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)[None].float()
    q = torch.from_numpy(queries)[None]

    def online(clip: torch.Tensor, q: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        model(video_chunk=clip, is_first_step=True, queries=q)
        for i in range(0, max(T - step, 1), step):
            out = model(video_chunk=clip[:, i : i + 2 * step])
        return out[0][0, :T].numpy().copy(), out[1][0, :T].numpy().copy()

    tracks, visible = online(clip, q)
    before = qt > 0
    rq = q[:, torch.from_numpy(before)].clone()
    rq[..., 0] = (T - 1) - rq[..., 0]
    rt, rv = online(clip.flip(1), rq)
    rt, rv = rt[::-1], rv[::-1]
    cols = np.flatnonzero(before)
    earlier = np.arange(T)[:, None] < qt[None, cols]
    tracks[:, cols] = np.where(earlier[..., None], rt, tracks[:, cols])
    visible[:, cols] = np.where(earlier, rv, visible[:, cols])
    tracks[qt, np.arange(len(queries))] = queries[:, 1:]
    visible[qt, np.arange(len(queries))] = True
    return tracks, visible


def long_clip_queries(frames: int) -> np.ndarray:
    return np.array(
        [[0, 10.0, 20.0], [frames // 3, 30.0, 12.0], [frames // 2 + 1, 5.5, 25.0], [frames - 1, 50.0, 30.0]],
        np.float32,
    )


@pytest.mark.parametrize("frames", [81, 200])
def test_online_streaming_equals_the_whole_clip_computation(fake_cotracker, frames):
    video = stamped_video(frames=frames, height=32, width=56)
    queries = long_clip_queries(frames)
    want_tracks, want_visible = whole_clip_reference(video, queries)
    result = get_tracker("cotracker", ONLINE).track(video, queries)
    np.testing.assert_array_equal(result.tracks, want_tracks)
    np.testing.assert_array_equal(result.visible, want_visible)
    np.testing.assert_array_equal(result.confidence, want_visible.astype(np.float32))
    assert_stand_in_result(result, queries, frames)


@pytest.mark.parametrize("frames", [81, 200])
def test_online_feeds_one_window_at_a_time(fake_cotracker, monkeypatch, frames):
    """Every call, the first included, gets at most 2 * step frames, exactly the frames of its window
    (forward, then time-reversed), and no more than one window is ever turned into a tensor."""
    converted = []
    from_numpy = torch.from_numpy

    def recording_from_numpy(array: np.ndarray) -> torch.Tensor:
        converted.append(array.shape)
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", recording_from_numpy)
    H, W, window, step = 32, 56, 16, 8
    video = stamped_video(frames=frames, height=H, width=W)
    queries = long_clip_queries(frames)
    get_tracker("cotracker", ONLINE).track(video, queries)

    frame_arrays = [shape for shape in converted if len(shape) == 4]
    assert frame_arrays and all(shape[0] <= window for shape in frame_arrays), frame_arrays

    starts = list(range(0, frames - step, step))
    forward = [list(range(i, min(i + window, frames))) for i in [0, *starts]]  # first step, then windows
    backward = [[frames - 1 - t for t in stamps] for stamps in forward]
    calls = StandInOnlinePredictor.calls
    assert [c["first"] for c in calls] == [True] + [False] * len(starts) + [True] + [False] * len(starts)
    assert [c["stamps"] for c in calls] == forward + backward
    assert all(c["shape"] == (1, len(c["stamps"]), 3, H, W) for c in calls)


# -- pickling to workers -----------------------------------------------------------------------------
def test_pickling_a_set_up_tracker_drops_the_model_and_the_locks(fake_cotracker, monkeypatch):
    tracker = get_tracker("cotracker", ONLINE)
    tracker.setup()
    state = tracker.__getstate__()
    assert state["_model"] is None and state["_lock"] is None and state["_run_lock"] is None
    with tracker._lock:  # a thread inside setup() does not stop the tracker from pickling
        blob = pickle.dumps(tracker)

    clone = pickle.loads(blob)
    assert clone._model is None and clone._run_lock is None
    assert clone._lock is not tracker._lock and clone._lock.acquire(blocking=False)
    clone._lock.release()
    clone.setup()  # in the same process: the model already loaded
    assert clone._model is tracker._model and len(StandInOnlinePredictor.built) == 1

    monkeypatch.setattr(cotracker_module, "_MODELS", {})  # as in a fresh worker process
    worker = pickle.loads(blob)
    worker.setup()
    assert len(StandInOnlinePredictor.built) == 2 and worker._model is not tracker._model
    assert_stand_in_result(worker.track(stamped_video(frames=20), QUERIES), QUERIES, 20)
