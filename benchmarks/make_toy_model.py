"""The shipped toy model, made by one command: the toy recipe's stages in order, then (``--ship``) its final
student, VAE and encoders written into the package as the ``toy`` model preset's weights.

Stages, each a run of a benchmark script in a subprocess with ``--out DIR/<stage>`` (its output in
``DIR/<stage>.log``), in this order:

1. ``vae5``: ``bench_train_toy.py --vae-only``, the toy VAE fitted on 5-frame windows;
2. ``vae``: the same VAE fitted on whole clips (``--vae-init DIR/vae5/vae``);
3. ``toy``: ``bench_train_toy.py --vae-from DIR/vae/vae``: the teacher, the ``self_rollout`` and
   ``self_forcing`` students, and their evaluation;
4. ``grpo``: ``bench_grpo_toy.py --toy DIR/toy`` (:data:`GRPO_ARGS`): GRPO from the ``self_rollout`` student.

A stage whose folder holds its ``figures.json`` is done and skipped: a killed run resumes at the stage
it was in (which starts over), and stages run by hand with the same arguments are reused. Each stage
this command runs leaves ``DIR/<stage>.json``: its command line, the git commit and the time.

``--ship`` then writes the final student (``--final``: ``grpo``, GRPO's policy, or ``self_rollout``),
the VAE the toy stage trained with, and the encoders it drew from its seed (the tiny preset's random
UMT5 and CLIP: the transformer learnt their outputs, so they are saved rather than drawn again) into
``ardrag/assets/toy`` (``--to``), a model folder (:mod:`ardrag.model.model_folder`), through a temporary
folder renamed at the end. Its ``recipe.json`` holds this command line, every stage's command and
arguments (as the stage recorded them in its ``figures.json``), the seeds, the git commit, the
generation config (the toy's 80x48, the student's timesteps, its heatmap sigma, guidance 1) and the
headline figures. The weights must stay under 20 MB (checked before writing; the sizes are printed).
``--ship-only`` runs no stage and ships what is there (e.g. ``--final self_rollout`` before GRPO ran).

    OMP_NUM_THREADS=1 python benchmarks/make_toy_model.py --out /tmp/toy_model --ship
    # a smoke test of the command, seconds per stage (its model learns nothing; never ship it):
    OMP_NUM_THREADS=1 python benchmarks/make_toy_model.py --out /tmp/toy_quick --quick --ship --to /tmp/q
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent
MAX_BYTES = 20_000_000  # the limit on the shipped weights

# (stage, script, arguments besides --out); "{out}" is the --out folder
STAGES: list[tuple[str, str, list[str]]] = [
    ("vae5", "bench_train_toy.py",
     ["--vae-only", "--vae-window", "5", "--vae-lr", "2e-4", "--vae-minutes", "120", "--vae-steps", "1300"]),
    ("vae", "bench_train_toy.py",
     ["--vae-only", "--vae-minutes", "120", "--vae-steps", "360", "--vae-init", "{out}/vae5/vae"]),
    ("toy", "bench_train_toy.py",
     ["--vae-from", "{out}/vae/vae", "--teacher-minutes", "120", "--teacher-steps", "4600",
      "--student-minutes", "120", "--student-steps", "750", "--eval-clips", "16"]),
]  # fmt: skip
# GRPO from the toy stage's self_rollout student, and where its policy is exported
GRPO_ARGS = ["--toy", "{out}/toy", "--seed", "0", "--steps", "110", "--minutes", "120"]
GRPO_POLICY = "run/student"
# --quick: every stage for seconds
QUICK: dict[str, list[str]] = {
    "vae5": ["--vae-only", "--quick"],
    "vae": ["--vae-only", "--quick", "--vae-init", "{out}/vae5/vae"],
    "toy": ["--quick", "--vae-from", "{out}/vae/vae"],
    "grpo": ["--toy", "{out}/toy", "--seed", "0", "--steps", "2", "--minutes", "2", "--clips", "2", "--group",
             "2", "--batch", "2", "--eval-clips", "1"],
}  # fmt: skip


def stages(quick: bool) -> list[tuple[str, str, list[str]]]:
    """The stages in order, with their arguments (before ``{out}`` is filled in)."""
    out = [*STAGES, ("grpo", "bench_grpo_toy.py", GRPO_ARGS)]
    return [(name, script, QUICK[name] if quick else args) for name, script, args in out]


def git_commit() -> dict[str, Any]:
    """The checkout's commit, and whether tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def run_stage(out: Path, name: str, script: str, args: list[str]) -> None:
    """One stage in a subprocess (its output in ``<out>/<name>.log``), then its record ``<name>.json``."""
    argv = [sys.executable, str(BENCHMARKS / script), "--out", str(out / name), *args]
    log = out / f"{name}.log"
    print(f"{name}: started ({shlex.join(argv[1:])}); log {log}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0, started = time.monotonic(), datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with log.open("w") as f:
        done = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not (out / name / "figures.json").is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"{name}: failed with exit code {done.returncode}; the end of {log}:\n{tail}")
    record = {"argv": ["python", f"benchmarks/{script}", *argv[2:]], **git_commit(), "started": started,
              "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{name}: done in {record['seconds'] / 60:.1f} min", flush=True)


def figures(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "figures.json").read_text())


def final_student(out: Path, final: str) -> Path:
    """The student to ship: GRPO's policy or the toy stage's ``self_rollout`` student."""
    if final == "grpo":
        if not (out / "grpo" / "figures.json").is_file():
            sys.exit(f"--final grpo: the GRPO stage has not run in {out} (or give --final self_rollout)")
        path = out / "grpo" / GRPO_POLICY
    else:
        path = out / "toy" / "self_rollout" / "student"
    if not (path / "config.json").is_file():
        sys.exit(f"{path}: no exported student there")
    return path


def recipe(out: Path, final: str, student: Path, argv: list[str], quick: bool) -> dict[str, Any]:
    """What ``recipe.json`` records besides the generation config: commands, arguments, seeds, commit,
    headline figures."""
    import yaml

    from ardrag.presets import TOY

    toy = figures(out, "toy")
    entries = []
    for name, script, args in stages(quick):
        if not (out / name / "figures.json").is_file():
            continue
        record = out / f"{name}.json"
        entries.append({
            "stage": name,
            "command": shlex.join(["python", f"benchmarks/{script}", "--out", f"DIR/{name}",
                                   *(a.replace("{out}", "DIR") for a in args)]),
            "args": figures(out, name)["args"],  # as the stage ran them
            "run": json.loads(record.read_text()) if record.is_file() else "run outside make_toy_model.py",
        })  # fmt: skip
    run_config = yaml.safe_load((student.parent / "config.yaml").read_text())
    tracking = {row: {"mean_px": r["mean_px"], "median_px": r["median_px"], "pairs": r["pairs"]}
                for row, r in toy["tracking"].items()}  # fmt: skip
    vae = toy["vae"]  # the toy stage's VAE: held-out PSNR of a random one and of the fitted one
    heads = {
        "vae_psnr_db": {"held-out, random": vae.get("psnr_before"), "fitted": vae.get("psnr_after")},
        "tracking_px": {"clips": toy["args"]["eval_clips"], "held-out seed": toy["args"]["seed"] + 1,
                        "rows": tracking},
        "teacher_control_dependence": toy["teacher"].get("control_dependence"),
    }  # fmt: skip
    if (out / "grpo" / "figures.json").is_file():
        g = figures(out, "grpo")
        heads["grpo"] = {"steps": g.get("steps"), "before_after": g.get("before_after")}
    seeds = {
        "toy run (training clips, encoders, transformer and VAE init)": toy["args"]["seed"],
        "held-out clips": toy["args"]["seed"] + 1,
    }
    if (out / "grpo" / "figures.json").is_file():
        seeds["grpo"] = figures(out, "grpo")["args"].get("seed")
    return {
        "preset": TOY,
        "made_by": shlex.join(["python", "benchmarks/make_toy_model.py", *argv]),
        **git_commit(),
        "shipped": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "final": final,
        "student": str(student.relative_to(out)),
        "student_run_config": run_config,
        "stages": entries,
        "seeds": seeds,
        "figures": heads,
    }


def ship(out: Path, to: Path, final: str, argv: list[str], quick: bool) -> None:
    """Write the final student, the toy's VAE and encoders and ``recipe.json`` into the model folder
    ``to``; print the sizes."""
    import torch
    from diffusers import AutoencoderKLWan

    from ardrag.data.heatmap import HeatmapConfig
    from ardrag.model.model_folder import save_model_folder
    from ardrag.model.pipeline import ARDragPipeline, GenerationConfig
    from ardrag.model.tiny import build_tiny_pipeline
    from ardrag.model.transformer_ardrag import CausalARDragTransformer
    from ardrag.presets import TOY

    toy = figures(out, "toy")
    student = final_student(out, final)
    wan = build_tiny_pipeline(toy["args"]["seed"], TOY)  # the encoders the toy run drew (build_models)
    wan.vae = AutoencoderKLWan.from_pretrained(str(out / "toy" / "vae")).eval()  # the VAE it trained with
    wan.transformer = CausalARDragTransformer.from_pretrained(str(student)).eval()
    rec = recipe(out, final, student, argv, quick)
    run = rec["student_run_config"]  # the student's sampler: GRPO's schedule, else the distillation's
    own = run.get("grpo", {}).get("timesteps") if final == "grpo" else None
    timesteps = own or run["distill"]["timesteps"]
    height, width = toy["size"]
    generation = GenerationConfig(
        height=height, width=width, timesteps=timesteps, guidance_scale=1.0,
        heatmap=HeatmapConfig(sigma=toy["args"]["heatmap_sigma"]),
        buckets=None,  # trained at this one size: it renders there, not at the paper's buckets
    )  # fmt: skip
    pipe = ARDragPipeline(wan, wan.transformer, generation)
    modules = (wan.transformer, wan.vae, wan.text_encoder, wan.image_encoder)
    weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
    if weights > MAX_BYTES:
        sys.exit(f"the weights are {weights / 1e6:.1f} MB, over the limit of {MAX_BYTES / 1e6:.0f} MB")
    with torch.no_grad():
        save_model_folder(to, pipe, rec)
    sizes = {str(p.relative_to(to)): p.stat().st_size for p in sorted(to.rglob("*")) if p.is_file()}
    for path, size in sizes.items():
        print(f"  {size / 1e6:8.3f} MB  {path}")
    total = sum(sizes.values())
    print(f"shipped {student} ({final}) into {to}: {total / 1e6:.2f} MB in {len(sizes)} files")
    if quick:
        print("this is a --quick run's model: it learns nothing; do not commit it", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    from ardrag.presets import ASSETS, TOY, preset

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the stages' folders (vae5, vae, toy, grpo) and logs")
    ap.add_argument("--ship", action="store_true", help="write the final model into the package (--to)")
    ap.add_argument("--final", choices=("grpo", "self_rollout"), default="grpo", help="the student to ship")
    shipped = ASSETS / preset("model", TOY)["weights"]
    ap.add_argument("--to", default=str(shipped), help=f"the model folder to write (default {shipped})")
    ap.add_argument("--quick", action="store_true", help="seconds per stage: a smoke test (never ship it)")
    ap.add_argument("--ship-only", action="store_true", help="run no stage: ship what the stages made")
    args = ap.parse_args(argv)
    if args.ship_only and not args.ship:
        ap.error("--ship-only needs --ship")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for name, script, stage_args in stages(args.quick):
        if (out / name / "figures.json").is_file():
            print(f"{name}: done already ({out / name / 'figures.json'}), skipped", flush=True)
            continue
        if args.ship_only:
            print(f"{name}: not run (--ship-only)", flush=True)
            continue
        run_stage(out, name, script, [a.replace("{out}", str(out)) for a in stage_args])
    print(f"stages done in {(time.monotonic() - t0) / 60:.1f} min: {out}", flush=True)
    if args.ship:
        ship(out, Path(args.to).resolve(), args.final, argv, args.quick)


if __name__ == "__main__":
    main()
