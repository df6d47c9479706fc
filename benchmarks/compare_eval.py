"""Two ``ardrag eval`` runs on the same benchmark, side by side, with bootstrap intervals over the clips.

Usage: ``python benchmarks/compare_eval.py BEFORE AFTER [--resamples 5000] [--seed 0] [--json]``, where
BEFORE and AFTER are ``ardrag eval`` output folders (or their ``results.json``), e.g. a student before
and after RL. Clips are paired by id (a clip either run failed on is left out and counted). For every
per-clip figure (the tracking error ``consistency_error_px`` first): each run's mean with its 95%
interval, the mean paired difference ``after - before`` and the ratio of means, each with its interval
(``ardrag.metrics.bootstrap``), and whether the difference's interval lies wholly below or above 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ardrag.metrics.bootstrap import difference_interval, mean_interval, ratio_interval

FIGURES = ("consistency_error_px", "consistency", "smoothness", "aesthetic", "latency_s")


def read_results(path: str) -> dict[str, Any]:
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.is_file():
        raise SystemExit(f"{path}: no results.json there (expected an `ardrag eval` output folder)")
    return json.loads(p.read_text(encoding="utf-8"))


def _benchmark(results: dict[str, Any]) -> Path:
    """The benchmark list a run read (``ardrag eval`` records the folder or the file it was given)."""
    path = Path(results.get("benchmark", ""))
    return (path / "benchmark.jsonl" if path.suffix != ".jsonl" else path).resolve()


def compare(before: dict[str, Any], after: dict[str, Any], resamples: int, seed: int) -> dict[str, Any]:
    """Per figure: both means, the paired difference and the ratio, each with its interval."""
    b = {c["id"]: c for c in before["clips"]}
    a = {c["id"]: c for c in after["clips"]}
    ids = sorted(set(a) & set(b))
    out: dict[str, Any] = {
        "clips": len(ids),
        "only_before": len(set(b) - set(a)),
        "only_after": len(set(a) - set(b)),
    }
    for name in FIGURES:
        pairs = [(b[i].get(name), a[i].get(name)) for i in ids]
        pairs = [(x, y) for x, y in pairs if isinstance(x, int | float) and isinstance(y, int | float)]
        if len(pairs) < 2:
            continue
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        diff = difference_interval(xs, ys, resamples, seed)
        change = "lower" if diff.high < 0 else "higher" if diff.low > 0 else "not resolved"
        entry = {"before": mean_interval(xs, resamples, seed), "after": mean_interval(ys, resamples, seed),
                 "after - before": diff, "after / before": None, "change": change}  # fmt: skip
        if sum(xs):
            entry["after / before"] = ratio_interval(xs, ys, resamples, seed)
        out[name] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="an `ardrag eval` output folder or its results.json")
    ap.add_argument("after", help="the same, of the run to compare (same benchmark)")
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="of the bootstrap's resampling")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    before, after = read_results(args.before), read_results(args.after)
    if _benchmark(before) != _benchmark(after):
        print(f"note: different benchmark files: {before.get('benchmark')} / {after.get('benchmark')}")
    result = compare(before, after, args.resamples, args.seed)
    if args.json:
        print(json.dumps(result, default=lambda i: {"estimate": i.estimate, "low": i.low, "high": i.high}))
        return
    print(f"{result['clips']} clips in both runs ({result['only_before']} only before, "
          f"{result['only_after']} only after); 95% percentile bootstrap, "
          f"{args.resamples} resamples")  # fmt: skip
    for name in FIGURES:
        if name in result:
            e = result[name]
            print(f"\n{name}")
            for key in ("before", "after", "after - before", "after / before"):
                if e[key] is not None:
                    print(f"  {key:15s} {e[key]}")
            print(f"  change          {e['change']}")


if __name__ == "__main__":
    main()
