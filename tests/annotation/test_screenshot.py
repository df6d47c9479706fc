"""What annotators see: headless-Chromium screenshots of both editors, with tasks open and answered."""

import shutil

import cv2
import pytest
from factories import HARD_CASES

from annotation.client import Client
from annotation.pull import pull
from annotation.push import push
from annotation.screenshot import screenshot
from annotation.scripted import move_keyframe, occluded, outside, prompt, shifted, submit, verdict
from annotation.settings import credentials
from ardrag.curation.pipeline import CurationConfig, run_local

pytestmark = pytest.mark.slow

SOURCE = {"num_clips": 4, "num_frames": 33, "seed": 4, **HARD_CASES}  # 3 clips to annotate, 1 to verify
NOTE_LABEL = "Problems to fix (none when empty):"


@pytest.fixture(scope="module")
def queue(tmp_path_factory, ls_settings, ls_server):
    """Pushed tasks: annotate tasks left open, answered, and answered wrongly (flagged by a pull); the
    verify task answered."""
    from ardrag.data.sources import build_source

    out = tmp_path_factory.mktemp("screenshots") / "screenshot-queue"
    run_local(build_source("procedural", SOURCE), out, CurationConfig(), progress=False)
    client = Client(ls_settings)
    report = push(out, ls_settings, client, progress=False)
    projects = {i: report[i]["project"] for i in ("annotate", "verify")}
    annotate = client.tasks(projects["annotate"], with_annotations=True)
    (verify,) = client.tasks(projects["verify"], with_annotations=True)
    # the most points answered, to see 8 tracks and a span on the timeline
    answered, flagged, left_open = sorted(annotate, key=lambda t: (-t.data["num_points"], t.data["key"]))
    assert answered.data["num_points"] == 8
    moved = shifted(answered.predictions[0].result, "p0", 2.0, -1.0) + [occluded("p1", 5, 9)]
    submit(client.sdk, answered.id, moved + verdict("accept") + [prompt("a red square")])
    away = outside(flagged.data["width"], flagged.data["height"], ls_settings.box_px)
    submit(client.sdk, flagged.id, move_keyframe(flagged.predictions[0].result, "p0", 0, **away))
    submit(client.sdk, verify.id, verdict("reject", "wrong tracks") + [prompt("a blue disc falls")])
    assert pull(out, ls_settings, client, progress=False)["invalid"] == 1  # the note on the flagged task
    tasks = {t.id: t for t in client.tasks(projects["annotate"]) + client.tasks(projects["verify"])}
    return {
        "projects": projects,
        "tasks": {"answered": answered, "flagged": flagged, "open": left_open, "verify": verify},
        "data": {t_id: t.data for t_id, t in tasks.items()},  # as shown now (the note written)
    }


def shoot(ls_settings, queue, which, tmp_path, artifacts_dir, name, **kwargs):
    task = queue["tasks"][which]
    project = queue["projects"]["verify" if which == "verify" else "annotate"]
    creds = credentials(ls_settings)
    shot = screenshot(
        ls_settings.url, creds.username, creds.password, project, task.id, tmp_path / name, **kwargs
    )
    kept = shutil.copy(shot.path, artifacts_dir / name)
    image = cv2.imread(str(kept))
    assert image is not None and image.shape[1] == 1600 and image.shape[0] >= 1000
    assert image.std() > 20  # a rendered page, not a blank one
    assert shot.cut_px <= 1  # nothing of the editor scrolls out of the picture
    prompt_line = f"Prompt:\n{queue['data'][task.id]['prompt']}"
    assert prompt_line in shot.text  # the prompt, labelled
    return shot, image


def test_screenshot_of_the_annotate_editor(tmp_path, ls_settings, queue, artifacts_dir):
    # an open task: one region-list row and one timeline row per pre-filled track, all in view
    shot, _ = shoot(ls_settings, queue, "open", tmp_path, artifacts_dir, "annotate-editor.png", frame=9)
    n = queue["tasks"]["open"].data["num_points"]
    assert shot.regions == shot.timeline_rows == shot.timeline_rows_shown == n
    assert shot.checked == ()


def test_screenshot_of_an_answered_annotate_task(tmp_path, ls_settings, queue, artifacts_dir):
    shot, image = shoot(ls_settings, queue, "answered", tmp_path, artifacts_dir, "annotate-answered.png")
    # 8 tracks and the occluded span, not the verdict and the prompt; all on the timeline without scrolling
    assert shot.regions == shot.timeline_rows == shot.timeline_rows_shown == 9
    assert shot.checked == ("accept",)
    assert "Corrected prompt (leave empty to keep it)\n\na red square" in shot.text
    assert image.shape[0] > 1000  # the window grew: the answers are below the video


def test_screenshot_of_an_answered_verify_task(tmp_path, ls_settings, queue, artifacts_dir):
    shot, _ = shoot(ls_settings, queue, "verify", tmp_path, artifacts_dir, "verify-answered.png")
    assert shot.regions == 0
    assert shot.checked == ("reject", "wrong tracks")
    assert "Corrected prompt (leave empty to keep it)\n\na blue disc falls" in shot.text
    assert f"{NOTE_LABEL}\n" in shot.text  # labelled even when there is no note


def test_screenshot_of_a_flagged_task_shows_the_note_labelled(tmp_path, ls_settings, queue, artifacts_dir):
    shot, _ = shoot(ls_settings, queue, "flagged", tmp_path, artifacts_dir, "annotate-flagged.png")
    note = queue["data"][queue["tasks"]["flagged"].id]["review_note"]
    assert note.startswith("ardrag could not use annotation") and f"{NOTE_LABEL}\n{note}" in shot.text
    assert shot.regions == queue["tasks"]["flagged"].data["num_points"]
