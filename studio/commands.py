"""``ardrag studio``: registered through the ``ardrag.commands`` entry point (the library never imports
the web stack). Building the parser imports nothing heavy; the server and the model load when it runs."""

from __future__ import annotations

import argparse
import shlex
import socket
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio", help="drag in a browser and watch the video stream (a local web page, one model queue)"
    )
    p.add_argument("--preset", help="model preset: toy (default: the shipped toy model) or tiny (random)")
    p.add_argument(
        "--checkpoint", help="a student checkpoint folder (with --model, or replacing the preset's)"
    )
    p.add_argument("--model", help="the Wan I2V model (hub id or folder) for --checkpoint; no preset then")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when present)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; warned otherwise)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--seed", type=int, default=0, help="the streams' noise seed (a replay uses it)")
    p.add_argument("--max-sessions", type=int, default=8, help="browser sessions at once (default 8)")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="close a session idle this many s")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload in MiB")
    p.add_argument("--max-frames", type=int, default=2001, help="frames per stream (default 2001)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up step at start-up")
    p.add_argument("--log-dir", default="runs/studio", help="folder for the log file (default runs/studio)")
    p.set_defaults(func=_studio)


def _studio(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from ardrag import console
    from ardrag.config import build_config
    from ardrag.inference.generate import load_pipeline
    from ardrag.presets import DEFAULT_WAN, TOY
    from studio.server import Studio, create_app
    from studio.settings import StudioSettings

    log = logging.getLogger("ardrag.studio")
    preset = args.preset if args.preset or args.model else TOY
    settings = build_config(StudioSettings, {
        "host": args.host, "port": args.port, "preset": preset, "checkpoint": args.checkpoint,
        "model": args.model, "device": args.device, "seed": args.seed, "max_sessions": args.max_sessions,
        "idle_timeout_s": args.idle_timeout, "max_upload_bytes": int(args.max_upload_mb * 2**20),
        "max_frames": args.max_frames, "warmup": not args.no_warmup,
    }, "ardrag studio's options")  # fmt: skip
    console.log_to_file(args.log_dir, "studio")
    if not settings.loopback:
        log.warning(
            "binding to %s: anyone who can reach this address can use the studio and its model (there is "
            "no login); use the default 127.0.0.1 unless that is what you want",
            settings.host,
        )
    model = settings.model or DEFAULT_WAN
    pipe = load_pipeline(settings.preset, settings.checkpoint, model, settings.seed, settings.device)
    if settings.preset is not None:
        name, model_args = settings.preset, f"--preset {settings.preset}"
        if settings.checkpoint:
            model_args += f" --checkpoint {shlex.quote(settings.checkpoint)}"
    else:
        name = settings.checkpoint or model
        model_args = f"--model {shlex.quote(model)}"
        if settings.checkpoint:
            model_args += f" --checkpoint {shlex.quote(settings.checkpoint)}"
    model_args += f" --device {pipe.device}"
    studio = Studio(settings, pipe, name, model_args)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as err:
        from ardrag.errors import ConfigError

        raise ConfigError(
            f"--host {settings.host} --port {settings.port}: cannot bind ({err.strerror})"
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"ardrag studio: http://{shown}:{port} ({name} on {pipe.device}; Ctrl-C stops it)", file=sys.stderr,
          flush=True)  # fmt: skip
    config = uvicorn.Config(
        create_app(studio),
        log_level="warning",
        access_log=False,
        ws_max_size=2**20,
        log_config=None,
        timeout_graceful_shutdown=5,  # open pages do not hold Ctrl-C up
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0
