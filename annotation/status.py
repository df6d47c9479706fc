"""``ardrag annotate status``: what waits for people, what they decided, what the server holds."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from annotation.client import Client, LabelStudioUnavailable
from annotation.push import INTERFACE_OF, dataset_name, project_title
from annotation.settings import AnnotationSettings
from ardrag.curation.store import CurationStore
from ardrag.data.shards import MANIFEST, read_manifest
from ardrag.errors import ArdragError


def status(store_dir: str | os.PathLike[str], settings: AnnotationSettings | None = None) -> dict[str, Any]:
    settings = settings or AnnotationSettings()
    store = CurationStore(store_dir)
    waiting: Counter[str] = Counter()
    reviews: Counter[str] = Counter()
    for clip in store.waiting():
        review = clip["review"]
        if review is None or review["state"] == "invalid":
            waiting[INTERFACE_OF[clip["state"]]] += 1
        if review is not None:
            reviews[review["state"]] += 1
    name = dataset_name(store_dir)
    report: dict[str, Any] = {
        "dataset": name,
        "waiting": dict(sorted(waiting.items())),
        "reviews": dict(sorted(reviews.items())),
    }
    if (store.root / "dataset" / MANIFEST).is_file():
        report["dataset_samples"] = read_manifest(store.root / "dataset")["samples"]
    try:  # one quick try: status should not hang on a server that is down
        client = Client(settings.model_copy(update={"attempts": 1, "timeout_s": 10}))
        projects = {}
        for interface in ("verify", "annotate"):
            project = client.find_project(project_title(name, interface))
            if project is not None:
                tasks = client.tasks(project.id, with_annotations=True)
                done = sum(1 for t in tasks if any(not _cancelled(a) for a in (t.annotations or [])))
                projects[interface] = {"project": project.id, "tasks": len(tasks), "annotated": done}
        report.update(server=f"up at {settings.url}", projects=projects)
    except (LabelStudioUnavailable, ArdragError) as err:
        report["server"] = f"unavailable: {str(err).splitlines()[0]}"
    return report


def _cancelled(annotation: Any) -> bool:
    value = annotation.get("was_cancelled") if isinstance(annotation, dict) else annotation.was_cancelled
    return bool(value)
