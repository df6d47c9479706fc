"""The drags of one studio session: points that run along mouse paths, pinned points, intensities.

Each point holds a list of *plans*, each anchored at the pixel frame it takes effect from (the stream's
``next_frame`` when the page sent it). A plan is where the point is from its anchor on: a path resampled
to one position per frame (a pin is a path of one position), its intensity, and whether it is shown. The
controls of frames ``[start, end)`` read each point's latest plan anchored at or before each frame; a
change therefore alters the frames that follow it and never those already generated.

Positions are model pixels (pixel centres at integers), clamped into the image and rounded to 1/16 px, so
that a trajectory written from them and read back by ``ardrag generate`` (float32, an identity fit at the
model's size) gives the same heatmaps bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ardrag.errors import ConfigError
from ardrag.inference.trajectory import MAX_POINTS

MAX_DRAG_FRAMES = 128
MAX_PATH = 2048  # mouse positions in one drag
MAX_CHANGES = 10_000  # drags, intensities and removals in one stream (a regenerate replays them all)
QUANTUM = 1 / 16
COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


@dataclass(frozen=True)
class Plan:
    """From pixel frame ``anchor`` on: position ``path[min(f - anchor, len - 1)]``."""

    anchor: int
    path: np.ndarray  # float32 (K, 2)
    intensity: float
    shown: bool = True

    def at(self, frame: int) -> np.ndarray:
        return self.path[min(frame - self.anchor, len(self.path) - 1)]


@dataclass
class Point:
    id: int
    color: str
    plans: list[Plan] = field(default_factory=list)

    def plan(self, frame: int) -> Plan | None:
        """The plan in force at ``frame`` (None: the point did not exist yet)."""
        found = None
        for plan in self.plans:
            if plan.anchor <= frame:
                found = plan
        return found

    def add(self, plan: Plan) -> None:
        """Replace whatever was planned from ``plan.anchor`` on."""
        self.plans = [p for p in self.plans if p.anchor < plan.anchor] + [plan]


def resample(path: np.ndarray, frames: int) -> np.ndarray:
    """``frames + 1`` positions evenly spaced along the polyline ``path`` (its start first, its end last);
    a path without length is one position (a pin)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1) if len(path) > 1 else np.zeros(0)
    total = float(seg.sum())
    if total == 0.0:
        return path[:1].copy()
    along = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.linspace(0.0, total, frames + 1)
    return np.stack([np.interp(at, along, path[:, 0]), np.interp(at, along, path[:, 1])], axis=1)


class Drags:
    """The points of a ``width`` x ``height`` session and their plans."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.points: list[Point] = []  # in creation order: the trajectory's point order
        self._next_id = 1
        self._log: list[tuple[str, tuple[Any, ...], int]] = []  # every change made: (method, args, anchor)

    def _snap(self, xy: np.ndarray) -> np.ndarray:
        xy = np.stack([np.clip(xy[:, 0], 0, self.width - 1), np.clip(xy[:, 1], 0, self.height - 1)], 1)
        return (np.round(xy / QUANTUM) * QUANTUM).astype(np.float32)

    def _point(self, point_id: Any) -> Point:
        for p in self.points:
            if p.id == point_id and not isinstance(point_id, bool):
                return p
        known = [p.id for p in self.points]
        raise ConfigError(f"point id {point_id!r} is not a point of this session; expected one of {known}")

    def live(self, frame: int) -> list[Point]:
        """The points shown at ``frame``, or planned to appear from it."""
        out = []
        for p in self.points:
            plan = p.plan(frame) or (p.plans[0] if p.plans else None)
            if plan is not None and plan.shown:
                out.append(p)
        return out

    def drag(self, point_id: int | None, path: Any, frames: Any, anchor: int) -> Point:
        """A new point (``point_id`` None) or a new drag of one, along ``path`` ([[x, y], ...] model
        pixels) over ``frames`` pixel frames from ``anchor`` on; one position pins the point."""
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_DRAG_FRAMES:
            raise ConfigError(f"drag frames {frames!r}: expected a whole number from 1 to {MAX_DRAG_FRAMES}")
        self._room()
        try:
            xy = np.asarray(path, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            xy = np.zeros((0, 0))
        if xy.ndim != 2 or xy.shape[1:] != (2,) or not 1 <= len(xy) <= MAX_PATH or not np.isfinite(xy).all():
            raise ConfigError(
                f"drag path {str(path)[:80]!r}: expected a list of 1 to {MAX_PATH} [x, y] pairs of "
                "finite numbers"
            )
        positions = self._snap(resample(self._snap(xy).astype(np.float64), frames))
        if point_id is None:
            # a new point takes the slot (trajectory column) of a removed one, if any: at most 8 columns
            free = [p for p in self.points if not (p.plan(anchor) or p.plans[0]).shown]
            if not free and len(self.points) >= MAX_POINTS:
                raise ConfigError(f"a session has at most {MAX_POINTS} points; remove one to add another")
            point = free[0] if free else Point(0, "")
            point.id, point.color = self._next_id, COLORS[(self._next_id - 1) % len(COLORS)]
            self._next_id += 1
            if not free:
                self.points.append(point)
            intensity = 1.0
        else:
            point = self._point(point_id)
            current = point.plan(anchor)
            if current is not None and not current.shown:
                raise ConfigError(f"point {point_id} was removed; draw a new point instead")
            intensity = current.intensity if current is not None else point.plans[0].intensity
        point.add(Plan(anchor, positions, intensity))
        self._log.append(("drag", (point_id, path, frames), anchor))
        return point

    def _room(self) -> None:
        if len(self._log) >= MAX_CHANGES:
            raise ConfigError(f"this stream has had {MAX_CHANGES} changes, the most it keeps: reset it")

    def set_intensity(self, point_id: Any, value: Any, anchor: int) -> None:
        self._room()
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0.0 <= value <= 1.0:  # compared as given: a huge int cannot overflow float()
            shown = str(value)[:40]
            raise ConfigError(f"intensity {shown} of point {point_id}: expected a number from 0 to 1")
        self._replan(point_id, anchor, intensity=float(value))
        self._log.append(("set_intensity", (point_id, value), anchor))

    def remove(self, point_id: Any, anchor: int) -> None:
        self._room()
        self._replan(point_id, anchor, shown=False)
        self._log.append(("remove", (point_id,), anchor))

    def _replan(self, point_id: Any, anchor: int, **change: Any) -> None:
        point = self._point(point_id)
        current = point.plan(anchor)
        if current is None:  # planned to appear later (at anchor exactly): change that plan
            current = point.plans[0]
        if not current.shown:
            raise ConfigError(f"point {point_id} was removed")
        # the rest of the current path from the anchor on, so the point keeps moving where it was going
        rest = current.path[min(max(anchor - current.anchor, 0), len(current.path) - 1) :]
        point.add(dataclasses.replace(current, anchor=anchor, path=rest, **change))

    def move_anchors(self, old: int, new: int) -> None:
        """Changes made for frame ``old`` apply from ``new`` instead (a regenerate redoes the frames from
        ``new``: what the page changed since that step applies to them). The points are rebuilt from the
        log of changes with those anchors moved, so a change keeps its meaning (an intensity change
        continues the path from where the point is at ``new``)."""
        log = [(op, args, new if anchor == old else anchor) for op, args, anchor in self._log]
        self.points, self._next_id, self._log = [], 1, []
        for op, args, anchor in log:
            getattr(self, op)(*args, anchor=anchor)

    def controls(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tracks (n, N, 2), visible (n, N), intensity (n, N)) of frames [start, end) for the N points
        created so far (a point not yet there, or removed, is hidden); one hidden point when none exist."""
        n = end - start
        if not self.points:
            return np.zeros((n, 1, 2), np.float32), np.zeros((n, 1), bool), np.ones((n, 1), np.float32)
        tracks = np.zeros((n, len(self.points), 2), np.float32)
        visible = np.zeros((n, len(self.points)), bool)
        intensity = np.ones((n, len(self.points)), np.float32)
        for j, point in enumerate(self.points):
            for i, f in enumerate(range(start, end)):
                plan = point.plan(f)
                if plan is None:
                    tracks[i, j] = point.plans[0].path[0]
                    continue
                tracks[i, j] = plan.at(f)
                visible[i, j] = plan.shown
                intensity[i, j] = plan.intensity
        return tracks, visible, intensity

    def describe(self, frame: int, limit: int = 256) -> list[dict[str, Any]]:
        """The live points as the page draws them: where each is at ``frame`` and where it goes next."""
        out = []
        for p in self.live(frame):
            plan = p.plan(frame) or p.plans[0]
            start = max(frame - plan.anchor, 0)
            path = plan.path[min(start, len(plan.path) - 1) :][:limit]
            out.append({
                "id": p.id, "color": p.color, "x": float(path[0, 0]), "y": float(path[0, 1]),
                "pinned": bool(len(plan.path) == 1), "path": path.tolist(), "intensity": plan.intensity,
            })  # fmt: skip
        return out
