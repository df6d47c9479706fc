"""A scripted annotator: submits annotations through Label Studio's real API, as the editor would.

For the integration tests, the benchmark and demos: it edits pre-filled results the way a person would
(moves keyframes, marks occluded spans, gives verdicts) without a browser."""

from __future__ import annotations

import copy
from typing import Any

from annotation.convert import box_percent


def shifted(result: list[dict[str, Any]], label: str, dx_pct: float, dy_pct: float) -> list[dict[str, Any]]:
    """The prediction with every keyframe of one point's track moved by (dx, dy) percent."""
    out = copy.deepcopy(result)
    for region in out:
        if region["value"].get("labels") == [label]:
            for kf in region["value"]["sequence"]:
                kf["x"] += dx_pct
                kf["y"] += dy_pct
    for region in out:
        region["origin"] = "manual"
    return out


def occluded(label: str, start: int, end: int) -> dict[str, Any]:
    """A TimelineLabels span (frames, 1-based, inclusive) marking ``label`` occluded."""
    return {
        "id": f"occ-{label}-{start}",
        "type": "timelinelabels",
        "from_name": "occluded",
        "to_name": "video",
        "origin": "manual",
        "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [f"{label} occluded"]},
    }


def verdict(choice: str, reason: str | None = None) -> list[dict[str, Any]]:
    out = [
        {
            "id": "v",
            "type": "choices",
            "from_name": "verdict",
            "to_name": "video",
            "value": {"choices": [choice]},
        }
    ]
    if reason:
        out.append(
            {
                "id": "r",
                "type": "choices",
                "from_name": "reason",
                "to_name": "video",
                "value": {"choices": [reason]},
            }
        )
    return out


def prompt(text: str) -> dict[str, Any]:
    return {
        "id": "t",
        "type": "textarea",
        "from_name": "prompt",
        "to_name": "video",
        "value": {"text": [text]},
    }


def move_keyframe(
    result: list[dict[str, Any]], label: str, index: int, **changes: Any
) -> list[dict[str, Any]]:
    out = copy.deepcopy(result)
    for region in out:
        if region["value"].get("labels") == [label]:
            region["value"]["sequence"][index].update(changes)
    return out


def outside(width: int, height: int, box_px: float) -> dict[str, float]:
    """Box fields that put a point 20 px right of the frame."""
    return box_percent(width + 20, height / 2, width, height, box_px)


def submit(sdk: Any, task_id: int, result: list[dict[str, Any]]) -> Any:
    return sdk.annotations.create(id=task_id, result=result, was_cancelled=False, lead_time=12.5)
