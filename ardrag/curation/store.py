"""The curation manifest: one record per input, written last, so a killed run resumes cleanly.

Layout of a curation output directory::

    records/<input id>.json   the input's row: id, content hash, state, reason, its clips and outputs
    clips/<clip key>.npz      a clip between extraction and tracking (removed once the input is done)
    samples/<clip key>.tar    every tracked clip that was not rejected, as a one-sample file
    reviews/<clip key>.json   a person's decision on a waiting sample (``annotation`` pull), written last
    reviewed/<clip key>.tar   the sample as the person accepted it (corrected tracks, prompt, provenance)
    dataset/                  shards of the accepted samples (issue 2's format), rebuilt when they change
    sharding.json             the inputs and shard settings of the last run, so a pull reshards alike
    skipped.json              files of the last run's source that are not inputs, each with its reason
    previews/<clip key>.mp4   with ``--previews``: the clip with its control points drawn
    summary.json              counts per state, reason and bucket, written at the end of a run

A clip waiting for a person (``awaiting_verification``, ``awaiting_annotation``) leaves the queue when a
review of its sample's version (the sample file's sha256) exists: ``accepted`` or ``rejected``; an
``invalid`` review (the person's result did not validate) keeps it waiting.

A record exists only when every output of its input is in place, so an input without a record is
processed again from scratch, over the same deterministic file names: no duplicates, no half files.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ardrag.data.clip import Clip, SourceInput
from ardrag.data.sample import PromptInfo, SourceInfo
from ardrag.errors import ShardError
from ardrag.fsutil import atomic_write

WAITING_STATES = ("awaiting_verification", "awaiting_annotation")
REVIEW_STATES = ("accepted", "rejected", "invalid")


class CurationStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        for sub in ("records", "clips", "samples", "reviews", "reviewed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- records --------------------------------------------------------------------------------
    def record_path(self, input_id: str) -> Path:
        return self.root / "records" / f"{input_id}.json"

    def done(self, item: SourceInput, config_digest: str) -> dict[str, Any] | None:
        """The input's record when it was finished with the same content and settings, else None."""
        path = self.record_path(item.id)
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("content_hash") == item.content_hash and record.get("config_digest") == config_digest:
            return record
        return None

    def write_record(self, record: dict[str, Any]) -> dict[str, Any]:
        atomic_write(self.record_path(record["id"]), json.dumps(record, indent=1, sort_keys=True))
        for clip in record.get("clips", []):
            self.clip_path(clip["key"]).unlink(missing_ok=True)
        return record

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "records").glob("*.json")):
            out.append(json.loads(path.read_text(encoding="utf-8")))
        return out

    # -- clips between stages ---------------------------------------------------------------------
    def clip_path(self, key: str) -> Path:
        return self.root / "clips" / f"{key}.npz"

    def save_clip(self, clip: Clip) -> Path:
        meta = {
            "key": clip.key,
            "input_id": clip.input_id,
            "fps": clip.fps,
            "prompt": clip.prompt,
            "bucket": clip.bucket,
            "source": clip.source.to_dict(),
            "extra": clip.extra,
            "truth_labels": (clip.truth or {}).get("labels"),
            "prompt_info": clip.prompt_info.to_dict() if clip.prompt_info is not None else None,
        }
        arrays = {"video": clip.video, "meta": np.array(json.dumps(meta))}
        for name in ("tracks", "visible", "intensity"):
            if clip.truth is not None and name in clip.truth:
                arrays[f"truth_{name}"] = np.asarray(clip.truth[name])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write(self.clip_path(clip.key), buf.getvalue())

    def load_clip(self, path: str | os.PathLike[str]) -> Clip:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                truth = {k[6:]: data[k] for k in data.files if k.startswith("truth_")}
                video = data["video"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # BadZipFile: a truncated file
            raise ShardError(f"clip file {path} is unreadable: {err}") from None
        if meta.get("truth_labels") is not None:
            truth["labels"] = meta["truth_labels"]
        return Clip(
            key=meta["key"],
            input_id=meta["input_id"],
            video=video,
            fps=meta["fps"],
            prompt=meta["prompt"],
            source=SourceInfo.model_validate(meta["source"]),
            bucket=meta["bucket"],
            truth=truth or None,
            extra=meta["extra"],
            prompt_info=PromptInfo.model_validate(meta["prompt_info"]) if meta.get("prompt_info") else None,
        )

    def sample_path(self, key: str) -> Path:
        return self.root / "samples" / f"{key}.tar"

    # -- people's reviews -----------------------------------------------------------------------
    def review_path(self, key: str) -> Path:
        return self.root / "reviews" / f"{key}.json"

    def reviewed_sample_path(self, key: str) -> Path:
        return self.root / "reviewed" / f"{key}.tar"

    def write_review(self, review: dict[str, Any]) -> dict[str, Any]:
        """Write a review (after its sample file, if any): the decision on ``review['version']``."""
        for name in ("key", "version", "state"):
            if name not in review:
                raise ValueError(f"review lacks {name!r}: {review}")
        if review["state"] not in REVIEW_STATES:
            raise ValueError(f"review state {review['state']!r}; expected one of {REVIEW_STATES}")
        atomic_write(self.review_path(review["key"]), json.dumps(review, indent=1, sort_keys=True))
        return review

    def review(self, key: str) -> dict[str, Any] | None:
        path = self.review_path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def waiting(self) -> list[dict[str, Any]]:
        """Every clip routed to a person, with its record's input id and its current review (the one
        for its sample's version, else None)."""
        out = []
        for r in self.records():
            for c in r["clips"]:
                if c["state"] in WAITING_STATES and c.get("sample"):
                    review = self.review(c["key"])
                    if review is not None and review.get("version") != c.get("sample_sha256"):
                        review = None  # a review of an older version of the sample
                    out.append({**c, "input_id": r["id"], "review": review})
        return out

    def effective_state(self, clip: dict[str, Any]) -> tuple[str, str | None]:
        """The clip's state and reason once people's reviews are taken into account."""
        if clip["state"] not in WAITING_STATES:
            return clip["state"], clip.get("reason")
        review = self.review(clip["key"])
        if review is None or review.get("version") != clip.get("sample_sha256"):
            return clip["state"], clip.get("reason")
        if review["state"] == "accepted":
            return "accepted", review.get("status") or "person"
        if review["state"] == "rejected":
            return "rejected", f"person: {review.get('reason') or 'unspecified'}"
        return clip["state"], "annotation-invalid"

    def write_sharding(self, inputs: list[str], shards: dict[str, Any]) -> None:
        data = json.dumps({"inputs": sorted(inputs), "shards": shards}, indent=1, sort_keys=True)
        path = self.root / "sharding.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != data:
            atomic_write(path, data)

    def sharding(self) -> dict[str, Any]:
        """The inputs and shard settings of the last run that sharded (see ``shard_accepted``)."""
        path = self.root / "sharding.json"
        if not path.is_file():
            raise ShardError(f"{self.root} has no sharding.json: run the curation into it first")
        return json.loads(path.read_text(encoding="utf-8"))

    def write_skipped(self, skipped: list[dict[str, str]]) -> None:
        """The files of the source that are not inputs (e.g. an unsupported extension), with reasons."""
        data = json.dumps(sorted(skipped, key=lambda r: r["path"]), indent=1, sort_keys=True)
        path = self.root / "skipped.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != data:
            atomic_write(path, data)

    def skipped(self) -> list[dict[str, str]]:
        path = self.root / "skipped.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    def preview_path(self, key: str) -> Path:
        return self.root / "previews" / f"{key}.mp4"

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write(self.root / "summary.json", json.dumps(summary, indent=1))

    # -- summary --------------------------------------------------------------------------------
    def summary(
        self, items: list[SourceInput] | list[str] | None = None, failed: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Counts over the records (of ``items``, inputs or their ids, when given): every input accounted
        exactly once; clips that people reviewed count in the state they decided.

        ``states`` counts clips, plus each quarantined input (it has no clip) once; ``input_states``
        counts inputs: processed, quarantined, or failed (an error this run; retried by the next).
        ``skipped`` lists the source's files that are not inputs (``skipped.json``), with their reasons."""
        records = self.records()
        if items is not None:
            wanted = {getattr(i, "id", i) for i in items}
            records = [r for r in records if r["id"] in wanted]
        states: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        buckets: Counter[str] = Counter()
        clips = 0
        for r in records:
            if r["state"] == "quarantined":
                states["quarantined"] += 1
                reasons[r["reason"]] += 1
                continue
            for c in r["clips"]:
                clips += 1
                state, reason = self.effective_state(c)
                states[state] += 1
                reasons[reason] += 1
                if state == "accepted":
                    buckets[c["bucket"]] += 1
        missing = sorted(wanted - {r["id"] for r in records}) if items is not None else []
        input_states = Counter(r["state"] for r in records)
        if failed:
            input_states["failed"] = len(failed)
        skipped = self.skipped()
        return {
            "inputs": len(records),
            "inputs_missing": missing,
            "inputs_failed": dict(sorted((failed or {}).items())),
            "input_states": dict(sorted(input_states.items())),
            "clips": clips,
            "states": dict(sorted(states.items())),
            "reasons": dict(sorted(reasons.items())),
            "buckets": dict(sorted(buckets.items())),
            "skipped": skipped,
            "skipped_reasons": dict(sorted(Counter(r["reason"] for r in skipped).items())),
        }
