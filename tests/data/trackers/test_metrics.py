"""TAP-Vid metrics (ardrag.data.trackers.metrics), checked by hand on small tracks."""

from __future__ import annotations

import numpy as np
import pytest

from ardrag.data.trackers.metrics import tapvid_metrics


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
