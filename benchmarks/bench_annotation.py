"""The annotation loop's cost beside curation's, measured in one run against a real Label Studio.

1. Curate N procedural clips (``run_local``, no Prefect): the reference.
2. Push every waiting clip (media rendered, tasks imported with pre-filled tracks).
3. A scripted annotator submits the pre-filled result of every task through the API (not timed).
4. Pull (annotations read and validated, corrected samples written, the dataset resharded).

Prints seconds per clip of each step and push / curate and pull / curate (the loop should cost less
than the curation that fed it), plus the server's start-up time.

    python benchmarks/bench_annotation.py [--clips 24] [--dir runs/bench-annotation]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--dir", default="runs/bench-annotation")
    args = ap.parse_args()

    from annotation.client import Client
    from annotation.pull import pull
    from annotation.push import push
    from annotation.scripted import submit, verdict
    from annotation.server import LabelStudioServer
    from annotation.settings import AnnotationSettings
    from ardrag.curation.pipeline import CurationConfig, run_local
    from ardrag.data.sources import build_source

    root = Path(args.dir).resolve()
    shutil.rmtree(root, ignore_errors=True)
    venv = Path(os.environ.get("ARDRAG_LS_VENV") or "data/label-studio/venv").resolve()
    settings = AnnotationSettings(data_dir=root / "data", url=f"http://127.0.0.1:{free_port()}", venv=venv)
    t0 = time.perf_counter()
    server = LabelStudioServer(settings).start()
    try:
        server.wait_until_ready(timeout_s=300)
        start_s = time.perf_counter() - t0
        out = root / "queue"
        source = build_source("procedural", {"num_clips": args.clips, "num_frames": args.frames, "seed": 11})
        t0 = time.perf_counter()
        summary = run_local(source, out, CurationConfig(), progress=False)
        curate_s = time.perf_counter() - t0
        client = Client(settings)
        t0 = time.perf_counter()
        report = push(out, settings, client, progress=False)
        push_s = time.perf_counter() - t0
        tasks = 0
        for interface in ("verify", "annotate"):
            if "project" not in report[interface]:
                continue
            for task in client.tasks(report[interface]["project"], with_annotations=True):
                result = task.predictions[0].result if interface == "annotate" else verdict("accept")
                submit(client.sdk, task.id, result)
                tasks += 1
        t0 = time.perf_counter()
        pulled = pull(out, settings, client, progress=False)
        pull_s = time.perf_counter() - t0
    finally:
        server.stop()
    n = args.clips
    print(f"Label Studio start-up (first boot): {start_s:.1f} s")
    print(f"clips {n} ({summary['states']}), tasks {tasks}, accepted after pull {pulled['accepted']}")
    print(f"curate {curate_s / n:.3f} s/clip | push {push_s / n:.3f} s/clip | pull {pull_s / n:.3f} s/clip")
    print(f"push / curate = {push_s / curate_s:.2f}   pull / curate = {pull_s / curate_s:.2f}")


if __name__ == "__main__":
    main()
