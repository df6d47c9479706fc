"""Point trackers: the registry (ardrag.data.trackers) and the contract of ardrag.data.trackers.base that
every tracker keeps (CoTracker through the stand-in of ``cotracker_fakes``; its own tests are in
test_cotracker.py). Each tracker's accuracy and the selection and metrics modules have their own tests
beside this one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from cotracker_fakes import install_fake_cotracker, stamped_video

from ardrag.data.trackers import TRACKERS, Tracker, TrackResult, get_tracker
from ardrag.errors import ConfigError

CONFIGS = {"opencv": {}, "cotracker": {"checkpoint": "stand-in/scaled_offline.pth"}}


@pytest.fixture(params=sorted(TRACKERS))
def any_tracker(request) -> Tracker:
    if request.param == "cotracker":
        install_fake_cotracker(request.getfixturevalue("monkeypatch"))
    return get_tracker(request.param, CONFIGS[request.param])


def test_every_tracker_has_a_contract_config():
    assert set(CONFIGS) == set(TRACKERS)


# -- the contract ------------------------------------------------------------------------------------
def test_contract(any_tracker):
    tracker = any_tracker
    assert isinstance(tracker, Tracker)
    assert isinstance(tracker.name, str) and tracker.name in TRACKERS
    assert isinstance(tracker.version, str) and tracker.version
    clone = pickle.loads(pickle.dumps(tracker))  # before setup: workers get a plain object
    assert clone.name == tracker.name
    tracker.setup()
    video = stamped_video(frames=12, height=48, width=64)
    queries = np.array([[0, 10.0, 20.0], [5, 30.5, 12.25], [11, 50.0, 40.0], [3, 0.0, 47.0]], np.float32)
    result = tracker.track(video, queries)
    assert isinstance(result, TrackResult)
    T, N = 12, 4
    assert result.tracks.shape == (T, N, 2) and result.tracks.dtype == np.float32
    assert result.visible.shape == (T, N) and result.visible.dtype == np.bool_
    assert result.confidence.shape == (T, N) and result.confidence.dtype == np.float32
    assert np.all(np.isfinite(result.tracks))
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1
    qt = queries[:, 0].astype(int)
    np.testing.assert_allclose(result.tracks[qt, np.arange(N)], queries[:, 1:], atol=1e-4)
    assert result.visible[qt, np.arange(N)].all()
    pickle.dumps(tracker)  # after setup too


def test_contract_rejects_bad_inputs(any_tracker):
    video = stamped_video(frames=6)
    with pytest.raises(ValueError, match="queries"):
        any_tracker.track(video, np.array([[6, 1.0, 1.0]], np.float32))  # frame out of range
    with pytest.raises(ValueError, match="queries"):
        any_tracker.track(video, np.array([[0.5, 1.0, 1.0]], np.float32))  # not a whole frame
    with pytest.raises(ValueError, match="queries"):
        any_tracker.track(video, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="video"):
        any_tracker.track(video.astype(np.float32), np.zeros((1, 3), np.float32))


def test_get_tracker_validates():
    with pytest.raises(ConfigError, match="unknown"):
        get_tracker("nope")
    with pytest.raises(ConfigError, match="win_size"):
        get_tracker("opencv", {"win_size": 2})
    with pytest.raises(ConfigError, match="window = 21"):
        get_tracker("opencv", {"window": 21})
    with pytest.raises(ConfigError, match="entrypoint"):
        get_tracker("cotracker", {"mode": "online", "entrypoint": "cotracker3_offline"})
