"""``ardrag studio``'s server: one page, one WebSocket per visitor, one model queue per device.

Each browser session is a :class:`Client` with its own :class:`~studio.stream.StudioStream` (and so its
own ``StreamSession``); all of them share one loaded pipeline, and every piece of model work goes through
the device's :class:`~studio.queue.DeviceQueue`, whose place the page shows. The protocol (the messages
both ways, the downloads) is in ``studio/PROTOCOL.md``.

Limits, from :class:`~studio.settings.StudioSettings`: at most ``max_sessions`` sockets at once (the next
one is told to try again later and closed); a session without activity for ``idle_timeout_s`` is closed;
uploads above ``max_upload_bytes`` or ``max_image_pixels``, or that no image decoder reads, are refused
with a message for the page; a malformed message gets an error and the session goes on. A closed session
(idle, or the page gone mid-stream) frees its stream: its last step finishes on the device, then its
caches and frames are dropped and the allocator's free memory is handed back to the system.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import gc
import io
import json
import logging
import secrets
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from ardrag.errors import ConfigError
from ardrag.inference.trajectory import load_reference
from ardrag.model.pipeline import ARDragPipeline
from studio.drags import MAX_POINTS
from studio.queue import DeviceQueue
from studio.settings import StudioSettings
from studio.stream import StudioStream, check_prompt, fit_image, png

log = logging.getLogger("ardrag.studio")

PACKAGE = Path(str(resources.files("studio")))
STATIC = PACKAGE / "static"
EXAMPLES = PACKAGE / "examples"
FPS_WINDOW_S = 3.0
MESSAGE_TYPES = ("example", "prompt", "point", "intensity", "remove", "play", "pause", "step",
                 "regenerate", "reset")  # fmt: skip


@dataclass(frozen=True)
class Example:
    name: str
    prompt: str
    path: Path

    def image(self) -> np.ndarray:
        return load_reference(self.path)  # what `ardrag generate --ref` reads


def load_examples(folder: Path = EXAMPLES) -> dict[str, Example]:
    """The shipped examples (``examples.json``: name, prompt, file), in their listed order."""
    entries = json.loads((folder / "examples.json").read_text(encoding="utf-8"))
    return {e["name"]: Example(e["name"], e["prompt"], folder / e["file"]) for e in entries}


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded file as uint8 RGB, or a :class:`ConfigError` for the page. The size is read from the
    file's header before anything is decoded: a small file can claim a huge image (a decompression bomb)."""
    not_image = "the upload is not an image that can be read; expected PNG, JPEG, WebP or BMP"
    if not data:
        raise ConfigError("the upload is empty; expected an image file (PNG, JPEG, WebP, ...)")
    too_big = f"more than {max_pixels} pixels; expected a smaller one"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by our limit
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError:
        raise ConfigError(f"the image has {too_big}") from None
    except (OSError, ValueError, SyntaxError):
        raise ConfigError(not_image) from None
    if width * height > max_pixels:
        raise ConfigError(f"the image is {width}x{height}, {too_big}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(not_image)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def release_memory() -> None:
    """Collect cycles and hand free memory back: the C allocator's pages (glibc), PyTorch's CUDA cache."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class _Play:
    """One run of a session's play loop; ``stop`` ends it after its current step."""

    def __init__(self) -> None:
        self.stop = False
        self.task: asyncio.Task[None] | None = None


class Client:
    """One browser session: its stream, its play loop, and its socket's outbox (messages leave in order).

    The page's messages are handled one at a time, in order. Model work runs under ``lock`` (one job of
    this session at a time, planned and recorded on the stream that holds the lock), so an upload, a reset
    or a closing that takes the lock never sees a step recorded into the wrong stream."""

    def __init__(self, studio: Studio, socket: WebSocket):
        self.studio, self.socket = studio, socket
        self.token = secrets.token_urlsafe(16)
        self.stream: StudioStream | None = None
        self.prompt = studio.settings.prompt
        self.seed = studio.settings.seed
        self.source = ""
        self.image_version = 0
        self.play: _Play | None = None
        self.closed = False
        self.lock = asyncio.Lock()  # one model job of this session at a time
        self.last_active = time.monotonic()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sender = asyncio.get_running_loop().create_task(self._send_all())
        self._frame_times: deque[tuple[float, int]] = deque()

    @property
    def playing(self) -> bool:
        return self.play is not None and not self.play.stop

    # -- sending ------------------------------------------------------------------------------------

    def post(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    async def _send_all(self) -> None:
        while (message := await self.outbox.get()) is not None:
            try:
                await self.socket.send_text(json.dumps(message))
            except Exception:  # the page is gone: the receive loop sees it and closes the session
                return

    def error(self, code: str, message: str) -> None:
        self.post({"type": "error", "code": code, "message": message})

    def post_state(self) -> None:
        s = self.stream
        self.post({
            "type": "state", "playing": self.playing, "frames": len(s.frames) if s else 0,
            "next_frame": s.next_frame if s else 0,
            "can_regenerate": bool(s and s.steps and not self.playing and s.broken is None),
            "prompt": s.current_prompt if s else self.prompt, "seed": self.seed, "has_image": s is not None,
            "replay": s.replay_command(self.studio.model_args) if s else "",
        })  # fmt: skip

    def post_points(self) -> None:
        if self.stream is not None:
            s = self.stream
            points = s.drags.describe(s.next_frame)
            self.post({"type": "points", "next_frame": s.next_frame, "points": points})

    def ready(self) -> None:
        st, cfg = self.studio.settings, self.studio.pipe.config
        self.post({
            "type": "ready", "session": self.token,
            "model": {"name": self.studio.model_name, "width": cfg.width, "height": cfg.height, "fps": 16},
            "examples": [
                {"name": e.name, "prompt": e.prompt, "url": f"/api/examples/{e.name}.png"}
                for e in self.studio.examples.values()
            ],
            "limits": {"max_points": MAX_POINTS, "max_upload_bytes": st.max_upload_bytes,
                       "idle_timeout_s": st.idle_timeout_s, "max_frames": st.max_frames},
        })  # fmt: skip
        self.post_state()

    # -- messages -----------------------------------------------------------------------------------

    async def handle(self, text: str | None) -> None:
        """One message from the page; a bad one is answered with an error and changes nothing."""
        self.last_active = time.monotonic()
        if text is None:
            self.error("bad_message", "binary messages are not part of the protocol; send JSON text")
            return
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError):
            self.error("bad_message", f"message {text[:60]!r} is not JSON; expected an object with a type")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
            shown = kind if isinstance(message, dict) else text[:60]
            expected = f"expected one of {list(MESSAGE_TYPES)}"
            self.error("bad_message", f"message type {str(shown)[:40]!r} is unknown; {expected}")
            return
        try:
            await getattr(self, f"_on_{kind}")(message)
        except ConfigError as err:
            self.error("bad_input", str(err))
        except Exception as err:  # a message this code did not foresee: refused, the session goes on
            log.exception("session %s: a %s message failed", self.token[:6], kind)
            self.error("bad_message", f"the {kind} message could not be handled ({type(err).__name__})")

    def _stream(self) -> StudioStream:
        if self.stream is None:
            raise ConfigError("no image yet: pick an example or upload an image first")
        return self.stream

    async def _on_example(self, message: dict[str, Any]) -> None:
        name = message.get("name")
        example = self.studio.examples.get(name) if isinstance(name, str) else None
        if example is None:
            shown = str(name)[:40]
            raise ConfigError(f"example {shown!r} is unknown; expected one of {list(self.studio.examples)}")
        await self.set_image(example.image(), f"example:{example.name}", example.prompt)

    async def set_image(self, image: np.ndarray | None, source: str, prompt: str | None = None) -> None:
        """A new reference image (None: the current one again, a reset): the stream starts again at
        frame 0, drags cleared. The stream is replaced under the lock, after the last step finished."""
        await self.stop_playing()
        async with self.lock:
            if self.closed:
                return
            old = self.stream
            if image is None:
                if old is None:
                    raise ConfigError("no image yet: pick an example or upload an image first")
                pipe, fitted, source = old.pipe, old.image, self.source
                prompt = old.current_prompt
            else:
                pipe, fitted = await asyncio.to_thread(fit_image, self.studio.pipe, image)
            if prompt is not None:
                self.prompt = prompt
            self.stream = StudioStream(pipe, fitted, self.prompt, self.seed, self.studio.settings.max_frames)
            self.source = source
            self.image_version += 1
            del old
        self._frame_times.clear()
        s = self.stream
        self.post({
            "type": "image", "url": f"/api/sessions/{self.token}/reference.png?v={self.image_version}",
            "width": s.width, "height": s.height, "source": source, "prompt": s.prompt,
        })  # fmt: skip
        self.post_points()
        self.post_state()

    async def _on_prompt(self, message: dict[str, Any]) -> None:
        text = check_prompt(message.get("text"))
        if self.stream is None:
            self.prompt = text
        else:
            self.stream.set_prompt(text)
            if self.stream.next_frame == 0:
                self.prompt = self.stream.prompt
        self.post_state()

    async def _on_point(self, message: dict[str, Any]) -> None:
        s = self._stream()
        point_id = message.get("id")
        if point_id is not None and (isinstance(point_id, bool) or not isinstance(point_id, int)):
            raise ConfigError(
                f"point id {str(point_id)[:40]}: expected a point's number, or null for a new point"
            )
        s.drags.drag(point_id, message.get("path"), message.get("frames", 16), s.next_frame)
        self.post_points()

    async def _on_intensity(self, message: dict[str, Any]) -> None:
        s = self._stream()
        s.drags.set_intensity(message.get("id"), message.get("value"), s.next_frame)
        self.post_points()

    async def _on_remove(self, message: dict[str, Any]) -> None:
        s = self._stream()
        s.drags.remove(message.get("id"), s.next_frame)
        self.post_points()

    async def _on_play(self, message: dict[str, Any]) -> None:
        self._stream()
        if self.playing:
            return
        await self.stop_playing()  # a loop being stopped ends first: one loop at a time
        play = self.play = _Play()
        play.task = asyncio.get_running_loop().create_task(self._play(play))
        self.post_state()

    async def _on_pause(self, message: dict[str, Any]) -> None:
        if self.play is not None:
            self.play.stop = True
        self.post_state()

    async def _on_step(self, message: dict[str, Any]) -> None:
        self._stream()
        await self.stop_playing()
        await self._model(regenerate=False)

    async def _on_regenerate(self, message: dict[str, Any]) -> None:
        self._stream()
        await self.stop_playing()
        await self._model(regenerate=True)

    async def _on_reset(self, message: dict[str, Any]) -> None:
        await self.set_image(None, self.source)

    # -- model work ---------------------------------------------------------------------------------

    async def stop_playing(self) -> None:
        """Stop the play loop after its current step (the step finishes and is shown)."""
        play = self.play
        if play is None:
            return
        play.stop = True
        if play.task is not None:
            await asyncio.shield(play.task)
        if self.play is play:
            self.play = None

    async def _play(self, play: _Play) -> None:
        try:
            while not play.stop and not self.closed:
                if not await self._model(regenerate=False):
                    break
        finally:
            play.stop = True
            if self.play is play:
                self.play = None
            self.post_state()

    async def _model(self, regenerate: bool) -> bool:
        """Plan a step on the session's stream (its controls taken now), run it on the device's queue,
        show its frames. False when there was nothing to do or it failed (the page is told why)."""
        async with self.lock:
            stream = self.stream
            if stream is None or self.closed:
                return False
            try:
                job = stream.plan_regenerate() if regenerate else stream.plan_step()
            except ConfigError as err:
                self.error("limit" if stream.full and stream.broken is None else "bad_input", str(err))
                return False
            self.post_points()  # next_frame moved: drags from now on apply after this step

            def where(position: int) -> None:
                self.post({"type": "queue", "position": position})

            try:
                done = await self.studio.queue.run(job.run, where)
                pngs = await asyncio.to_thread(
                    lambda: [base64.b64encode(png(f)).decode() for f in done.result]
                )
            except Exception as err:
                stream.abandon(job)
                log.warning("session %s: a step failed: %s", self.token[:6], err)
                self.error("model", f"the step failed ({type(err).__name__}: {err}); reset to start again")
                self.post_points()
                self.post_state()
                return False
            stream.finish(job, done.result)
            self.last_active = time.monotonic()
            self.post({
                "type": "frames", "start": job.step.start, "latent": job.step.latent, "frames": pngs,
                "total": len(stream.frames), "regenerated": job.regenerate,
                "latency_ms": round(done.run_s * 1000, 1), "queue_wait_ms": round(done.wait_s * 1000, 1),
                "fps": self._fps(len(pngs)),
            })  # fmt: skip
            self.post_points()
            self.post_state()
            return True

    def _fps(self, n: int) -> float | None:
        """Frames per second over the last few seconds, as the page sees them arrive."""
        now = time.monotonic()
        self._frame_times.append((now, n))
        while now - self._frame_times[0][0] > FPS_WINDOW_S:
            self._frame_times.popleft()
        span = now - self._frame_times[0][0]
        if span <= 0:
            return None
        return round(sum(k for _, k in list(self._frame_times)[1:]) / span, 2)

    async def close(self) -> None:
        """Stop, let a running step finish, drop the stream and everything it holds."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            await self.stop_playing()
        async with self.lock:
            self.closed = True
            self.stream = None
        self.outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sender, 5)


class Studio:
    """The shared part: the pipeline, the examples, the device queue and the live sessions."""

    def __init__(self, settings: StudioSettings, pipe: ARDragPipeline, model_name: str, model_args: str):
        self.settings, self.pipe = settings, pipe
        self.model_name, self.model_args = model_name, model_args
        self.examples = load_examples()
        self.queue = DeviceQueue(str(pipe.device))
        self.clients: dict[str, Client] = {}
        self.decoding = asyncio.Semaphore(2)
        if settings.warmup:
            self.queue.run_sync(self._warmup)

    def _warmup(self) -> None:
        """One step of a throwaway stream: what a first step loads once is loaded before anyone waits."""
        example = next(iter(self.examples.values()))
        pipe, image = fit_image(self.pipe, example.image())
        stream = StudioStream(pipe, image, example.prompt)
        for _ in range(2):
            stream.plan_step().run()

    async def reap_idle(self) -> None:
        """Close sessions idle longer than the limit (checked a few times per limit)."""
        limit = self.settings.idle_timeout_s
        while True:
            await asyncio.sleep(min(max(limit / 4, 0.05), 5.0))
            now = time.monotonic()
            for client in list(self.clients.values()):
                if not client.playing and now - client.last_active > limit:
                    log.info(
                        "session %s: idle for %.0f s, closed", client.token[:6], now - client.last_active
                    )
                    client.post({"type": "closed", "reason": f"idle for more than {limit:g} s: reload the "
                                 "page to start again"})  # fmt: skip
                    await client.close()
                    with contextlib.suppress(Exception):
                        await client.socket.close(code=1000)

    async def connect(self, socket: WebSocket) -> None:
        await socket.accept()
        if len(self.clients) >= self.settings.max_sessions:
            limit = self.settings.max_sessions
            message = f"the studio is full ({limit} sessions at once): try again later"
            await socket.send_text(json.dumps({"type": "error", "code": "full", "message": message}))
            await socket.close(code=1013)  # "try again later"
            return
        client = Client(self, socket)
        self.clients[client.token] = client
        log.info("session %s: opened (%d live)", client.token[:6], len(self.clients))
        try:
            client.ready()
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await client.handle(message.get("text"))
        except WebSocketDisconnect:
            pass
        finally:
            await client.close()
            self.clients.pop(client.token, None)
            release_memory()
            log.info("session %s: closed (%d live)", client.token[:6], len(self.clients))

    def client(self, token: str) -> Client:
        client = self.clients.get(token)
        if client is None:
            raise KeyError(token)
        return client


def create_app(studio: Studio) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.get_running_loop().create_task(studio.reap_idle())
        yield
        reaper.cancel()
        for client in list(studio.clients.values()):
            await client.close()
        studio.queue.close()

    app = FastAPI(title="ardrag studio", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.studio = studio
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def gone(token: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": f"session {token[:6]}... is closed: reload the page"}, 404)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/status")
    async def status() -> dict[str, Any]:
        """What a monitor (or the load benchmark) reads: sessions live, model jobs waiting or running."""
        return {
            "sessions": len(studio.clients), "max_sessions": studio.settings.max_sessions,
            "queue": len(studio.queue), "jobs_done": studio.queue.jobs_done, "model": studio.model_name,
            "device": studio.queue.device,
        }  # fmt: skip

    @app.get("/api/examples/{name}.png")
    async def example_png(name: str) -> Response:
        example = studio.examples.get(name)
        if example is None:
            return JSONResponse({"ok": False, "error": f"no example {name!r}"}, 404)
        return FileResponse(example.path, media_type="image/png")

    @app.post("/api/sessions/{token}/image")
    async def upload(token: str, request: Request) -> JSONResponse:
        try:
            client = studio.client(token)
        except KeyError:
            return gone(token)
        limit = studio.settings.max_upload_bytes
        too_big = f"the upload is larger than {limit} bytes; expected a smaller image"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse({"ok": False, "error": too_big}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"ok": False, "error": too_big}, 413)
        try:
            async with studio.decoding:  # a few decodes at a time, whatever the number of uploads
                image = await asyncio.to_thread(decode_upload, bytes(body), studio.settings.max_image_pixels)
        except ConfigError as err:
            status = 413 if "pixels" in str(err) else 415
            return JSONResponse({"ok": False, "error": str(err)}, status)
        name = "".join(c for c in request.headers.get("x-filename", "upload")[:80] if c.isprintable())
        await client.set_image(image, f"upload:{name}")
        s = client.stream
        if s is None:  # the session closed meanwhile
            return gone(token)
        return JSONResponse({"ok": True, "width": s.width, "height": s.height})

    async def download(token: str, what: Callable[[StudioStream], Any], media: str, name: str) -> Response:
        try:
            stream = studio.client(token).stream
        except KeyError:
            return gone(token)
        if stream is None:
            return JSONResponse({"ok": False, "error": "no image yet"}, 404)
        try:
            data = await asyncio.to_thread(what, stream.frozen())  # the record as it is now
        except ConfigError as err:
            return JSONResponse({"ok": False, "error": str(err)}, 404)
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
        return Response(data, media_type=media, headers=headers)

    @app.get("/api/sessions/{token}/video.mp4")
    async def video(token: str) -> Response:
        return await download(token, StudioStream.mp4, "video/mp4", "video.mp4")

    @app.get("/api/sessions/{token}/trajectory.json")
    async def trajectory(token: str) -> Response:
        def text(s: StudioStream) -> bytes:
            return json.dumps(s.trajectory(), indent=1).encode()

        return await download(token, text, "application/json", "trajectory.json")

    @app.get("/api/sessions/{token}/reference.png")
    async def reference(token: str) -> Response:
        return await download(token, StudioStream.reference_png, "image/png", "reference.png")

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await studio.connect(socket)

    return app
