"""Routing on real footage and on procedural clips with ground truth, side by side in one run.

1. **Real footage**: the ten registry videos of ``scripts/real-footage.sh`` (fetched and cached the way a
   user would), curated with the library calls the flow makes (``ardrag.curation.pipeline.run_local``).
   Prints the states, the share of tracked clips sent to a quick verification (the paper: every
   automatically tracked clip is verified, and about 30 % are hard cases fully annotated), the counts
   per reason and per video, and each routing figure's spread over the clips next to its threshold (the
   calibration).
2. **Procedural clips** (``--procedural N`` clips, ``--seed S``), whose ground truth gives the true path
   of any point (``point_truth``): the same figures, and how many of the controls sent to verification
   follow their true path (95th percentile of the error at most 3 px; points on an outline left out).

    python benchmarks/bench_routing_real.py [--footage DIR] [--procedural 24] [--seed 0] [--dir D]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

FIGURES = (  # difficulty field, routing rule, RoutingConfig threshold
    ("max_speed_px", "fast-motion", "hard_speed_px"),
    ("jitter_px", "jitter", "hard_jitter_px"),
    ("mean_confidence", "low-confidence", "hard_min_confidence"),
    ("occluder_losses", "occlusion", None),
    ("border_losses", "leaves-frame", None),
)


def footage(folder: str | None) -> Path:
    script = Path(__file__).resolve().parents[1] / "scripts" / "real-footage.sh"
    out = subprocess.run(["bash", str(script), *([folder] if folder else [])], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"scripts/real-footage.sh failed:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def report(name: str, out: Path, seconds: float, per_video: bool = False) -> list[dict]:
    from ardrag.curation.routing import RoutingConfig
    from ardrag.curation.store import CurationStore

    records = CurationStore(out).records()
    clips = [dict(c, video=Path(r["description"]).name) for r in records for c in r["clips"]]
    tracked = [c for c in clips if c["state"] != "rejected"]
    verify = sum(c["state"] == "awaiting_verification" for c in tracked)
    quarantined = [r for r in records if r["state"] == "quarantined"]
    print(f"\n## {name}: {len(records)} inputs, {len(clips)} clips, {seconds:.0f} s")
    print(f"states: {dict(sorted(Counter(c['state'] for c in clips).items()))}")
    if quarantined:
        print(f"quarantined inputs: {dict(Counter(r['reason'] for r in quarantined))}")
    share = verify / len(tracked) if tracked else float("nan")
    print(f"tracked clips to verification: {verify} / {len(tracked)} = {share:.2f}  (paper: ~0.70)")
    print(f"reasons: {dict(sorted(Counter(c['reason'] for c in clips).items()))}")
    if per_video:
        by_video: dict[str, Counter] = {}
        for c in clips:
            by_video.setdefault(c["video"], Counter())[c["reason"]] += 1
        print("| video | clips | reasons |\n| --- | ---: | --- |")
        for video, reasons in sorted(by_video.items()):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            print(f"| {video} | {sum(reasons.values())} | {counts} |")
    defaults = RoutingConfig()
    print("| figure | rule | threshold | p10 | median | p90 | max | clips over |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for field, rule, threshold in FIGURES:
        values = np.array([c["difficulty"][field] for c in tracked if c.get("difficulty")], np.float64)
        if not len(values):
            continue
        limit = getattr(defaults, threshold) if threshold else 0
        fired = sum(
            any(ch["rule"] == rule and ch["fired"] for ch in c["decision"]["checks"]) for c in tracked
        )
        q = np.quantile(values, [0.1, 0.5, 0.9])
        spread = f"{q[0]:.2f} | {q[1]:.2f} | {q[2]:.2f} | {values.max():.2f}"
        print(f"| {field} | {rule} | {limit:g} | {spread} | {fired} |")
    return clips


def controls_accuracy(out: Path, clips: list[dict], seed: int, num: int) -> None:
    from ardrag.data.shards import read_sample_file
    from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource, follows_truth

    source = ProceduralSource(ProceduralConfig(num_clips=num, seed=seed))
    scored = accurate = controls = 0
    for c in clips:
        if c["state"] != "awaiting_verification":
            continue
        _, members = read_sample_file(out / c["sample"])
        tracks = np.load(io.BytesIO(members["tracks.npy"]))
        visible = np.load(io.BytesIO(members["visible.npy"]))
        good, n = follows_truth(source.make_scene(int(c["key"].rsplit("-", 1)[1])), tracks, visible)
        accurate, scored, controls = accurate + good, scored + n, controls + tracks.shape[1]
    share = accurate / scored if scored else float("nan")
    print(
        f"controls of clips sent to verification that follow their true path (95th pct error <= 3 px): "
        f"{accurate} / {scored} = {share:.3f}  ({controls - scored} on an outline left out)"
    )


FAST_BURSTS = {"fast_prob": 0.8, "min_fast_speed": 24.0, "max_fast_speed": 32.0}


def fast_recall(clips: list[dict], config: dict) -> None:
    """Clips whose true fastest point moves more than the fast-motion threshold in a frame, and where
    they went."""
    from ardrag.curation.routing import RoutingConfig
    from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource

    source = ProceduralSource(ProceduralConfig(**config))
    limit = RoutingConfig().hard_speed_px
    fast = slow = fast_hard = slow_verified = 0
    for c in clips:
        speed = source.make_clip(int(c["key"].rsplit("-", 1)[1])).extra["max_speed_px"]
        if speed > limit:
            fast += 1
            fast_hard += c["state"] == "awaiting_annotation"
        else:
            slow += 1
            slow_verified += c["state"] == "awaiting_verification"
    print(
        f"true motion over {limit:g} px a frame: {fast_hard} / {fast} clips to annotation; "
        f"the others: {slow_verified} / {slow} to verification"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--footage", help="cache folder of scripts/real-footage.sh (default: its default)")
    ap.add_argument("--procedural", type=int, default=24, help="procedural clips (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", help="where the curations go (default: a temporary folder, removed)")
    args = ap.parse_args()

    from ardrag.curation.pipeline import CurationConfig, run_local
    from ardrag.data.sources import build_source

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-routing-"))
    try:
        folder = footage(args.footage)
        print(f"# Routing: real footage ({folder}) and procedural ground truth")
        print(f"sources: {(folder / 'SOURCES.txt').read_text().count(chr(10))} videos, SOURCES.txt there")
        out = root / "real"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        run_local(build_source("folder", {"folder": str(folder)}), out, CurationConfig(), progress=False)
        report("real footage", out, time.perf_counter() - t0, per_video=True)
        if args.procedural:
            out = root / "procedural"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            cfg = {"num_clips": args.procedural, "seed": args.seed}
            run_local(build_source("procedural", cfg), out, CurationConfig(), progress=False)
            clips = report(f"procedural, seed {args.seed}", out, time.perf_counter() - t0)
            controls_accuracy(out, clips, args.seed, args.procedural)
            # the same clips with a sprite that bursts at 24-32 px a frame in most of them
            out = root / "procedural-fast"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            fast = {**cfg, **FAST_BURSTS}
            run_local(build_source("procedural", fast), out, CurationConfig(), progress=False)
            clips = report(
                f"procedural, seed {args.seed}, bursts of 24-32 px a frame", out, time.perf_counter() - t0
            )
            fast_recall(clips, fast)
        if args.dir:
            print(f"\ncurations kept in {root}")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
