"""``ardrag studio`` under load: N WebSocket clients streaming at once for a while, then gone.

Starts the real server (``ardrag studio --preset tiny`` by default, a subprocess, as a user starts it),
reads its resident memory once it is up and idle, then connects ``--clients`` clients at once. Each picks
an example, draws one drag, presses play and reads frames for ``--seconds``; it checks that every
``frames`` message starts where the last one ended (frames in order, none missing) and that no ``error``
arrives. Then all disconnect, and the server's memory is read again until it settles (its sessions
closed, ``/api/status``).

Printed and written (``--out``): per client, frames per second (frames received over the time from
play to the last frame) and the queue wait of its model steps (from the ``frames`` messages: time
waiting behind other sessions' steps); over the server, the model steps run, the idle, peak and
after-disconnect resident memory, and whether the last is within 10% of the idle level.

    OMP_NUM_THREADS=2 python benchmarks/bench_studio_load.py [--clients 8 --seconds 60 --preset tiny
        --out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import websockets

from ardrag.presets import TINY

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    preset: str, clients: int, log_dir: str, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "ardrag.cli", "studio", "--preset", preset, "--port", "0",
           "--max-sessions", str(clients), "--log-dir", log_dir]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("ardrag studio: http://"):
            url = line.split()[2]
            break
    else:
        raise RuntimeError(f"the studio did not start (exit {proc.wait()})")
    # the rest of its console (a line per session) read as it comes, so a full pipe never blocks it
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 60
    while True:
        try:
            status(url)
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/status", timeout=10) as r:
        return json.loads(r.read())


def rss_mb(proc: subprocess.Popen[str]) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


async def client(url: str, index: int, seconds: float) -> dict[str, Any]:
    ws_url = url.replace("http://", "ws://") + "/ws"
    out: dict[str, Any] = {"client": index, "errors": [], "out_of_order": 0, "frames": 0, "waits_ms": [],
                           "latency_ms": []}  # fmt: skip
    async with websockets.connect(ws_url, max_size=2**24) as ws:
        ready = json.loads(await ws.recv())
        if ready["type"] != "ready":
            out["errors"].append(ready)
            return out
        examples = [e["name"] for e in ready["examples"]]
        await ws.send(json.dumps({"type": "example", "name": examples[index % len(examples)]}))
        w, h = ready["model"]["width"], ready["model"]["height"]
        path = [[w * 0.2, h * 0.3], [w * 0.5, h * 0.5], [w * 0.8, h * (0.3 + 0.05 * (index % 4))]]
        await ws.send(json.dumps({"type": "point", "id": None, "path": path, "frames": 24}))
        await ws.send(json.dumps({"type": "play"}))
        start = time.monotonic()
        expected, last = 0, start
        while time.monotonic() - start < seconds:
            try:
                text = await asyncio.wait_for(ws.recv(), max(seconds - (time.monotonic() - start), 0.01))
            except TimeoutError:
                break
            m = json.loads(text)
            if m["type"] == "error":
                out["errors"].append(m)
            elif m["type"] == "frames":
                if m["start"] != expected:
                    out["out_of_order"] += 1
                expected = m["start"] + len(m["frames"])
                out["frames"] = expected
                out["waits_ms"].append(m["queue_wait_ms"])
                out["latency_ms"].append(m["latency_ms"])
                last = time.monotonic()
        await ws.send(json.dumps({"type": "pause"}))
    out["seconds"] = last - start
    out["fps"] = out["frames"] / out["seconds"] if out["seconds"] > 0 else 0.0
    return out


async def load(url: str, clients: int, seconds: float, proc: subprocess.Popen[str]) -> tuple[list, float]:
    peak = 0.0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(proc))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(client(url, i, seconds) for i in range(clients)))
    watcher.cancel()
    return list(results), peak


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def run_once(args: argparse.Namespace, arenas: str | None) -> dict[str, Any]:
    """One server, ``args.clients`` clients for ``args.seconds``; ``arenas``: the server's
    ``MALLOC_ARENA_MAX`` (None: as this process has it; glibc's default, 8 per core, when unset)."""
    env = {**os.environ, **({"MALLOC_ARENA_MAX": arenas} if arenas else {})}
    arena_max = env.get("MALLOC_ARENA_MAX", "glibc default")
    with tempfile.TemporaryDirectory() as logs:
        proc, url = start_server(args.preset, args.clients, logs, env)
        try:
            time.sleep(2.0)
            idle = rss_mb(proc)
            jobs_before = status(url)["jobs_done"]
            results, peak = asyncio.run(load(url, args.clients, args.seconds, proc))
            deadline = time.monotonic() + args.settle
            while status(url)["sessions"] and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
            after = rss_mb(proc)
            while after > idle * 1.10 and time.monotonic() < deadline:
                time.sleep(0.5)
                after = rss_mb(proc)
            final = status(url)
        finally:
            proc.terminate()
            proc.wait(30)
    waits = [w for r in results for w in r["waits_ms"]]
    summary = {
        "clients": args.clients, "seconds": args.seconds, "preset": args.preset,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"), "malloc_arena_max": arena_max,
        "per_client": [{k: r[k] for k in ("client", "frames", "fps", "out_of_order")} | {
            "errors": len(r["errors"]), "queue_wait_ms_mean": statistics.fmean(r["waits_ms"] or [0.0]),
            "step_ms_mean": statistics.fmean(r["latency_ms"] or [0.0])} for r in results],
        "fps_per_client": {"mean": statistics.fmean(r["fps"] for r in results),
                           "min": min(r["fps"] for r in results), "max": max(r["fps"] for r in results)},
        "queue_wait_ms": {"mean": statistics.fmean(waits or [0.0]), "p50": pct(waits, 50),
                          "p95": pct(waits, 95)},
        "step_ms_mean": statistics.fmean(x for r in results for x in r["latency_ms"] or [0.0]),
        "model_steps": final["jobs_done"] - jobs_before,
        "errors": sum(len(r["errors"]) for r in results),
        "out_of_order": sum(r["out_of_order"] for r in results),
        "sessions_after": final["sessions"],
        "rss_mb": {"idle": idle, "peak": peak, "after": after, "after_over_idle": after / idle},
        "memory_back_within_10pct": after <= idle * 1.10,
    }  # fmt: skip
    return summary


def show(summary: dict[str, Any]) -> None:
    args = argparse.Namespace(**{k: summary[k] for k in ("clients", "seconds", "preset")})
    print(f"{args.clients} clients x {args.seconds:g} s on --preset {args.preset}:")
    print(f"{'client':>6} {'frames':>7} {'fps':>6} {'queue wait ms':>14} {'step ms':>8} {'errors':>6}")
    for r in summary["per_client"]:
        print(f"{r['client']:>6} {r['frames']:>7} {r['fps']:>6.2f} {r['queue_wait_ms_mean']:>14.1f} "
              f"{r['step_ms_mean']:>8.1f} {r['errors']:>6}")  # fmt: skip
    q, f, m = summary["queue_wait_ms"], summary["fps_per_client"], summary["rss_mb"]
    print(f"fps per client: mean {f['mean']:.2f} (min {f['min']:.2f}); queue wait: mean {q['mean']:.0f} ms, "
          f"p50 {q['p50']:.0f}, p95 {q['p95']:.0f}; {summary['model_steps']} model steps; "
          f"errors {summary['errors']}, out of order {summary['out_of_order']}")  # fmt: skip
    within = "within" if summary["memory_back_within_10pct"] else "NOT within"
    print(f"memory (RSS): idle {m['idle']:.0f} MB, peak {m['peak']:.0f} MB, after disconnect "
          f"{m['after']:.0f} MB ({m['after_over_idle']:.3f} x idle: {within} 10%)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--preset", default=TINY)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds to wait for memory to settle")
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument(
        "--arenas",
        help="comma-separated MALLOC_ARENA_MAX values for the server, one run each, compared (e.g. 16,2); "
        "glibc's allocator keeps freed memory in per-thread arenas",
    )
    args = ap.parse_args(argv)
    runs = [run_once(args, a) for a in (args.arenas.split(",") if args.arenas else [None])]
    for summary in runs:
        print(f"MALLOC_ARENA_MAX {summary['malloc_arena_max']}:")
        show(summary)
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        fps = b["fps_per_client"]["mean"] / a["fps_per_client"]["mean"]
        peak = b["rss_mb"]["peak"] / a["rss_mb"]["peak"]
        print(f"last run / first run: fps per client x{fps:.2f}, peak memory x{peak:.2f}")
    summary = runs[-1] if len(runs) == 1 else {**runs[-1], "runs": runs}
    bad = sum(r["errors"] + r["out_of_order"] for r in runs)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
