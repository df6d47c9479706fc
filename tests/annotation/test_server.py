"""The Label Studio server as run by ardrag: loopback, secrets kept, failures that lose nothing."""

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from factories import HARD_CASES

from annotation.client import Client, LabelStudioUnavailable
from annotation.pull import pull
from annotation.push import push
from ardrag.curation.pipeline import CurationConfig, run_local

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_server_listens_on_loopback_only(ls_server):
    assert ls_server.host == "127.0.0.1"
    assert listening_addresses(ls_server.port) == {"0100007F"}  # 127.0.0.1, and nothing else


@pytest.fixture(scope="module")
def midpush(tmp_path_factory):
    from ardrag.data.sources import build_source

    out = tmp_path_factory.mktemp("resilience") / "midpush"
    run_local(
        build_source("procedural", {"num_clips": 8, "num_frames": 25, "seed": 1, **HARD_CASES}),
        out,
        CurationConfig(),
        progress=False,
    )
    return out


def test_server_stopped_mid_push_fails_clearly_and_the_rerun_completes(midpush, ls_settings, ls_server):
    client = Client(ls_settings)
    stopped = []

    def stop_after_first_batch(interface, pushed):
        if not stopped:
            ls_server.stop()
            stopped.append((interface, pushed))

    with pytest.raises(LabelStudioUnavailable) as err:
        push(midpush, ls_settings, client, after_batch=stop_after_first_batch, progress=False)
    message = str(err.value)
    assert ls_settings.url in message and "after 3 attempts" in message and "rerun" in message
    assert stopped == [("verify", 2)]

    ls_server.start()
    ls_server.wait_until_ready(timeout_s=300)
    report = push(midpush, ls_settings, Client(ls_settings), progress=False)
    assert report["verify"] == {**report["verify"], "waiting": 2, "present": 2, "pushed": 0}
    assert report["annotate"]["pushed"] == 6
    for interface in ("verify", "annotate"):
        keys = [t.data["key"] for t in client.tasks(report[interface]["project"])]
        assert len(keys) == len(set(keys)) == report[interface]["waiting"]


def test_token_appears_in_no_log_and_no_tracked_file(midpush, ls_settings, ls_server, ls_token, caplog):
    creds = ls_settings.credentials_file
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    with caplog.at_level(logging.DEBUG):
        push(midpush, ls_settings, Client(ls_settings), progress=False)
        pull(midpush, ls_settings, Client(ls_settings), progress=False)
    env = {**os.environ, "ARDRAG_DATA_DIR": str(ls_settings.data_dir), "ARDRAG_LS_URL": ls_settings.url}
    cli = subprocess.run(
        [sys.executable, "-m", "ardrag.cli", "-v", "annotate", "status", "--out", str(midpush), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["server"].startswith("up at")
    texts = {
        "test logs": caplog.text,
        "cli output": cli.stdout + cli.stderr,
        "server log": ls_server.log_path.read_text(errors="replace"),
        "credentials repr": repr(Client(ls_settings).settings)
        + repr(__import__("annotation.settings").settings.credentials(ls_settings)),
    }
    for what, text in texts.items():
        assert ls_token not in text, what
    assert len(texts["server log"]) > 1000  # the server did log, just not the token
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        path = REPO / name
        if name and path.is_file():
            assert ls_token.encode() not in path.read_bytes(), name


def test_annotate_serve_command_starts_on_loopback_and_stops_on_sigterm(tmp_path, ls_settings):
    import signal
    import time
    import urllib.request

    from ls_fixtures import free_port

    port = free_port()
    env = {
        **os.environ,
        "ARDRAG_DATA_DIR": str(tmp_path / "data"),
        "ARDRAG_LS_VENV": str(ls_settings.server_venv),
    }
    env.pop("ARDRAG_LS_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardrag.cli", "annotate", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("Label Studio is up") or not line:
                break
        assert any(line.startswith("Label Studio is up at http://127.0.0.1:") for line in lines), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        assert listening_addresses(port) == {"0100007F"}
        token = json.loads((tmp_path / "data" / "label-studio" / "credentials.json").read_text())["token"]
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert token not in "".join(lines) + rest
        assert listening_addresses(port) == set()  # the server went with it
    finally:  # SIGTERM, not SIGKILL: the command must stop the server it started (its own session)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
