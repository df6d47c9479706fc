"""The studio server for real (uvicorn, WebSockets, HTTP uploads and downloads): bad input is refused and
the session goes on; the limits on sessions and idleness hold; a page that leaves frees its session."""

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from studio_helpers import Server
from websockets.exceptions import ConnectionClosed

from ardrag.inference.trajectory import parse_trajectory


def post(url, data, headers=None):
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers, r.read()


def png_bytes(w, h, noise=True):
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).random((h, w, 3)) * 255 if noise else np.full((h, w, 3), 90)
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_malformed_messages_are_refused_and_the_session_goes_on(server):
    c = server.client()
    bad = [
        "not json", "[1, 2]", json.dumps({"type": "fly"}), json.dumps({"no": "type"}), b"\x00\x01binary",
        {"type": "point", "id": None, "path": [[1, 2]], "frames": 1},  # no image yet
        {"type": "example", "name": "nope"},
    ]  # fmt: skip
    for message in bad:
        c.send(message)
        err = c.until("error")
        assert err["code"] in ("bad_message", "bad_input") and err["message"]
    c.send({"type": "example", "name": "toy-1"})
    assert c.until("image")["width"] == 96
    for message in (
        {"type": "point", "id": None, "path": "nowhere", "frames": 8},
        {"type": "point", "id": None, "path": [[1, float("nan")]], "frames": 8},
        {"type": "point", "id": None, "path": [[1, 2]], "frames": 0},
        {"type": "point", "id": 7, "path": [[1, 2]], "frames": 4},
        {"type": "point", "id": True, "path": [[1, 2]], "frames": 4},
        {"type": "intensity", "id": 1, "value": 0.5},
        {"type": "regenerate"},
        {"type": "point", "id": None, "path": [[10**400, 2]], "frames": 4},  # overflows a float
        {"type": "intensity", "id": 1, "value": 10**400},
        {"type": "point", "id": 10**400, "path": [[1, 2]], "frames": 4},
        {"type": "prompt", "text": ""},
    ):
        c.send(json.dumps(message, allow_nan=True))
        err = c.until("error")
        assert err["code"] == "bad_input", err
    c.send({"type": "point", "id": None, "path": [[5, 5], [200, -50]], "frames": 4})  # clamped into the image
    point = c.until("points")["points"][0]
    assert point["path"][-1] == [95.0, 0.0]
    for _ in range(8):
        c.send({"type": "point", "id": None, "path": [[5, 5]], "frames": 1})
    err = c.until("error")
    assert "at most 8 points" in err["message"]
    c.send({"type": "step"})
    frames = c.until("frames")
    assert frames["start"] == 0 and len(frames["frames"]) == 1
    c.close()


def test_uploads_that_are_not_images_or_too_large_are_refused_with_a_message(tiny_pipe):
    with Server(tiny_pipe, max_upload_bytes=50_000, max_image_pixels=200 * 200) as server:
        c = server.client()
        url = f"{server.url}/api/sessions/{c.ready['session']}/image"
        status, reply = post(url, b"this is a text file, not a picture")
        assert status == 415 and not reply["ok"] and "not an image" in reply["error"]
        status, reply = post(url, b"\x89PNG" + b"\x00" * 60_000)
        assert status == 413 and "larger than 50000 bytes" in reply["error"]
        status, reply = post(url, png_bytes(300, 200, noise=False))  # small file, too many pixels
        assert status == 413 and "pixels" in reply["error"]
        status, reply = post(url, b"")
        assert status == 415 and "empty" in reply["error"]
        status, reply = post(f"{server.url}/api/sessions/nosuchsession/image", png_bytes(40, 30))
        assert status == 404 and "reload" in reply["error"]
        status, reply = post(url, png_bytes(120, 80), {"X-Filename": "mine.png"})
        assert status == 200 and reply == {"ok": True, "width": 96, "height": 64}
        image = c.until("image")
        assert image["source"] == "upload:mine.png"
        status, headers, body = get(server.url + image["url"])
        assert headers["content-type"] == "image/png" and Image.open(io.BytesIO(body)).size == (96, 64)
        c.close()


def test_sessions_beyond_the_maximum_are_told_to_try_again(tiny_pipe):
    with Server(tiny_pipe, max_sessions=2) as server:
        a, b = server.client(), server.client()
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{server.port}/ws") as third:
            message = json.loads(third.recv(timeout=10))
            assert message["type"] == "error" and message["code"] == "full"
            assert "try again later" in message["message"]
            with pytest.raises(ConnectionClosed) as closed:
                third.recv(timeout=10)
            assert closed.value.rcvd.code == 1013
        a.send({"type": "example", "name": "toy-2"})  # the two others still work
        assert a.until("image")["source"] == "example:toy-2"
        a.close()
        server.wait_sessions(1)
        c = server.client()  # room again
        assert c.ready["session"]
        b.close()
        c.close()


def test_idle_sessions_are_closed_and_freed(tiny_pipe):
    with Server(tiny_pipe, idle_timeout_s=0.6) as server:
        c = server.client()
        c.send({"type": "example", "name": "toy-1"})
        c.until("image")
        closed = c.until("closed", timeout=10)
        assert "idle" in closed["reason"]
        with pytest.raises(ConnectionClosed):
            c.recv(timeout=10)
        server.wait_sessions(0)


def playing(server):
    """A client streaming an example with one drag, 5 frames in."""
    c = server.client()
    c.send({"type": "example", "name": "toy-1"})
    c.send({"type": "point", "id": None, "path": [[10, 10], [60, 40]], "frames": 16})
    c.send({"type": "play"})
    c.until("frames", where=lambda m: m["total"] >= 5)
    return c


def test_a_page_that_leaves_mid_stream_frees_its_session(server):
    c = playing(server)
    client = next(iter(server.studio.clients.values()))
    assert client.stream is not None and client.playing
    c.close()  # mid-stream
    server.wait_sessions(0)
    assert client.closed and client.stream is None and not client.playing
    deadline = time.monotonic() + 10
    while len(server.studio.queue):  # its last step finished; nothing else queued
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_downloads_and_the_queue_position(server):
    a, b = server.client(), server.client()
    for c in (a, b):
        c.send({"type": "example", "name": "toy-3"})
        c.send({"type": "point", "id": None, "path": [[10, 10], [60, 40]], "frames": 16})
    a.send({"type": "play"})
    b.send({"type": "play"})
    for c in (a, b):
        c.until("frames", where=lambda m: m["total"] >= 9)
        c.send({"type": "pause"})
    positions = [m["position"] for c in (a, b) for m in c.seen if m["type"] == "queue"]
    assert 1 in positions and 0 in positions  # one waited behind the other at least once
    a.until("state", where=lambda m: not m["playing"] and m["frames"] == m["next_frame"])
    token = a.ready["session"]
    status, headers, traj = get(f"{server.url}/api/sessions/{token}/trajectory.json")
    assert "attachment" in headers["content-disposition"]
    trajectory = parse_trajectory(json.loads(traj))
    status, headers, mp4 = get(f"{server.url}/api/sessions/{token}/video.mp4")
    assert headers["content-type"] == "video/mp4" and mp4[4:8] == b"ftyp"
    state = [m for m in a.seen if m["type"] == "state"][-1]
    assert trajectory.num_frames == state["frames"]
    assert "--preset tiny --device cpu --ref reference.png --traj trajectory.json" in state["replay"]
    assert "--seed 0" in state["replay"]
    a.close()
    b.close()


@pytest.mark.slow
def test_the_command_warns_when_bound_beyond_loopback(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardrag.cli", "studio", "--preset", "tiny", "--host", "0.0.0.0", "--port", "0",
         "--no-warmup", "--log-dir", str(tmp_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("ardrag studio: http://"):
                break
        text = "".join(lines)
        assert "binding to 0.0.0.0" in text and "no login" in text
        assert "ardrag studio: http://0.0.0.0:" in text
    finally:
        proc.terminate()
        proc.wait(30)


def png_header(width, height):
    """The first bytes of a PNG that claims ``width`` x ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def test_a_huge_image_is_refused_from_its_header_before_it_is_decoded(server):
    c = server.client()
    url = f"{server.url}/api/sessions/{c.ready['session']}/image"
    for side in (8000, 32000):  # beyond the limit, and beyond Pillow's own bomb limit
        status, reply = post(url, png_header(side, side))
        assert status == 413 and "more than 40000000 pixels" in reply["error"], reply
    c.close()


def test_an_upload_during_a_stream_starts_a_fresh_one(server):
    """The upload waits for the step in flight; nothing of the old stream lands in the new one."""
    c = playing(server)
    c.send({"type": "step"})  # stops the play loop, then steps
    status, reply = post(f"{server.url}/api/sessions/{c.ready['session']}/image", png_bytes(64, 96))
    assert status == 200 and (reply["width"], reply["height"]) == (64, 96)  # portrait: the 64x96 bucket
    client = next(iter(server.studio.clients.values()))
    deadline = time.monotonic() + 20
    while client.play is not None or client.lock.locked():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stream = client.stream
    assert (stream.width, stream.next_frame, len(stream.frames), stream.steps) == (64, 0, 0, [])
    c.send({"type": "step"})
    frames = c.until("frames", where=lambda m: m["total"] == 1)
    assert frames["start"] == 0 and len(stream.frames) == 1
    c.close()


def test_play_and_pause_in_quick_succession_run_one_loop(server):
    c = server.client()
    c.send({"type": "example", "name": "toy-2"})
    for kind in ("play", "pause", "play", "pause", "play"):
        c.send({"type": kind})
    c.until("frames", where=lambda m: m["total"] >= 13)
    c.send({"type": "pause"})
    c.until("state", where=lambda m: not m["playing"] and m["frames"] == m["next_frame"])
    starts = [m["start"] for m in c.seen if m["type"] == "frames"]
    assert starts == [0] + list(range(1, 4 * len(starts) - 3, 4))  # in order, none twice
    client = next(iter(server.studio.clients.values()))
    assert client.play is None
    c.close()


def test_a_failed_step_stops_the_stream_with_a_message_and_reset_recovers(server, monkeypatch):
    from ardrag.inference.session import StreamSession

    real, calls = StreamSession.step, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise IndexError("a step that goes wrong")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StreamSession, "step", flaky)
    c = server.client()
    c.send({"type": "example", "name": "toy-1"})
    c.send({"type": "play"})
    err = c.until("error")
    assert err["code"] == "model" and "IndexError" in err["message"] and "reset" in err["message"]
    state = c.until("state", where=lambda m: not m["playing"])
    assert state["frames"] == state["next_frame"] == 5 and not state["can_regenerate"]
    c.send({"type": "step"})
    assert "failed step" in c.until("error")["message"]
    c.send({"type": "reset"})
    c.send({"type": "step"})
    assert c.until("frames")["start"] == 0
    c.close()
