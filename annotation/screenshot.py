"""A headless-Chromium screenshot of the Label Studio editor with one task open.

Shows what annotators see (the video frame with the pre-filled boxes, the region list, the timeline)
without opening a browser by hand, e.g. to check a labeling config or a push. Playwright drives the
system Chromium (``/usr/bin/chromium``); it is an optional dependency and never downloads a browser.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from annotation.settings import AnnotationSettings, credentials
from ardrag.errors import ArdragError

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Rendered = the editor and its frame counter are there, the video has a decoded frame, and every
# region in the editor's store (predictions pre-fill them) has its row in the region list.
EDITOR_READY = """() => {
  const video = document.querySelector('.lsf-video-segmentation video, .lsf-editor video');
  const frames = document.querySelector('.lsf-frames-control');
  if (!document.querySelector('.lsf-editor') || !video || !frames) return false;
  if (video.readyState < 2 || !video.videoWidth) return false;
  const a = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
  if (!a) return false;
  return document.querySelectorAll('.lsf-outliner-item').length >= a.regions.length;
}"""


class ScreenshotError(ArdragError, RuntimeError):
    """The editor could not be opened or did not finish rendering in time."""


def screenshot(
    url: str,
    username: str,
    password: str,
    project_id: int,
    task_id: int,
    out: str | Path,
    *,
    width: int = 1600,
    height: int = 1000,
    timeout_s: float = 90.0,
    frame: int | None = None,
) -> Path:
    """Log in, open ``task_id`` of ``project_id`` in the editor, wait until it is rendered, write a PNG.

    ``frame`` (1-based, as Label Studio counts) moves the video there first; the default keeps frame 1.
    """
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise ImportError("screenshots need playwright: pip install 'ardrag[dev]' (or playwright)") from err
    if not Path(CHROMIUM).is_file():
        raise ScreenshotError(f"no Chromium at {CHROMIUM}; install it (apt-get install chromium)")
    out = Path(out)
    base = url.rstrip("/")
    editor_url = f"{base}/projects/{project_id}/data?task={task_id}"
    deadline = time.monotonic() + timeout_s

    def left_ms() -> float:
        return max(1.0, (deadline - time.monotonic()) * 1000)

    start = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            step, where = "the login form", f"{base}/user/login/"
            try:
                page.goto(where, timeout=left_ms())
                page.fill("input[name=email]", username, timeout=left_ms())
                page.fill("input[name=password]", password, timeout=left_ms())
                page.click("button[type=submit]", timeout=left_ms())
                page.wait_for_load_state("networkidle", timeout=left_ms())
                if "/user/login" in page.url:
                    raise ScreenshotError(f"login as {username!r} at {where} failed (wrong password?)")
                step, where = "the editor with a loaded video and its region list", editor_url
                page.goto(editor_url, timeout=left_ms())
                page.wait_for_function(EDITOR_READY, timeout=left_ms(), polling=200)
                if frame is not None:
                    step = f"frame {frame}"
                    page.click(".lsf-frames-control", timeout=left_ms())
                    page.fill(".lsf-frames-control input", str(frame), timeout=left_ms())
                    page.press(".lsf-frames-control input", "Enter", timeout=left_ms())
                    page.wait_for_function(EDITOR_READY, timeout=left_ms(), polling=200)
                page.wait_for_load_state("networkidle", timeout=left_ms())
                page.wait_for_timeout(500)  # let the canvas draw the boxes of the current frame
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True, timeout=left_ms())
            except PlaywrightError as err:
                raise ScreenshotError(
                    f"{where}: {step} did not appear within {timeout_s:g} s ({type(err).__name__})"
                ) from err
        finally:
            browser.close()
    log.info("screenshot of %s in %.1f s: %s", editor_url, time.monotonic() - start, out)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m annotation.screenshot``: credentials from the settings unless given."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="Label Studio address (default: ARDRAG_LS_URL)")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--task", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--frame", type=int, default=None, help="1-based video frame to show")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=90.0, help="seconds for the whole run")
    p.add_argument("--username", default=None, help="login e-mail (default: the settings' user)")
    p.add_argument("--password-env", default=None, help="environment variable holding the password")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = AnnotationSettings()
    creds = None if args.username and args.password_env else credentials(settings)
    if args.password_env and args.password_env not in os.environ:
        p.error(f"--password-env {args.password_env}: that environment variable is not set")
    path = screenshot(
        args.url or settings.url,
        args.username or creds.username,
        os.environ[args.password_env] if args.password_env else creds.password,
        args.project,
        args.task,
        args.out,
        width=args.width,
        height=args.height,
        timeout_s=args.timeout,
        frame=args.frame,
    )
    print(path)


if __name__ == "__main__":
    main()
