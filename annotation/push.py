"""Push: samples waiting for a person become Label Studio tasks, once.

Clips routed to ``awaiting_verification`` go to the dataset's ``verify`` project, clips routed to
``awaiting_annotation`` to its ``annotate`` project (tracks pre-filled as predictions). Every task's data
carries the sample key and version (the sha256 of the queued sample file); before importing, push lists
the tasks already there, so a rerun, or a rerun after a failure halfway, creates no duplicate. A sample
that already has a final review is not pushed again; one whose review was invalid already has its task.
The dataset's media folder must hold folders and regular files only: push refuses to publish while it
holds a symlink (Label Studio would serve what the link points at).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from annotation.client import Client
from annotation.convert import annotate_prediction
from annotation.media import check_media_folder, media_folder, media_name, preview_bytes, write_media
from annotation.settings import AnnotationSettings
from ardrag.console import Progress
from ardrag.curation.store import CurationStore
from ardrag.data.codec import get_decoder
from ardrag.data.shards import decode_sample, read_sample_file

log = logging.getLogger(__name__)

INTERFACE_OF = {"awaiting_verification": "verify", "awaiting_annotation": "annotate"}


def routing_note(decision: dict[str, Any]) -> str:
    """What sent the clip to a person, as one line: the rule, its measured value and the threshold."""
    if "value" not in decision:
        return decision.get("reason", "")
    return f"{decision['reason']}: measured {decision['value']:g}, threshold {decision['threshold']:g}"


def dataset_name(store_dir: str | os.PathLike[str]) -> str:
    """A name for the dataset's projects and media folder: the curation folder's name."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(store_dir).resolve().name).strip("-")
    return name[:32] or "dataset"


def project_title(name: str, interface: str) -> str:
    return f"ardrag {name} {interface}"


def _array(members: dict[str, bytes], name: str) -> np.ndarray:
    return np.load(io.BytesIO(members[name]), allow_pickle=False)


def make_task(
    store: CurationStore, clip: dict[str, Any], interface: str, media_dir: Path, settings: AnnotationSettings
) -> dict[str, Any]:
    """The task (data and predictions) of one waiting clip; writes its media file first."""
    key, version = clip["key"], clip["sample_sha256"]
    _, members = read_sample_file(store.sample_path(key))
    meta = json.loads(members["json"])
    w, h, fps, frames = meta["width"], meta["height"], meta["fps"], meta["num_frames"]
    relative = Path(media_dir.name) / interface
    folder = media_folder(media_dir, interface)
    if interface == "verify":
        sample = decode_sample(key, members, get_decoder("pyav"))
        name = media_name(key, version, "preview")
        write_media(folder, name, preview_bytes(sample))
    else:
        name = media_name(key, version, "clip")
        write_media(folder, name, members["mp4"])
    data = {
        "key": key,
        "version": version,
        "interface": interface,
        "dataset": media_dir.name,
        "prompt": members["prompt.txt"].decode("utf-8"),
        "fps": fps,
        "num_frames": frames,
        "width": w,
        "height": h,
        "num_points": meta["num_points"],
        "reason": clip.get("reason"),
        "routing": routing_note(clip.get("decision") or {}),
        "prompt_source": (meta["provenance"].get("prompt") or {}).get("source", "none"),
        "review_note": "",
        ("preview" if interface == "verify" else "video"): f"/data/local-files/?d={relative / name}",
    }
    task: dict[str, Any] = {"data": data}
    if interface == "annotate":
        tracks, visible = _array(members, "tracks.npy"), _array(members, "visible.npy")
        result = annotate_prediction(
            tracks, visible, w, h, fps, settings.box_px, settings.keyframe_tolerance_px
        )
        tracker = meta["provenance"].get("tracker") or {}
        task["predictions"] = [{"model_version": tracker.get("name", "tracker"), "result": result}]
    return task


def push(
    store_dir: str | os.PathLike[str],
    settings: AnnotationSettings | None = None,
    client: Client | None = None,
    *,
    after_batch: Callable[[str, int], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Create the missing tasks of every waiting sample of a curation folder; returns counts per
    interface: ``waiting`` (no final review yet), ``present`` (task already there), ``pushed`` (new)."""
    settings = settings or AnnotationSettings()
    client = client or Client(settings)
    store = CurationStore(store_dir)
    name = dataset_name(store_dir)
    media_dir = media_folder(settings.media_root, name)
    check_media_folder(media_dir)  # before any task points into it
    open_clips = [c for c in store.waiting() if c["review"] is None or c["review"]["state"] == "invalid"]
    report: dict[str, Any] = {"dataset": name}
    for interface in ("verify", "annotate"):
        clips = [c for c in open_clips if INTERFACE_OF[c["state"]] == interface]
        counts = {"waiting": len(clips), "present": 0, "pushed": 0}
        report[interface] = counts
        if not clips:
            continue
        storage = f"{settings.server_media_root.rstrip('/')}/{name}"
        project = client.ensure_project(project_title(name, interface), interface, storage)
        counts["project"] = project.id
        present = {(t.data.get("key"), t.data.get("version")) for t in client.tasks(project.id)}
        todo = [c for c in clips if (c["key"], c["sample_sha256"]) not in present]
        counts["present"] = len(clips) - len(todo)
        bar = Progress(total=len(todo), desc=f"push {interface}", unit="task", enabled=progress)
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            tasks = [make_task(store, c, interface, media_dir, settings) for c in batch]
            client.call("import tasks", client.sdk.projects.import_tasks, id=project.id, request=tasks)
            counts["pushed"] += len(batch)
            bar.update(len(batch))
            if after_batch is not None:
                after_batch(interface, counts["pushed"])
        bar.close()
        log.info(
            "%s: %d waiting, %d tasks already in project %s, %d pushed",
            interface,
            counts["waiting"],
            counts["present"],
            project.id,
            counts["pushed"],
        )
    return report
