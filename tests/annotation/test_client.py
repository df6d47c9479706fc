"""Retries against real sockets: the time before a down server is reported is the time the settings state.

No Label Studio here: a port that refuses (bound, not listening) and a listener whose accept queue is
full (connections hang) stand for a server that is down and one that does not answer."""

import socket
import time

import pytest

from annotation.client import Client, LabelStudioUnavailable
from annotation.settings import AnnotationSettings, credentials

SLACK_S = 0.5  # above the stated time: a refused connection takes about a millisecond, the rest is Python


@pytest.fixture
def closed_port():
    """A port that nobody listens on, held so that nothing else takes it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def hanging_port():
    """A listener that never accepts, its queue full: a connection attempt waits until it times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)  # takes the queue's only place
    probe = socket.socket()
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):  # the next connection hangs, as the test needs
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    filler.close()
    server.close()


def client_for(tmp_path, port, monkeypatch, **overrides):
    monkeypatch.delenv("ARDRAG_LS_TOKEN", raising=False)
    settings = AnnotationSettings(
        data_dir=tmp_path, url=f"http://127.0.0.1:{port}", timeout_s=30, **overrides
    )
    credentials(settings, create=True)
    return Client(settings)


def list_projects(client):
    start = time.monotonic()
    with pytest.raises(LabelStudioUnavailable) as err:
        client.find_project("anything")
    return time.monotonic() - start, str(err.value)


def test_a_refused_connection_is_reported_after_the_stated_waits(tmp_path, closed_port, monkeypatch):
    client = client_for(tmp_path, closed_port, monkeypatch, attempts=4, backoff_s=0.25)
    assert client.settings.retry_waits_s == [0.25, 0.5, 1.0]
    took, message = list_projects(client)
    # the waits alone: no hidden retries inside a try (the SDK's own added 1 + 2 s to each)
    assert 1.75 <= took <= 1.75 + SLACK_S, took
    assert took <= client.settings.give_up_after_s
    assert (
        f"Label Studio at http://127.0.0.1:{closed_port} did not list projects after 4 attempts in 1."
        in message
    )
    assert "ConnectError" in message and "rerun the same command" in message


def test_one_attempt_is_one_try_and_says_so(tmp_path, closed_port, monkeypatch):
    client = client_for(tmp_path, closed_port, monkeypatch, attempts=1)
    took, message = list_projects(client)
    assert took <= SLACK_S, took
    assert "after 1 attempt in " in message


def test_a_connection_that_hangs_counts_its_connect_timeout_in_the_stated_time(
    tmp_path, hanging_port, monkeypatch
):
    client = client_for(tmp_path, hanging_port, monkeypatch, attempts=3, backoff_s=0.2, connect_timeout_s=0.5)
    stated = client.settings.give_up_after_s
    assert stated == pytest.approx(0.2 + 0.4 + 3 * 0.5)
    took, message = list_projects(client)
    # each try waits its connect timeout (not the 30 s request timeout), then the waits between tries
    assert stated - 0.05 <= took <= stated + SLACK_S, (took, stated)
    assert "after 3 attempts" in message and "ConnectTimeout" in message
