"""Run a Label Studio server for the annotators: its own environment, loopback, secrets kept secret.

The ``label-studio`` package cannot share an environment with Prefect (conflicting pins), so it lives
in a virtual environment of its own, created here when missing with the pinned version. The server
listens on 127.0.0.1 unless told otherwise, keeps its database under the data directory, creates the
admin user and API token on first boot from :func:`annotation.settings.credentials` (whose secret file
also keeps the server's ``SECRET_KEY``), and serves local files only from the media directory (what
``push`` writes for the browser): regular files inside it, no symlink, through the Django settings in
``annotation/ls_overlay/`` (see there for what Label Studio's own settings cannot do).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from annotation.settings import LABEL_STUDIO_VERSION, AnnotationSettings, Credentials, credentials
from ardrag.errors import ArdragError

log = logging.getLogger(__name__)

# Label Studio's Django settings plus ardrag's guards (see ardrag_ls_settings.py there)
OVERLAY_DIR = Path(__file__).resolve().parent / "ls_overlay"

# Label Studio refuses webhooks to private and loopback addresses (SSRF protection). The pull webhook
# receiver runs on loopback, so the default list is replaced by the same list less loopback.
_BANNED_SUBNETS = (
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.0.2.0/24,"
    "192.88.99.0/24,192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,203.0.113.0/24,224.0.0.0/4,"
    "233.252.0.0/24,240.0.0.0/4,255.255.255.255/32,::/128,::ffff:0:0/96,64:ff9b::/96,100::/64,"
    "2001:db8::/32,2002::/16,fc00::/7,fe80::/10,ff00::/8"
)


class ServerError(ArdragError):
    """The Label Studio server could not be installed or started."""


def executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


def ensure_environment(settings: AnnotationSettings) -> Path:
    """The ``label-studio`` executable, installing the pinned server into its own venv when missing.

    The venv is built in place (its scripts name their own path) and a marker written last says it is
    complete; a venv without the marker (an install that was killed) is cleared and built again."""
    venv = settings.server_venv
    exe, marker = executable(venv), venv / ".ardrag-complete"
    if exe.is_file() and marker.is_file() and marker.read_text().strip() == LABEL_STUDIO_VERSION:
        return exe
    log.info("installing label-studio==%s into %s (a few minutes, once)", LABEL_STUDIO_VERSION, venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", "--quiet", f"label-studio=={LABEL_STUDIO_VERSION}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerError(
            f"installing label-studio=={LABEL_STUDIO_VERSION} into {venv} failed:\n{done.stderr[-2000:]}"
        )
    marker.write_text(LABEL_STUDIO_VERSION + "\n")
    return exe


def server_environment(settings: AnnotationSettings, creds: Credentials) -> dict[str, str]:
    # Label Studio reads NAME, LABEL_STUDIO_NAME and HEARTEX_NAME: none is inherited from this process
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "ARDRAG_LS_")) and k != "PYTHONPATH"
    }
    media = settings.media_root
    media.mkdir(parents=True, exist_ok=True)
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str((settings.ls_dir / "server").resolve()),
        LABEL_STUDIO_USERNAME=creds.username,
        LABEL_STUDIO_PASSWORD=creds.password,
        LABEL_STUDIO_USER_TOKEN=creds.token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        SECRET_KEY=creds.secret_key,  # kept in the secret file: sessions survive a restart
        # files are served from the media directory only (the guard in ls_overlay refuses symlinks and
        # anything outside it); errors name no path: no debug pages, no tracebacks in answers
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(media),
        DJANGO_SETTINGS_MODULE="ardrag_ls_settings",
        PYTHONPATH=str(OVERLAY_DIR),
        DEBUG="false",
        DEBUG_MODAL_EXCEPTIONS="false",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",  # no error reports to Label Studio's Sentry (on by default, and offline here)
        FRONTEND_SENTRY_DSN="",
        USE_DEFAULT_BANNED_SUBNETS="false",
        USER_ADDITIONAL_BANNED_SUBNETS=_BANNED_SUBNETS,
        PYTHONUNBUFFERED="1",
    )
    return env


def _die_with_parent() -> None:
    """In the child: on Linux, get SIGTERM when the process that started the server dies, even by
    SIGKILL, so a killed ``serve`` or test run leaves no server behind (elsewhere: nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LabelStudioServer:
    """A Label Studio process: ``start()``, ``wait_until_ready()``, ``stop()`` (or use ``with``)."""

    def __init__(self, settings: AnnotationSettings, host: str | None = None, port: int | None = None):
        parts = urlsplit(settings.url)
        self.settings = settings
        self.host = host or parts.hostname or "127.0.0.1"
        self.port = port or parts.port or 8080
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = settings.ls_dir / "server.log"
        self._log_start = 0  # where this run's lines begin in the log (it keeps earlier runs')

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LabelStudioServer:
        exe = ensure_environment(self.settings)
        creds = credentials(self.settings, create=True)
        env = server_environment(self.settings, creds)
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("Label Studio will listen on %s, beyond this machine", self.host)
        # --internal-host is the address the server binds; --host only names it in generated URLs
        cmd = [str(exe), "start", "--no-browser", "--internal-host", self.host, "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logfile:
            self._log_start = logfile.tell()
            self.process = subprocess.Popen(
                cmd,
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info("Label Studio starting at %s (log: %s)", self.url, self.log_path)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_until_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise self._died("while starting")
            if self.healthy():
                log.info("Label Studio is up at %s", self.url)
                return
            time.sleep(1.0)
        raise ServerError(
            f"Label Studio did not answer {self.url}/health within {timeout_s:.0f} s; see {self.log_path}"
        )

    def wait(self) -> None:
        """Block while the server runs; when it ends by itself, raise :class:`ServerError` saying how
        (exit code or signal) with the last lines of its log."""
        if self.process is None:
            raise ServerError("Label Studio was not started: call start() first")
        self.process.wait()
        raise self._died("while serving")

    def exit_description(self) -> str:
        """How the process ended: ``exited with code N`` or ``was killed by signal N (SIGNAME)``."""
        code = None if self.process is None else self.process.poll()
        if code is None:
            return "is running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown"
            return f"was killed by signal {-code} ({name})"
        return f"exited with code {code}"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines this run wrote to its log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_start, f.seek(0, os.SEEK_END) - 64 * 1024))
                text = f.read().decode("utf-8", errors="replace")
        except OSError as err:
            return f"(the log {self.log_path} cannot be read: {err})"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(the log is empty)"

    def _died(self, when: str) -> ServerError:
        pid = self.process.pid if self.process is not None else None
        return ServerError(
            f"Label Studio (pid {pid}, {self.url}) {self.exit_description()} {when}; "
            f"the last lines of its log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> LabelStudioServer:
        self.start()
        self.wait_until_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
