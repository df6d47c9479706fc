"""``ardrag annotate serve|push|pull|status``: the same library calls the annotation flows make.

Added to the ``annotate`` parser by ``flows/commands.py`` (which adds the Prefect-side ``webhook`` and
``worker`` commands); nothing here imports Prefect.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Any:
    from annotation.settings import AnnotationSettings

    overrides = {"url": args.url, "data_dir": args.data_dir}
    return AnnotationSettings(**{k: v for k, v in overrides.items() if v is not None})


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from annotation.server import LabelStudioServer, ensure_environment

    settings = _settings(args)
    if args.install_only:
        print(ensure_environment(settings))
        return 0
    server = LabelStudioServer(settings, host=args.host, port=args.port)
    server.start()
    signal.signal(signal.SIGTERM, _interrupt)  # stop the server on the way out, as for Ctrl-C
    try:
        server.wait_until_ready()
        print(
            f"Label Studio is up at {server.url} "
            f"(user and token: {settings.credentials_file} or ARDRAG_LS_TOKEN)",
            flush=True,
        )
        server.wait()  # returns only by raising ServerError (exit code or signal, the log's tail)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a requested stop
        pass
    finally:
        server.stop()
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, default=str))
        return
    for key, value in report.items():
        print(f"  {key}: {value}")


def _push(args: argparse.Namespace) -> int:
    from annotation.push import push
    from ardrag import console

    console.log_to_file(args.out, "annotate-push")
    _print(push(args.out, _settings(args), progress=not args.json), args.json)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from annotation.pull import pull
    from ardrag import console

    console.log_to_file(args.out, "annotate-pull")
    _print(pull(args.out, _settings(args), progress=not args.json), args.json)
    return 0


def _status(args: argparse.Namespace) -> int:
    from annotation.status import status

    _print(status(args.out, _settings(args)), args.json)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, out: bool = True) -> None:
        p.add_argument("--url", help="Label Studio address (default $ARDRAG_LS_URL or http://127.0.0.1:8080)")
        p.add_argument("--data-dir", help="ardrag data directory (default $ARDRAG_DATA_DIR or ./data)")
        if out:
            p.add_argument("--out", required=True, help="curation folder (as written by `ardrag curate`)")
            p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("serve", help="start Label Studio (own venv, loopback, generated secrets)")
    common(p, out=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, help="port (default: the one in --url)")
    p.add_argument("--install-only", action="store_true", help="create the server's venv and exit")
    p.set_defaults(func=_serve)

    p = sub.add_parser("push", help="create tasks for the samples waiting for a person")
    common(p)
    p.set_defaults(func=_push)

    p = sub.add_parser("pull", help="turn finished annotations into reviews and shards")
    common(p)
    p.set_defaults(func=_pull)

    p = sub.add_parser("status", help="what waits, what is done, what the server holds")
    common(p)
    p.set_defaults(func=_status)
