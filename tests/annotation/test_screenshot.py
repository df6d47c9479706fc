"""What annotators see: a headless-Chromium screenshot of the `annotate` editor with a task loaded."""

import shutil

import cv2
import pytest
from factories import HARD_CASES

from annotation.client import Client
from annotation.push import push
from annotation.screenshot import screenshot
from annotation.settings import credentials
from ardrag.curation.pipeline import CurationConfig, run_local

pytestmark = pytest.mark.slow


def test_screenshot_of_the_annotate_editor(tmp_path, ls_settings, ls_server, artifacts_dir):
    from ardrag.data.sources import build_source

    out = tmp_path / "screenshot-queue"
    run_local(
        build_source("procedural", {"num_clips": 2, "num_frames": 33, "seed": 4, **HARD_CASES}),
        out,
        CurationConfig(),
        progress=False,
    )
    report = push(out, ls_settings, Client(ls_settings), progress=False)
    project = report["annotate"]["project"]
    task = Client(ls_settings).tasks(project)[0]
    creds = credentials(ls_settings)
    # screenshot() waits for the editor, a decoded video frame and one region-list row per pre-filled
    # track, and raises naming what did not appear
    path = screenshot(
        ls_settings.url, creds.username, creds.password, project, task.id, tmp_path / "annotate.png", frame=9
    )
    kept = shutil.copy(path, artifacts_dir / "annotate-editor.png")
    image = cv2.imread(str(kept))
    assert image is not None and image.shape[1] == 1600 and image.shape[0] >= 1000
    assert image.std() > 20  # a rendered page, not a blank one
