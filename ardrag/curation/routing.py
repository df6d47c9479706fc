"""Difficulty of a tracked clip and the state it is routed to.

States (every clip ends in exactly one):

- ``awaiting_verification``: tracked automatically; a person still accepts or rejects it, as in the
  paper (or ``auto_accept`` accepts it, labelled so in provenance). A clip without a prompt waits here
  with the reason ``no-prompt`` (the person writes one) and is never accepted by rule;
- ``awaiting_annotation``: hard (occlusion, leaving the frame, fast motion, no usable track, low
  tracker confidence, jitter): a person annotates the trajectories;
- ``accepted``: ready for training (sharded);
- ``rejected``: static, or tracking failed; the reason says which.

Inputs that give no clip at all are ``quarantined`` with the source's reason.

**What is judged.** The paper sends every automatically tracked clip to a quick verification and keeps
full annotation for the hard cases, about 30 %. A person verifies the *control trajectories*, the up to 8
tracks that become the sample, so difficulty is measured on those (``controls``): a clip where some
other point was lost behind a passer-by, but whose controls are followed cleanly, is a quick check, not
a full annotation. Occluders are still looked for among all tracks. Every rule's measured value and
threshold is kept (:class:`Decision`), so a routed clip says what sent it where.

**Calibration** (``benchmarks/bench_routing_real.py``, README "Routing calibration"): on real footage
(the registry videos of ``scripts/real-footage.sh``) and on procedural clips whose hard-case labels are
known. The thresholds are pixels at the bucket resolution (368-640 px) and frames at 16 fps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.data.trackers.base import TrackResult

STATES = ("accepted", "awaiting_verification", "awaiting_annotation", "rejected", "quarantined")


class RoutingConfig(Config):
    """Thresholds of the difficulty rules (pixels are at the clip's bucket resolution, 16 fps)."""

    hard_speed_px: float = Field(20.0, gt=0, description="largest per-frame displacement of a control")
    border_margin_px: float = Field(16.0, ge=0, description="a loss this close to the border: leaving")
    occluder_radius_px: float = Field(16.0, gt=0, description="a loss this close to a moving track")
    occluder_motion_px: float = Field(6.0, ge=0, description="relative motion that makes an occluder")
    min_loss_frames: int = Field(2, ge=1, description="frames a control must stay lost for a loss to count")
    hard_min_confidence: float = Field(0.5, ge=0, le=1, description="mean tracker confidence, visible")
    hard_jitter_px: float = Field(2.0, gt=0, description="median |second difference| of the controls")
    failed_visible_fraction: float = Field(0.1, ge=0, le=1, description="below: tracking failed")


@dataclass
class Difficulty:
    """Figures of a clip's control trajectories (and, for context, of all its tracks)."""

    points: int  # tracked points (all)
    controls: int  # control trajectories judged
    occlusion_fraction: float  # share of control point-frames not visible
    max_speed_px: float  # largest displacement of a control (or a fast track left out) between frames
    mean_confidence: float  # over visible control point-frames
    jitter_px: float  # median norm of second differences over runs of visible control frames
    visible_fraction: float  # of the controls' point-frames
    border_losses: int  # controls that leave the frame and come back in
    occluder_losses: int  # controls lost next to a differently moving track that come back

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


@dataclass
class Check:
    """One rule: its measured value, the threshold, and whether it fired."""

    rule: str
    value: float
    threshold: float
    fired: bool
    compare: str  # how the value fires: ">" (above the threshold) or "<"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "value": round(float(self.value), 4),
            "threshold": self.threshold,
            "fires_when": f"value {self.compare} threshold",
            "fired": self.fired,
        }


@dataclass
class Decision:
    state: str
    reason: str
    checks: list[Check] = field(default_factory=list)

    @property
    def deciding(self) -> Check | None:
        """The check that decided the state (the first that fired), if a check did."""
        return next((c for c in self.checks if c.fired and c.rule == self.reason), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "reason": self.reason}
        if (d := self.deciding) is not None:
            out["value"], out["threshold"] = round(float(d.value), 4), d.threshold
        out["checks"] = [c.to_dict() for c in self.checks]
        return out


def _gaps(
    tracks: np.ndarray, vis: np.ndarray, controls: np.ndarray, width: int, height: int, cfg: RoutingConfig
) -> tuple[int, int]:
    """Controls that disappear for at least ``min_loss_frames`` frames and come back, counted once each:
    at the border (it left the frame and came back in) or next to an occluder (another track visible at
    the moment it was lost or found again, within ``occluder_radius_px`` over the next 3 frames, moving
    differently). A control that is lost and stays lost, or appears late and stays, is no such case: it
    has one visible stretch, which a person checks at a glance; coming back is where a tracker can
    latch onto the wrong thing."""
    t_len = vis.shape[0]
    border = occluder = 0
    for i in controls:
        runs = np.flatnonzero(np.diff(np.concatenate([[0], vis[:, i].astype(np.int8), [0]])))
        starts, ends = runs[::2], runs[1::2]  # visible stretches [start, end)
        found = None
        for a_end, b_start in zip(ends[:-1], starts[1:], strict=True):
            if b_start - a_end >= cfg.min_loss_frames:
                found = (a_end - 1, b_start)  # last visible before, first visible after
                break
        if found is None:
            continue
        kinds = set()
        for t, step in ((found[0], 1), (found[1], -1)):
            x, y = tracks[t, i]
            if min(x, width - 1 - x, y, height - 1 - y) < cfg.border_margin_px:
                kinds.add("border")
                continue
            lo, hi = sorted((t, int(np.clip(t + 2 * step, 0, t_len - 1))))
            near_t = np.arange(lo, hi + 1)
            if step > 0:  # i's motion just before the loss; just after it is found for the other end
                a, b = max(0, t - 2), t
            else:
                a, b = t, min(t_len - 1, t + 2)
            own = (tracks[b, i] - tracks[a, i]) * (hi - lo) / max(1, b - a)
            others = np.flatnonzero(vis[t])
            others = others[others != i]
            near = (
                np.linalg.norm(tracks[near_t][:, others] - tracks[t, i], axis=-1).min(0)
                < cfg.occluder_radius_px
            )
            moved = (
                np.linalg.norm((tracks[hi, others] - tracks[lo, others]) - own, axis=-1)
                > cfg.occluder_motion_px
            )
            if (near & moved).any():
                kinds.add("occluder")
        border += "border" in kinds
        occluder += "occluder" in kinds and "border" not in kinds
    return border, occluder


def assess(
    result: TrackResult,
    width: int,
    height: int,
    config: RoutingConfig | None = None,
    controls: list[int] | np.ndarray | None = None,
    jitter_tracks: np.ndarray | None = None,
    frames: np.ndarray | None = None,
    fast: list[int] | None = None,
) -> Difficulty:
    """Difficulty figures of the ``controls`` (column indices; all tracks when None) of a tracker result.

    ``jitter_tracks`` (T, N, 2), when given, is what jitter is measured on (tracks relative to the camera,
    so a shaking camera is not read as a shaking tracker). ``frames``, when given, are the frames that show
    a new source frame (frame-rate upsampling repeats the others): speed and jitter are measured between
    those, per output frame, so the stutter of repeats (still, then a double step) is not read as jitter
    or fast motion. ``fast``: further tracks whose speed counts too (tracks the selection left out as
    erratic that moved farther than every control: a burst of fast motion looks erratic)."""
    cfg = config or RoutingConfig()
    tracks, vis = result.tracks.astype(np.float64), result.visible.astype(bool)
    n = vis.shape[1]
    ctl = np.arange(n) if controls is None else np.asarray(controls, np.int64)
    keep = np.arange(vis.shape[0]) if frames is None else np.asarray(frames, np.int64)
    tc, vc = tracks[keep][:, ctl], vis[keep][:, ctl]
    # new frames are consecutive source frames, evenly spaced in the source's time: measure per source
    # frame and express it per output frame (the mean spacing), not per the uneven output gaps
    dt = np.full(
        (max(len(keep) - 1, 0), 1), (keep[-1] - keep[0]) / max(len(keep) - 1, 1) if len(keep) else 1.0
    )
    both = vc[1:] & vc[:-1]
    velocity = np.diff(tc, axis=0) / dt[..., None]
    speed = np.linalg.norm(velocity, axis=-1)
    max_speed = float(speed[both].max()) if both.any() else 0.0
    if fast:
        tf, vf = tracks[keep][:, fast], vis[keep][:, fast]
        bf = vf[1:] & vf[:-1]
        sf = np.linalg.norm(np.diff(tf, axis=0) / dt[..., None], axis=-1)
        max_speed = max(max_speed, float(sf[bf].max()) if bf.any() else 0.0)
    three = both[1:] & both[:-1]
    jt = (tracks if jitter_tracks is None else np.asarray(jitter_tracks, np.float64))[keep][:, ctl]
    accel = np.linalg.norm(np.diff(np.diff(jt, axis=0) / dt[..., None], axis=0), axis=-1)
    jitter = float(np.median(accel[three])) if three.any() else 0.0
    vis_c = vis[:, ctl]
    conf = float(result.confidence[:, ctl][vis_c].mean()) if vis_c.any() else 0.0
    border, occluder = _gaps(tracks, vis, ctl, width, height, cfg)
    return Difficulty(
        points=int(n),
        controls=int(len(ctl)),
        occlusion_fraction=float(1.0 - vis_c.mean()) if vis_c.size else 1.0,
        max_speed_px=max_speed,
        mean_confidence=conf,
        jitter_px=jitter,
        visible_fraction=float(vis_c.mean()) if vis_c.size else 0.0,
        border_losses=border,
        occluder_losses=occluder,
    )


def decide(difficulty: Difficulty, selected: int, config: RoutingConfig, has_prompt: bool = True) -> Decision:
    """The state of a tracked clip with ``selected`` usable control trajectories, with every check."""
    d, c = difficulty, config
    failed = Check("tracking-failed", d.visible_fraction, c.failed_visible_fraction,
                   d.visible_fraction < c.failed_visible_fraction, "<")  # fmt: skip
    if failed.fired:
        return Decision("rejected", "tracking-failed", [failed])
    checks = [
        failed,
        Check("occlusion", d.occluder_losses, 0, d.occluder_losses > 0, ">"),
        Check("leaves-frame", d.border_losses, 0, d.border_losses > 0, ">"),
        Check("fast-motion", d.max_speed_px, c.hard_speed_px, d.max_speed_px > c.hard_speed_px, ">"),
        Check("few-trackable-points", selected, 1, selected < 1, "<"),
        Check(
            "low-confidence",
            d.mean_confidence,
            c.hard_min_confidence,
            selected > 0 and d.mean_confidence < c.hard_min_confidence,
            "<",
        ),  # fmt: skip
        Check("jitter", d.jitter_px, c.hard_jitter_px, d.jitter_px > c.hard_jitter_px, ">"),
    ]
    hard = [ch.rule for ch in checks if ch.fired]
    if hard:  # a person fixes the tracks, even where none passed selection
        return Decision("awaiting_annotation", hard[0], checks)
    if not has_prompt:
        return Decision("awaiting_verification", "no-prompt", checks)
    return Decision("awaiting_verification", "auto-tracked", checks)


def route(
    difficulty: Difficulty, selected: int, config: RoutingConfig, has_prompt: bool = True
) -> tuple[str, str]:
    """(state, reason) for a tracked clip (see :func:`decide` for the checks behind it)."""
    decision = decide(difficulty, selected, config, has_prompt)
    return decision.state, decision.reason
