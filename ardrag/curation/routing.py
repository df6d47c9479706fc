"""Difficulty of a tracked clip and the state it is routed to.

States (every clip ends in exactly one):

- ``awaiting_verification``: tracked automatically; a person still accepts or rejects it, as in the
  paper (or ``auto_accept`` accepts it, labelled so in provenance);
- ``awaiting_annotation``: hard (occlusion, fast motion, low tracker confidence, jitter): a person
  annotates the trajectories;
- ``accepted``: ready for training (sharded);
- ``rejected``: static, too short, or tracking failed; the reason says which.

Inputs that give no clip at all are ``quarantined`` with the source's reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.data.trackers.base import TrackResult

STATES = ("accepted", "awaiting_verification", "awaiting_annotation", "rejected", "quarantined")


class RoutingConfig(Config):
    """Thresholds of the difficulty rules (pixels are at the clip's bucket resolution).

    Defaults were set on procedural clips whose occlusion / fast-motion labels are known (see
    ``tests/flows/test_curate_flow.py``): a clip is hard when a point moves fast, when a track is lost
    at the frame border (content leaving), when a track is lost right where a differently moving track
    passes (an occluder), or when too few points can be tracked at all."""

    hard_speed_px: float = Field(8.0, gt=0, description="largest per-frame displacement of a point")
    border_margin_px: float = Field(16.0, ge=0, description="a loss this close to the border: leaving")
    occluder_radius_px: float = Field(30.0, gt=0, description="a loss this close to a moving track")
    occluder_motion_px: float = Field(3.0, ge=0, description="relative motion that makes an occluder")
    min_trackable_points: int = Field(8, ge=1, description="fewer tracked points: hard to track")
    hard_min_confidence: float = Field(0.6, ge=0, le=1, description="mean tracker confidence, visible")
    hard_jitter_px: float = Field(1.5, gt=0, description="median |second difference| of visible tracks")
    failed_visible_fraction: float = Field(0.1, ge=0, le=1, description="below: tracking failed")


@dataclass
class Difficulty:
    points: int  # tracked points
    occlusion_fraction: float  # share of point-frames not visible
    max_speed_px: float  # largest displacement between consecutive visible frames
    mean_confidence: float  # over visible point-frames
    jitter_px: float  # median norm of second differences over runs of visible frames
    visible_fraction: float
    border_losses: int  # tracks lost (>= 2 frames) or appearing near the frame border
    occluder_losses: int  # tracks lost or appearing next to a differently moving visible track

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _losses(
    tracks: np.ndarray, vis: np.ndarray, width: int, height: int, cfg: RoutingConfig
) -> tuple[int, int]:
    """Count each track's first loss (visible at t, not at t+1 and t+2) as at the border or next to an
    occluder: another track visible at t, within ``occluder_radius_px`` over t..t+2, moving differently."""
    t_len, n = vis.shape
    border = occluder = 0
    lost = vis[:-2] & ~vis[1:-1] & ~vis[2:] if t_len >= 3 else np.zeros((0, n), bool)
    for i in range(n):
        events = np.nonzero(lost[:, i])[0]
        if not len(events):
            continue
        t = int(events[0])
        x, y = tracks[t, i]
        if min(x, width - 1 - x, y, height - 1 - y) < cfg.border_margin_px:
            border += 1
            continue
        lo, hi = max(0, t - 2), min(t_len - 1, t + 2)
        own = (tracks[t, i] - tracks[lo, i]) * (hi - lo) / max(1, t - lo)  # i's motion, extrapolated
        others = np.nonzero(vis[t])[0]
        others = others[others != i]
        near = (
            np.linalg.norm(tracks[t : t + 3, others] - tracks[t, i], axis=-1).min(0) < cfg.occluder_radius_px
        )
        moved = (
            np.linalg.norm((tracks[hi, others] - tracks[lo, others]) - own, axis=-1) > cfg.occluder_motion_px
        )
        occluder += bool((near & moved).any())
    return border, occluder


def assess(result: TrackResult, width: int, height: int, config: RoutingConfig | None = None) -> Difficulty:
    """Difficulty figures of a tracker result (over all its points, before selection)."""
    cfg = config or RoutingConfig()
    tracks, vis = result.tracks.astype(np.float64), result.visible.astype(bool)
    both = vis[1:] & vis[:-1]
    step = np.linalg.norm(np.diff(tracks, axis=0), axis=-1)
    max_speed = float(step[both].max()) if both.any() else 0.0
    three = both[1:] & both[:-1]
    accel = np.linalg.norm(np.diff(tracks, n=2, axis=0), axis=-1)
    jitter = float(np.median(accel[three])) if three.any() else 0.0
    conf = float(result.confidence[vis].mean()) if vis.any() else 0.0
    border, occluder = _losses(tracks, vis, width, height, cfg)
    # Appearances (disocclusion, content entering) are losses of the clip played backwards.
    b_back, o_back = _losses(tracks[::-1], vis[::-1], width, height, cfg)
    return Difficulty(
        points=int(vis.shape[1]),
        occlusion_fraction=float(1.0 - vis.mean()) if vis.size else 1.0,
        max_speed_px=max_speed,
        mean_confidence=conf,
        jitter_px=jitter,
        visible_fraction=float(vis.mean()) if vis.size else 0.0,
        border_losses=border + b_back,
        occluder_losses=occluder + o_back,
    )


def route(difficulty: Difficulty, selected: int, config: RoutingConfig) -> tuple[str, str]:
    """(state, reason) for a tracked clip with ``selected`` usable control trajectories."""
    if difficulty.visible_fraction < config.failed_visible_fraction:
        return "rejected", "tracking-failed"
    hard = []
    if difficulty.occluder_losses > 0:
        hard.append("occlusion")
    if difficulty.border_losses > 0:
        hard.append("leaves-frame")
    if difficulty.max_speed_px > config.hard_speed_px:
        hard.append("fast-motion")
    if difficulty.points < config.min_trackable_points:
        hard.append("few-trackable-points")
    if difficulty.mean_confidence < config.hard_min_confidence:
        hard.append("low-confidence")
    if difficulty.jitter_px > config.hard_jitter_px:
        hard.append("jitter")
    if hard:  # a person fixes the tracks, even where none passed selection
        return "awaiting_annotation", hard[0]
    if selected == 0:
        return "rejected", "static"
    return "awaiting_verification", "auto-tracked"
