"""Query points and control trajectories (ardrag.data.trackers.select): queries on moving content,
reseeding where tracks are lost, and which trajectories are kept and why the others are not."""

from __future__ import annotations

import numpy as np
import pytest
from cotracker_fakes import stamped_video

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
from ardrag.data.trackers import TrackResult
from ardrag.data.trackers.select import (
    SelectionConfig,
    query_points,
    reseed_queries,
    select_trajectories,
)


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
