"""Latency of the causal student against the bidirectional teacher, measured side by side in one run.

1. Student, per latent frame: ``StreamSession.step`` (the previous frame's deferred cache-writing pass,
   control heatmaps through the streaming VAE encoder, 3 denoising passes at t = 1000, 755, 522,
   streaming VAE decode; no guidance, as distilled) for latent frames 0 .. F-1 under one slowly moving
   point; R sessions, per-frame medians. Frame 7 is the first to see a full 7-frame KV cache, frame 8
   the first after an eviction; target latency(F-1) / latency(8) <= 1.15. The shared machine's load
   drifts over a stream, so the ratio is also measured interleaved: one session stopped after frame 8
   and one after frame F-1 each redo their last frame (``regenerate``, the same step from the
   same state, which has no deferred write to do: 3 passes) in alternation, K times.
2. First-frame latency. Student: session creation (text and CLIP image encoding) + its first step (the
   reference image's VAE encoding, batched with frame 0's control heatmap in the streaming encoder's
   first call; 3 passes: its cache write waits for step 1; the decode).
   Teacher: the same weights without the causal mask (``ARDragTransformer``), the whole 81-frame clip
   (21 latent frames) through ``ardrag.inference.teacher.sample_clip``: prompt encoding with the
   negative prompt, reference encoding, control heatmaps through ``vae.encode``, N Euler flow-matching
   steps with classifier-free guidance (two forward passes per step, scale 5, shift 3), then
   ``vae.decode`` of the whole video: its first frame exists only then. Target teacher / student >= 50.

    OMP_NUM_THREADS=1 python benchmarks/bench_model.py [--frames 61 --repeats 3 --teacher-steps 50]
        [--interleaved 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ardrag.inference.session import StreamSession
from ardrag.inference.teacher import sample_clip, teacher_of
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import ARDragTransformer

PROMPT = "a red ball rolls slowly to the right across a wooden table"


def reference_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


def trajectory(pixel_frames: int) -> np.ndarray:
    """One point drifting 0.08 px per pixel frame (x, y), (pixel_frames, 1, 2)."""
    t = np.arange(pixel_frames, dtype=np.float32)[:, None]
    return np.stack([40 + 0.08 * t, 30 + 0.04 * t], -1)


class Timed:
    """Wraps a callable and adds up the seconds spent in it (the student's ``forward_frame``)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def rows(tracks: np.ndarray, m: int) -> np.ndarray:
    """The control points of latent frame m: pixel frame 0, then 4m-3 .. 4m."""
    return tracks[:1] if m == 0 else tracks[4 * m - 3 : 4 * m + 1]


def run_student(
    pipe: ARDragPipeline, ref: np.ndarray, tracks: np.ndarray, frames: int
) -> tuple[StreamSession, dict[str, float], list[tuple[float, float]]]:
    """(the session, first-frame latency: session creation and step 0, per step (latency, seconds in
    the transformer)) of one stream; ``pipe.transformer.forward_frame`` must be a :class:`Timed`."""
    timer = pipe.transformer.forward_frame
    t0 = time.perf_counter()
    session = StreamSession(pipe, ref, PROMPT, seed=0)
    first = {"session": time.perf_counter() - t0}
    steps = []
    for m in range(frames):
        ts, in_model = time.perf_counter(), timer.seconds
        out = session.step(rows(tracks, m))
        steps.append((time.perf_counter() - ts, timer.seconds - in_model))
        if m == 0:
            first["total"] = time.perf_counter() - t0
            assert out.shape[0] == 1
    return session, first, steps


def run_teacher(
    pipe: ARDragPipeline, teacher: ARDragTransformer, ref: np.ndarray, tracks: np.ndarray, steps: int
) -> dict[str, float]:
    """Seconds per phase of one full bidirectional sampling; "total" is the first-frame latency."""
    timings: dict[str, float] = {}
    video = sample_clip(pipe, teacher, ref, PROMPT, tracks, steps=steps, guidance_scale=5.0, timings=timings)
    assert video.shape[0] == tracks.shape[0], video.shape
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=61, help="latent frames per student stream")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--teacher-frames", type=int, default=81, help="pixel frames of the teacher's clip")
    ap.add_argument("--interleaved", type=int, default=20, help="K: regenerations per frame, alternated")
    args = ap.parse_args()
    if args.frames < 9:
        ap.error("--frames must be >= 9 (frame 8 is the first with a full cache)")
    wall = time.perf_counter()
    pipe = ARDragPipeline.tiny()
    student = pipe.transformer
    teacher = teacher_of(pipe)  # same weights, bidirectional
    student.forward_frame = Timed(student.forward_frame)
    h, w, omp = pipe.config.height, pipe.config.width, os.environ.get("OMP_NUM_THREADS", "unset")
    ref, tracks = reference_image(h, w), trajectory(max(1 + 4 * (args.frames - 1), args.teacher_frames))
    print(
        f"tiny {w}x{h}, torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS={omp}"
    )

    run_student(pipe, ref, tracks, 3)  # warm-up
    run_teacher(pipe, teacher, ref, tracks[: args.teacher_frames], 1)
    firsts, streams, teachers = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both alike
        session, first, steps = run_student(pipe, ref, tracks, args.frames)
        firsts.append(first)
        streams.append(steps)
        teachers.append(run_teacher(pipe, teacher, ref, tracks[: args.teacher_frames], args.teacher_steps))
    last, timer = args.frames - 1, student.forward_frame
    sessions = {8: run_student(pipe, ref, tracks, 9)[0], last: session}  # stopped after frames 8 and F-1
    redo: dict[int, list[tuple[float, float]]] = {8: [], last: []}
    for k in range(args.interleaved):
        for m in (8, last) if k % 2 else (last, 8):
            t0, in_model = time.perf_counter(), timer.seconds
            sessions[m].regenerate(rows(tracks, m))
            redo[m].append((time.perf_counter() - t0, timer.seconds - in_model))

    ms = [1000 * statistics.median(s[m][0] for s in streams) for m in range(args.frames)]
    model_ms = [1000 * statistics.median(s[m][1] for s in streams) for m in range(args.frames)]
    print(f"\nstudent per-latent-frame latency (ms, median of {args.repeats} streams)")
    shown = sorted({*range(10), 16, 24, 32, 48, last} & set(range(args.frames)))
    print("  frame " + " ".join(f"{m:>6d}" for m in shown))
    print("  step  " + " ".join(f"{ms[m]:6.1f}" for m in shown))
    passes = "   (transformer passes of it: 3, then 4)"
    print("  model " + " ".join(f"{model_ms[m]:6.1f}" for m in shown) + passes)
    full = ms[8:]  # the cache is full from frame 7 on
    print(
        f"  frames 8..{last}: median {statistics.median(full):.1f}, min {min(full):.1f}, max {max(full):.1f}"
    )
    print(f"  latency({last}) / latency(8) = {ms[last] / ms[8]:.3f}   (target <= 1.15)")
    print(f"  latency(8) / latency(1) = {ms[8] / ms[1]:.3f}   (growth while the cache fills, 1 -> 7 frames)")
    print(
        f"  transformer only: ({last}) / (8) = {model_ms[last] / model_ms[8]:.3f}, (8) / (1) = "
        f"{model_ms[8] / model_ms[1]:.3f}, median of 8..{last} {statistics.median(model_ms[8:]):.1f} ms"
    )
    step_8, step_last = (1000 * statistics.median(t for t, _ in redo[m]) for m in (8, last))
    model_8, model_last = (1000 * statistics.median(t for _, t in redo[m]) for m in (8, last))
    print(
        f"\ninterleaved: frames 8 and {last} redone {args.interleaved} times each, alternately (ms, median)"
    )
    print(f"  step: {step_8:.1f} vs {step_last:.1f}, latency({last}) / latency(8) = {step_last / step_8:.3f}")
    print(f"  transformer: {model_8:.1f} vs {model_last:.1f}, ratio {model_last / model_8:.3f}")

    def med(runs: list[dict[str, float]], key: str) -> float:
        return 1000 * statistics.median(r[key] for r in runs)

    student, teacher = med(firsts, "total"), med(teachers, "total")
    parts = ", ".join(f"{k} {med(teachers, k):.1f}" for k in ("encode", "control", "sample", "decode"))
    lat = (args.teacher_frames - 1) // 4 + 1
    print(f"\nfirst-frame latency (ms, median of {args.repeats})")
    encoding = med(firsts, "session")
    print(f"  student, session + step 0: {student:9.1f}  (session: text + CLIP encoding {encoding:.1f})")
    print(f"  teacher, {args.teacher_steps} steps x 2 passes, {lat} latent frames: {teacher:9.1f}  ({parts})")
    print(f"  teacher / student = {teacher / student:.1f}   (target >= 50)")
    print(f"  teacher's sampling alone / student = {med(teachers, 'sample') / student:.1f}")
    print(f"\nwall time of the run: {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
