"""The studio tests' real server (uvicorn, in a thread of the test process, so tests can look at its
sessions) on the random tiny preset, and a WebSocket client that reads JSON messages."""

import json
import socket
import threading
import time

import uvicorn
from websockets.sync.client import connect

from ardrag.config import build_config
from ardrag.presets import TINY
from studio.server import Studio, create_app
from studio.settings import StudioSettings


class Server:
    def __init__(self, pipe, **settings):
        settings = build_config(StudioSettings, {"preset": TINY, "warmup": False, **settings})
        self.studio = Studio(settings, pipe, TINY, "--preset tiny --device cpu")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.studio), log_level="warning", access_log=False, log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the studio server did not start"
            time.sleep(0.02)

    def client(self):
        return Client(connect(f"ws://127.0.0.1:{self.port}/ws", max_size=2**24))

    def wait_sessions(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.studio.clients) != n:
            assert time.monotonic() < deadline, f"{len(self.studio.clients)} sessions live, expected {n}"
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.seen = []
        self.ready = self.until("ready")

    def send(self, message):
        self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    def recv(self, timeout=30.0):
        message = json.loads(self.ws.recv(timeout=timeout))
        self.seen.append(message)
        return message

    def until(self, kind, timeout=30.0, where=lambda m: True):
        """The next message of this type (and condition); the ones before it are kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(deadline - time.monotonic(), 0.01))
            if message["type"] == kind and where(message):
                return message

    def close(self):
        self.ws.close()
