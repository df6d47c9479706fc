"""The paper's Table 2 ablation rows at toy scale on CPU, with the recipe under which the teacher follows
the drags: untrained, teacher, causal copy of the teacher, student ``self_rollout`` without RL, student
``self_forcing`` without RL, student ``self_rollout`` + GRPO.

One command: ``--recipe DIR`` is the output folder of ``benchmarks/make_toy_model.py`` (the toy recipe:
VAE, teacher, both students, GRPO); stages whose outputs are missing are run first (the recipe resumes,
so a folder made earlier costs nothing), then every row is evaluated. ``--toy DIR --grpo DIR`` name the
folders of ``bench_train_toy.py`` and ``bench_grpo_toy.py`` directly instead.

Rows (all at the toy's 80x48 with its VAE, tiny encoders and heatmap spots, as trained):

- **untrained**: the random toy transformer the recipe starts from (control weights zero), streamed as a
  causal 3-step student: what the drag does before any training;
- **teacher**: the trained bidirectional teacher, whole clip at once (``sample_clip``, --teacher-steps
  Euler steps, guidance 1, as trained), so its latency is the whole clip's;
- **causal copy of the teacher**: the teacher's weights streamed as a causal 3-step student, before
  distillation;
- **students** from distillation (``self_rollout``, ``self_forcing``) and the ``self_rollout`` student
  after GRPO, streamed.

Students stream with ``StreamSession`` (the deployed sampler, :mod:`ardrag.inference.sampler`). Each row is
``ardrag.evaluation.run.evaluate`` on the same clips: --clips clips of the toy's kind drawn with --seed
(9001 by default: ``datasets/eval/toy.yaml``'s seed, never trained on; the recipe trains on seed 0 and
holds out seed 1). Columns: the tracking error (px: target points tracked through the clip by the metric
tracker, ``ardrag.data.trackers.scaled``) with its bootstrap 95 % interval over the clips, its ratio to the
untrained row's on the same clips (paired, with interval), smoothness, and the first-frame latency as a
ratio to the teacher's (timings on one machine; compare ratios). The metric networks are the tiny random
ones (FID, FVD and aesthetic would measure a random feature space: not reported). Writes ``table.md``,
``table.json`` and each row's ``results.json`` / ``grid.mp4`` under --out.

    OMP_NUM_THREADS=1 python benchmarks/bench_table2_toy.py --recipe /tmp/toy_recipe --out /tmp/table2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import TOY_EVAL_SEED, toy_benchmark, toy_pipe

from ardrag.evaluation.run import evaluate
from ardrag.inference.teacher import sample_clip
from ardrag.metrics.bootstrap import mean_interval, ratio_interval
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer
from ardrag.presets import TINY

HERE = Path(__file__).resolve().parent


def teacher_clip(teacher: ARDragTransformer, steps: int) -> Any:
    def run(pipe: ARDragPipeline, image: np.ndarray, trajectory: Any, prompt: str, seed: int = 0):
        t0 = time.perf_counter()
        video = sample_clip(pipe, teacher, image, prompt, trajectory.tracks, trajectory.visible,
                            trajectory.intensity, steps=steps, guidance_scale=1.0, seed=seed)  # fmt: skip
        return video, time.perf_counter() - t0  # the teacher's first frame exists only at the end

    return run


def causal(model: ARDragTransformer) -> CausalARDragTransformer:
    out = CausalARDragTransformer.from_config(model.config)
    out.load_state_dict(model.state_dict())
    return out.eval()


def student(path: Path) -> CausalARDragTransformer:
    return CausalARDragTransformer.from_pretrained(str(path)).eval()


def folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """(toy run, GRPO run): from --toy / --grpo, or the recipe's, made first when missing."""
    if args.toy and args.grpo:
        return Path(args.toy), Path(args.grpo)
    recipe = Path(args.recipe)
    cmd = [sys.executable, str(HERE / "make_toy_model.py"), "--out", str(recipe)]
    print("the recipe (stages already done are skipped):", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return recipe / "toy", recipe / "grpo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", help="make_toy_model.py's output folder (made or completed first)")
    ap.add_argument("--toy", help="bench_train_toy.py's output folder (with --grpo, instead of --recipe)")
    ap.add_argument("--grpo", help="bench_grpo_toy.py's output folder")
    ap.add_argument("--out", default="/tmp/bench_table2_toy")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=TOY_EVAL_SEED, help="the clips' seed (never trained on)")
    ap.add_argument("--teacher-steps", type=int, default=30)
    ap.add_argument("--resamples", type=int, default=5000)
    args = ap.parse_args()
    if not (args.recipe or (args.toy and args.grpo)):
        ap.error("give --recipe DIR, or --toy DIR and --grpo DIR")
    torch.set_num_threads(1)
    wall = time.perf_counter()
    toy, grpo = folders(args)
    recipe_seconds = time.perf_counter() - wall
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, targs, size, untrained = toy_pipe(toy)
    teacher = ARDragTransformer.from_pretrained(str(toy / "teacher" / "teacher")).eval()
    rows_spec = {
        "untrained (random start, streamed)": (causal(untrained), None),
        "teacher (bidirectional, whole clip)": (causal(teacher), teacher_clip(teacher, args.teacher_steps)),
        "causal copy of the teacher (3 steps, no distillation)": (causal(teacher), None),
        "student self_rollout, no RL": (student(toy / "self_rollout" / "student"), None),
        "student self_forcing, no RL": (student(toy / "self_forcing" / "student"), None),
        "student self_rollout + GRPO": (student(grpo / "run" / "student"), None),
    }  # fmt: skip
    bench = toy_benchmark(targs, size, args.clips, args.seed, out / "benchmark")
    results = {}
    for i, (name, (model, fn)) in enumerate(rows_spec.items()):
        print(f"[{i + 1}/{len(rows_spec)}] {name}", flush=True)
        pipe.transformer = model.eval()
        t0 = time.perf_counter()
        results[name] = evaluate(out / f"row{i}", preset=TINY, pipe=pipe, benchmark=bench, clip_fn=fn,
                                 progress=False)  # fmt: skip
        results[name]["seconds"] = time.perf_counter() - t0

    def errors(res: dict[str, Any]) -> dict[str, float]:
        return {c["id"]: c["consistency_error_px"] for c in res["clips"]
                if c["consistency_error_px"] is not None}  # fmt: skip

    base = errors(results["untrained (random start, streamed)"])
    teacher_latency = results["teacher (bidirectional, whole clip)"]["columns"]["latency"]
    rows: dict[str, Any] = {}
    for name, res in results.items():
        err = errors(res)
        ids = sorted(set(err) & set(base))
        rows[name] = {
            "error_px": mean_interval(list(err.values()), args.resamples, 0),
            "ratio_to_untrained": ratio_interval(
                [base[i] for i in ids], [err[i] for i in ids], args.resamples, 0
            ),
            "smoothness": res["columns"]["smoothness"],
            "consistency": res["columns"]["consistency"],
            "latency_s": res["columns"]["latency"],
            "latency_ratio": res["columns"]["latency"] / teacher_latency,
            "clips": len(res["clips"]),
            "errors": len(res["errors"]),
            "seconds": res["seconds"],
        }
    lines = [
        "| model | tracking error (px) [95 % interval] | / untrained [95 % interval] | smoothness | "
        "first-frame latency / teacher's |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        e, q = r["error_px"], r["ratio_to_untrained"]
        cells = [f"{e.estimate:.2f} [{e.low:.2f}, {e.high:.2f}]",
                 f"{q.estimate:.2f} [{q.low:.2f}, {q.high:.2f}]",
                 f"{r['smoothness']:.3f}", f"{r['latency_ratio']:.3f}"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    total = time.perf_counter() - wall
    print("\n" + table)
    minutes = {"recipe": recipe_seconds / 60, "evaluation": (total - recipe_seconds) / 60, "all": total / 60}
    print(f"\n{args.clips} clips of seed {args.seed}; recipe {minutes['recipe']:.1f} min (~0 when already "
          f"made), evaluation {minutes['evaluation']:.1f} min, all {minutes['all']:.1f} min")  # fmt: skip
    (out / "table.md").write_text(table + "\n")
    summary = {"rows": rows, "clips": args.clips, "seed": args.seed, "toy": str(toy), "grpo": str(grpo),
               "recipe_seconds": recipe_seconds, "seconds": total}  # fmt: skip
    (out / "table.json").write_text(json.dumps(summary, indent=1, default=dataclasses.asdict))


if __name__ == "__main__":
    main()
