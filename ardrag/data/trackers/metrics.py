"""TAP-Vid point-tracking metrics (Doersch et al., 2022), for one clip in ardrag's (T, N) layout.

Definitions as in the TAP-Vid reference implementation: a frame counts for a point unless it is the
point's query frame (``query_mode="strided"``) or lies before it (``"first"``, where all frames before
the first visible one are dropped). Then

- ``pts_within_d``: among gt-visible evaluated frames, the fraction predicted within ``d`` px (strict
  ``<``), whatever the predicted visibility; ``position_accuracy`` (TAP-Vid's < delta^x_avg, also given
  as ``average_pts_within_thresh``) is their mean over the thresholds;
- ``occlusion_accuracy``: the fraction of evaluated frames whose predicted visibility equals the truth;
- ``jaccard_d``: true positives (gt-visible, predicted visible, within ``d``) over gt-visible frames plus
  false positives (predicted visible but gt-occluded or farther than ``d``); ``average_jaccard`` is
  their mean.

TAP-Vid rescales videos to 256x256 before measuring; these thresholds are pixels at the clip's own
resolution. A ratio without frames to count (no gt-visible frame, say) is NaN. Benchmarks average
per-clip values, as TAP-Vid averages per video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def evaluation_mask(
    gt_visible: np.ndarray, query_frames: np.ndarray | None, query_mode: Literal["strided", "first"]
) -> np.ndarray:
    """Which (frame, point) pairs count: all but the query frames, and in "first" mode not those before
    the query frame (None: the first gt-visible frame of each point)."""
    T, N = gt_visible.shape
    frames = np.arange(T)[:, None]
    if query_frames is None:
        if query_mode == "strided":
            return np.ones((T, N), bool)
        query_frames = np.argmax(gt_visible, axis=0)
    q = np.rint(np.asarray(query_frames)).astype(np.int64).reshape(1, N)
    mask = frames != q
    if query_mode == "first":
        mask &= frames > q
    return mask


def tapvid_metrics(
    pred_tracks: np.ndarray,
    pred_visible: np.ndarray,
    gt_tracks: np.ndarray,
    gt_visible: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    query_frames: np.ndarray | None = None,
    query_mode: Literal["strided", "first"] = "strided",
) -> dict[str, float]:
    """TAP-Vid metrics of one clip: tracks (T, N, 2) pixels, visibility (T, N) bool; ``query_frames``
    (N,) are excluded from the count (None: every frame counts in "strided" mode)."""
    pred_tracks, gt_tracks = np.asarray(pred_tracks, np.float64), np.asarray(gt_tracks, np.float64)
    pred_visible, gt_visible = np.asarray(pred_visible, bool), np.asarray(gt_visible, bool)
    if gt_tracks.ndim != 3 or gt_tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks has shape {gt_tracks.shape}; expected (T, N, 2)")
    T, N = gt_tracks.shape[:2]
    for name, a, shape in (
        ("pred_tracks", pred_tracks, (T, N, 2)),
        ("pred_visible", pred_visible, (T, N)),
        ("gt_visible", gt_visible, (T, N)),
    ):
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}; expected {shape} like gt_tracks")
    if query_frames is not None and np.shape(query_frames) != (N,):
        raise ValueError(f"query_frames has shape {np.shape(query_frames)}; expected ({N},)")
    if query_mode not in ("strided", "first"):
        raise ValueError(f"query_mode = {query_mode!r}; expected 'strided' or 'first'")
    if len(thresholds) == 0:
        raise ValueError("thresholds is empty; expected pixel distances such as (1, 2, 4, 8, 16)")

    ev = evaluation_mask(gt_visible, query_frames, query_mode)
    metrics: dict[str, float] = {
        "occlusion_accuracy": _ratio(np.sum((pred_visible == gt_visible) & ev), np.sum(ev))
    }
    sq_dist = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)
    gt_pos = np.sum(gt_visible & ev)
    within_all, jaccard_all = [], []
    for d in thresholds:
        within = sq_dist < np.square(d)
        correct = within & gt_visible
        frac = _ratio(np.sum(correct & ev), gt_pos)
        true_pos = np.sum(correct & pred_visible & ev)
        false_pos = np.sum(((~gt_visible) | (~within)) & pred_visible & ev)
        jac = _ratio(true_pos, gt_pos + false_pos)
        key = f"{d:g}"
        metrics[f"pts_within_{key}"] = frac
        metrics[f"jaccard_{key}"] = jac
        within_all.append(frac)
        jaccard_all.append(jac)
    metrics["position_accuracy"] = float(np.mean(within_all))
    metrics["average_pts_within_thresh"] = metrics["position_accuracy"]
    metrics["average_jaccard"] = float(np.mean(jaccard_all))
    return metrics
