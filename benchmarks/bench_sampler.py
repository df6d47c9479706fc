"""Which sampler to deploy: the toy students' tracking error with the re-noising sampler and with the flow
ODE's Euler step, on clips they trained on.

``ardrag.inference.sampler`` defines both kinds (``GenerationConfig.sampler``): ``renoise`` re-noises each
step's prediction of the clean frame with fresh noise to the next level, as distillation's rollouts do;
``ode`` steps x + (s' - s) v, i.e. re-noises with the model's own noise estimate. The choice is made on
the toy's **training** clips (--clips of seed 0, the recipe's training seed), never on held-out ones, so
that the held-out figures of GRPO and Table 2 stay untouched by it.

Each student of a ``bench_train_toy.py`` run (--toy: ``self_rollout``, ``self_forcing``) streams every clip
through ``ardrag eval``'s code path (``StreamSession``, seed 0, the metric tracker) once per kind; the
figures are the mean tracking error with its bootstrap 95 % interval and the paired difference
``renoise - ode`` with its interval (``compare_eval.compare``). Writes ``figures.json`` to --out.

    OMP_NUM_THREADS=1 python benchmarks/bench_sampler.py --toy /tmp/toy_recipe/toy --out /tmp/sampler
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from common import evaluate_models, toy_benchmark, toy_pipe
from compare_eval import compare

from ardrag.model.transformer_ardrag import CausalARDragTransformer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", required=True, help="bench_train_toy.py's output folder")
    ap.add_argument("--out", default="/tmp/bench_sampler")
    ap.add_argument("--clips", type=int, default=16, help="the first N training clips")
    ap.add_argument("--resamples", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    toy, out = Path(args.toy), Path(args.out)
    pipe, targs, size, _ = toy_pipe(toy)
    bench = toy_benchmark(targs, size, args.clips, targs.seed, out / "benchmark")
    config, figures = pipe.config, {"clips": args.clips, "seed": targs.seed, "toy": str(toy), "students": {}}
    print(f"{args.clips} training clips (seed {targs.seed}); tracking error (px), mean [95 % interval]")
    for mode in ("self_rollout", "self_forcing"):
        model = CausalARDragTransformer.from_pretrained(str(toy / mode / "student"))
        results = {}
        for kind in ("renoise", "ode"):
            pipe.config = config.model_copy(update={"sampler": kind})
            results[kind] = evaluate_models(pipe, {kind: model}, bench, out / mode)[kind]
        pipe.config = config
        c = compare(results["ode"], results["renoise"], args.resamples, 0)["consistency_error_px"]
        figures["students"][mode] = c
        o, r, d = c["before"], c["after"], c["after - before"]
        print(f"  {mode:13s} ode {o.estimate:.2f} [{o.low:.2f}, {o.high:.2f}]  renoise {r.estimate:.2f} "
              f"[{r.low:.2f}, {r.high:.2f}]  renoise - ode {d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}]: "
              f"{c['change']}", flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=dataclasses.asdict))


if __name__ == "__main__":
    main()
