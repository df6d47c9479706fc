"""The Label Studio server as run by ardrag: loopback, secrets kept, failures that lose nothing."""

import json
import logging
import os
import signal
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


def start_serve(data_dir, venv, port):
    """``ardrag annotate serve`` as a person runs it; returns the process and its lines until the server is up
    (or the command ended)."""
    env = {**os.environ, "ARDRAG_DATA_DIR": str(data_dir), "ARDRAG_LS_VENV": str(venv)}
    for name in ("ARDRAG_LS_TOKEN", "ARDRAG_LS_PASSWORD", "ARDRAG_LS_SECRET_KEY", "ARDRAG_LS_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardrag.cli", "annotate", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    while True:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("Label Studio is up") or not line:
            return proc, lines


def stop_serve(proc):
    """SIGTERM, not SIGKILL: the command must stop the server it started (its own session)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def the_server_process(proc) -> int:
    """The pid of the Label Studio process that ``serve`` started (its only child)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def log_in(url: str, username: str, password: str) -> dict[str, str]:
    """A browser's login form: the session cookie Label Studio sets."""
    import httpx

    with httpx.Client(base_url=url) as browser:
        browser.get("/user/login/")
        form = {"email": username, "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        r = browser.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
        assert r.status_code == 302, r.text[:500]
        return {"sessionid": browser.cookies["sessionid"]}


def whoami(url: str, cookies: dict[str, str]):
    import httpx

    return httpx.get(f"{url}/api/current-user/whoami", cookies=cookies, timeout=10)


def test_annotate_serve_stops_on_sigterm_keeps_sessions_across_restarts_and_reports_a_killed_server(
    tmp_path, ls_settings
):
    import urllib.request

    from ls_fixtures import free_port

    data, venv = tmp_path / "data", ls_settings.server_venv
    secret_file, log_file = data / "label-studio" / "credentials.json", data / "label-studio" / "server.log"

    # 1. up on loopback; the server gets the secret key kept in the 0600 secret file; a person logs in;
    #    SIGTERM stops the command and the server with it
    port = free_port()
    proc, lines = start_serve(data, venv, port)
    try:
        assert any(line.startswith(f"Label Studio is up at http://127.0.0.1:{port}") for line in lines), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        assert listening_addresses(port) == {"0100007F"}
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        creds = json.loads(secret_file.read_text())
        assert environment_of(the_server_process(proc))["SECRET_KEY"] == creds["secret_key"]
        session = log_in(f"http://127.0.0.1:{port}", creds["username"], creds["password"])
        assert whoami(f"http://127.0.0.1:{port}", session).json()["email"] == creds["username"]
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        for secret in (creds["token"], creds["password"], creds["secret_key"]):
            assert secret not in "".join(lines) + rest + log_file.read_text(errors="replace")
        assert listening_addresses(port) == set()  # the server went with it
    finally:
        stop_serve(proc)

    # 2. started again: the same key, so the person's session is still valid, and Label Studio no longer
    #    warns that it makes up a random key; then its process is killed: serve says so and fails
    port = free_port()
    proc, lines = start_serve(data, venv, port)
    try:
        assert any(line.startswith(f"Label Studio is up at http://127.0.0.1:{port}") for line in lines), lines
        assert json.loads(secret_file.read_text()) == creds  # nothing regenerated
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        server = the_server_process(proc)
        assert environment_of(server)["SECRET_KEY"] == creds["secret_key"]
        r = whoami(f"http://127.0.0.1:{port}", session)
        assert r.status_code == 200 and r.json()["email"] == creds["username"], r.text[:300]
        forged = {
            "sessionid": session["sessionid"][:-4]
            + ("AAAA" if session["sessionid"][-4:] != "AAAA" else "BBBB")
        }
        assert whoami(f"http://127.0.0.1:{port}", forged).status_code == 401  # the signature is checked
        assert "SECRET_KEY not found" not in log_file.read_text(errors="replace")

        os.kill(server, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    finally:
        stop_serve(proc)
    assert proc.returncode != 0
    assert f"(pid {server}, http://127.0.0.1:{port}) was killed by signal 9 (SIGKILL) while serving" in rest
    last = [line for line in log_file.read_text().splitlines() if line.strip()][-1]
    assert f"the last lines of its log {log_file}:" in rest and last in rest, rest
    assert '"GET /api/current-user/whoami HTTP/1.1" 200' in rest  # this run's lines, not only a banner
    assert listening_addresses(port) == set()
