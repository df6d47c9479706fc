"""Trajectories <-> Label Studio results.

Open-source Label Studio has no keypoints on video, so a control point travels as a small
``VideoRectangle`` track (label ``p<i>`` for point ``i``) whose centre is the point; occluded spans are
``TimelineLabels`` with the same labels; verdicts and the prompt are ``Choices`` and ``TextArea``.

Geometry: Label Studio places boxes in percent of the frame, 0 at the left edge of the first pixel;
ardrag puts pixel centres at integers, so ``percent = (x + 0.5) / width * 100``. Frames are 1-based in
Label Studio (frame 1 is ardrag's frame 0).

Timing follows the editor (``web/libs/editor`` in Label Studio 1.23): between two keyframes the box
moves linearly; before the first keyframe the box does not exist; a keyframe is always shown on its own
frame, and one with ``enabled: false`` ends its segment (the box is hidden from the next frame until the
next keyframe); after the last keyframe the box stays if that keyframe is enabled. So a visibility run
starts with a keyframe and ends with a disabled one. Hidden frames still get finite positions (ardrag's
convention): the same linear interpolation, which Label Studio computes but does not draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ardrag.errors import ArdragError

MAX_POINTS = 8
POINT_LABELS = tuple(f"p{i}" for i in range(MAX_POINTS))
VIDEO = "video"  # the <Video> tag of both interfaces
POINT_TAG = "point"  # <Labels> naming which point a box is
BOX_TAG = "box"  # <VideoRectangle>
OCCLUDED_TAG = "occluded"  # <TimelineLabels>, labels "p<i> occluded" (unlike the boxes' labels)
OCCLUDED_LABELS = tuple(f"{p} occluded" for p in POINT_LABELS)
VERDICT_TAG, REASON_TAG, PROMPT_TAG = "verdict", "reason", "prompt"


class AnnotationInvalid(ArdragError):
    """A person's result does not make a valid sample; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


# -- ardrag -> Label Studio ---------------------------------------------------------------------
def keyframe_indices(track: np.ndarray, visible: np.ndarray, tolerance_px: float) -> list[int]:
    """Frames to key so that linear interpolation reproduces ``track`` (T, 2) on its visible frames
    within ``tolerance_px``: the first and last frame of every visible run, and more where the path bends
    (Douglas-Peucker over time). Hidden frames get no keyframe (the editor would draw it)."""
    keys: set[int] = set()
    for start, end in visible_runs(visible):
        keys.update((start, end))
        stack = [(start, end)]
        while stack:
            a, b = stack.pop()
            if b - a < 2:
                continue
            w = (np.arange(a, b + 1) - a) / (b - a)
            line = track[a] + w[:, None] * (track[b] - track[a])
            err = np.linalg.norm(track[a : b + 1] - line, axis=1)
            worst = int(np.argmax(err))
            if err[worst] > tolerance_px:
                keys.add(a + worst)
                stack += [(a, a + worst), (a + worst, b)]
    return sorted(keys)


def visible_runs(visible: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of every run of visible frames."""
    padded = np.concatenate([[False], np.asarray(visible, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def box_percent(x: float, y: float, width: int, height: int, box_px: float) -> dict[str, float]:
    """The box (percent) whose centre is the pixel point (x, y)."""
    return {
        "x": (x + 0.5 - box_px / 2) / width * 100,
        "y": (y + 0.5 - box_px / 2) / height * 100,
        "width": box_px / width * 100,
        "height": box_px / height * 100,
    }


def track_region(
    index: int,
    track: np.ndarray,
    visible: np.ndarray,
    width: int,
    height: int,
    fps: float,
    box_px: float,
    tolerance_px: float,
) -> dict[str, Any]:
    """One point's track as a Label Studio video region (as the editor itself writes it)."""
    frames = len(track)
    run_ends = {end for _, end in visible_runs(visible)}
    sequence = []
    for k in keyframe_indices(track, visible, tolerance_px):
        # a run's last frame ends its segment (hidden after it), unless the clip ends there
        enabled = not (k in run_ends and k < frames - 1)
        kf = {
            "frame": k + 1,
            "time": (k + 1) / fps,
            "enabled": enabled,
            "rotation": 0,
        }  # time as the editor writes it
        kf.update(box_percent(float(track[k, 0]), float(track[k, 1]), width, height, box_px))
        sequence.append(kf)
    return {
        "id": f"p{index}",
        "type": "videorectangle",
        "from_name": BOX_TAG,
        "to_name": VIDEO,
        "origin": "prediction",
        "value": {
            "framesCount": frames,
            "duration": frames / fps,
            "sequence": sequence,
            "labels": [POINT_LABELS[index]],
        },
    }


def annotate_prediction(
    tracks: np.ndarray,
    visible: np.ndarray,
    width: int,
    height: int,
    fps: float,
    box_px: float,
    tolerance_px: float,
) -> list[dict[str, Any]]:
    """The pre-annotation of an ``annotate`` task: one track per control point."""
    if tracks.shape[1] > MAX_POINTS:
        raise ValueError(
            f"{tracks.shape[1]} control points; the annotate interface holds at most {MAX_POINTS}"
        )
    return [
        track_region(i, tracks[:, i], visible[:, i], width, height, fps, box_px, tolerance_px)
        for i in range(tracks.shape[1])
    ]


# -- Label Studio -> ardrag ---------------------------------------------------------------------
def box_centre(kf: dict[str, Any], width: int, height: int) -> tuple[float, float]:
    """Pixel centre of a keyframe's box (rotation, in degrees, turns the box about its top-left)."""
    x, y = kf["x"] / 100 * width, kf["y"] / 100 * height
    w, h = kf.get("width", 0) / 100 * width, kf.get("height", 0) / 100 * height
    a = math.radians(kf.get("rotation", 0) or 0)
    cx = x + (w / 2) * math.cos(a) - (h / 2) * math.sin(a)
    cy = y + (w / 2) * math.sin(a) + (h / 2) * math.cos(a)
    return cx - 0.5, cy - 0.5


def sequence_to_track(
    sequence: list[dict[str, Any]], num_frames: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame points (T, 2) and visibility (T,) of a keyframe sequence, as the editor shows it."""
    keys = sorted(sequence, key=lambda kf: kf["frame"])
    frames = np.array([kf["frame"] - 1 for kf in keys], np.float64)
    centres = np.array([box_centre(kf, width, height) for kf in keys], np.float64)
    t = np.arange(num_frames, dtype=np.float64)
    xy = np.stack([np.interp(t, frames, centres[:, 0]), np.interp(t, frames, centres[:, 1])], 1)
    enabled = np.array([bool(kf.get("enabled", True)) for kf in keys])
    last = np.searchsorted(frames, t, side="right") - 1  # the keyframe at or before each frame
    at = np.clip(last, 0, None)
    visible = (last >= 0) & (enabled[at] | (frames[at] == t))  # a keyframe shows on its own frame
    return xy.astype(np.float32), visible


@dataclass
class Decision:
    """What a person decided about one sample."""

    verdict: str  # "accept" | "reject"
    reason: str | None = None
    prompt: str | None = None  # a corrected prompt, when given
    tracks: np.ndarray | None = None  # (T, N, 2) corrected tracks (annotate tasks)
    visible: np.ndarray | None = None  # (T, N)
    problems: list[str] = field(default_factory=list)


def _choice(result: list[dict[str, Any]], tag: str) -> str | None:
    for r in result:
        if r.get("from_name") == tag and r.get("type") == "choices":
            choices = r.get("value", {}).get("choices") or []
            return choices[0] if choices else None
    return None


def _text(result: list[dict[str, Any]], tag: str) -> str | None:
    for r in result:
        if r.get("from_name") == tag and r.get("type") == "textarea":
            text = " ".join(t.strip() for t in r.get("value", {}).get("text", []) if t.strip())
            return text or None
    return None


def read_verdict(result: list[dict[str, Any]], required: bool) -> Decision:
    verdict = _choice(result, VERDICT_TAG)
    decision = Decision(
        verdict=verdict or "accept", reason=_choice(result, REASON_TAG), prompt=_text(result, PROMPT_TAG)
    )
    if verdict is None and required:
        decision.problems.append("no verdict: choose accept or reject")
    elif verdict not in (None, "accept", "reject"):
        decision.problems.append(f"verdict {verdict!r}; expected 'accept' or 'reject'")
    if decision.verdict == "reject" and decision.reason is None:
        decision.reason = "unspecified"
    return decision


def read_verify(result: list[dict[str, Any]]) -> Decision:
    """A ``verify`` result: verdict (required), reason, optional prompt correction."""
    decision = read_verdict(result, required=True)
    if decision.problems:
        raise AnnotationInvalid(decision.problems)
    return decision


def read_annotate(
    result: list[dict[str, Any]], num_points: int, num_frames: int, width: int, height: int
) -> Decision:
    """An ``annotate`` result: one track per control point, occluded spans, verdict (accept unless
    rejected), prompt. Raises :class:`AnnotationInvalid` listing every problem."""
    decision = read_verdict(result, required=False)
    problems = decision.problems
    tracks = np.zeros((num_frames, num_points, 2), np.float32)
    visible = np.zeros((num_frames, num_points), bool)
    seen: dict[int, int] = {}
    occluded: list[tuple[int, int, int]] = []
    for r in result:
        value = r.get("value", {})
        if "sequence" in value:
            labels = value.get("labels") or value.get("videorectangle", {}).get("labels") or []
            index = _point_index(labels, num_points)
            if index is None:
                problems.append(
                    f"a track labelled {labels} is no control point; "
                    f"expected one of {list(POINT_LABELS[:num_points])}"
                )
                continue
            seen[index] = seen.get(index, 0) + 1
            problems += _check_sequence(value["sequence"], index, num_frames, width, height)
            if value["sequence"] and not problems:
                tracks[:, index], visible[:, index] = sequence_to_track(
                    value["sequence"], num_frames, width, height
                )
        elif r.get("type") == "timelinelabels":
            labels = value.get("timelinelabels") or []
            index = _point_index(labels, num_points, OCCLUDED_LABELS)
            if index is None:
                problems.append(f"an occluded span labelled {labels} is no control point")
                continue
            for span in value.get("ranges", []):
                start, end = int(span.get("start", 0)), int(span.get("end", 0))
                if not (1 <= start <= end <= num_frames):
                    problems.append(
                        f"p{index}: occluded span {start}-{end} is outside the clip's frames 1-{num_frames}"
                    )
                    continue
                occluded.append((index, start - 1, end))
    for i in range(num_points):
        if seen.get(i, 0) == 0:
            problems.append(f"p{i}: no track (expected one per control point, {num_points} in all)")
        elif seen[i] > 1:
            problems.append(f"p{i}: {seen[i]} tracks (expected one)")
    if problems:
        raise AnnotationInvalid(problems)
    for index, start, end in occluded:
        visible[start:end, index] = False
    decision.tracks, decision.visible = tracks, visible
    return decision


def _point_index(labels: list[str], num_points: int, names: tuple[str, ...] = POINT_LABELS) -> int | None:
    if len(labels) != 1 or labels[0] not in names[:num_points]:
        return None
    return names.index(labels[0])


def _check_sequence(
    sequence: list[dict[str, Any]], index: int, num_frames: int, width: int, height: int
) -> list[str]:
    problems = []
    if not sequence:
        return [f"p{index}: the track has no keyframe"]
    for kf in sequence:
        frame = kf.get("frame")
        if not isinstance(frame, int | float) or frame != int(frame) or not 1 <= frame <= num_frames:
            problems.append(
                f"p{index}: keyframe at frame {frame!r} is outside the clip's frames 1-{num_frames}"
            )
            continue
        if any(not isinstance(kf.get(k), int | float) for k in ("x", "y")):
            problems.append(f"p{index}: keyframe at frame {frame} has no numeric x, y")
            continue
        if kf.get("enabled", True):
            cx, cy = box_centre(kf, width, height)
            if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
                problems.append(
                    f"p{index}: point ({cx:.1f}, {cy:.1f}) px at frame {int(frame)} is outside the "
                    f"{width}x{height} frame"
                )
    return problems
