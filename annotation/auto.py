"""Auto-annotation: accept every clip that waits for a person, without one, and say so.

For demos and smoke runs on machines without annotators (``ardrag demo --auto-annotate``). Each waiting
clip gets the review a person's acceptance would give, with the tracker's points unchanged, and its
sample's provenance says ``auto-annotated`` with the annotator ``AUTO_ANNOTATOR``: nobody can mistake it
for people's work downstream (the dataset manifest's ``reviews.accepted`` counts it under that status
too). Clips a person already decided are left as they are.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from typing import Any

from annotation.convert import Decision
from annotation.pull import accept
from ardrag.curation.pipeline import shard_accepted
from ardrag.curation.store import CurationStore

AUTO_ANNOTATOR = "ardrag --auto-annotate (no person)"
STATUS = "auto-annotated"


def auto_annotate(store_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Accept the waiting clips of a curation folder that have no current review; reshard. Returns the
    counts (``accepted`` now, ``kept``: already decided), the dataset's version and sample count, and the
    ``annotator`` written into the samples' provenance."""
    store = CurationStore(store_dir)
    counts: Counter[str] = Counter()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for clip in store.waiting():
        if clip["review"] is not None:
            counts["kept"] += 1
            continue
        key = clip["key"]
        sha = accept(store, key, Decision(verdict="accept"), STATUS, AUTO_ANNOTATOR, now)
        store.write_review({
            "key": key, "version": clip["sample_sha256"], "interface": "auto", "state": "accepted",
            "status": STATUS, "sample_sha256": sha, "annotator": AUTO_ANNOTATOR, "time": now,
            "prompt_corrected": False,
        })  # fmt: skip
        counts["accepted"] += 1
    manifest = shard_accepted(store)
    store.write_summary(store.summary(store.sharding()["inputs"]))
    return {
        "accepted": counts["accepted"],
        "kept": counts["kept"],
        "version": manifest["version"],
        "samples": manifest["samples"],
        "annotator": AUTO_ANNOTATOR,
    }
