"""Point-tracker accuracy and speed on procedural clips, against their exact ground truth (TAP-Vid metrics).

Queries are the ground-truth points at frame 0; a point hidden at frame 0 is queried at its first
visible frame instead (TAP-Vid's "query first" protocol) and a point never visible is skipped. Frames at
and before each query frame are not scored. Metrics are averaged per clip, overall and by the clip's
labels (occluded: a tracked point is hidden somewhere; fast: a point moves > 8 px in a frame; easy:
neither). Speed is frames tracked per second on one core (clip generation not counted).

    python benchmarks/bench_tracker.py [--tracker opencv] [--clips 24] [--seed 0] [--frames 33]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource  # noqa: E402
from ardrag.data.trackers import get_tracker  # noqa: E402
from ardrag.data.trackers.metrics import tapvid_metrics  # noqa: E402

COLUMNS = ("position_accuracy", "occlusion_accuracy", "average_jaccard", "pts_within_1", "pts_within_4")
HEADERS = ("<d_avg", "OA", "AJ", "<1px", "<4px")


def gt_queries(visible: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, x, y) at each point's first visible frame (frame 0 when visible there); which points count."""
    seen = visible.any(axis=0)
    first = np.argmax(visible, axis=0)[seen]
    xy = tracks[first, np.flatnonzero(seen)]
    return np.concatenate([first[:, None], xy], axis=1).astype(np.float32), seen


def row(name: str, items: list[dict]) -> str:
    if not items:
        return f"| {name} | 0 | " + " | ".join("-" for _ in COLUMNS) + " |"
    vals = [np.nanmean([m[k] for m in items]) for k in COLUMNS]
    return f"| {name} | {len(items)} | " + " | ".join(f"{v:.3f}" for v in vals) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracker", default="opencv")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=33)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    cv2.setNumThreads(1)

    source = ProceduralSource(ProceduralConfig(num_clips=args.clips, seed=args.seed, num_frames=args.frames))
    tracker = get_tracker(args.tracker)
    tracker.setup()
    groups: dict[str, list[dict]] = {"all": [], "occluded": [], "fast": [], "easy": []}
    seconds, frames, points, skipped, later = 0.0, 0, 0, 0, 0  # clip generation is not timed
    for i in range(args.clips):
        sample = source.make_clip(i)
        queries, seen = gt_queries(sample.visible, sample.tracks)
        skipped += int((~seen).sum())
        later += int((queries[:, 0] > 0).sum())
        points += len(queries)
        if i == 0:
            tracker.track(sample.video, queries)  # warm-up
        start = time.perf_counter()
        result = tracker.track(sample.video, queries)
        seconds += time.perf_counter() - start
        frames += sample.num_frames
        m = tapvid_metrics(
            result.tracks,
            result.visible,
            sample.tracks[:, seen],
            sample.visible[:, seen],
            query_frames=queries[:, 0],
            query_mode="first",
        )
        labels = sample.provenance.source.params["labels"]
        groups["all"].append(m)
        if labels["occluded"]:
            groups["occluded"].append(m)
        if labels["fast"]:
            groups["fast"].append(m)
        if not labels["occluded"] and not labels["fast"]:
            groups["easy"].append(m)

    print(
        f"tracker {tracker.name} ({tracker.version}), {args.clips} procedural clips of {args.frames} frames "
        f"(seed {args.seed}, all buckets), {points} points ({later} queried after frame 0, {skipped} never "
        "visible and skipped), one core"
    )
    print("| clips | n | " + " | ".join(HEADERS) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in HEADERS) + " |")
    for name, items in groups.items():
        print(row(name, items))
    print(
        f"speed over these clips: {frames / seconds:.0f} frames/s "
        f"({1000 * seconds / args.clips:.1f} ms per clip)"
    )
    ms = clip_time(tracker, args.frames)
    print(f"speed at 640x368, 8 points, {args.frames} frames: {1000 * ms:.1f} ms per clip (median of 7)")


def clip_time(tracker, frames: int) -> float:
    """Median seconds to track 8 ground-truth points through one 640x368 clip."""
    cfg = ProceduralConfig(
        num_clips=1, num_frames=frames, buckets=["640x368"], min_sprites=4, max_sprites=4,
        min_points_per_sprite=2, max_points_per_sprite=2,
    )  # fmt: skip
    sample = ProceduralSource(cfg).make_clip(0)
    queries = np.concatenate([np.zeros((sample.num_points, 1)), sample.tracks[0]], axis=1).astype(np.float32)
    tracker.track(sample.video, queries)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        tracker.track(sample.video, queries)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()
