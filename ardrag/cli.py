"""The ``ardrag`` command. Subcommands call the same library functions the flows call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points

from ardrag import __version__, console
from ardrag.errors import ArdragError
from ardrag.presets import DEFAULT_WAN
from ardrag.training.stages import STAGES

VERBOSE_HELP = "every log line on the console too (Prefect, httpx, libraries), not only in the run's log file"


def _procedural(args: argparse.Namespace) -> int:
    from ardrag.config import datasets_dir, load_config, merge, read_config_file
    from ardrag.data.build import ShardConfig, existing_dataset, write_dataset
    from ardrag.data.sources.procedural import ProceduralConfig, ProceduralSource
    from ardrag.presets import preset

    overrides = {"num_clips": args.num, "seed": args.seed, "num_frames": args.frames}
    base = preset("procedural", args.preset)
    if args.config is None:  # the preset adjusts the project's default dataset definition
        default = datasets_dir() / "procedural.yaml"
        config = load_config(ProceduralConfig, None, overrides, base=merge(read_config_file(default), base),
                             source=str(default))  # fmt: skip
    else:
        config = load_config(ProceduralConfig, args.config, overrides, base=base)
    shards = ShardConfig(shard_samples=args.shard_samples)
    console.log_to_file(args.out, "procedural")
    if not args.overwrite and (manifest := existing_dataset(args.out, config, shards)) is not None:
        logging.getLogger("ardrag").info(
            "%s already holds this dataset (version %s): nothing to do", args.out, manifest["version"]
        )
    else:
        source = ProceduralSource(config)
        manifest = write_dataset(
            source.samples(),
            args.out,
            config,
            shards=shards,
            name="procedural",
            total=len(source),
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    summary = {k: manifest[k] for k in ("name", "version", "samples", "buckets")}
    summary["shards"] = len(manifest["shards"])
    summary["out"] = str(args.out)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['samples']} samples in {summary['shards']} shards at {args.out} "
            f"(version {summary['version']})"
        )
        for bucket, count in summary["buckets"].items():
            print(f"  {bucket:>8}  {count}")
    return 0


def _shards_inspect(args: argparse.Namespace) -> int:
    from ardrag.data.inspect import inspect_dataset

    report = inspect_dataset(args.dir, verify_hashes=not args.fast)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"dataset {report['name']!r} at {report['root']}, version {report['version']}")
        print(
            f"  {report['samples']} readable samples (manifest: {report['manifest_samples']}) "
            f"in {report['shards']} shards"
        )
        for bucket, count in report["buckets"].items():
            print(f"  {bucket:>8}  {count}")
        for p in report["problems"]:
            print(f"  problem: {p['shard']}: {p['reason']}")
    return 1 if report["problems"] else 0


def _generate(args: argparse.Namespace) -> int:
    from ardrag.inference.generate import generate

    summary = generate(
        args.ref,
        args.traj,
        args.prompt,
        args.out,
        preset=args.preset,
        checkpoint=args.checkpoint,
        model=args.model,
        overlay=args.overlay,
        seed=args.seed,
        size=args.size,
        device=args.device,
        dtype=args.dtype,
        sink=args.sink,
        prompt_schedule=args.prompt_schedule,
        progress=not args.json,
    )
    print(json.dumps(summary) if args.json else f"{summary['frames']} frames written to {summary['out']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ardrag.training.run import resolve_config, train

    overrides = {"run_dir": args.run_dir, "steps": args.steps}
    config = resolve_config(
        args.stage, args.config, args.preset, {k: v for k, v in overrides.items() if v is not None}
    )
    from ardrag.training.parallel import exit_process, shutdown_distributed

    rank = os.environ.get("RANK", "0")  # torchrun: a log file per process
    console.log_to_file(config.run_dir, f"train-{args.stage}" + ("" if rank == "0" else f"-rank{rank}"))

    summary = train(config, resume=args.resume, progress=not (args.json or args.quiet))
    # after success only: a failed process exits, and torchrun stops the others
    distributed = shutdown_distributed()
    if summary["export"] is None:  # not rank 0 under torchrun
        exit_process(0)
    if args.json:
        print(json.dumps(summary))
    else:
        last = summary["last"] or {}
        losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.endswith("loss"))
        print(f"{summary['stage']}: {summary['steps']} steps ({losses}); model in {summary['export']}")
    if distributed:
        exit_process(0)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ardrag.evaluation.run import evaluate

    console.log_to_file(args.out, "eval")
    results = evaluate(
        args.out, preset=args.preset, checkpoint=args.checkpoint, model=args.model, benchmark=args.benchmark,
        inception=args.inception, i3d=args.i3d, aesthetic_clip=args.aesthetic_clip,
        aesthetic_head=args.aesthetic_head, seed=args.seed, device=args.device, dtype=args.dtype,
        progress=not args.json,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"columns": results["columns"], "clips": len(results["clips"]),
                          "errors": results["errors"], "out": args.out}))  # fmt: skip
    else:
        cols = ", ".join(
            f"{k} {v:.4g}" if v is not None else f"{k} n/a" for k, v in results["columns"].items()
        )
        n, bad = len(results["clips"]), len(results["errors"])
        print(f"{n} clips ({bad} with errors): {cols}; see {args.out}/results.md")
    return 0


def _add_device_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``; their defaults are resolved by ardrag.model.device (not here, so that
    ``--help`` costs no torch import)."""
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is present, else cpu)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="weights and activations (default: bfloat16 on a GPU, float32 on a CPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ardrag", description="AR-Drag: drag-controllable autoregressive video generation and its data."
    )
    parser.add_argument("--version", action="version", version=f"ardrag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("procedural", help="write a sharded dataset of procedural clips with known motion")
    p.add_argument("--num", type=int, help="number of clips (default: from the config)")
    p.add_argument("--out", required=True, help="dataset directory")
    p.add_argument("--seed", type=int, help="base seed (clip i uses seed and i)")
    p.add_argument("--frames", type=int, help="frames per clip")
    p.add_argument("--preset", default="default", help="named preset (ardrag.presets): default, tiny")
    p.add_argument(
        "--config", help="YAML file parsed into ProceduralConfig (default datasets/procedural.yaml)"
    )
    p.add_argument("--shard-samples", type=int, default=64, help="samples per shard (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_procedural)

    shards = sub.add_parser("shards", help="sharded datasets").add_subparsers(
        dest="shards_command", required=True, metavar="COMMAND"
    )
    p = shards.add_parser("inspect", help="count samples per bucket and list damaged shards (exit 1 if any)")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fast", action="store_true", help="skip sha256 verification")
    p.set_defaults(func=_shards_inspect)

    p = sub.add_parser("generate", help="image + drag trajectory + prompt -> video (the causal student)")
    p.add_argument("--ref", required=True, help="reference image (PNG, JPEG, ...)")
    p.add_argument("--traj", required=True, help="trajectory JSON (see the README)")
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--out", required=True, help="mp4 to write")
    p.add_argument(
        "--preset", help="a model preset, offline: tiny (random weights) or toy (the shipped trained model)"
    )
    p.add_argument(
        "--checkpoint",
        help="folder of a trained ardrag transformer (default: Wan's with zero controls, or the preset's)",
    )
    p.add_argument(
        "--model", default=DEFAULT_WAN, help=f"Wan I2V hub id, model preset or folder (default {DEFAULT_WAN})"
    )
    p.add_argument("--overlay", action="store_true", help="also write <out>.overlay.mp4 with the drag drawn")
    p.add_argument(
        "--size",
        metavar="WxH",
        help="render at this size, multiples of 16 (default: the model's bucket nearest the image's aspect)",
    )
    p.add_argument(
        "--sink",
        type=int,
        metavar="N",
        help="pin the first N latent frames in the KV cache beside the rolling window, for long streams "
        "(default: the model's attention_sink, 0 unless it sets one)",
    )
    p.add_argument(
        "--prompt-schedule",
        metavar="FILE",
        help='step-wise prompts, a JSON list [{"frame": n, "text": "...", "mode": "recache"|"keep"}], in '
        "place of the trajectory's prompts: each from the latent frame holding its pixel frame",
    )
    _add_device_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_generate)

    p = sub.add_parser("eval", help="generate a benchmark's clips and score the paper's six metrics")
    p.add_argument("--out", required=True, help="folder for results.json, results.md, grid.mp4")
    p.add_argument(
        "--preset", help="a model preset (tiny: random; toy: the shipped toy model); random metric networks"
    )
    p.add_argument("--checkpoint", help="folder of a trained ardrag student")
    p.add_argument("--model", help="Wan I2V hub id or folder (encoders, VAE)")
    p.add_argument(
        "--benchmark", help="benchmark.jsonl or its folder (default: datasets/eval/procedural.yaml)"
    )
    p.add_argument("--inception", help="Inception-v3 FID weights (.pth), local path")
    p.add_argument("--i3d", help="I3D Kinetics-400 weights (rgb_imagenet.pt), local path")
    p.add_argument("--aesthetic-clip", help="CLIP ViT-L/14 folder for the aesthetic score")
    p.add_argument("--aesthetic-head", help="LAION aesthetic MLP weights (.pth / .safetensors)")
    _add_device_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "train", help="retrain: teacher fine-tune, distillation, GRPO (torchrun for several processes)"
    )
    p.add_argument("stage", choices=list(STAGES), help="a stage of the registry (ardrag.training.stages)")
    p.add_argument("--config", help="YAML file parsed into TrainConfig (ardrag.training.config)")
    p.add_argument(
        "--preset", help="a training preset: tiny (random tiny models, procedural data, a few steps on CPU)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--run-dir", help="run folder (checkpoints, logs, exported model)")
    p.add_argument("--steps", type=int, help="train to this step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    # Commands of the layers above the library (flows, annotation) register themselves through the
    # "ardrag.commands" entry point group, so the library never imports Prefect or Label Studio.
    for ep in sorted(entry_points(group="ardrag.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as err:
            hint = f"'ardrag {ep.name}' needs {err.name}, an optional extra: pip install ardrag[all]"
            p = sub.add_parser(ep.name, help=f"(unavailable: {err.name} is not installed)")
            p.set_defaults(func=lambda _args, hint=hint: _unavailable(hint))
            continue
        register(sub)
    return parser


def _unavailable(hint: str) -> int:
    print(f"ardrag: error: {hint}", file=sys.stderr)
    return 2


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` after any subcommand too (``ardrag demo --verbose``), as well as before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--verbose" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
                    )
                _add_verbose(sub)


def _stopped(*_: object) -> None:
    """SIGTERM as Ctrl-C: the process unwinds and exits normally, so exit handlers run (Prefect's
    temporary API server is stopped by one; killed outright, it outlived the command)."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _add_verbose(parser)
    args = parser.parse_args(argv)
    console.setup(verbose=args.verbose)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stopped)
    try:
        return args.func(args)
    except (ArdragError, ValueError) as err:
        if args.verbose:
            raise
        print(f"ardrag: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: exit cleanly, so that what the run started stops
        print("ardrag: stopped", file=sys.stderr)
        return 130
    finally:
        for line in console.closing_lines():
            print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
