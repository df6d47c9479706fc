"""The annotation loop against a real Label Studio server: push, a scripted annotator, pull, shards."""

import json

import numpy as np
import pytest
from factories import HARD_CASES

from annotation.client import Client
from annotation.pull import pull
from annotation.push import push
from annotation.scripted import move_keyframe, occluded, outside, prompt, shifted, submit, verdict
from ardrag.curation.pipeline import CurationConfig, run_local
from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.shards import decode_sample, read_manifest, read_sample_file, read_shard

pytestmark = pytest.mark.slow

SOURCE = {"num_clips": 8, "num_frames": 25, "seed": 1, **HARD_CASES}  # 6 clips to annotate, 2 to verify
OFFSET = np.array([6.0, -4.0])  # px, the scripted correction of one point


@pytest.fixture(scope="module")
def loop(tmp_path_factory, ls_settings, ls_server):
    from ardrag.data.sources import build_source

    out = tmp_path_factory.mktemp("queue") / "hard-cases"
    run_local(build_source("procedural", SOURCE), out, CurationConfig(), progress=False)
    client = Client(ls_settings)
    return {"out": out, "client": client, "store": CurationStore(out), "state": {}}


def tasks_of(client, project_id):
    return client.tasks(project_id, with_annotations=True)


def queued(store, key):
    sample = decode_sample(key, read_sample_file(store.sample_path(key))[1], get_decoder("pyav"))
    return sample


def dataset_samples(out):
    samples = []
    for shard in read_manifest(out / "dataset")["shards"]:
        samples += list(read_shard(out / "dataset" / shard["path"], get_decoder("pyav")))
    return samples


def test_push_creates_one_task_per_waiting_sample_and_no_duplicates(loop, ls_settings):
    report = push(loop["out"], ls_settings, loop["client"], progress=False)
    assert report["annotate"]["pushed"] == 6 and report["verify"]["pushed"] == 2
    again = push(loop["out"], ls_settings, loop["client"], progress=False)
    assert again["annotate"] == {**report["annotate"], "present": 6, "pushed": 0}
    assert again["verify"]["pushed"] == 0
    for interface, n in (("annotate", 6), ("verify", 2)):
        tasks = tasks_of(loop["client"], report[interface]["project"])
        keys = [t.data["key"] for t in tasks]
        assert len(keys) == n == len(set(keys))
        # predictions are there as pre-annotations: one track per control point
        if interface == "annotate":
            for t in tasks:
                regions = t.predictions[0].result
                assert len(regions) == t.data["num_points"]
                assert t.data["video"].startswith("/data/local-files/?d=")
    loop["state"]["projects"] = {i: report[i]["project"] for i in ("annotate", "verify")}


def test_media_is_served_by_label_studio(loop, ls_settings, ls_token):
    import httpx

    task = tasks_of(loop["client"], loop["state"]["projects"]["annotate"])[0]
    r = httpx.get(ls_settings.url + task.data["video"], headers={"Authorization": f"Token {ls_token}"})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content[4:8] == b"ftyp"
    outside_root = httpx.get(
        ls_settings.url + "/data/local-files/?d=../../etc/passwd",
        headers={"Authorization": f"Token {ls_token}"},
    )
    assert outside_root.status_code != 200


def test_scripted_annotations_round_trip_into_the_shards(loop, ls_settings):
    client, store, out = loop["client"], loop["store"], loop["out"]
    sdk = client.sdk
    annotate = sorted(tasks_of(client, loop["state"]["projects"]["annotate"]), key=lambda t: t.data["key"])
    verify = sorted(tasks_of(client, loop["state"]["projects"]["verify"]), key=lambda t: t.data["key"])
    corrected, unchanged, left_open = annotate[0], annotate[1], annotate[2]
    d = corrected.data
    k = d["num_points"] - 1  # this point gets an occluded span
    result = shifted(
        corrected.predictions[0].result, "p0", OFFSET[0] / d["width"] * 100, OFFSET[1] / d["height"] * 100
    )
    submit(sdk, corrected.id, result + [occluded(f"p{k}", 5, 9)] + verdict("accept"))
    submit(sdk, unchanged.id, unchanged.predictions[0].result + [prompt("a red square slides left")])
    submit(sdk, verify[0].id, verdict("reject", "wrong tracks"))
    submit(sdk, verify[1].id, verdict("accept"))

    report = pull(out, ls_settings, client, progress=False)
    assert report["accepted"] == 3 and report["rejected"] == 1 and report["invalid"] == 0
    assert report["open"] == len(annotate) - 2 and report["reviews_written"] == 4

    samples = {s.key: s for s in dataset_samples(out)}
    before = queued(store, d["key"])
    after = samples[d["key"]]
    # the corrected point moved by exactly the offset, within 0.5 px after the percent/pixel round trip
    # (on the frames where the point is visible: Label Studio has no position for hidden frames,
    # which get the interpolation across the gap)
    shown = before.visible
    err = np.abs(after.tracks[:, 0] - (before.tracks[:, 0] + OFFSET))[shown[:, 0]].max()
    assert err <= 0.5, err
    for i in range(1, d["num_points"]):
        assert np.abs(after.tracks[:, i] - before.tracks[:, i])[shown[:, i]].max() <= 0.5
    assert np.isfinite(after.tracks).all()
    expected_visible = before.visible.copy()
    expected_visible[4:9, k] = False  # frames 5-9 in Label Studio are 4-8 here
    np.testing.assert_array_equal(after.visible, expected_visible)
    assert after.provenance.annotation.status == "human-annotated"
    assert after.provenance.annotation.annotator == "admin@ardrag.local"
    assert after.provenance.annotation.time is not None
    assert after.provenance.hashes["video"] == before.provenance.hashes["video"]
    np.testing.assert_array_equal(after.video, before.video)  # video bytes kept, not re-encoded

    assert samples[unchanged.data["key"]].prompt == "a red square slides left"
    assert samples[verify[1].data["key"]].provenance.annotation.status == "human-verified"
    assert left_open.data["key"] not in samples and verify[0].data["key"] not in samples

    manifest = read_manifest(out / "dataset")
    assert [r["key"] for r in manifest["reviews"]["rejected"]] == [verify[0].data["key"]]
    assert manifest["reviews"]["rejected"][0]["reason"] == "wrong tracks"
    assert manifest["reviews"]["accepted"] == {"human-annotated": 2, "human-verified": 1}
    summary = json.loads((out / "summary.json").read_text())  # rewritten by the pull
    assert summary["states"]["accepted"] == 3 and summary["states"]["rejected"] == 1
    assert sum(summary["states"].values()) == summary["clips"] == 8
    loop["state"]["version"] = manifest["version"]


def test_pull_twice_adds_no_sample(loop, ls_settings):
    report = pull(loop["out"], ls_settings, loop["client"], progress=False)
    assert report["reviews_written"] == 0 and report["accepted"] == 3
    manifest = read_manifest(loop["out"] / "dataset")
    assert manifest["version"] == loop["state"]["version"]
    keys = [s.key for s in dataset_samples(loop["out"])]
    assert len(keys) == len(set(keys)) == 3


def test_malformed_results_are_flagged_back_and_counted_not_sharded(loop, ls_settings):
    client = loop["client"]
    annotate = sorted(tasks_of(client, loop["state"]["projects"]["annotate"]), key=lambda t: t.data["key"])
    bad = [t for t in annotate if not t.annotations][:3]
    assert len(bad) == 3
    d = bad[0].data
    pred = [t.predictions[0].result for t in bad]
    submit(
        client.sdk,
        bad[0].id,
        move_keyframe(pred[0], "p0", 0, **outside(d["width"], d["height"], ls_settings.box_px)),
    )
    submit(client.sdk, bad[1].id, move_keyframe(pred[1], "p0", -1, frame=bad[1].data["num_frames"] + 3))
    submit(client.sdk, bad[2].id, pred[2][1:] if len(pred[2]) > 1 else [])

    report = pull(loop["out"], ls_settings, client, progress=False)
    assert report["invalid"] == 3 and report["reviews_written"] == 3 and report["accepted"] == 3
    keys = {s.key for s in dataset_samples(loop["out"])}
    problems = {}
    for t in bad:
        assert t.data["key"] not in keys
        review = loop["store"].review(t.data["key"])
        assert review["state"] == "invalid"
        problems[t.id] = " ".join(review["problems"])
        note = client.sdk.tasks.get(id=t.id).data["review_note"]
        assert note.startswith("ardrag could not use annotation") and review["problems"][0] in note
    assert "outside the" in problems[bad[0].id] and "frame" in problems[bad[0].id]
    assert f"outside the clip's frames 1-{bad[1].data['num_frames']}" in problems[bad[1].id]
    assert "p0: no track" in problems[bad[2].id]
    summary = loop["store"].summary()
    assert summary["reasons"]["annotation-invalid"] == 3
    # pulled again: still invalid, counted, not rewritten; the tasks are not pushed again
    again = pull(loop["out"], ls_settings, client, progress=False)
    assert again["invalid"] == 3 and again["reviews_written"] == 0
    assert push(loop["out"], ls_settings, client, progress=False)["annotate"]["pushed"] == 0
    # the annotator fixes one: it is accepted and the note is cleared
    fixed = bad[2]
    client.sdk.annotations.update(id=_latest(client, fixed.id), result=pred[2])
    report = pull(loop["out"], ls_settings, client, progress=False)
    assert report["invalid"] == 2 and report["accepted"] == 4
    assert client.sdk.tasks.get(id=fixed.id).data["review_note"] == ""


def _latest(client, task_id):
    task = client.sdk.tasks.get(id=task_id)
    return max(a["id"] if isinstance(a, dict) else a.id for a in task.annotations)


def test_an_acceptance_changed_to_a_rejection_leaves_no_reviewed_file_and_back(loop, ls_settings):
    client, store, out = loop["client"], loop["store"], loop["out"]
    verify = sorted(tasks_of(client, loop["state"]["projects"]["verify"]), key=lambda t: t.data["key"])
    task = verify[1]  # accepted above
    key, reviewed = task.data["key"], store.reviewed_sample_path(task.data["key"])
    assert store.review(key)["state"] == "accepted" and reviewed.is_file()
    accepted_before = pull(out, ls_settings, client, progress=False)["accepted"]
    annotation = _latest(client, task.id)

    # the person changes their mind: the same annotation, updated through the API as the editor does
    client.sdk.annotations.update(id=annotation, result=verdict("reject", "wrong tracks"))
    report = pull(out, ls_settings, client, progress=False)
    assert report["reviews_written"] == 1 and report["reviewed_removed"] == 1
    assert report["accepted"] == accepted_before - 1
    assert store.review(key)["state"] == "rejected" and not reviewed.exists()
    assert key not in {s.key for s in dataset_samples(out)}
    assert key in [r["key"] for r in read_manifest(out / "dataset")["reviews"]["rejected"]]
    again = pull(out, ls_settings, client, progress=False)  # nothing left to remove, nothing rewritten
    assert again["reviews_written"] == 0 and again["reviewed_removed"] == 0 and not reviewed.exists()

    # and back to accepted: the file is written again and the sample sharded
    client.sdk.annotations.update(id=annotation, result=verdict("accept"))
    report = pull(out, ls_settings, client, progress=False)
    assert report["reviews_written"] == 1 and report["reviewed_removed"] == 0
    assert report["accepted"] == accepted_before
    assert store.review(key)["state"] == "accepted" and reviewed.is_file()
    samples = {s.key: s for s in dataset_samples(out)}
    assert samples[key].provenance.annotation.status == "human-verified"
    assert key not in [r["key"] for r in read_manifest(out / "dataset")["reviews"]["rejected"]]


def test_reviews_name_their_annotation(loop):
    for path in (loop["out"] / "reviews").glob("*.json"):
        review = json.loads(path.read_text())
        assert {"key", "version", "task", "annotation", "annotator", "time", "state"} <= set(review)
