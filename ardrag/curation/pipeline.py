"""The curation stages as plain functions: extract clips, track and route them, record, shard.

``flows/curate.py`` runs each stage as a Prefect task; :func:`run_local` runs the same calls in a
plain loop (the reference for the flow's overhead). Stages pass paths, never arrays.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from ardrag.config import Config
from ardrag.curation.routing import RoutingConfig, assess, route
from ardrag.curation.store import CurationStore
from ardrag.data.build import ShardConfig, dataset_writer
from ardrag.data.clip import Clip, InputRejected, SourceInput
from ardrag.data.sample import AnnotationInfo, Provenance, Sample, TrackerInfo
from ardrag.data.shards import (
    MANIFEST,
    read_manifest,
    read_sample_file,
    write_sample_file,
)
from ardrag.data.trackers import TRACKERS, Tracker
from ardrag.data.trackers import get_tracker as make_tracker
from ardrag.data.trackers.base import TrackResult
from ardrag.data.trackers.select import SelectionConfig, query_points, reseed_queries, select_trajectories
from ardrag.errors import ConfigError, ShardError

log = logging.getLogger(__name__)


class CurationConfig(Config):
    tracker: str = Field("opencv", description="name in ardrag.data.trackers.TRACKERS")
    tracker_config: dict[str, Any] = Field(default_factory=dict)
    candidate_points: int = Field(64, ge=1, le=512, description="query points per clip before selection")
    min_motion_px: float = Field(2.0, ge=0, description="motion over 4 frames that makes a point 'moving'")
    reseed_points: int = Field(16, ge=0, le=512, description="extra queries on later frames where lost")
    selection: SelectionConfig = SelectionConfig()  # K = selection.max_trajectories (1-8)
    routing: RoutingConfig = RoutingConfig()
    intensity: float = Field(1.0, ge=0, le=1, description="touch force given to tracked points")
    auto_accept: bool = Field(False, description="accept easy clips without a person (labelled so)")
    shards: ShardConfig = ShardConfig()

    @field_validator("tracker")
    @classmethod
    def _known_tracker(cls, name: str) -> str:
        if name not in TRACKERS:
            raise ValueError(f"expected one of {sorted(TRACKERS)}")
        return name


@functools.cache
def _tracker(name: str, config_json: str) -> Tracker:
    """One tracker per process and settings, set up once (models load in setup())."""
    tracker = make_tracker(name, json.loads(config_json))
    tracker.setup()
    return tracker


@functools.cache
def _lock_for(component_id: int) -> threading.Lock:
    return threading.Lock()


def exclusive(component: Any) -> Any:
    """A lock around a component that declares ``thread_safe = False`` (a diffusers pipeline, CoTracker's
    online model keep per-call state); the flow's threads share one component per process."""
    if getattr(component, "thread_safe", True):
        return contextlib.nullcontext()
    return _lock_for(id(component))


def get_tracker(config: CurationConfig) -> Tracker:
    return _tracker(config.tracker, json.dumps(config.tracker_config, sort_keys=True))


def tracker_uses_gpu(config: CurationConfig) -> bool:
    return str(config.tracker_config.get("device", "cpu")).startswith("cuda")


# What `--input`, `--num` and `--seed` set in each source's config.
SOURCE_ARGUMENTS: dict[str, dict[str, str]] = {
    "procedural": {"num": "num_clips", "seed": "seed"},
    "folder": {"input": "folder"},
    "wan": {"input": "jobs"},
}


def source_overrides(source: str, **values: Any) -> dict[str, Any]:
    """Source config fields from generic command-line values; a value the source has no use for is an
    error naming it."""
    fields = SOURCE_ARGUMENTS.get(source, {})
    out = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(f"--{name.replace('_', '-')} = {value!r} means nothing for the {source} source")
        out[fields[name]] = value
    return out


# -- stage 1: inputs -> clips ----------------------------------------------------------------------
def extract(source: Any, item: SourceInput, store: CurationStore) -> list[str] | dict[str, Any]:
    """Cut (or synthesise) the input's clips into clip files; a rejected input gives its record fields."""
    paths = []
    try:
        for clip in source.clips(item):
            paths.append(str(store.save_clip(clip)))
    except InputRejected as rejected:
        return {"state": "quarantined", "reason": rejected.reason, "detail": rejected.detail}
    if not paths:
        return {"state": "quarantined", "reason": "no-clips", "detail": "the source yielded no clip"}
    return paths


# -- stage 2: clip -> tracked, routed sample ---------------------------------------------------------
def track_clip(clip_path: str, store: CurationStore, config: CurationConfig) -> dict[str, Any]:
    """Track one clip, route it, store its sample (unless rejected); returns the clip's row."""
    clip = store.load_clip(clip_path)
    row: dict[str, Any] = {"key": clip.key, "bucket": clip.bucket, "num_frames": int(clip.video.shape[0])}
    if clip.truth is not None and "labels" in clip.truth:
        row["truth_labels"] = clip.truth["labels"]
    seed = int(hashlib.sha256(clip.key.encode()).hexdigest()[:8], 16)
    queries = query_points(clip.video, config.candidate_points, min_motion_px=config.min_motion_px, seed=seed)
    store.sample_path(clip.key).unlink(missing_ok=True)  # a rerun may route it differently
    if len(queries) == 0:
        row.update(state="rejected", reason="static", selected=0)
        return row
    tracker = get_tracker(config)
    with exclusive(tracker):
        result = tracker.track(clip.video, queries)
    if config.reseed_points and len(more := reseed_queries(clip.video, result, config.reseed_points)):
        with exclusive(tracker):
            extra = tracker.track(clip.video, more)
        result = TrackResult(
            np.concatenate([result.tracks, extra.tracks], 1),
            np.concatenate([result.visible, extra.visible], 1),
            np.concatenate([result.confidence, extra.confidence], 1),
        )
    difficulty = assess(result, clip.video.shape[2], clip.video.shape[1], config.routing)
    selection = select_trajectories(result, config=config.selection)
    chosen = [int(i) for i in selection.indices]
    state, reason = route(difficulty, len(chosen), config.routing)
    row.update(difficulty=difficulty.to_dict(), selected=len(chosen), state=state, reason=reason)
    if state == "rejected":
        return row
    if not chosen:  # a hard clip whose tracks all failed selection: best guesses for the annotator
        chosen = _fallback_tracks(result, config.selection)
        row.update(selected=len(chosen), fallback=True)
    if state == "awaiting_verification" and config.auto_accept:
        state = row["state"] = "accepted"
    sample = _sample(clip, result, chosen, config, tracker, accepted_by_rule=state == "accepted")
    path, row["sample_sha256"] = write_sample_file(store.sample_path(clip.key), sample, config.shards.encode)
    row["sample"] = str(path.relative_to(store.root))
    return row


def _fallback_tracks(result: TrackResult, selection: SelectionConfig) -> list[int]:
    """Selection without the jitter limit (stutter from frame-rate upsampling, fast motion) and with a
    lower visibility bar; failing that, the most visible tracks."""
    relaxed = selection.model_copy(update={"max_jitter_px": 1e9, "min_visible_fraction": 0.25})
    chosen = [int(i) for i in select_trajectories(result, config=relaxed).indices]
    if chosen:
        return chosen
    order = np.argsort(-result.visible.mean(0), kind="stable")
    return [int(i) for i in order[: selection.max_trajectories]]


def _sample(
    clip: Clip,
    result: TrackResult,
    chosen: list[int],
    config: CurationConfig,
    tracker: Tracker,
    accepted_by_rule: bool,
) -> Sample:
    n = len(chosen)
    annotation = AnnotationInfo(status="auto", annotator="auto-accept" if accepted_by_rule else None)
    return Sample(
        key=clip.key,
        video=clip.video,
        tracks=result.tracks[:, chosen],
        visible=result.visible[:, chosen],
        intensity=np.full((clip.video.shape[0], n), config.intensity, np.float32),
        prompt=clip.prompt,
        provenance=Provenance(
            source=clip.source,
            tracker=TrackerInfo(name=tracker.name, version=tracker.version),
            annotation=annotation,
        ),
        fps=clip.fps,
        extra={**clip.extra, "confidence_mean": float(result.confidence[:, chosen].mean())},
    ).with_hashes()


# -- stage 3: record ---------------------------------------------------------------------------
def record(
    item: SourceInput,
    outcome: list[dict[str, Any]] | dict[str, Any],
    store: CurationStore,
    config_digest: str,
) -> dict[str, Any]:
    """Write the input's row, last: from now on a rerun skips this input."""
    row: dict[str, Any] = {
        "id": item.id,
        "content_hash": item.content_hash,
        "kind": item.kind,
        "description": item.description,
        "config_digest": config_digest,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if isinstance(outcome, dict):
        row.update(outcome, clips=[])
    else:
        row.update(state="processed", reason=None, clips=outcome)
    return store.write_record(row)


def config_digest(source_digest: str, config: CurationConfig) -> str:
    """What a record depends on: the source settings and the curation settings, less shard sizes."""
    shards = config.shards.model_copy(update={"shard_samples": 1, "shard_bytes": 1 << 20})
    return f"{source_digest}-{config.model_copy(update={'shards': shards}).digest()}"


def settings_digest(source: Any) -> str:
    """Digest of the source settings its clips depend on: its config less the fields that only say
    where the inputs are (``input_fields``), so moving a folder or adding jobs redoes nothing."""
    own = getattr(source, "settings_digest", None)
    if own is not None:
        return own()
    skip = set(getattr(source, "input_fields", ()))
    kept = {k: v for k, v in source.config.to_dict().items() if k not in skip}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


# -- stage 4: shard the accepted samples ----------------------------------------------------------------
def shard_accepted(
    store: CurationStore, shards: ShardConfig | None = None, items: list[SourceInput] | None = None
) -> dict[str, Any]:
    """(Re)write ``dataset/`` from the accepted samples of ``items``: those accepted by rule and those a
    person accepted (their reviewed file); skipped when that set, its content, the people's rejections and
    the shard settings have not changed. Without ``items`` and ``shards`` (an annotation pull), those of
    the last run are used."""
    if items is None or shards is None:
        saved = store.sharding()
        items_ids = saved["inputs"] if items is None else [i.id for i in items]
        shards = shards or ShardConfig.model_validate(saved["shards"])
    else:
        items_ids = [i.id for i in items]
    store.write_sharding(items_ids, shards.to_dict())
    wanted = set(items_ids)
    accepted, rejected, people = [], [], Counter()
    for r in store.records():
        if r["id"] not in wanted:
            continue
        for c in r["clips"]:
            state, reason = store.effective_state(c)
            if state == "accepted" and c["state"] == "accepted":
                accepted.append((c["key"], c["bucket"], c.get("sample_sha256"), "samples"))
            elif state == "accepted":
                review = store.review(c["key"])
                accepted.append((c["key"], c["bucket"], review["sample_sha256"], "reviewed"))
                people[reason] += 1
            elif state == "rejected" and c["state"] != "rejected":
                review = store.review(c["key"])
                rejected.append({k: review.get(k) for k in ("key", "reason", "annotator", "time", "task")})
    accepted.sort()
    rejected.sort(key=lambda row: row["key"])
    reviews = {"accepted": dict(sorted(people.items())), "rejected": rejected}
    digest = hashlib.sha256(json.dumps([accepted, reviews, shards.digest()]).encode()).hexdigest()[:16]
    root = store.root / "dataset"
    if (root / MANIFEST).is_file():
        try:
            manifest = read_manifest(root)
        except ShardError as err:  # damaged: it is derived data, so rebuild it
            log.warning("rebuilding %s: %s", root, err)
        else:
            if manifest.get("accepted_digest") == digest:
                return manifest
    with dataset_writer(root, shards, name="curated", overwrite=True) as writer:
        for key, bucket, _, where in accepted:
            path = store.sample_path(key) if where == "samples" else store.reviewed_sample_path(key)
            _, members = read_sample_file(path)
            writer.write_encoded(key, bucket, members)
        return writer.close({"accepted_digest": digest, "reviews": reviews})


# -- the plain loop ----------------------------------------------------------------------------------
def track_and_record(
    item: SourceInput,
    outcome: list[str] | dict[str, Any],
    store: CurationStore,
    config: CurationConfig,
    digest: str,
) -> dict[str, Any]:
    """Track and route every clip of one input, then write the input's record, last."""
    if isinstance(outcome, list):
        outcome = [track_clip(p, store, config) for p in outcome]
    return record(item, outcome, store, digest)


def process_input(
    source: Any, item: SourceInput, store: CurationStore, config: CurationConfig, digest: str
) -> dict[str, Any]:
    if (done := store.done(item, digest)) is not None:
        return done
    return track_and_record(item, extract(source, item, store), store, config, digest)


def run_local(
    source: Any, out: str | os.PathLike[str], config: CurationConfig, progress: bool = True
) -> dict[str, Any]:
    """Curate every input of ``source`` into ``out`` without Prefect (same calls as the flow)."""
    store = CurationStore(out)
    items = source.inputs()  # models load lazily, on the first input that needs them
    digest = config_digest(settings_digest(source), config)
    failed: dict[str, str] = {}
    for item in tqdm(items, desc="curating", unit="input", disable=not progress):
        try:
            process_input(source, item, store, config, digest)
        except Exception as err:  # the input failed (not bad data): reported, retried by the next run
            log.exception("input %s failed", item.id)
            failed[item.id] = f"{type(err).__name__}: {err}"
    shard_accepted(store, config.shards, items)
    summary = store.summary(items, failed)
    store.write_summary(summary)
    return summary
