"""Where the annotation side keeps its things, and the Label Studio credentials.

Settings come from the environment (``ARDRAG_DATA_DIR``, ``ARDRAG_LS_URL``, ...) with defaults for one
machine. Credentials come from ``ARDRAG_LS_TOKEN`` (with ``ARDRAG_LS_USERNAME``, ``ARDRAG_LS_PASSWORD``)
or from a secret file that ``ardrag annotate serve`` generates under the data directory (mode 0600;
``data/`` is ignored by git). Neither is ever printed or logged: :class:`Credentials` hides them in its
repr.
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
    timeout_s: float = Field(60.0, gt=0, description="seconds one request may take")
    box_px: float = Field(12.0, gt=0, description="side of the square that stands for a point")
    keyframe_tolerance_px: float = Field(
        0.25, gt=0, le=2, description="largest error of the pre-filled keyframes against the tracker"
    )

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

    def __repr__(self) -> str:  # never show the secrets
        return f"Credentials(username={self.username!r}, password=***, token=***)"


def credentials(settings: AnnotationSettings, create: bool = False) -> Credentials:
    """The admin user and API token: from the environment, else the secret file (generated when
    ``create`` and missing)."""
    token = os.environ.get("ARDRAG_LS_TOKEN")
    if token:
        if len(token) > 40:
            raise ConfigError(
                f"ARDRAG_LS_TOKEN is {len(token)} characters long; Label Studio takes at most 40"
            )
        return Credentials(
            username=os.environ.get("ARDRAG_LS_USERNAME", "admin@ardrag.local"),
            password=os.environ.get("ARDRAG_LS_PASSWORD") or secrets.token_urlsafe(18),
            token=token,
        )
    path = settings.credentials_file
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(data["username"], data["password"], data["token"])
    if not create:
        raise ConfigError(
            f"no Label Studio token: set ARDRAG_LS_TOKEN, or run `ardrag annotate serve` once, which "
            f"writes {path} (missing)"
        )
    creds = Credentials(
        username=os.environ.get("ARDRAG_LS_USERNAME", "admin@ardrag.local"),
        password=os.environ.get("ARDRAG_LS_PASSWORD") or secrets.token_urlsafe(18),
        token=secrets.token_hex(20),  # 40 characters, Label Studio's limit
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"username": creds.username, "password": creds.password, "token": creds.token}, f)
    return creds
