"""The retrain report, ``<out>/report.md``: every stage with its status, time and figures, and a
training run's losses at its start and its end."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from ardrag.fsutil import atomic_write


def loss_figures(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Mean of each logged scalar over the first and the last 10 % of a run's steps (``losses.jsonl``)."""
    path = Path(run_dir) / "losses.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out: dict[str, dict[str, float]] = {}
    names = sorted({k for r in rows for k in r if k != "step" and not k.endswith("grad_norm")})
    for name in names:
        values = [r[name] for r in rows if isinstance(r.get(name), int | float)]
        if values:
            n = max(1, len(values) // 10)
            out[name] = {"first": statistics.fmean(values[:n]), "last": statistics.fmean(values[-n:])}
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(root: str | os.PathLike[str], results: list[dict[str, Any]], seconds: float) -> Path:
    """``report.md``: every stage with its status, time and figures, and where the plots and videos are."""
    root = Path(root)
    lines = ["# ardrag retrain report", "", f"Folder: `{root}`; wall time {seconds / 60:.1f} min.", "",
             "| stage | status | seconds | key | summary |", "| --- | --- | ---: | --- | --- |"]  # fmt: skip
    for r in results:
        lines.append(f"| {r['stage']} | {r['status']} | {r.get('seconds', 0.0):.1f} | `{r.get('key', '')}` | "
                     f"{r.get('summary', '')} |")  # fmt: skip
    for r in results:
        lines += ["", f"## {r['stage']} ({r['status']})", ""]
        if r.get("start"):
            lines += [f"{'Evaluated' if r['stage'] == 'evaluation' else 'Started from'}: {r['start']}.", ""]
        if r.get("note"):
            lines += [r["note"], ""]
        for name, value in (r.get("figures") or {}).items():
            if isinstance(value, dict) and {"first", "last"} <= set(value):
                lines.append(f"- {name}: first 10 % {_fmt(value['first'])}, last 10 % {_fmt(value['last'])}")
            elif isinstance(value, dict):
                lines.append(f"- {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
            else:
                lines.append(f"- {name}: {_fmt(value)}")
        for name, path in (r.get("outputs") or {}).items():
            lines.append(f"- {name}: `{path}`")
        if r.get("table"):
            lines += ["", r["table"]]
    return atomic_write(root / "report.md", "\n".join(lines) + "\n")
