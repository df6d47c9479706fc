"""Trajectories <-> Label Studio results: geometry, the editor's interpolation, validation."""

import numpy as np
import pytest

from annotation.convert import (
    AnnotationInvalid,
    annotate_prediction,
    box_centre,
    box_percent,
    keyframe_indices,
    read_annotate,
    read_verify,
    sequence_to_track,
)

W, H, T = 640, 368, 25


def kf(frame, x, y, enabled=True):
    return {"frame": frame, "x": x, "y": y, "width": 2.0, "height": 2.0, "enabled": enabled, "rotation": 0}


def test_percent_and_pixels_round_trip_at_pixel_centres():
    for x, y in [(0.0, 0.0), (W - 1.0, H - 1.0), (123.25, 77.5)]:
        box = box_percent(x, y, W, H, box_px=12)
        assert box_centre(box, W, H) == pytest.approx((x, y), abs=1e-9)
    # the centre of pixel 0 is half a pixel from the frame's left edge
    box = box_percent(0.0, 0.0, W, H, box_px=1)
    assert box["x"] == pytest.approx(0.0) and box["y"] == pytest.approx(0.0)


def test_rotated_box_keeps_its_centre_about_the_top_left_corner():
    box = {**box_percent(100.0, 50.0, W, H, box_px=10), "rotation": 90}
    # turned 90 degrees clockwise about (x, y): the centre moves from (+5, +5) to (-5, +5)
    cx, cy = box_centre(box, W, H)
    assert (cx, cy) == pytest.approx((100.0 - 10, 50.0), abs=1e-9)


def test_interpolation_between_keyframes_is_linear():
    # frames 1 and 11 (1-based): ardrag frames 0 and 10; x from 10 % to 20 % of the width
    xy, vis = sequence_to_track([kf(1, 10.0, 50.0), kf(11, 20.0, 50.0)], T, W, H)

    def centre(pct):
        return pct / 100 * W + 1.0 / 100 * W - 0.5  # box 2 % wide

    assert xy[5, 0] == pytest.approx((centre(10) + centre(20)) / 2, abs=1e-4)
    assert xy[0, 0] == pytest.approx(centre(10), abs=1e-4)
    assert xy[24, 0] == pytest.approx(centre(20), abs=1e-4)  # held after the last keyframe
    assert vis.all()


def test_disabled_keyframe_hides_until_the_next_keyframe_and_nothing_before_the_first():
    seq = [kf(3, 10.0, 10.0), kf(8, 12.0, 10.0, enabled=False), kf(12, 14.0, 10.0), kf(20, 15.0, 10.0, False)]
    _, vis = sequence_to_track(seq, T, W, H)
    expected = np.zeros(T, bool)
    expected[2:8] = True  # frames 3-8 (1-based): shown, the disabled keyframe's own frame included
    expected[11:20] = True  # 9-11 hidden; 12-20 shown; after the last (disabled) keyframe hidden
    np.testing.assert_array_equal(vis, expected)


def curvy(t=T):
    s = np.linspace(0, 1, t)
    track = np.stack([100 + 120 * s + 3 * np.sin(3 * s), 80 + 30 * s**2], 1).astype(np.float32)
    visible = np.ones(t, bool)
    visible[9:14] = False
    return track, visible


def test_prefilled_keyframes_reproduce_the_tracker_within_tolerance():
    track, visible = curvy()
    keys = keyframe_indices(track, visible, tolerance_px=0.25)
    assert keys[0] == 0 and keys[-1] == T - 1 and {8, 14} <= set(keys) and not {9, 10, 11, 12, 13} & set(keys)
    assert len(keys) < T  # sparse: the annotator edits a few keyframes, not every frame
    region = annotate_prediction(track[:, None], visible[:, None], W, H, 16.0, 12.0, 0.25)[0]
    xy, vis = sequence_to_track(region["value"]["sequence"], T, W, H)
    assert np.abs(xy - track)[visible].max() <= 0.25 + 1e-3
    assert np.isfinite(xy).all()  # hidden frames: interpolated across the gap
    np.testing.assert_array_equal(vis, visible)
    assert region["value"]["labels"] == ["p0"] and region["value"]["framesCount"] == T


def result_for(tracks, visible):
    return annotate_prediction(tracks, visible, W, H, 16.0, 12.0, 0.25)


def test_read_annotate_applies_occluded_spans_and_verdict():
    track, visible = curvy()
    tracks = np.stack([track, track + 5], 1)
    vis = np.stack([visible, np.ones(T, bool)], 1)
    occ = {
        "type": "timelinelabels",
        "from_name": "occluded",
        "to_name": "video",
        "value": {"ranges": [{"start": 20, "end": 22}], "timelinelabels": ["p1 occluded"]},
    }
    decision = read_annotate(result_for(tracks, vis) + [occ], 2, T, W, H)
    assert decision.verdict == "accept"
    expected = vis.copy()
    expected[19:22, 1] = False
    np.testing.assert_array_equal(decision.visible, expected)
    assert np.abs(decision.tracks - tracks)[vis].max() <= 0.26


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: r[0]["value"]["sequence"][0].update(x=101.0), "outside the 640x368 frame"),
        (lambda r: r[0]["value"]["sequence"][-1].update(frame=T + 4), f"outside the clip's frames 1-{T}"),
        (lambda r: r.pop(1), "p1: no track"),
        (lambda r: r.append(r[0]), "p0: 2 tracks"),
        (lambda r: r[1]["value"].update(labels=["p7"]), "no control point"),
    ],
)
def test_malformed_results_are_invalid_with_a_reason(damage, message):
    track, visible = curvy()
    result = result_for(np.stack([track, track + 5], 1), np.stack([visible, visible], 1))
    damage(result)
    with pytest.raises(AnnotationInvalid, match=message):
        read_annotate(result, 2, T, W, H)


def test_verify_needs_a_verdict_and_keeps_reason_and_prompt():
    with pytest.raises(AnnotationInvalid, match="no verdict"):
        read_verify([])
    d = read_verify(
        [
            {"type": "choices", "from_name": "verdict", "value": {"choices": ["reject"]}},
            {"type": "choices", "from_name": "reason", "value": {"choices": ["bad video"]}},
            {"type": "textarea", "from_name": "prompt", "value": {"text": ["  a dog runs  "]}},
        ]
    )
    assert (d.verdict, d.reason, d.prompt) == ("reject", "bad video", "a dog runs")
