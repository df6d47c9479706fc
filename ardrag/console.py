"""What a person sees on the console, and where the rest goes.

The console shows ardrag's own lines (loggers ``ardrag``, ``flows``, ``annotation``: a line per stage
start and end, warnings, the summary), errors from anywhere, and ``tqdm`` progress bars for the long
loops. Everything else (Prefect's engine lines, ``httpx`` request lines, library warnings) goes to the
run's log file, ``<run folder>/logs/<command>-<time>.log``, which the command names at its end;
``--verbose`` puts it all on the console too. Prefect's UI receives ardrag's lines through
``PREFECT_LOGGING_EXTRA_LOGGERS`` (:mod:`flows.commands`).

Progress bars go to stderr, and only when stderr is a terminal: in a pipe or a CI log each long loop
writes plain lines instead: at the half and at the end, and in between whenever ``PLAIN_EVERY_S``
(10 minutes) passed since the last one, so a long run still shows it is alive.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

SHOWN = ("ardrag", "flows", "annotation")  # the loggers whose INFO lines a person sees
PLAIN_EVERY_S = 600.0  # off a terminal, a progress line at least this often (and at the half and the end)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)


def is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only then)."""
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return False


def _ours(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in SHOWN)


class _ConsoleFilter(logging.Filter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.ERROR:
            return True
        return _ours(record.name) and record.levelno >= logging.INFO


class ConsoleHandler(logging.Handler):
    """Writes through ``tqdm.write`` so that a line does not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    """``12:00:01 message`` for ardrag's INFO lines; level and logger name for the rest."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self.full = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and _ours(record.name):
            return super().format(record)
        return self.full.format(record)


class WarningCounter(logging.Handler):
    """Counts the library warnings that went to the log file only."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hidden = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and not _ours(record.name):
            self.hidden += 1


_state: dict[str, Any] = {"verbose": False, "file": None, "counter": None, "setup": False, "routed": False}


def setup(verbose: bool = False) -> None:
    """Console logging for a command: call before Prefect is imported (Prefect then keeps these
    handlers and adds no console of its own). Python warnings are logged too (``py.warnings``)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, (ConsoleHandler, WarningCounter)):
            root.removeHandler(h)
    root.setLevel(logging.INFO)  # libraries' INFO lines (httpx, Prefect) go to the log file
    for name in SHOWN:  # ardrag's DEBUG lines too (on the console with --verbose)
        logging.getLogger(name).setLevel(logging.DEBUG)
    console = ConsoleHandler()
    console.addFilter(_ConsoleFilter(verbose))
    console.setFormatter(_ConsoleFormatter())
    counter = WarningCounter()
    root.addHandler(console)
    root.addHandler(counter)
    logging.captureWarnings(True)
    _state.update(verbose=verbose, counter=counter, setup=True)


def route_library_logs() -> None:
    """Send the logs of transformers and diffusers, which print on handlers of their own, through the
    root logger instead (to the log file; to the console with ``--verbose``), and turn off their progress
    bars (loading and saving weights: seconds at most here). Does nothing unless a command set up the
    console (:func:`setup`), so a library user's logging is left alone. Called by the modules that load
    those libraries' models, before the imports that may warn (importing the libraries here would cost
    every command seconds)."""
    if not _state["setup"] or _state["routed"]:
        return
    for name in ("transformers", "diffusers"):
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(f"{name}.utils.logging")
            module.disable_default_handler()
            module.enable_propagation()
            module.disable_progress_bar()
    _state["routed"] = True


def log_to_file(folder: str | os.PathLike[str], command: str) -> Path:
    """Everything logged from now on also goes to ``<folder>/logs/<command>-<time>.log``; returns its
    path. A second call moves the file (one per command run)."""
    root = logging.getLogger()
    if (old := _state["file"]) is not None:
        root.removeHandler(old)
        old.close()
    path = Path(folder) / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    _state["file"] = handler
    return path


def log_file() -> Path | None:
    """The current run's log file, if :func:`log_to_file` was called."""
    handler = _state["file"]
    return Path(handler.baseFilename) if handler is not None else None


def closing_lines() -> list[str]:
    """What the command prints last: where the full log is, and how many library warnings it holds."""
    path = log_file()
    if path is None:
        return []
    hidden = _state["counter"].hidden if _state["counter"] is not None and not _state["verbose"] else 0
    extra = f" ({hidden} library warning{'s' if hidden > 1 else ''} in it)" if hidden else ""
    return [f"full log: {path}{extra}"]


class Progress:
    """A progress bar on a terminal (``tqdm``, on stderr), a few plain log lines elsewhere, nothing when
    ``enabled`` is false. Iterate over it, or call :meth:`update`; :meth:`set_postfix` adds figures."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.postfix = initial, ""
        self.logger = logger or log
        self.bar = None
        self._marks: list[int] = []
        self._plain = False
        self._last = time.monotonic()
        if enabled and is_terminal():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
        elif enabled:
            self._plain = True
            if total:
                self._marks = [m for m in sorted({max(1, round(total / 2)), total}) if m > initial]

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "Progress without an iterable: call update()"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        if not self._plain:
            return
        due = bool(self._marks) and self.n >= self._marks[0]
        while self._marks and self.n >= self._marks[0]:
            self._marks.pop(0)
        if due or time.monotonic() - self._last >= PLAIN_EVERY_S:
            self._last = time.monotonic()
            extra = f" ({self.postfix})" if self.postfix else ""
            of = f"/{self.total}" if self.total else ""
            self.logger.info("%s: %d%s %s%s", self.desc, self.n, of, self.unit, extra)

    def set_postfix(self, figures: dict[str, Any]) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in figures.items())
        if self.bar is not None:
            self.bar.set_postfix(figures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
