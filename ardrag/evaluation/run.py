"""``ardrag eval``: generate every benchmark clip with the student and score the paper's six columns.

For each clip of the benchmark (:mod:`ardrag.evaluation.benchmark`): the reference image and the drag
are read and fitted to the model's resolution as ``ardrag generate`` does, the reference video (when
given) gets the same resize and crop, and the student streams the clip (``stream_clip``). A clip whose
files are missing or invalid (an unreadable image, trajectory lists of different lengths, a reference
video shorter than the drag, a prompt switch past the drag's last frame) is reported with its reason and
the evaluation goes on with the others.

**Prompt schedules.** A clip with step-wise prompts (the entry's ``prompts`` or its trajectory's, see
:mod:`ardrag.evaluation.benchmark`) switches at the same latent frames as ``ardrag generate``: both
stream through ``stream_clip``, which applies the trajectory's switches. Each clip's results name the
switches it ran under (``prompts``, as ``ardrag generate --json`` lists them) and where they came from
(``prompts_from``); ``results.md`` lists the clips that switched.

Columns (:data:`ardrag.metrics.METRICS` says what each one is):

- ``fid`` over all frames of the generated clips against those of the reference videos;
- ``fvd`` over the clips (16 frames each; clips of fewer frames leave FVD out, with the reason);
- ``aesthetic``, ``smoothness`` (acceleration smoothness), ``consistency`` (1-5 score; the mean
  tracking error in pixels is reported beside it): means over clips;
- ``latency``: median first-frame latency (session start + first latent frame, decoded) over the clips,
  after one untimed warm-up clip, with the device named.

Writes to ``--out``: ``results.json`` (columns, per-clip scores, errors, settings), ``results.md`` (the
table and the per-clip table) and ``grid.mp4`` (per clip, generated | reference side by side, each with
the drag drawn: whole path blue, current point red).

Networks: ``--preset NAME`` (a random model preset, e.g. tiny) uses tiny random networks for every metric
(numbers that exercise the pipeline, not judgements). Otherwise the Inception, I3D, CLIP and
aesthetic-head weights come from local paths, checked before any compute.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ardrag.console import Progress
from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.codec import encode_mp4, get_decoder
from ardrag.data.overlay import draw_tracks
from ardrag.errors import ArdragError, ConfigError
from ardrag.evaluation.benchmark import (
    BenchmarkEntry,
    EntryError,
    clip_schedule,
    eval_set_config,
    load_benchmark,
    write_procedural_benchmark,
)
from ardrag.fsutil import atomic_write
from ardrag.model.device import dtype_name, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

COLUMNS = ("fid", "fvd", "aesthetic", "smoothness", "consistency", "latency")
FVD_FRAMES = 16


class Networks:
    """The feature networks and tracker every metric needs."""

    def __init__(self, preset: str | None, inception: str | None, i3d: str | None,
                 aesthetic_clip: str | None, aesthetic_head: str | None, seed: int = 0):  # fmt: skip
        from ardrag.data.trackers.scaled import metric_tracker
        from ardrag.metrics import I3DFeatures, InceptionFeatures
        from ardrag.rewards import AestheticScorer

        if preset is not None:  # a random model preset: random metric networks too
            self.inception = InceptionFeatures.tiny(seed) if inception is None else None
            self.i3d = I3DFeatures.tiny(seed) if i3d is None else None
            self.scorer = AestheticScorer.tiny(seed) if aesthetic_clip is None else None
        else:
            missing = [name for name, value in (("--inception", inception), ("--i3d", i3d),
                       ("--aesthetic-clip", aesthetic_clip), ("--aesthetic-head", aesthetic_head))
                       if value is None]  # fmt: skip
            if missing:
                raise ConfigError(
                    f"{', '.join(missing)} not given: FID, FVD and the aesthetic score need local weights "
                    "(Inception-v3 pt_inception-2015-12-05 .pth, I3D rgb_imagenet.pt, CLIP ViT-L/14 folder, "
                    "LAION aesthetic head); a random model preset (--preset) uses random toy networks instead"
                )
            self.inception = self.i3d = self.scorer = None
        if inception is not None:
            self.inception = InceptionFeatures.from_path(inception)
        if i3d is not None:
            self.i3d = I3DFeatures.from_path(i3d)
        if aesthetic_clip is not None:
            if aesthetic_head is None:
                raise ConfigError("--aesthetic-clip needs --aesthetic-head (the LAION MLP's weights)")
            self.scorer = AestheticScorer.from_paths(aesthetic_clip, aesthetic_head)
        self.tracker = metric_tracker("opencv")  # small videos upscaled first (ardrag.data.trackers.scaled)
        self.tracker.setup()


def _prepare(entry: BenchmarkEntry, width: int, height: int) -> dict[str, Any]:
    """Read and fit one clip's inputs; raises ArdragError / ValueError / OSError naming the problem."""
    from ardrag.inference.trajectory import fit_to_resolution, load_reference, load_trajectory

    image = load_reference(entry.reference)
    trajectory, prompts_from = clip_schedule(entry, load_trajectory(entry.trajectory))
    h0, w0 = image.shape[:2]
    image, trajectory = fit_to_resolution(image, trajectory, width, height)
    reference = None
    if entry.reference_video is not None:
        if not entry.reference_video.is_file():
            raise ConfigError(f"reference video '{entry.reference_video}' does not exist")
        video = get_decoder("pyav").decode(entry.reference_video.read_bytes())
        if len(video) < trajectory.num_frames:
            raise ConfigError(
                f"reference video '{entry.reference_video}' has {len(video)} frames; the trajectory has "
                f"{trajectory.num_frames} (expected at least as many)"
            )
        if video.shape[1:3] != (h0, w0):
            raise ConfigError(
                f"reference video '{entry.reference_video}' is {video.shape[2]}x{video.shape[1]}; the "
                f"reference image is {w0}x{h0} (expected the same size)"
            )
        reference = ResizeCrop.fit(w0, h0, Bucket(width, height)).apply_frames(video[: trajectory.num_frames])
    return {"image": image, "trajectory": trajectory, "reference": reference, "prompts_from": prompts_from}


def _finite(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(values) if values else None


def evaluate(
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    checkpoint: str | None = None,
    model: str | None = None,
    benchmark: str | os.PathLike[str] | None = None,
    inception: str | None = None,
    i3d: str | None = None,
    aesthetic_clip: str | None = None,
    aesthetic_head: str | None = None,
    seed: int = 0,
    device: Any = None,
    dtype: Any = None,
    progress: bool = True,
    pipe: Any = None,
    clip_fn: Any = None,
) -> dict[str, Any]:
    """Run the evaluation (see the module docstring); returns what ``results.json`` holds. ``pipe``: an
    already built :class:`ARDragPipeline` (then ``preset``, ``checkpoint`` and ``model`` only name it);
    else one is loaded on ``device`` in ``dtype`` (None: the defaults of :mod:`ardrag.model.device`;
    checked before any compute). Every clip renders at the model's width x height, not at its nearest
    bucket as ``ardrag generate`` does: FID, FVD and the grid compare clips of one size.
    ``clip_fn(pipe, image, trajectory, prompt, seed=)`` -> (video, seconds to its first frame) replaces
    the student's streaming generation (e.g. the teacher's full sampler, for comparison); the clip's
    prompt schedule is ``trajectory.prompts``, as ``stream_clip`` reads it."""
    from ardrag.inference.generate import load_pipeline, stream_clip
    from ardrag.metrics import (
        acceleration_smoothness_scores,
        aesthetic_scores,
        device_name,
        fid,
        fvd,
        motion_consistency,
    )
    from ardrag.presets import DEFAULT_WAN

    out = Path(out)
    if pipe is None:
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
    out.mkdir(parents=True, exist_ok=True)
    if benchmark is None:
        benchmark = write_procedural_benchmark(eval_set_config(preset), out / "benchmark")
    entries = load_benchmark(benchmark)
    nets = Networks(preset, inception, i3d, aesthetic_clip, aesthetic_head, seed)  # before any generation
    if pipe is None:
        pipe = load_pipeline(preset, checkpoint, model or DEFAULT_WAN, seed, device, dtype)
    cfg = pipe.config
    clip_fn = clip_fn or stream_clip
    clips: list[dict[str, Any]] = []
    errors = [{"id": e.id, "line": e.line, "error": e.reason} for e in entries if isinstance(e, EntryError)]
    generated, references, latencies, warmed = [], [], [], False
    grid_rows = []
    bar = Progress([e for e in entries if isinstance(e, BenchmarkEntry)], desc="evaluating", unit="clip",
                   enabled=progress, logger=log)  # fmt: skip
    for entry in bar:
        try:
            inputs = _prepare(entry, cfg.width, cfg.height)
            traj = inputs["trajectory"]
            if not warmed:  # the first clip once untimed: the latency excludes warm-up
                clip_fn(pipe, inputs["image"], traj, entry.prompt, seed=seed)
                warmed = True
            video, first = clip_fn(pipe, inputs["image"], traj, entry.prompt, seed=seed)
        except (ArdragError, ValueError, OSError) as err:
            errors.append({"id": entry.id, "line": entry.line, "error": str(err)})
            log.warning("clip %s skipped: %s", entry.id, err)
            continue
        cons = motion_consistency(video, traj.tracks, traj.visible, nets.tracker)
        row = {
            "id": entry.id, "frames": int(len(video)), "latency_s": first,
            "aesthetic": float(aesthetic_scores([video], nets.scorer)[0]),
            "smoothness": float(acceleration_smoothness_scores([video], nets.tracker)[0]),
            "consistency": cons.score, "consistency_error_px": cons.mean_error_px,
            "prompts": [s.record() for s in traj.prompts], "prompts_from": inputs["prompts_from"],
        }  # fmt: skip
        clips.append(row)
        latencies.append(first)
        generated.append(video)
        if inputs["reference"] is not None:
            references.append(inputs["reference"])
        grid_rows.append((video, inputs["reference"], traj))
    columns: dict[str, Any] = dict.fromkeys(COLUMNS)
    notes: dict[str, str] = {}
    if clips:
        columns["aesthetic"] = _finite([c["aesthetic"] for c in clips])
        columns["smoothness"] = _finite([c["smoothness"] for c in clips])
        columns["consistency"] = _finite([c["consistency"] for c in clips])
        columns["latency"] = statistics.median(latencies)
    if len(references) >= 2 and len(references) == len(generated):
        columns["fid"] = fid(references, generated, nets.inception)
        long = [(r, g) for r, g in zip(references, generated, strict=True) if len(g) >= FVD_FRAMES]
        if len(long) >= 2:
            columns["fvd"] = fvd([r for r, _ in long], [g for _, g in long], nets.i3d)
        else:
            notes["fvd"] = f"needs at least 2 clips of {FVD_FRAMES}+ frames; {len(long)} had them"
    else:
        reason = (
            f"needs reference videos for at least 2 clips and for every clip; {len(references)} of "
            f"{len(generated)} had one"
        )
        notes["fid"] = notes["fvd"] = reason
    results = {
        "columns": columns,
        "consistency_error_px": _finite([c["consistency_error_px"] for c in clips]) if clips else None,
        "notes": notes, "descriptions": _descriptions(), "clips": clips, "errors": errors,
        "device": device_name(pipe.device), "dtype": dtype_name(pipe.transformer.dtype),
        "benchmark": str(benchmark),
        "model": {"preset": preset, "checkpoint": checkpoint, "model": model},
        "resolution": [cfg.width, cfg.height], "seed": seed,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    atomic_write(out / "results.json", json.dumps(results, indent=1))
    atomic_write(out / "results.md", markdown(results))
    if grid_rows:
        atomic_write(out / "grid.mp4", encode_mp4(grid(grid_rows), grid_rows[0][2].fps))
    log.debug("evaluated %d clips (%d errors) into %s", len(clips), len(errors), out)
    return results


def _descriptions() -> dict[str, str]:
    from ardrag.metrics import METRICS

    return dict(METRICS)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    c = results["columns"]
    lines = [
        "# Evaluation", "",
        f"Benchmark `{results['benchmark']}`, {len(results['clips'])} clips evaluated, "
        f"{len(results['errors'])} reported with errors; device: {results['device']}; "
        f"resolution {results['resolution'][0]}x{results['resolution'][1]}.", "",
        "| latency (s) | FID | FVD | aesthetic (1-5) | smoothness | consistency (1-5) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_fmt(c['latency'])} | {_fmt(c['fid'])} | {_fmt(c['fvd'])} | {_fmt(c['aesthetic'])} "
        f"| {_fmt(c['smoothness'])} | {_fmt(c['consistency'])} |", "",
        f"Mean tracking error of the dragged points: {_fmt(results['consistency_error_px'])} px.", "",
    ]  # fmt: skip
    for key, note in results["notes"].items():
        lines.append(f"- {key}: not computed ({note})")
    lines += ["", "## Per clip", "",
              "| clip | frames | latency (s) | aesthetic | smoothness | consistency | error (px) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results["clips"]:
        lines.append(
            f"| {r['id']} | {r['frames']} | {_fmt(r['latency_s'])} | {_fmt(r['aesthetic'])} | "
            f"{_fmt(r['smoothness'])} | {_fmt(r['consistency'])} | {_fmt(r['consistency_error_px'])} |"
        )
    switched = [r for r in results["clips"] if r.get("prompts")]
    if switched:
        note = "Clips generated under step-wise prompts; a switch holds from its latent frame on."
        lines += ["", "## Prompt switches", "", note, ""]
        for r in switched:
            steps = "; ".join(f"frame {p['frame']} (latent {p['latent_frame']}, {p['mode']}): {p['text']!r}"
                              for p in r["prompts"])  # fmt: skip
            lines.append(f"- `{r['id']}` (from the {r['prompts_from']}): {steps}")
    if results["errors"]:
        lines += ["", "## Errors", ""] + [f"- `{e['id']}`: {e['error']}" for e in results["errors"]]
    lines += ["", "## Columns", ""] + [f"- **{k}**: {v}" for k, v in results["descriptions"].items()]
    return "\n".join(lines) + "\n"


GRID_MIN_WIDTH = 320  # px: narrower clips are enlarged in grid.mp4, so that a person can see them


def grid(rows: list[tuple[np.ndarray, np.ndarray | None, Any]], max_rows: int = 8) -> np.ndarray:
    """Clips stacked vertically, each row generated | reference (black when none), the drag drawn on
    both; all rows padded to the longest clip by holding their last frame. Clips narrower than
    :data:`GRID_MIN_WIDTH` (a toy model's 80x48) are enlarged by a whole factor first, each pixel a block
    (the model's own pixels, none invented), and the drag drawn at that size."""
    rows = rows[:max_rows]
    length = max(len(g) for g, _, _ in rows)
    width = rows[0][0].shape[2]
    k = max(1, round(GRID_MIN_WIDTH / width)) if width < GRID_MIN_WIDTH else 1
    out = []
    for video, reference, traj in rows:
        t = len(video)
        tracks = (traj.tracks[:t] + 0.5) * k - 0.5  # pixel centres at integers, at either size
        video = video.repeat(k, axis=1).repeat(k, axis=2)
        left = draw_tracks(video, tracks, traj.visible[:t])
        right = (np.zeros_like(video) if reference is None
                 else draw_tracks(reference[:t].repeat(k, axis=1).repeat(k, axis=2), tracks,
                                  traj.visible[:t]))  # fmt: skip
        pair = np.concatenate([left, np.full_like(left[:, :, :4], 255), right], axis=2)
        if t < length:
            pair = np.concatenate([pair, np.repeat(pair[-1:], length - t, axis=0)])
        out.append(pair)
    video = np.concatenate(out, axis=1)
    h, w = video.shape[1:3]  # the encoder wants even sizes
    return video[:, : h - h % 2, : w - w % 2]
