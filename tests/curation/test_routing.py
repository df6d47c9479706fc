"""Routing rules on synthetic tracks: each rule fires on what it names, and records its figure."""

import numpy as np
import pytest

from ardrag.curation.routing import RoutingConfig, assess, decide, route
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


def test_easy_clip_awaits_verification_and_records_every_check():
    d = assess(_result(_grid(17, 3.0)), W, H)
    assert d.max_speed_px == pytest.approx(3.0) and d.occlusion_fraction == 0
    assert d.jitter_px == pytest.approx(0) and d.border_losses == d.occluder_losses == 0
    decision = decide(d, 2, RoutingConfig())
    assert (decision.state, decision.reason) == ("awaiting_verification", "auto-tracked")
    record = decision.to_dict()
    assert {c["rule"] for c in record["checks"]} >= {"occlusion", "fast-motion", "jitter", "low-confidence"}
    fast = next(c for c in record["checks"] if c["rule"] == "fast-motion")
    assert fast == {"rule": "fast-motion", "value": 3.0, "threshold": 20.0, "fires_when": "value > threshold",
                    "fired": False}  # fmt: skip


def test_a_clip_without_a_prompt_waits_for_a_person_to_write_one():
    d = assess(_result(_grid(17, 3.0)), W, H)
    assert route(d, 2, RoutingConfig(), has_prompt=False) == ("awaiting_verification", "no-prompt")


def test_fast_motion_goes_to_annotation_with_its_speed_and_threshold():
    d = assess(_result(_grid(9, 24.0, n=2)), 800, H)
    decision = decide(d, 2, RoutingConfig())
    assert (decision.state, decision.reason) == ("awaiting_annotation", "fast-motion")
    assert decision.to_dict()["value"] == pytest.approx(24.0) and decision.to_dict()["threshold"] == 20.0


def test_speed_and_jitter_are_measured_between_new_source_frames():
    # 10 fps upsampled to 16 fps: a point at 5 px/frame of the source stands still, then jumps
    src_t = np.floor(np.arange(33) * 10 / 16)
    x = 40 + 8.0 * src_t
    tracks = np.stack([x, np.full_like(x, 50.0)], -1)[:, None].astype(np.float32)
    raw = assess(_result(tracks), W * 3, H)
    new = np.flatnonzero(np.diff(np.concatenate([[-1], src_t])) != 0)
    fair = assess(_result(tracks), W * 3, H, frames=new)
    assert raw.jitter_px > 2.0 and fair.jitter_px < 0.2  # the stutter is not the tracker's
    assert fair.max_speed_px == pytest.approx(8.0 * 10 / 16, abs=1.0)


def test_a_control_that_is_lost_beside_an_occluder_and_comes_back_is_occlusion():
    static = _grid(17, 0.0, n=1, y=50)
    mover = _grid(17, 6.0, n=1, y=55)  # passes over the static point
    mover[:, :, 0] -= 30
    tracks = np.concatenate([static, mover], 1)
    vis = np.ones((17, 2), bool)
    vis[6:10, 0] = False  # covered when the mover reaches it, back after it left
    d = assess(_result(tracks, vis), W, H, controls=[0])
    assert d.occluder_losses == 1 and d.border_losses == 0 and d.controls == 1
    assert route(d, 1, RoutingConfig()) == ("awaiting_annotation", "occlusion")
    gone = vis.copy()
    gone[6:, 0] = False  # lost for good: one visible stretch, a quick check
    assert assess(_result(tracks, gone), W, H, controls=[0]).occluder_losses == 0


def test_a_loss_without_anything_moving_differently_nearby_is_not_occlusion():
    tracks = _grid(17, 2.0, n=8)
    vis = np.ones((17, 8), bool)
    vis[6:10, 3] = False  # neighbours move with it: no occluder
    d = assess(_result(tracks, vis), W, H)
    assert d.occluder_losses == 0
    assert route(d, 2, RoutingConfig())[0] == "awaiting_verification"


def test_occluders_are_looked_for_among_all_tracks_but_only_controls_are_judged():
    static = _grid(17, 0.0, n=2, y=50)
    mover = _grid(17, 6.0, n=1, y=55)
    mover[:, :, 0] -= 30
    tracks = np.concatenate([static, mover], 1)  # columns 0, 1 static (10 px apart), 2 the mover
    vis = np.ones((17, 3), bool)
    vis[6:10, 1] = False  # a non-control is occluded: not a reason to annotate
    assert assess(_result(tracks, vis), W, H, controls=[0]).occluder_losses == 0
    vis[6:10, 0] = False  # the control is: the mover (not a control) is the occluder
    assert assess(_result(tracks, vis), W, H, controls=[0]).occluder_losses == 1


def test_leaving_the_frame_and_coming_back_is_leaves_frame():
    x = np.concatenate([np.arange(150, 210, 6.0), np.arange(210, 150, -6.0)])  # out past W and back
    tracks = np.stack([x, np.full_like(x, 50)], -1)[:, None].astype(np.float32)
    vis = tracks[..., 0] <= W - 1
    d = assess(_result(tracks, vis), W, H)
    assert d.border_losses == 1
    assert route(d, 1, RoutingConfig()) == ("awaiting_annotation", "leaves-frame")


def test_no_usable_control_low_confidence_and_jitter():
    d = assess(_result(_grid(17, 2.0, n=3)), W, H)
    assert route(d, 0, RoutingConfig()) == ("awaiting_annotation", "few-trackable-points")
    d = assess(_result(_grid(17, 2.0), confidence=np.full((17, 8), 0.3)), W, H)
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "low-confidence")
    tracks = _grid(17, 2.0)
    tracks[::2, :, 1] += 3.0  # zig-zag
    d = assess(_result(tracks), W, H)
    assert d.jitter_px > 2.0
    assert route(d, 2, RoutingConfig()) == ("awaiting_annotation", "jitter")


def test_failed_tracking_is_rejected():
    vis = np.zeros((17, 8), bool)
    vis[0] = True
    d = assess(_result(_grid(17, 2.0), vis), W, H)
    decision = decide(d, 0, RoutingConfig())
    assert (decision.state, decision.reason) == ("rejected", "tracking-failed")
    assert decision.to_dict()["value"] == pytest.approx(1 / 17, abs=1e-3)
