"""``ardrag studio`` in real headless Chromium (Playwright), against the real server with the tiny preset.

The issue's acceptance, end to end: open the page, pick an example, drag a point with mouse events, play
and receive frames without console errors; drag again mid-stream and check against a second run without
that drag that the frames before the drag's first frame are identical and some after it differ; press
regenerate; download the mp4, the trajectory JSON and the reference through the page's links, replay them
with the command the page shows, and get the same frames (the mp4 byte-decoded identical, the page's PNG
frames equal to the library's ``stream_clip`` of the downloads). Uploads that are not images, or too large,
are refused with a message on the page. A screenshot of the page mid-stream goes to
``test-artifacts/studio.png``.

Frames arrive when the server makes them, so every wait is on a condition (a message, a count), never a
fixed sleep. The WebSocket traffic is recorded from the browser's side (Playwright's websocket events),
so the test checks what the server said, not only what the page made of it.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ls_fixtures import free_port
from PIL import Image

from annotation.screenshot import CHROMIUM, CHROMIUM_ARGS
from ardrag.data.codec import get_decoder
from ardrag.inference.generate import load_pipeline, stream_clip
from ardrag.inference.trajectory import load_reference, load_trajectory

pytestmark = pytest.mark.slow

MAX_UPLOAD_MB = 0.05  # small, so that a too-large upload is cheap to make
WAIT_MS = 60_000
# the stream has settled: not playing, no step in flight, every frame the server made is on the page
SETTLED = """() => { const s = window.studio, st = s && s.state;
  return Boolean(st && !st.playing && st.next_frame === st.frames && s.frames.length === st.frames); }"""
# the first drag (both runs) and the second one (mid-stream, first run only): CSS px within the canvas,
# as fractions of its size
FIRST_DRAG = [(0.30, 0.50), (0.33, 0.48), (0.38, 0.45), (0.44, 0.42), (0.50, 0.40), (0.56, 0.40)]
SECOND_DRAG = [(0.56, 0.40), (0.52, 0.50), (0.46, 0.60), (0.40, 0.70), (0.34, 0.76)]


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    """``ardrag studio --preset tiny`` on a free port, as a user starts it; its stderr kept for failures."""
    work = tmp_path_factory.mktemp("studio-server")
    port = free_port()
    cmd = [sys.executable, "-m", "ardrag.cli", "studio", "--preset", "tiny", "--port", str(port),
           "--max-upload-mb", str(MAX_UPLOAD_MB), "--log-dir", str(work / "logs")]  # fmt: skip
    stderr = (work / "stderr.txt").open("wb")
    proc = subprocess.Popen(cmd, cwd=work, stdout=stderr, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ardrag studio exited with {proc.returncode}:\n{_tail(work / 'stderr.txt')}")
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ardrag studio did not answer at {url} in 120 s:\n{_tail(work / 'stderr.txt')}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


class Browser:
    """One page in headless Chromium, with its console problems and WebSocket traffic recorded."""

    def __init__(self, page: Any):
        self.page = page
        self.console: list[str] = []  # console errors and warnings, and uncaught exceptions
        self.received: list[dict[str, Any]] = []  # server -> page messages, in order
        self.sent: list[dict[str, Any]] = []  # page -> server
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
        page.on("websocket", self._on_socket)

    def _on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def _on_socket(self, ws: Any) -> None:
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def wait(self, expression: str, arg: Any = None, timeout: int = WAIT_MS) -> None:
        self.page.wait_for_function(expression, arg=arg, timeout=timeout)

    def frames(self) -> list[str]:
        return self.js("() => window.studio.frames.slice()")

    def settle(self) -> None:
        self.wait(SETTLED)

    def drag(self, fractions: list[tuple[float, float]]) -> dict[str, Any]:
        """Press, move and release on the drag canvas (positions as fractions of its CSS box); returns the
        point message the page sent for it."""
        box = self.page.locator("#drag").bounding_box()
        xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in fractions]
        return self.press_path(xy)

    def press_path(self, xy: list[tuple[float, float]]) -> dict[str, Any]:
        n = len(self.sent)
        mouse = self.page.mouse
        mouse.move(*xy[0])
        mouse.down()
        for x, y in xy[1:]:
            mouse.move(x, y, steps=3)
        mouse.up()
        self.wait_for(lambda: any(m["type"] == "point" for m in self.sent[n:]), "the point message")
        return next(m for m in self.sent[n:] if m["type"] == "point")

    def wait_for(self, condition: Any, what: str, timeout_s: float = WAIT_MS / 1000) -> None:
        """Wait for a condition on the recorded traffic (Playwright delivers events while it waits)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; console: {self.console}")
            self.page.wait_for_timeout(20)

    def marker(self, point: dict[str, Any]) -> tuple[float, float]:
        """Where the page draws a point's marker, in page coordinates (model px -> CSS px)."""
        box = self.page.locator("#drag").bounding_box()
        w, h = self.js("() => [window.studio.image.width, window.studio.image.height]")
        return box["x"] + (point["x"] + 0.5) * box["width"] / w, box["y"] + (point["y"] + 0.5) * box[
            "height"
        ] / h


def _answer(received: list[dict[str, Any]], since: int, point_id: int, end: list[float]) -> dict | None:
    """The first ``points`` message after ``since`` in which the point's path ends where the sent drag ends
    (the server rounds to 1/16 px and clamps into the image): the server's answer to that drag."""
    for m in received[since:]:
        if m["type"] != "points":
            continue
        for p in m["points"]:
            if p["id"] == point_id and np.allclose(p["path"][-1], end, atol=0.07):
                return m
    return None


def _pixels(data_url: str) -> np.ndarray:
    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _run(b: Browser, example: str) -> dict[str, Any]:
    """Pick the example and draw the first drag (the same mouse events every time); returns its message."""
    n = len(b.received)
    b.page.click(f'button.example[data-name="{example}"]')
    b.wait_for(lambda: any(m["type"] == "image" for m in b.received[n:]), "the image message")
    b.wait("() => window.studio.state.has_image && window.studio.frames.length === 0")
    b.wait("() => window.studio.points.length === 0")
    sent = b.drag(FIRST_DRAG)
    assert sent["id"] is None and sent["frames"] == 16 and len(sent["path"]) > 5, sent
    b.wait("() => window.studio.points.length === 1")
    return sent


def test_studio_in_a_browser(studio_url, artifacts_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            b = Browser(context.new_page())
            _session(b, studio_url, artifacts_dir, tmp_path)
        finally:
            browser.close()
    print(f"studio browser test: {time.monotonic() - t0:.1f} s")


def _session(b: Browser, url: str, artifacts: Path, tmp: Path) -> None:
    page = b.page
    page.goto(url + "/")
    b.wait(
        "() => window.studio && window.studio.session && document.querySelectorAll('button.example').length"
    )
    ready = next(m for m in b.received if m["type"] == "ready")
    example = ready["examples"][0]["name"]
    assert page.locator("#message").inner_text() == ""

    # -- run 1: a drag, play, a second drag mid-stream ------------------------------------------------
    first = _run(b, example)
    point = b.js("() => window.studio.points[0]")
    assert page.locator(f'.point-row[data-id="{point["id"]}"]').is_visible()
    assert page.locator(f'.point-row[data-id="{point["id"]}"] .name').inner_text() == f"P{point['id']}"
    page.click("#play")
    b.wait("() => window.studio.frames.length >= 21")
    assert b.js("() => window.studio.state.playing")
    assert not b.console, b.console

    # redraw the point's drag while it plays: press on its marker (it has stopped at its path's end)
    point = b.js("() => window.studio.points[0]")
    start = b.marker(point)
    box = page.locator("#drag").bounding_box()
    n = len(b.received)
    ends = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in SECOND_DRAG[1:]]
    second = b.press_path([start, *ends])
    assert second["id"] == point["id"], (second, point)
    b.wait_for(
        lambda: _answer(b.received, n, point["id"], second["path"][-1]), "the answer to the second drag"
    )
    f_second = _answer(b.received, n, point["id"], second["path"][-1])["next_frame"]
    assert f_second >= 21, f_second  # mid-stream: frames before it were already shown
    b.wait("(f) => window.studio.frames.length >= f + 2", f_second)
    page.wait_for_selector("#frame:not([hidden])")
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "studio.png"), full_page=True)
    b.wait("(f) => window.studio.frames.length >= f + 16", f_second)
    page.click("#pause")
    b.settle()
    frames1 = b.frames()
    assert len(frames1) >= f_second + 16 and all(frames1), len(frames1)
    assert not b.console, b.console

    # -- run 2: reset, the same example and first drag, no second drag --------------------------------
    page.click("#reset")
    b.wait("() => window.studio.frames.length === 0 && window.studio.points.length === 0")
    again = _run(b, example)
    assert again["path"] == first["path"], "the same mouse events gave another path"
    page.click("#play")
    b.wait("(n) => window.studio.frames.length >= n", len(frames1))
    page.click("#pause")
    b.settle()
    frames2 = b.frames()
    n_both = min(len(frames1), len(frames2))
    assert frames1[:f_second] == frames2[:f_second], "a frame before the second drag changed"
    differ = [i for i in range(f_second, n_both) if frames1[i] != frames2[i]]
    assert differ, f"no frame from {f_second} on differs without the second drag"
    print(f"run 1: {len(frames1)} frames, second drag from frame {f_second}; run 2: {len(frames2)} frames; "
          f"{len(differ)} of {n_both - f_second} frames from {f_second} on differ")  # fmt: skip

    # -- regenerate the last step, with the point's intensity lowered from the next frame ---------------
    state = b.js("() => window.studio.state")
    assert state["can_regenerate"] and not page.locator("#regenerate").is_disabled()
    pid = b.js("() => window.studio.points[0].id")
    n = len(b.received)
    page.locator(f'input.intensity[data-id="{pid}"]').fill("0.5")
    b.wait_for(lambda: any(m["type"] == "intensity" for m in b.sent), "the intensity message")
    assert [m for m in b.sent if m["type"] == "intensity"][-1] == {
        "type": "intensity",
        "id": pid,
        "value": 0.5,
    }
    b.wait_for(lambda: any(m["type"] == "points" for m in b.received[n:]), "the points after the intensity")
    before = b.frames()
    page.click("#regenerate")
    b.wait_for(
        lambda: any(m["type"] == "frames" and m["regenerated"] for m in b.received[n:]),
        "the regenerated frames",
    )
    regen = next(m for m in b.received[n:] if m["type"] == "frames" and m["regenerated"])
    total = state["frames"]
    assert regen["total"] == total and regen["start"] == total - len(regen["frames"]) and regen["start"] >= 1
    b.settle()
    after = b.frames()
    assert len(after) == total and after[: regen["start"]] == before[: regen["start"]]
    assert after[regen["start"] :] == [f"data:image/png;base64,{x}" for x in regen["frames"]]
    assert not b.console, b.console

    # -- status, downloads, replay ----------------------------------------------------------------------
    state = b.js("() => window.studio.state")
    status = page.locator("#status").inner_text()
    assert "ms per frame" in status and "frames/s" in status, status
    b.wait("(t) => document.querySelector('#frame-index').textContent === t", f"frame {total - 1} / {total}")
    assert page.locator("#frame").get_attribute("src") == after[-1]
    assert any(m["type"] == "queue" for m in b.received)
    assert page.locator("#replay").inner_text() == state["replay"]
    files = {}
    for link, name in (("#download-mp4", "video.mp4"), ("#download-json", "trajectory.json"),
                       ("#download-ref", "reference.png")):  # fmt: skip
        with page.expect_download() as info:
            page.click(link)
        assert info.value.suggested_filename == name
        files[name] = tmp / name
        info.value.save_as(files[name])
    cmd = shlex.split(state["replay"])
    assert cmd[:2] == ["ardrag", "generate"] and cmd[cmd.index("--seed") + 1] == str(state["seed"]), cmd
    out = subprocess.run(
        [sys.executable, "-m", "ardrag.cli", *cmd[1:]], cwd=tmp, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    decoder = get_decoder("decord", fallback="pyav")
    video = decoder.decode(files["video.mp4"].read_bytes())
    replay = decoder.decode((tmp / "replay.mp4").read_bytes())
    assert video.shape == replay.shape and video.shape[0] == total, (video.shape, replay.shape, total)
    assert np.array_equal(video, replay), "the replayed mp4 differs from the downloaded one"

    # the library, from the downloads, makes the very frames the page received (PNG, lossless)
    seed = state["seed"]
    image, trajectory = load_reference(files["reference.png"]), load_trajectory(files["trajectory.json"])
    assert trajectory.num_frames == total
    assert np.allclose(trajectory.intensity[regen["start"] :, 0], 0.5)
    assert np.allclose(trajectory.intensity[: regen["start"], 0], 1.0)
    pipe = load_pipeline("tiny", None, "unused", seed, "cpu").at_size(image.shape[1], image.shape[0])
    library, _ = stream_clip(pipe, image, trajectory, "x", seed=seed)
    shown = np.stack([_pixels(u) for u in after])
    assert shown.shape == library.shape, (shown.shape, library.shape)
    mismatched = [i for i in range(total) if not np.array_equal(shown[i], library[i])]
    assert not mismatched, f"the page's frames {mismatched[:10]} differ from the library's"
    assert not b.console, b.console

    # -- uploads: refused with a message on the page, then a good one -----------------------------------
    _uploads(b)


def _uploads(b: Browser) -> None:
    page = b.page
    n_errors = len(b.js("() => window.studio.errors"))
    page.set_input_files(
        "#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    b.wait("(n) => window.studio.errors.length > n", n_errors)
    message = page.locator("#message").inner_text()
    assert "not an image" in message and page.locator("#message").is_visible(), message

    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")
    assert len(big.getvalue()) > MAX_UPLOAD_MB * 2**20
    page.set_input_files(
        "#upload", files=[{"name": "big.png", "mimeType": "image/png", "buffer": big.getvalue()}]
    )
    b.wait("(n) => window.studio.errors.length > n + 1", n_errors)
    message = page.locator("#message").inner_text()
    assert "larger than" in message, message
    # the browser reports each refused request (HTTP 415, 413) as a console error: those and nothing else
    refused = [c for c in b.console if "Failed to load resource" in c and ("415" in c or "413" in c)]
    assert len(refused) == 2 and len(b.console) == 2, b.console

    small = io.BytesIO()
    Image.fromarray(noise[:40, :60]).save(small, format="PNG")
    n = len(b.received)
    page.set_input_files(
        "#upload", files=[{"name": "small.png", "mimeType": "image/png", "buffer": small.getvalue()}]
    )
    b.wait_for(lambda: any(m["type"] == "image" for m in b.received[n:]), "the uploaded image")
    image = next(m for m in b.received[n:] if m["type"] == "image")
    assert image["source"].startswith("upload")
    b.wait("() => window.studio.state.has_image && window.studio.frames.length === 0")
    assert page.locator("#message").inner_text() == ""
    assert len(b.console) == 2, b.console
