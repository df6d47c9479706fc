"""Fixtures: a real Label Studio server for the annotation tests: started once per test run, on loopback.

The server's own virtual environment comes from ``ARDRAG_LS_VENV`` (``scripts/test.sh`` installs it
once under ``data/label-studio/venv``); when missing it is installed here (a few minutes)."""

import os
import socket
from pathlib import Path

import pytest

from annotation.server import LabelStudioServer
from annotation.settings import AnnotationSettings, credentials

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ls_settings(tmp_path_factory):
    data = tmp_path_factory.mktemp("annotation-data")
    venv = Path(os.environ.get("ARDRAG_LS_VENV") or REPO / "data" / "label-studio" / "venv")
    return AnnotationSettings(
        data_dir=data,
        url=f"http://127.0.0.1:{free_port()}",
        venv=venv,
        media_dir=data / "media",
        attempts=3,
        backoff_s=0.2,
        timeout_s=30,
        batch_size=2,
    )


@pytest.fixture(scope="session")
def ls_server(ls_settings):
    server = LabelStudioServer(ls_settings)
    server.start()
    try:
        server.wait_until_ready(timeout_s=300)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_token(ls_settings, ls_server):
    return credentials(ls_settings).token


@pytest.fixture(scope="session")
def artifacts_dir():
    path = Path(os.environ.get("ARDRAG_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
