import numpy as np
import pytest

from ardrag.curation.routing import RoutingConfig, assess, route
from ardrag.data.trackers.base import TrackResult

W, H = 200, 100


def _result(tracks, visible=None, confidence=None):
    tracks = np.asarray(tracks, np.float32)
    t, n = tracks.shape[:2]
    visible = np.ones((t, n), bool) if visible is None else np.asarray(visible, bool)
    confidence = np.ones((t, n), np.float32) if confidence is None else np.asarray(confidence, np.float32)
    return TrackResult(tracks, visible, confidence)


def _grid(t, speed, n=8, y=50.0):
    """n points 10 px apart moving right at ``speed`` px/frame."""
    x = 40 + np.arange(t, dtype=np.float32)[:, None] * speed + np.arange(n) * 10
    return np.stack([x, np.full_like(x, y)], -1)


def test_easy_clip_awaits_verification():
    d = assess(_result(_grid(17, 3.0)), W, H)
    assert d.max_speed_px == pytest.approx(3.0) and d.occlusion_fraction == 0
    assert d.jitter_px == pytest.approx(0) and d.border_losses == d.occluder_losses == 0
    assert route(d, 2, RoutingConfig()) == ("awaiting_verification", "auto-tracked")


def test_fast_motion_goes_to_annotation():
    d = assess(_result(_grid(9, 12.0)), 400, H)
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "fast-motion")


def test_loss_next_to_a_moving_track_is_occlusion():
    static = _grid(17, 0.0, n=8, y=50)
    mover = _grid(17, 6.0, n=1, y=55)  # passes over the static points
    mover[:, :, 0] -= 30
    tracks = np.concatenate([static, mover], 1)
    vis = np.ones((17, 9), bool)
    vis[6:10, 2] = False  # point 2 (x=60) is covered when the mover reaches it
    d = assess(_result(tracks, vis), W, H)
    assert d.occluder_losses == 2 and d.border_losses == 0  # lost as the mover arrives, back as it leaves
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "occlusion")


def test_loss_without_anything_moving_nearby_is_not_occlusion():
    tracks = _grid(17, 2.0, n=8)
    vis = np.ones((17, 8), bool)
    vis[6:10, 3] = False  # neighbours move with it: no occluder
    d = assess(_result(tracks, vis), W, H)
    assert d.occluder_losses == 0
    assert route(d, 2, RoutingConfig())[0] == "awaiting_verification"


def test_loss_at_the_border_is_leaving_the_frame():
    tracks = _grid(17, 8.0, n=8)  # runs to x = 40 + 16*8 + 70 = 238 > W
    vis = tracks[..., 0] <= W - 1
    d = assess(_result(tracks, vis), W, H)
    assert d.border_losses >= 1
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "leaves-frame")


def test_few_points_low_confidence_and_jitter():
    d = assess(_result(_grid(17, 2.0, n=3)), W, H)
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "few-trackable-points")
    d = assess(_result(_grid(17, 2.0), confidence=np.full((17, 8), 0.3)), W, H)
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "low-confidence")
    tracks = _grid(17, 2.0)
    tracks[::2, :, 1] += 3.0  # zig-zag
    d = assess(_result(tracks), W, H)
    assert d.jitter_px > 1.5
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "jitter")


def test_static_and_failed_are_rejected():
    d = assess(_result(_grid(17, 0.0)), W, H)
    assert route(d, 0, RoutingConfig()) == ("rejected", "static")
    vis = np.zeros((17, 8), bool)
    vis[0] = True
    d = assess(_result(_grid(17, 2.0), vis), W, H)
    assert route(d, 0, RoutingConfig()) == ("rejected", "tracking-failed")
