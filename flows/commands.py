"""Subcommands of the ``ardrag`` CLI that run Prefect flows, registered through the ``ardrag.commands``
entry point. Building the parser imports nothing heavy; a flow module is imported only when its
command runs, so ``ardrag procedural`` and friends never pay for importing Prefect."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _local_api_defaults() -> None:
    """Settings for Prefect's temporary local API (when no PREFECT_API_URL is set): it is offline, so no
    usage telemetry (its heartbeat also contends for SQLite); on a busy 2-core machine it can take more
    than Prefect's default 20 s to start. With that local API the client's usage telemetry is off too
    (``DO_NOT_TRACK``; it would print a notice on a terminal and send to an address an offline machine
    cannot reach). ardrag's own loggers also go to the Prefect UI (extra loggers; their lines outside a
    run are for the console and the log file only). Each is a default: a value set by the user wins."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ardrag,flows,annotation")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _curate(args: argparse.Namespace) -> int:
    _local_api_defaults()
    from ardrag import console
    from ardrag.config import build_config
    from ardrag.curation.pipeline import CurationConfig, load_curation_file, source_overrides
    from ardrag.data.sources import build_source
    from ardrag.presets import preset
    from flows.curate import run

    source_config: dict[str, Any] = {}
    if args.preset:
        source_config.update(preset(args.source, args.preset))
    if args.config:
        config, from_file = load_curation_file(args.config)
        source_config.update(from_file)
    else:
        config = build_config(CurationConfig, {})
    source_config.update(source_overrides(args.source, input=args.input, num=args.num, seed=args.seed))
    origin = f"the {args.source} source's settings ({args.config}, source:)" if args.config else None
    build_source(args.source, source_config, origin)  # every setting checked before Prefect starts
    if args.auto_accept:
        config = config.model_copy(update={"auto_accept": True})
    console.log_to_file(args.out, "curate")
    summary = run(
        args.source, source_config, args.out, config.to_dict(), runner=args.runner, previews=args.previews
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['inputs']} inputs, {summary['clips']} clips curated into {args.out}")
        for group in ("states", "reasons", "buckets", "skipped_reasons"):
            print(
                f"  {group.replace('_reasons', '')}: "
                + (", ".join(f"{k} {v}" for k, v in summary[group].items()) or "none")
            )
        if args.previews:
            print(f"  previews: {args.out}/previews/ (linked from the Prefect artifact 'curation-previews')")
    return 0 if not summary["inputs_missing"] else 1


def register_curate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curate", help="run the curation flow (Prefect) over a source")
    p.add_argument("--source", required=True, choices=["procedural", "toy", "folder", "wan"])
    p.add_argument("--input", help="folder of videos (folder), or jobs file (wan)")
    p.add_argument("--num", type=int, help="number of clips (procedural)")
    p.add_argument("--seed", type=int, help="base seed (procedural)")
    p.add_argument("--preset", help="named source preset (ardrag.presets), e.g. tiny")
    p.add_argument("--out", required=True, help="curation output directory")
    p.add_argument(
        "--config", help="YAML file: CurationConfig fields, and the source's settings under 'source:'"
    )
    p.add_argument(
        "--previews", action="store_true", help="write previews/<clip>.mp4 with the control points"
    )
    p.add_argument("--runner", default=os.environ.get("ARDRAG_RUNNER", "local"), choices=["local", "dask"])
    p.add_argument("--auto-accept", action="store_true", help="accept easy clips without a person (labelled)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_curate)


def _webhook(args: argparse.Namespace) -> int:
    _local_api_defaults()
    import time

    from flows.annotate import serve_webhook

    server = serve_webhook(args.host, args.port, args.deployment)
    print(f"webhook receiver at http://{args.host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def _worker(args: argparse.Namespace) -> int:
    _local_api_defaults()
    from flows.annotate import serve_deployments

    serve_deployments(args.out, every_s=args.every)
    return 0


def register_annotate(sub: argparse._SubParsersAction) -> None:
    from annotation.cli import add_commands

    p = sub.add_parser("annotate", help="the annotation loop with Label Studio")
    commands = p.add_subparsers(dest="annotate_command", required=True, metavar="COMMAND")
    add_commands(commands)
    w = commands.add_parser(
        "webhook", help="receive Label Studio webhooks; each enqueues a pull run (Prefect)"
    )
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8765)
    w.add_argument("--deployment", default="annotation-pull/annotation-pull")
    w.set_defaults(func=_webhook)
    w = commands.add_parser(
        "worker", help="serve the push and pull deployments, pull on a schedule (Prefect)"
    )
    w.add_argument("--out", required=True, help="curation folder")
    w.add_argument("--every", type=int, default=600, help="seconds between scheduled pulls")
    w.set_defaults(func=_worker)


def _print_report(result: dict[str, Any], as_json: bool) -> None:
    """One line per stage and the report's path (the whole report is ``report.md``)."""
    if as_json:
        slim = [{k: r.get(k) for k in ("stage", "status", "key", "summary")} for r in result["stages"]]
        print(json.dumps({"stages": slim, "report": result["report"], "out": result["out"]}))
        return
    for r in result["stages"]:
        seconds = f"{r['seconds']:.0f} s" if r.get("seconds") else ""
        print(f"  {r['stage']:<11} {r['status']:<14} {seconds:>6}  {r.get('summary', '')}")
    print(f"report: {result['report']}")


def _local_annotators(mode: str) -> dict[str, Any]:
    """The annotation hooks of the local runner (:func:`ardrag.retrain.run.run_local`): the annotation
    package's own calls, without Prefect."""
    if mode == "auto":
        from annotation.auto import auto_annotate

        return {"auto": auto_annotate}
    if mode == "label-studio":
        from annotation.pull import pull
        from annotation.push import push

        return {"label-studio": lambda folder: (push(folder, progress=False), pull(folder, progress=False))}
    return {}


def _run_retrain(config: Any, local: bool) -> dict[str, Any]:
    """The stages through the Prefect flow, or with ``local`` in this process without Prefect (which
    is then never imported)."""
    if local:
        from ardrag.retrain.run import run_local

        return run_local(config, annotators=_local_annotators(config.annotation))
    _local_api_defaults()
    from flows.retrain import run

    return run(config)


def _retrain(args: argparse.Namespace) -> int:
    from ardrag import console
    from ardrag.retrain.config import load_retrain_config

    overrides = {"out": args.out} if args.out else {}
    config = load_retrain_config(args.config, overrides)
    console.log_to_file(config.root, "retrain")
    result = _run_retrain(config, args.local)
    _print_report(result, args.json)
    return 0


LOCAL_HELP = "run the stages in this process without Prefect (no API server, UI, artifacts or events)"


def register_retrain(sub: argparse._SubParsersAction) -> None:
    stages = "curation -> annotation -> dataset -> teacher -> distill -> GRPO/AR-CoPO (rl) -> eval"
    p = sub.add_parser("retrain", help=f"{stages} (Prefect; --local: without)")
    p.add_argument(
        "--config", required=True, help="YAML file parsed into RetrainConfig (ardrag.retrain.config)"
    )
    p.add_argument("--out", help="retrain folder (overrides the config's out)")
    p.add_argument("--local", action="store_true", help=LOCAL_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_retrain)


def _demo(args: argparse.Namespace) -> int:
    import time

    from ardrag import console
    from ardrag.retrain.config import DEMO, load_retrain_config

    if args.auto_annotate:
        annotation = "auto"
    else:  # hard cases go to a Label Studio that is running, else they wait for one
        annotation = "label-studio" if os.environ.get("ARDRAG_LS_URL") else "none"
    overrides = {"out": args.out, "annotation": annotation}
    t0 = time.monotonic()
    config = load_retrain_config(args.config, overrides, base=DEMO)
    console.log_to_file(config.root, "demo")
    result = _run_retrain(config, args.local)
    _print_report(result, args.json)
    if not args.json:
        print(f"demo done in {(time.monotonic() - t0) / 60:.1f} min")
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole system on embedded defaults: toy clips to evaluation, the toy model (CPU)"
    )
    p.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    p.add_argument(
        "--auto-annotate",
        action="store_true",
        help="accept hard cases without a person (labelled auto-annotated in provenance)",
    )
    p.add_argument("--config", help="YAML file over the demo's defaults (RetrainConfig fields)")
    p.add_argument("--local", action="store_true", help=LOCAL_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_demo)
