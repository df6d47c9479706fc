"""The paper's Table 2 ablation rows at toy scale on CPU: teacher, student without RL, student with RL,
student distilled with ``self_forcing`` instead of ``self_rollout``.

Models come from the toy runs (nothing is trained here):

- ``--toy``: the output folder of ``benchmarks/bench_train_toy.py``: the fitted tiny VAE, the trained
  teacher (``teacher/teacher``), the students distilled with ``self_rollout`` and ``self_forcing``;
- ``--grpo``: the output folder of ``benchmarks/bench_grpo_toy.py``: the ``self_rollout`` student after
  GRPO (``run/student``).

Each row is ``ardrag.evaluation.run.evaluate`` on the procedural evaluation set of
``datasets/eval/procedural.yaml`` (held-out seed, 17 frames, sprites moving 8-24 px per frame at 640x368),
at the toy resolution 80x48, with the tiny preset's encoders and the fitted VAE. The students stream
(3 steps); the teacher samples the whole clip (``sample_clip``, --teacher-steps Euler steps, guidance
1, as it was trained), so its latency is the whole clip's. Metric networks are the tiny random ones (as
``ardrag eval --preset tiny``): FID and FVD then measure distances in a random feature space and the
aesthetic column is a random head's output, so only consistency (opencv tracking of the dragged points),
smoothness and latency mean what their names say. Prints one markdown table, writes ``table.md``,
``table.json`` and each row's ``results.json`` / ``grid.mp4`` under --out.

    OMP_NUM_THREADS=1 python benchmarks/bench_table2_toy.py --toy /tmp/toy --grpo /tmp/grpo_toy \
        --out /tmp/table2 [--teacher-steps 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from ardrag.evaluation.run import evaluate
from ardrag.inference.teacher import sample_clip
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer
from ardrag.presets import TINY


def toy_pipeline(vae_dir: Path, student: CausalARDragTransformer) -> ARDragPipeline:
    pipe = ARDragPipeline.tiny(0, height=48, width=80)
    pipe.wan.vae = AutoencoderKLWan.from_pretrained(str(vae_dir)).eval()
    pipe.transformer = student.eval()
    return pipe


def teacher_clip(teacher: ARDragTransformer, steps: int) -> Any:
    def run(pipe: ARDragPipeline, image: np.ndarray, trajectory: Any, prompt: str, seed: int = 0):
        t0 = time.perf_counter()
        video = sample_clip(pipe, teacher, image, prompt, trajectory.tracks, trajectory.visible,
                            trajectory.intensity, steps=steps, guidance_scale=1.0, seed=seed)  # fmt: skip
        return video, time.perf_counter() - t0  # the teacher's first frame exists only at the end

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", required=True, help="output folder of bench_train_toy.py")
    ap.add_argument("--grpo", required=True, help="output folder of bench_grpo_toy.py")
    ap.add_argument("--out", default="/tmp/bench_table2_toy")
    ap.add_argument("--teacher-steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    toy, out = Path(args.toy), Path(args.out)
    paths = {
        "teacher": toy / "teacher" / "teacher",
        "student w/o RL (self_rollout)": toy / "self_rollout" / "student",
        "student with RL (self_rollout + GRPO)": Path(args.grpo) / "run" / "student",
        "student w/o Self-Rollout (self_forcing, no RL)": toy / "self_forcing" / "student",
    }
    for path in [toy / "vae", *paths.values()]:
        if not path.is_dir():
            ap.error(f"{path} is missing: run bench_train_toy.py and bench_grpo_toy.py first")
    rows, wall = {}, time.perf_counter()
    for i, (name, path) in enumerate(paths.items()):
        t0 = time.perf_counter()
        if name == "teacher":
            teacher = ARDragTransformer.from_pretrained(str(path)).eval()
            causal = CausalARDragTransformer.from_config(teacher.config)
            causal.load_state_dict(teacher.state_dict())
            pipe, fn = toy_pipeline(toy / "vae", causal), teacher_clip(teacher, args.teacher_steps)
        else:
            pipe, fn = toy_pipeline(toy / "vae", CausalARDragTransformer.from_pretrained(str(path))), None
        print(f"[{i + 1}/{len(paths)}] {name}", flush=True)
        res = evaluate(out / f"row{i}", preset=TINY, pipe=pipe, clip_fn=fn, progress=False)
        rows[name] = {**res["columns"], "error_px": res["consistency_error_px"], "clips": len(res["clips"]),
                      "errors": len(res["errors"]), "seconds": time.perf_counter() - t0}  # fmt: skip
    head = "| model | latency (s) | FID* | FVD* | aesthetic* | smoothness | consistency (1-5) | error (px) |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        cells = [f"{r['latency']:.3f}", f"{r['fid']:.1f}", f"{r['fvd']:.2f}", f"{r['aesthetic']:.3f}",
                 f"{r['smoothness']:.3f}", f"{r['consistency']:.3f}", f"{r['error_px']:.2f}"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    print("\n* tiny random metric networks: not a judgement of quality (see the docstring)")
    print(f"wall time: {(time.perf_counter() - wall) / 60:.1f} min")
    (out / "table.md").write_text(table + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
