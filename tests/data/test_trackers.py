"""Point trackers: the contract every tracker keeps (CoTracker through the stand-in of
``cotracker_fakes``; its own tests are in test_cotracker.py), LK accuracy against procedural ground
truth, query and trajectory selection."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from cotracker_fakes import install_fake_cotracker, stamped_video

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers import (
    TRACKERS,
    OpenCVTracker,
    Tracker,
    TrackResult,
    get_tracker,
)
from ardrag.data.trackers.metrics import tapvid_metrics
from ardrag.data.trackers.select import (
    SelectionConfig,
    query_points,
    reseed_queries,
    select_trajectories,
)
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


# -- OpenCV LK on procedural ground truth ------------------------------------------------------------
def procedural(n: int, **overrides) -> list:
    cfg = {"num_frames": 17, "buckets": ["640x368"], "leave_frame_prob": 0.0, "fast_prob": 0.0, **overrides}
    src = ProceduralSource(ProceduralConfig(num_clips=n, **cfg))
    return [src.make_clip(i) for i in range(n)]


def frame0_queries(sample) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth queries at frame 0 for the points visible there, and which points those are."""
    keep = sample.visible[0]
    queries = np.concatenate([np.zeros((keep.sum(), 1)), sample.tracks[0, keep]], axis=1)
    return queries.astype(np.float32), keep


def test_opencv_is_accurate_without_occlusion():
    tracker = OpenCVTracker()
    scores = []
    for sample in procedural(5, occlusion_prob=0.0):
        queries, keep = frame0_queries(sample)
        r = tracker.track(sample.video, queries)
        m = tapvid_metrics(
            r.tracks, r.visible, sample.tracks[:, keep], sample.visible[:, keep], query_frames=queries[:, 0]
        )
        scores.append(m["position_accuracy"])
        assert m["occlusion_accuracy"] >= 0.95
    assert np.mean(scores) >= 0.95, scores  # measured: 1.0 on every clip


def test_opencv_detects_occlusion():
    tracker = OpenCVTracker()
    hidden = detected = 0
    positions = []
    for sample in procedural(10, occlusion_prob=1.0):
        queries, keep = frame0_queries(sample)
        gt_tracks, gt_visible = sample.tracks[:, keep], sample.visible[:, keep]
        r = tracker.track(sample.video, queries)
        hidden += int((~gt_visible).sum())
        detected += int((~r.visible & ~gt_visible).sum())
        positions.append(tapvid_metrics(r.tracks, r.visible, gt_tracks, gt_visible)["position_accuracy"])
    assert hidden >= 20  # the clips do occlude tracked points
    assert detected / hidden >= 0.8, (detected, hidden)  # measured: 50 of 50
    assert np.mean(positions) >= 0.9, positions  # measured: 0.99


def test_opencv_tracks_backward_from_a_later_query():
    sample = procedural(1, occlusion_prob=0.0)[0]
    t = 8
    queries = np.concatenate([np.full((sample.num_points, 1), t), sample.tracks[t]], axis=1).astype(
        np.float32
    )
    r = OpenCVTracker().track(sample.video, queries)
    m = tapvid_metrics(r.tracks, r.visible, sample.tracks, sample.visible, query_frames=queries[:, 0])
    assert m["position_accuracy"] >= 0.95 and m["occlusion_accuracy"] >= 0.95


def test_opencv_points_leaving_the_frame_are_not_visible():
    sample = next(
        s
        for s in procedural(6, occlusion_prob=0.0, leave_frame_prob=1.0, num_frames=25)
        if (~s.visible).any()
    )
    queries, keep = frame0_queries(sample)
    r = OpenCVTracker().track(sample.video, queries)
    outside = ~sample.visible[:, keep]
    assert not r.visible[outside].any()
    h, w = sample.video.shape[1:3]
    # a lost point is never extrapolated out of the frame: it is held inside it, invisible
    assert (r.tracks[..., 0] >= 0).all() and (r.tracks[..., 0] <= w - 1).all()
    assert (r.tracks[..., 1] >= 0).all() and (r.tracks[..., 1] <= h - 1).all()


def test_opencv_is_fast_enough():
    sample = procedural(1, num_frames=33, occlusion_prob=0.0)[0]
    queries = np.concatenate([np.zeros((8, 1)), np.tile(sample.tracks[0], (8, 1))[:8]], axis=1)
    queries = queries.astype(np.float32)
    tracker = OpenCVTracker()
    tracker.track(sample.video, queries)
    start = time.perf_counter()
    tracker.track(sample.video, queries)
    assert time.perf_counter() - start < 1.0  # measured ~0.03 s on one core; a loose guard


# -- query points and trajectory selection ---------------------------------------------------------
def on_sprite(scene, t: int, xy: np.ndarray, tolerance_px: float = 3.0) -> bool:
    """Whether (x, y) lies on a sprite's ellipse, grown by ``tolerance_px`` (corners on the outline
    count), at frame t, rather than on the static background."""
    for s in scene.sprites:
        h, w = s.mask.shape
        u, v = xy - s.path[t]
        r = np.hypot((u - (w - 1) / 2) / (w / 2), (v - (h - 1) / 2) / (h / 2))
        if r <= 1 + tolerance_px / (min(w, h) / 2):
            return True
    return False


def test_query_points_land_on_moving_sprites():
    src = ProceduralSource(ProceduralConfig(num_clips=4, num_frames=13, buckets=["640x368"]))
    for i in range(4):
        sample, scene = src.make_clip(i), src.make_scene(i)
        q = query_points(sample.video, 8, seed=0)
        assert q.shape[1] == 3 and q.dtype == np.float32 and 1 <= len(q) <= 8
        assert set(q[:, 0].tolist()) <= {0.0, 8.0}  # keyframes every 0.5 s at 16 fps
        # On a sprite. Edge points (which textureless objects need) can also land on an edge that a sprite
        # uncovers or covers within the window: one of 8 at most.
        on = [on_sprite(scene, int(t), xy) for t, *xy in q]
        assert sum(on) >= len(q) - 1, q
        for t in set(q[:, 0].tolist()):  # spread out within each keyframe
            at = q[q[:, 0] == t, 1:]
            d = np.linalg.norm(at[:, None] - at[None], axis=-1) + np.eye(len(at)) * 1e9
            assert d.min() >= 8 - 1e-3


def test_query_points_skip_a_static_clip():
    video = np.repeat(stamped_video(frames=1, height=64, width=96)[:1], 6, axis=0)
    assert query_points(video, 8).shape == (0, 3)


def test_reseed_queries_cover_moving_content_without_tracks():
    src = ProceduralSource(ProceduralConfig(num_clips=1, num_frames=17, buckets=["640x368"]))
    sample, scene = src.make_clip(0), src.make_scene(0)
    lost = TrackResult(
        sample.tracks, np.zeros_like(sample.visible), np.zeros(sample.visible.shape, np.float32)
    )
    q = reseed_queries(sample.video, lost, max_new=6)
    assert 1 <= len(q) <= 6
    assert all(on_sprite(scene, int(t), xy) for t, *xy in q)
    covered = TrackResult(
        sample.tracks, np.ones_like(sample.visible), np.ones(sample.visible.shape, np.float32)
    )
    for t, *xy in reseed_queries(sample.video, covered, max_new=6):
        assert np.linalg.norm(sample.tracks[int(t)] - np.array(xy), axis=1).min() >= 16


def synthetic_result() -> TrackResult:
    rng = np.random.default_rng(0)
    T = 20
    t = np.arange(T, dtype=np.float64)[:, None]
    good = np.array([100.0, 100.0]) + t * [3.0, 1.0]  # 0: large smooth motion
    small = np.array([300.0, 50.0]) + t * [1.0, 0.5]  # 1: smaller motion, far away
    static = np.array([50.0, 200.0]) + rng.normal(0, 0.2, (T, 2))  # 2: noise only
    erratic = np.array([200.0, 200.0]) + t * [2.0, 0.0] + rng.normal(0, 3.0, (T, 2))  # 3: jittery
    twin = good + [5.0, 5.0]  # 4: rides next to 0
    hidden = np.array([400.0, 300.0]) + t * [4.0, 0.0]  # 5: mostly invisible
    tracks = np.stack([good, small, static, erratic, twin, hidden], axis=1).astype(np.float32)
    visible = np.ones((T, 6), bool)
    visible[3:, 5] = False
    return TrackResult(tracks, visible, visible.astype(np.float32))


def test_select_trajectories_keeps_motion_and_says_why():
    sel = select_trajectories(synthetic_result(), 8)
    assert sel.indices.tolist() == [0]  # the main motion; 1 moves a third as far
    assert sel.reasons[1].startswith("minor motion")
    both = select_trajectories(synthetic_result(), 8, config=SelectionConfig(main_motion_fraction=0.25))
    assert both.indices.tolist() == [0, 1]  # by displacement, largest first
    assert sel.reasons[2].startswith("static")
    assert sel.reasons[3].startswith("erratic")
    assert sel.reasons[4].startswith("too close to track 0")
    assert sel.reasons[5].startswith("mostly invisible")
    assert set(sel.reasons) | set(sel.indices.tolist()) == set(range(6))


def test_select_trajectories_limits_and_thresholds():
    result = synthetic_result()
    sel = select_trajectories(result, 1, config=SelectionConfig(main_motion_fraction=0))
    assert sel.indices.tolist() == [0] and "already chosen" in sel.reasons[1]
    loose = SelectionConfig(
        max_jitter_px=100.0,
        min_separation_px=0.0,
        min_visible_fraction=0.1,
        main_motion_fraction=0,
        complete_only=False,
    )
    assert sorted(select_trajectories(result, config=loose).indices.tolist()) == [0, 1, 3, 4, 5]
    with pytest.raises(ValueError, match="k = 9"):
        select_trajectories(result, 9)


# -- TAP-Vid metrics -------------------------------------------------------------------------------
def line_tracks(T: int = 6, N: int = 3) -> np.ndarray:
    t = np.arange(T, dtype=np.float32)[:, None, None]
    return (np.arange(N, dtype=np.float32)[None, :, None] * 20 + t * np.float32(2.0)).repeat(2, axis=2)


def test_metrics_perfect_prediction_scores_one():
    gt = line_tracks()
    vis = np.ones(gt.shape[:2], bool)
    vis[2, 1] = False
    m = tapvid_metrics(gt, vis, gt, vis, query_frames=np.zeros(3, int))
    for key in ("position_accuracy", "occlusion_accuracy", "average_jaccard", "pts_within_1", "jaccard_16"):
        assert m[key] == 1.0, key


def test_metrics_all_wrong_by_three_pixels():
    gt = line_tracks()
    vis = np.ones(gt.shape[:2], bool)
    pred = gt + np.array([3.0, 0.0], np.float32)
    m = tapvid_metrics(pred, vis, gt, vis, query_frames=np.zeros(3, int))
    # 3 px is outside 1 and 2 px, inside 4, 8 and 16 px (TAP-Vid counts distance < threshold)
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert m["position_accuracy"] == pytest.approx(0.6)
    assert m["occlusion_accuracy"] == 1.0
    assert m["jaccard_2"] == 0.0 and m["jaccard_4"] == 1.0  # predicted visible but too far: false positive
    assert m["average_jaccard"] == pytest.approx(0.6)


def test_metrics_by_hand_with_occlusion():
    gt = line_tracks(T=4, N=1)
    gt_vis = np.array([[1], [1], [0], [1]], bool)
    pred_vis = np.array([[1], [1], [1], [0]], bool)
    m = tapvid_metrics(gt, pred_vis, gt, gt_vis, query_frames=np.array([0]))
    # scored frames 1..3: visibility agrees on frame 1 only
    assert m["occlusion_accuracy"] == pytest.approx(1 / 3)
    assert m["position_accuracy"] == 1.0  # positions of the gt-visible frames 1 and 3 are exact
    # true positives: frame 1; gt positives: frames 1, 3; false positive: frame 2 (gt hidden)
    assert m["average_jaccard"] == pytest.approx(1 / 3)


def test_metrics_skip_the_query_frame_and_before_in_first_mode():
    gt = line_tracks(T=5, N=2)
    vis = np.ones(gt.shape[:2], bool)
    pred = gt.copy()
    pred[2, 0] += 50.0  # wrong only at point 0's query frame
    pred[0, 1] += 50.0  # wrong only before point 1's query frame
    q = np.array([2, 1])
    strided = tapvid_metrics(pred, vis, gt, vis, query_frames=q)
    assert strided["pts_within_16"] == pytest.approx(7 / 8)  # frame 0 of point 1 counts in strided mode
    first = tapvid_metrics(pred, vis, gt, vis, query_frames=q, query_mode="first")
    assert first["position_accuracy"] == 1.0
    every = tapvid_metrics(pred, vis, gt, vis)  # no query frames given: every frame counts
    assert every["pts_within_16"] == pytest.approx(8 / 10)


def test_metrics_edge_cases():
    gt = line_tracks(T=3, N=1)
    hidden = np.zeros((3, 1), bool)
    m = tapvid_metrics(gt, hidden, gt, hidden, query_frames=np.array([0]))
    assert np.isnan(m["position_accuracy"]) and m["occlusion_accuracy"] == 1.0
    with pytest.raises(ValueError, match="pred_tracks"):
        tapvid_metrics(gt[:, :, :1], hidden, gt, hidden)
    with pytest.raises(ValueError, match="query_frames"):
        tapvid_metrics(gt, hidden, gt, hidden, query_frames=np.array([0, 1]))
    m = tapvid_metrics(gt, ~hidden, gt, ~hidden, thresholds=(0.5, 3))
    assert set(m) >= {"pts_within_0.5", "pts_within_3", "jaccard_0.5", "jaccard_3"}
