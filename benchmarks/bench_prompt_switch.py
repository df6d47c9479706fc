"""The cost of a prompt switch while streaming (``StreamSession.set_prompt``), per mode: the latency of
the frame that follows a switch against a normal frame, side by side in one run.

For each shape (random weights, ``bench_realtime.build``: the student and the text and image encoders
of that shape, the tiny VAE, so that the figures are the transformer's and the text encoder's) and each
mode (``keep``, ``recache``), one session streams ``--frames`` latent frames (enough to
fill the cache's window), then switches the prompt and streams ``--after`` more. Measured with
``time.perf_counter`` around the library calls:
- ``normal``: the median wall time of ``step`` over the ``--normal`` frames before the switch;
- ``switch``: ``set_prompt`` alone (the new prompt's text encoding; with ``recache`` also the cache writes
  of the frames in view);
- ``next``: ``set_prompt`` plus the ``step`` that follows it, what a user waits for after a switch;
  reported as a ratio to ``normal``.
The sessions run the streaming fast path's defaults (``StreamOptions()``), no guidance. Each
configuration is repeated ``--repeats`` times (the median is reported): these machines are noisy, compare
ratios, not times.

    OMP_NUM_THREADS=2 python benchmarks/bench_prompt_switch.py [--shapes tiny small --res 480x368
        --frames 9 --after 2 --normal 3 --repeats 3 --out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from bench_model import reference_image  # this folder is first on the path of a script run from it
from bench_realtime import build, drag

from ardrag.inference.generate import parse_size
from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.inference.trajectory import PROMPT_MODES
from ardrag.presets import SMALL, TINY

FIRST, SECOND = "a red kite climbs over the beach", "the kite dives towards the sea"


def once(pipe: Any, mode: str, frames: int, after: int, normal: int) -> dict[str, float]:
    w, h = pipe.config.width, pipe.config.height
    session = StreamSession(pipe, reference_image(h, w), FIRST, seed=0, options=StreamOptions())
    times = []
    for m in range(frames):
        t0 = time.perf_counter()
        session.step(drag(m, session.pixel_frames_next, w, h))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    session.set_prompt(SECOND, mode)
    switch = time.perf_counter() - t0
    in_view = session.caches[0].cached_frames
    session.step(drag(frames, session.pixel_frames_next, w, h))
    following = time.perf_counter() - t0
    for m in range(frames + 1, frames + after):
        session.step(drag(m, session.pixel_frames_next, w, h))
    return {"normal_s": statistics.median(times[-normal:]), "switch_s": switch, "next_s": following,
            "frames_in_view": in_view}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=[TINY, SMALL], choices=[TINY, SMALL])
    parser.add_argument("--res", default="480x368", help="WxH of the small shape (tiny: its own 96x64)")
    parser.add_argument("--frames", type=int, default=9, help="latent frames before the switch")
    parser.add_argument("--after", type=int, default=2, help="latent frames from the switch on")
    parser.add_argument("--normal", type=int, default=3, help="frames before the switch that set 'normal'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for shape in args.shapes:
        width, height = (96, 64) if shape == TINY else parse_size(args.res, "--res")
        pipe = build(shape, torch.device("cpu"), torch.float32, width, height, TINY, 1.0)
        for mode in PROMPT_MODES:
            runs = [once(pipe, mode, args.frames, args.after, args.normal) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            row = {"shape": shape, "size": f"{width}x{height}", "mode": mode, **med,
                   "next_over_normal": med["next_s"] / med["normal_s"]}  # fmt: skip
            rows.append(row)
            print(f"{shape:6s} {row['size']:8s} {mode:8s} normal {1000 * med['normal_s']:8.1f} ms  switch "
                  f"{1000 * med['switch_s']:8.1f} ms  next frame {1000 * med['next_s']:8.1f} ms  "
                  f"({row['next_over_normal']:.2f}x normal; {int(med['frames_in_view'])} frames in view)",
                  flush=True)  # fmt: skip
    out = {"args": vars(args), "rows": rows, "torch_threads": torch.get_num_threads()}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
