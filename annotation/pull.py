"""Pull: finished Label Studio annotations become reviews, accepted samples and new shards.

For each task of the dataset's projects whose sample is still the current version, the latest submitted
annotation is read (:mod:`annotation.convert`) and validated. Accepted: the corrected sample (tracks,
visibility, prompt, provenance ``human-verified`` or ``human-annotated`` with annotator and time) is
written to ``reviewed/``, then its review record. Rejected: a review record with the reason. Invalid: a
review record listing the problems, and the problems written back onto the task (``review_note``, shown
at the top of the task) for the annotator to fix; the sample stays waiting, never sharded. A review
remembers which annotation (id and update time, to the microsecond) it came from, so pulling again
changes nothing until a person changes something. Only an accepted sample has a ``reviewed/`` file: when
a person changes an acceptance into a rejection (or into an answer that is invalid), the file is removed
after the new review is written (a pull that stopped in between removes it the next time). Finally the
dataset is resharded when its accepted set changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections import Counter
from typing import Any

from annotation.client import Client
from annotation.convert import AnnotationInvalid, Decision, read_annotate, read_verify
from annotation.push import dataset_name, project_title
from annotation.settings import AnnotationSettings
from ardrag.console import Progress
from ardrag.curation.pipeline import shard_accepted
from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.sample import AnnotationInfo, PromptInfo, Provenance
from ardrag.data.shards import read_sample_file, revise_members, sample_file_bytes
from ardrag.fsutil import atomic_write

log = logging.getLogger(__name__)
REPORT_KEYS = (
    "tasks", "open", "accepted", "rejected", "invalid", "stale", "reviews_written", "reviewed_removed",
)  # fmt: skip


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value is not None else None


def _precise(value: Any) -> str | None:
    """An update time to the microsecond: two changes within one second are two changes."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value) if value is not None else None


def latest_annotation(task: Any) -> Any | None:
    """The task's most recently updated submitted (not skipped) annotation."""
    done = [a for a in (_get(task, "annotations") or []) if not _get(a, "was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (_precise(_get(a, "updated_at")) or "", _get(a, "id") or 0))


def decide(interface: str, result: list[dict[str, Any]], data: dict[str, Any]) -> Decision:
    if interface == "verify":
        return read_verify(result)
    return read_annotate(result, data["num_points"], data["num_frames"], data["width"], data["height"])


def accept(store: CurationStore, key: str, decision: Decision, status: str, annotator: str, time: str) -> str:
    """Write the corrected sample file; returns its sha256."""
    _, members = read_sample_file(store.sample_path(key))
    changes: dict[str, Any] = {}
    if decision.tracks is not None:
        changes.update(tracks=decision.tracks, visible=decision.visible)
    if decision.prompt is not None:
        changes["prompt"] = decision.prompt
    provenance = Provenance.model_validate(json.loads(members["json"])["provenance"])
    update: dict[str, Any] = {"annotation": AnnotationInfo(status=status, annotator=annotator, time=time)}
    if decision.prompt is not None:
        update["prompt"] = PromptInfo(source="person", detail=annotator)
    changes["provenance"] = provenance.model_copy(update=update)
    _, revised = revise_members(key, members, get_decoder("pyav"), **changes)
    data = sample_file_bytes(key, revised)
    atomic_write(store.reviewed_sample_path(key), data)
    return hashlib.sha256(data).hexdigest()


def pull(
    store_dir: str | os.PathLike[str],
    settings: AnnotationSettings | None = None,
    client: Client | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Turn the finished annotations of a curation folder's projects into reviews and shards."""
    settings = settings or AnnotationSettings()
    client = client or Client(settings)
    store = CurationStore(store_dir)
    name = dataset_name(store_dir)
    waiting = {c["key"]: c for c in store.waiting()}
    counts: Counter[str] = Counter()
    for interface in ("verify", "annotate"):
        project = client.find_project(project_title(name, interface))
        if project is None:
            continue
        tasks = client.tasks(project.id, with_annotations=True)
        for task in Progress(tasks, desc=f"pull {interface}", unit="task", enabled=progress):
            counts["tasks"] += 1
            data = task.data
            clip = waiting.get(data.get("key"))
            if clip is None or clip.get("sample_sha256") != data.get("version"):
                counts["stale"] += 1  # the sample was re-curated: this task is of an old version
                continue
            annotation = latest_annotation(task)
            if annotation is None:
                counts["open"] += 1
                continue
            stamp = f"{_get(annotation, 'id')}@{_precise(_get(annotation, 'updated_at'))}"
            review = clip["review"]
            if review is None or review.get("stamp") != stamp:
                review = _review(store, client, interface, task, annotation, stamp)
                counts["reviews_written"] += 1
            counts[review["state"]] += 1
            if review["state"] != "accepted" and _drop_reviewed(store, review["key"]):
                counts["reviewed_removed"] += 1
    manifest = shard_accepted(store)
    store.write_summary(store.summary(store.sharding()["inputs"]))  # the states people changed
    report = {k: counts.get(k, 0) for k in REPORT_KEYS}
    report.update(
        dataset=name, version=manifest["version"], samples=manifest["samples"], buckets=manifest["buckets"]
    )
    log.info("pulled %s", report)
    return report


def _drop_reviewed(store: CurationStore, key: str) -> bool:
    """Remove the accepted sample file of a sample that is no longer accepted; whether there was one."""
    path = store.reviewed_sample_path(key)
    if not (path.exists() or path.is_symlink()):
        return False
    path.unlink()
    log.info("%s is no longer accepted: removed %s", key, path)
    return True


def _review(
    store: CurationStore, client: Client, interface: str, task: Any, annotation: Any, stamp: str
) -> dict[str, Any]:
    data = task.data
    key = data["key"]
    annotator = client.annotator(_get(annotation, "completed_by"))
    time = _iso(_get(annotation, "updated_at"))
    review: dict[str, Any] = {
        "key": key,
        "version": data["version"],
        "interface": interface,
        "task": task.id,
        "annotation": _get(annotation, "id"),
        "stamp": stamp,
        "annotator": annotator,
        "time": time,
    }
    note = ""
    try:
        decision = decide(interface, _get(annotation, "result") or [], data)
        if decision.verdict != "reject" and not (decision.prompt or data.get("prompt") or "").strip():
            raise AnnotationInvalid(["the clip has no prompt: write one in the prompt box, then submit"])
    except AnnotationInvalid as err:
        review.update(state="invalid", problems=err.problems)
        note = f"ardrag could not use annotation {_get(annotation, 'id')}: {err}. Fix it and update."
        log.warning("task %s (%s): invalid annotation: %s", task.id, key, err)
    else:
        if decision.verdict == "reject":
            review.update(state="rejected", reason=decision.reason)
        else:
            status = "human-verified" if interface == "verify" else "human-annotated"
            sha = accept(store, key, decision, status, annotator, time or "")
            review.update(
                state="accepted",
                status=status,
                sample_sha256=sha,
                prompt_corrected=decision.prompt is not None,
            )
    if note or data.get("review_note"):  # flag the problems back, or clear an old flag
        client.call(
            "flag the task", client.sdk.tasks.update, id=str(task.id), data={**data, "review_note": note}
        )
    return store.write_review(review)
