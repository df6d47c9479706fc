"""Where the annotation side keeps its things, and the Label Studio credentials.

Settings come from the environment (``ARDRAG_DATA_DIR``, ``ARDRAG_LS_URL``, ...) with defaults for one
machine. Credentials come from ``ARDRAG_LS_TOKEN`` (with ``ARDRAG_LS_USERNAME``, ``ARDRAG_LS_PASSWORD``,
``ARDRAG_LS_SECRET_KEY``) or from a secret file that ``ardrag annotate serve`` generates under the data
directory (mode 0600; ``data/`` is ignored by git). The file also keeps the server's Django
``SECRET_KEY``, so its sessions survive a restart. None is ever printed or logged: :class:`Credentials`
hides them in its repr.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from ardrag.config import Config
from ardrag.errors import ConfigError

LABEL_STUDIO_VERSION = "1.23.2"


def _env_path(name: str, default: str) -> str:
    return os.environ.get(name) or default


class AnnotationSettings(Config):
    """Paths, the server address and how hard to try when it does not answer."""

    data_dir: Path = Field(default_factory=lambda: Path(_env_path("ARDRAG_DATA_DIR", "data")))
    url: str = Field(default_factory=lambda: _env_path("ARDRAG_LS_URL", "http://127.0.0.1:8080"))
    venv: Path | None = Field(None, description="the server's own virtual environment (default under data)")
    media_dir: Path | None = Field(None, description="the only folder Label Studio serves files from")
    batch_size: int = Field(50, ge=1, le=1000, description="tasks per import request")
    attempts: int = Field(5, ge=1, le=20, description="tries of one request before giving up")
    backoff_s: float = Field(1.0, ge=0, description="first wait between tries; doubles each time")
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds one try may take to connect")
    timeout_s: float = Field(60.0, gt=0, description="seconds one request may take")
    box_px: float = Field(12.0, gt=0, description="side of the square that stands for a point")
    keyframe_tolerance_px: float = Field(
        0.25, gt=0, le=2, description="largest error of the pre-filled keyframes against the tracker"
    )

    @property
    def retry_waits_s(self) -> list[float]:
        """The waits between the tries of one request: ``backoff_s`` doubling, one fewer than tries."""
        return [self.backoff_s * 2**i for i in range(self.attempts - 1)]

    @property
    def give_up_after_s(self) -> float:
        """The longest a request to a server that does not accept connections is tried before it is
        reported: the waits plus each try's connect timeout (1+2+4+8 s + 5 x 5 s with the defaults; a
        closed port refuses at once, so there it is the waits alone, 15 s). A server that accepts but
        does not answer takes up to ``timeout_s`` per try instead of ``connect_timeout_s``."""
        return sum(self.retry_waits_s) + self.attempts * min(self.connect_timeout_s, self.timeout_s)

    @property
    def ls_dir(self) -> Path:
        return self.data_dir / "label-studio"

    @property
    def server_venv(self) -> Path:
        return self.venv or Path(_env_path("ARDRAG_LS_VENV", str(self.ls_dir / "venv")))

    @property
    def media_root(self) -> Path:
        return (self.media_dir or Path(_env_path("ARDRAG_MEDIA_DIR", str(self.data_dir / "media")))).resolve()

    @property
    def server_media_root(self) -> str:
        """The media directory as the server sees it (``ARDRAG_LS_MEDIA_DIR`` when it runs in a container
        with the directory mounted elsewhere); local-files storages name this path."""
        return os.environ.get("ARDRAG_LS_MEDIA_DIR") or str(self.media_root)

    @property
    def credentials_file(self) -> Path:
        return self.ls_dir / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    secret_key: str = field(default="", repr=False)  # the server's Django SECRET_KEY (signs sessions)

    def __repr__(self) -> str:  # never show the secrets
        return f"Credentials(username={self.username!r}, password=***, token=***, secret_key=***)"


def credentials(settings: AnnotationSettings, create: bool = False) -> Credentials:
    """The admin user, API token and server secret key. Each comes from the environment
    (``ARDRAG_LS_USERNAME``, ``ARDRAG_LS_PASSWORD``, ``ARDRAG_LS_TOKEN``, ``ARDRAG_LS_SECRET_KEY``), else
    from the secret file; with ``create`` (the server starting) what is still missing is generated and
    kept in the secret file (mode 0600)."""
    path = settings.credentials_file
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    username = os.environ.get("ARDRAG_LS_USERNAME") or stored.get("username") or "admin@ardrag.local"
    password = os.environ.get("ARDRAG_LS_PASSWORD") or stored.get("password")
    token = os.environ.get("ARDRAG_LS_TOKEN") or stored.get("token")
    secret_key = os.environ.get("ARDRAG_LS_SECRET_KEY") or stored.get("secret_key")
    if token is not None and len(token) > 40:
        raise ConfigError(f"the Label Studio token is {len(token)} characters long; the limit is 40")
    if token is None and not create:
        raise ConfigError(
            f"no Label Studio token: set ARDRAG_LS_TOKEN, or run `ardrag annotate serve` once, which "
            f"writes {path} (missing)"
        )
    if create and (token is None or password is None or secret_key is None):
        generated = {"username": username}
        if password is None:
            password = generated["password"] = secrets.token_urlsafe(18)
        if token is None:
            token = generated["token"] = secrets.token_hex(20)  # 40 characters, Label Studio's limit
        if secret_key is None:
            secret_key = generated["secret_key"] = secrets.token_urlsafe(50)
        _write_secret(path, {**stored, **generated})
    return Credentials(username=username, password=password or "", token=token, secret_key=secret_key or "")


def _write_secret(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
