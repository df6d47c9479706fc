"""A headless-Chromium screenshot of the Label Studio editor with one task open.

Shows what annotators see (the video frame with the pre-filled boxes, the region list, the timeline, the
answers of a submitted annotation) without opening a browser by hand, e.g. to check a labeling config or
a push. Playwright drives the system Chromium (``/usr/bin/chromium``); it is an optional dependency and
never downloads a browser.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotation.settings import AnnotationSettings, credentials
from ardrag.errors import ArdragError

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# What of the rendered editor is still missing: the editor and its frame counter, a decoded frame of the
# video (Label Studio keeps the <video> outside the editor and paints it on a canvas), and a row in the
# region list for every region of the open annotation (predictions pre-fill them). Answers to choices and
# text boxes are regions in the store too, but the list leaves them out (regionStore.regions does as well).
# Empty when ready.
MISSING = """() => {
  const missing = [];
  const need = { '.lsf-editor': 'the editor', '.lsf-frames-control': 'the frame counter',
                 '.lsf-video-canvas canvas': 'the video canvas' };
  for (const [sel, what] of Object.entries(need))
    if (!document.querySelector(sel)) missing.push(`${what} (${sel})`);
  const videos = Array.from(document.querySelectorAll('video'));
  if (!videos.length || videos.some((v) => v.readyState < 2 || !v.videoWidth))
    missing.push('a decoded video frame (<video> readyState >= 2)');
  const a = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
  if (!a) missing.push('an annotation in the editor (Htx.annotationStore.selected)');
  else {
    const n = a.regionStore.regions.length;
    if (document.querySelectorAll('.lsf-outliner-item').length < n)
      missing.push(`the region list (${n} regions, .lsf-outliner-item)`);
  }
  return missing;
}"""
READY = f"() => ({MISSING})().length === 0"
AT_FRAME = (
    "(f) => (document.querySelector('.lsf-frames-control')?.textContent || '').trim().startsWith(f + ' ')"
)
# How much taller the window must be for nothing in the editor to scroll (the editor scrolls inside the
# window, so a full-page screenshot alone would cut off what is below the video).
OVERFLOW = """() => Math.max(0, ...Array.from(document.querySelectorAll('.lsf-editor, .lsf-editor *'))
  .filter((e) => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY))
  .map((e) => e.scrollHeight - e.clientHeight))"""
# What the editor shows in the window: rows of the region list, timeline rows in view without scrolling
# the timeline, the checked choices in view (by their label, without the hotkey hint), and its text.
SHOWN = """() => {
  const editor = document.querySelector('.lsf-editor');
  const inside = (e, box) => {
    const b = e.getBoundingClientRect();
    return b.height > 0 && b.top >= box.top - 0.5 && b.bottom <= box.bottom + 0.5;
  };
  const win = { top: 0, bottom: window.innerHeight };
  const label = (input) => {
    const c = input.closest('label').cloneNode(true);
    c.querySelectorAll('.lsf-hint').forEach((h) => h.remove());
    return c.textContent.trim();
  };
  const scroll = document.querySelector('.lsf-timeline-frames__scroll');
  const rows = scroll ? Array.from(scroll.querySelectorAll('.lsf-keypoints')) : [];
  const box = scroll && scroll.getBoundingClientRect();
  return {
    regions: document.querySelectorAll('.lsf-outliner-item').length,
    timeline_rows: rows.length,
    timeline_rows_shown: rows.filter((r) => inside(r, box) && inside(r, win)).length,
    checked: Array.from(editor.querySelectorAll('label input:checked'))
      .filter((i) => inside(i.closest('label'), win)).map(label),
    text: editor.innerText,
  };
}"""


@dataclass(frozen=True)
class Shot:
    """A written screenshot and what the editor showed in it, so that a caller can check the picture."""

    path: Path
    regions: int  # rows in the region list
    timeline_rows: int  # rows of the video timeline (one per track or span)
    timeline_rows_shown: int  # of those, the ones in view without scrolling the timeline
    checked: tuple[str, ...]  # the checked choices in view, e.g. a verdict and its reason
    text: str  # the editor's text (headers, the task's texts, submitted prompts, labels)
    cut_px: int  # how much of the editor still scrolls out of the picture (0: none)


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
) -> Shot:
    """Log in, open ``task_id`` of ``project_id`` in the editor, wait until it is rendered, write a PNG.

    It shows the annotation Label Studio opens: a submitted one, else one pre-filled from the predictions.
    ``frame`` (1-based, as Label Studio counts) moves the video there first; the default keeps frame 1.
    The PNG is ``width`` wide and at least ``height`` tall: taller when the editor would scroll, so that
    everything below the video (the answers) is in it.
    """
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise ImportError("screenshots need playwright: pip install 'ardrag[dev]' (or playwright)") from err
    if not Path(CHROMIUM).is_file():
        raise ScreenshotError(f"no Chromium at {CHROMIUM}; install it (apt-get install chromium)")
    if frame is not None and frame < 1:
        raise ValueError(f"frame is {frame}; Label Studio counts frames from 1")
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
                step, where = "the editor", editor_url
                page.goto(editor_url, timeout=left_ms())
                page.wait_for_function(READY, timeout=left_ms(), polling=200)
                if frame is not None:
                    step = f"frame {frame} (typed into the frame counter)"
                    page.click(".lsf-frames-control", timeout=left_ms())
                    page.fill(".lsf-frames-control input", str(frame), timeout=left_ms())
                    page.press(".lsf-frames-control input", "Enter", timeout=left_ms())
                    page.wait_for_function(AT_FRAME, arg=frame, timeout=left_ms(), polling=200)
                    page.wait_for_function(READY, timeout=left_ms(), polling=200)
                page.wait_for_load_state("networkidle", timeout=left_ms())
                page.wait_for_timeout(500)  # let the canvas draw the boxes of the current frame
                step = "the whole editor (a taller window)"
                _fit(page, width, 4 * height)
                page.wait_for_function(READY, timeout=left_ms(), polling=200)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True, timeout=left_ms())
                shown = {**page.evaluate(SHOWN), "cut_px": page.evaluate(OVERFLOW)}
            except PlaywrightError as err:
                try:
                    missing = page.evaluate(MISSING) if where == editor_url else []
                except PlaywrightError:
                    missing = []
                what = ", ".join(missing) if missing and step == "the editor" else step
                raise ScreenshotError(
                    f"{where}: {what} did not appear within {timeout_s:g} s ({type(err).__name__}); "
                    f"is task {task_id} in project {project_id}, and its video served?"
                ) from err
        finally:
            browser.close()
    shot = Shot(path=out, **{**shown, "checked": tuple(shown["checked"])})
    if shot.cut_px > 1:
        log.warning(
            "%s: %d px of the editor did not fit (the window grows to %d px at most)",
            out,
            shot.cut_px,
            4 * height,
        )
    log.info(
        "screenshot of %s in %.1f s: %s (%d region rows, %d of %d timeline rows in view, checked: %s)",
        editor_url,
        time.monotonic() - start,
        out,
        shot.regions,
        shot.timeline_rows_shown,
        shot.timeline_rows,
        ", ".join(shot.checked) or "nothing",
    )
    return shot


def _fit(page: Any, width: int, max_height: int) -> None:
    """Grow the window until nothing in the editor scrolls, twice in a row (a text that renders late, or
    the new layout, can make it scroll again)."""
    settled = 0
    for _ in range(20):
        if settled == 2:
            return
        extra, now = page.evaluate(OVERFLOW), page.viewport_size["height"]
        if extra <= 1 or now >= max_height:
            settled += 1
        else:
            settled = 0
            page.set_viewport_size({"width": width, "height": min(now + extra, max_height)})
        page.wait_for_timeout(250)


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
    if args.password_env and args.password_env not in os.environ:
        p.error(f"--password-env {args.password_env}: that environment variable is not set")
    settings = AnnotationSettings()
    if args.username and args.password_env:
        username, password = args.username, os.environ[args.password_env]
    else:  # the secret file or ARDRAG_LS_* variables; never printed
        creds = credentials(settings)
        username = args.username or creds.username
        password = os.environ[args.password_env] if args.password_env else creds.password
    opts = {"width": args.width, "height": args.height, "timeout_s": args.timeout, "frame": args.frame}
    shot = screenshot(args.url or settings.url, username, password, args.project, args.task, args.out, **opts)
    print(shot.path)


if __name__ == "__main__":
    main()
