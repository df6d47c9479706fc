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
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ardrag.config import Config
from ardrag.console import Progress
from ardrag.curation.routing import Check, Decision, RoutingConfig, assess, decide
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
from ardrag.data.trackers.camera import CameraMotion, independent_paths
from ardrag.data.trackers.foreground import ForegroundConfig, find_foreground
from ardrag.data.trackers.select import (
    SelectionConfig,
    corner_queries,
    query_points,
    reseed_queries,
    select_trajectories,
)
from ardrag.errors import ConfigError, ShardError
from ardrag.fsutil import atomic_write

log = logging.getLogger(__name__)


class CurationConfig(Config):
    tracker: str = Field("opencv", description="name in ardrag.data.trackers.TRACKERS")
    tracker_config: dict[str, Any] = Field(default_factory=dict)
    candidate_points: int = Field(64, ge=1, le=512, description="query points per clip before selection")
    reseed_points: int = Field(16, ge=0, le=512, description="extra queries on later frames where lost")
    foreground: ForegroundConfig = ForegroundConfig()  # camera motion, moving content, the static test
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


_TRACKERS: dict[tuple[str, str], Tracker] = {}
_TRACKERS_LOCK = threading.Lock()


def _tracker(name: str, config_json: str) -> Tracker:
    """One tracker per process and settings, set up once (models load in setup()), under a lock: the
    flow's worker threads that start together wait for one model instead of loading one each."""
    with _TRACKERS_LOCK:
        tracker = _TRACKERS.get((name, config_json))
        if tracker is None:
            tracker = make_tracker(name, json.loads(config_json))
            tracker.setup()
            _TRACKERS[(name, config_json)] = tracker
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


# Source settings that name files: relative paths in a curation file are relative to that file.
SOURCE_PATH_FIELDS = ("folder", "prompts", "tmp_dir", "jobs", "images")


def load_curation_file(path: str | os.PathLike[str]) -> tuple[CurationConfig, dict[str, Any]]:
    """A curation YAML file: the :class:`CurationConfig` fields, plus an optional ``source:`` mapping of
    the source's own settings (for the folder source: clip length, stride, extensions, prompts,
    captioner, ...; checked when the source is built). Relative paths among the source's file settings
    (``SOURCE_PATH_FIELDS``) are taken relative to the file's folder. Errors name the file and field."""
    from ardrag.config import build_config, read_config_file

    path = Path(path)
    data = read_config_file(path)
    source = data.pop("source", None) or {}
    if not isinstance(source, dict):
        raise ConfigError(
            f"config file {str(path)!r}: source = {source!r}; expected a mapping of the source's settings"
        )
    for name in SOURCE_PATH_FIELDS:
        value = source.get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            source[name] = str(path.parent / value)
    return build_config(CurationConfig, data, source=str(path)), source


# What `--input`, `--num` and `--seed` set in each source's config.
SOURCE_ARGUMENTS: dict[str, dict[str, str]] = {
    "procedural": {"num": "num_clips", "seed": "seed"},
    "toy": {"num": "num_clips", "seed": "seed"},
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
def in_frame(result: TrackResult, width: int, height: int) -> TrackResult:
    """The result with every point held inside the frame and visible only where it lies in it: whatever
    the tracker, no sample has a visible point outside its frame (pixel centres at integers)."""
    tracks = np.asarray(result.tracks, np.float32)
    inside = (
        (tracks[..., 0] >= -0.5) & (tracks[..., 0] <= width - 0.5)
        & (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= height - 0.5)
    )  # fmt: skip
    held = np.stack([np.clip(tracks[..., 0], 0, width - 1), np.clip(tracks[..., 1], 0, height - 1)], -1)
    visible = np.asarray(result.visible, bool) & inside
    return TrackResult(
        held.astype(np.float32), visible, np.where(visible, result.confidence, 0).astype(np.float32)
    )


def track_clip(clip_path: str, store: CurationStore, config: CurationConfig) -> dict[str, Any]:
    """Track one clip, route it, store its sample (unless rejected); returns the clip's row."""
    clip = store.load_clip(clip_path)
    T, H, W = clip.video.shape[:3]
    row: dict[str, Any] = {"key": clip.key, "bucket": clip.bucket, "num_frames": int(T)}
    if clip.truth is not None and "labels" in clip.truth:
        row["truth_labels"] = clip.truth["labels"]
    store.sample_path(clip.key).unlink(missing_ok=True)  # a rerun may route it differently
    store.preview_path(clip.key).unlink(missing_ok=True)
    fg = find_foreground(clip.video, clip.fps, config.foreground)
    row["motion"] = fg.summary()
    if fg.static:
        static = Decision("rejected", "static", [
            Check("static", fg.moving_points, config.foreground.min_moving_points, True, "<"),
        ])  # fmt: skip
        row.update(state="rejected", reason="static", selected=0, decision=static.to_dict())
        return row
    seed = int(hashlib.sha256(clip.key.encode()).hexdigest()[:8], 16)
    queries = query_points(clip.video, config.candidate_points, foreground=fg, seed=seed)
    if len(queries) == 0:  # only the camera moves: points anywhere show its motion
        queries = corner_queries(clip.video, config.candidate_points, seed=seed)
    tracker = get_tracker(config)
    with exclusive(tracker):
        result = tracker.track(clip.video, queries)
    more = (
        reseed_queries(clip.video, result, config.reseed_points, foreground=fg)
        if config.reseed_points
        else []
    )
    if len(more):
        with exclusive(tracker):
            extra = tracker.track(clip.video, more)
        result = TrackResult(
            np.concatenate([result.tracks, extra.tracks], 1),
            np.concatenate([result.visible, extra.visible], 1),
            np.concatenate([result.confidence, extra.confidence], 1),
        )
    result = in_frame(result, W, H)
    new_frames = fg.camera.new_frames()
    selection = select_trajectories(result, config=config.selection, camera=fg.camera, frames=new_frames)
    chosen = [int(i) for i in selection.indices]
    judged = chosen or _fallback_tracks(result, config.selection, fg.camera, new_frames)
    own = independent_paths(result.tracks, result.visible, fg.camera)
    # tracks left out as erratic that moved farther than every control: fast motion (a burst, a throw)
    # reads as erratic to the selection, and the controls would hide it from the routing
    most = max((float(selection.displacement[i]) for i in judged), default=0.0)
    passed_over = [
        i for i, why in selection.reasons.items()
        if why.startswith("erratic") and selection.displacement[i] > most
    ]  # fmt: skip
    difficulty = assess(
        result, W, H, config.routing, controls=judged, jitter_tracks=own, frames=new_frames, fast=passed_over
    )
    decision = decide(difficulty, len(chosen), config.routing, has_prompt=bool(clip.prompt.strip()))
    state = decision.state
    row.update(
        difficulty=difficulty.to_dict(),
        selected=len(chosen),
        motion_kind=selection.kind,
        state=state,
        reason=decision.reason,
        decision=decision.to_dict(),
    )
    if state == "rejected":
        return row
    if not chosen:  # a hard clip whose tracks all failed selection: best guesses for the annotator
        chosen = judged
        row.update(selected=len(chosen), fallback=True)
    if state == "awaiting_verification" and decision.reason == "auto-tracked" and config.auto_accept:
        state = row["state"] = "accepted"
    sample = _sample(
        clip, result, chosen, config, tracker, accepted_by_rule=state == "accepted", decision=decision
    )
    path, row["sample_sha256"] = write_sample_file(store.sample_path(clip.key), sample, config.shards.encode)
    row["sample"] = str(path.relative_to(store.root))
    return row


def _fallback_tracks(
    result: TrackResult, selection: SelectionConfig, camera: CameraMotion, frames: np.ndarray
) -> list[int]:
    """Selection without the jitter limit (stutter from frame-rate upsampling, fast motion) and with a
    lower visibility bar; failing that, the most visible tracks."""
    relaxed = selection.model_copy(update={"max_jitter_px": 1e9, "min_visible_fraction": 0.25})
    chosen = [
        int(i) for i in select_trajectories(result, config=relaxed, camera=camera, frames=frames).indices
    ]
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
    decision: Decision,
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
            prompt=clip.prompt_info,
        ),
        fps=clip.fps,
        extra={
            **clip.extra,
            "confidence_mean": float(result.confidence[:, chosen].mean()),
            "routing": {k: v for k, v in decision.to_dict().items() if k != "checks"},
        },
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


def start_run(source: Any, store: CurationStore) -> list[SourceInput]:
    """What every run does first: remove what killed runs left behind (the source's temporary folders),
    list the inputs and record the files that are not inputs (``skipped.json``)."""
    if (recover := getattr(source, "recover", None)) is not None:
        recover()
    items = source.inputs()  # models load lazily, on the first input that needs them
    skipped = getattr(source, "skipped", None)
    store.write_skipped(skipped() if skipped is not None else [])
    return items


def run_local(
    source: Any,
    out: str | os.PathLike[str],
    config: CurationConfig,
    progress: bool = True,
    previews: bool = False,
) -> dict[str, Any]:
    """Curate every input of ``source`` into ``out`` without Prefect (same calls as the flow)."""
    store = CurationStore(out)
    items = start_run(source, store)
    digest = config_digest(settings_digest(source), config)
    failed: dict[str, str] = {}
    for item in Progress(items, desc="curating", unit="input", enabled=progress, logger=log):
        try:
            process_input(source, item, store, config, digest)
        except Exception as err:  # the input failed (not bad data): reported, retried by the next run
            log.exception("input %s failed", item.id)
            failed[item.id] = f"{type(err).__name__}: {err}"
    shard_accepted(store, config.shards, items)
    if previews:
        write_previews(store, items)
    summary = store.summary(items, failed)
    store.write_summary(summary)
    return summary


def write_previews(store: CurationStore, items: list[SourceInput] | None = None) -> list[str]:
    """``previews/<key>.mp4`` for every sample of ``items`` (all records when None): the clip with each
    control point's path in blue and its position in red (:func:`~ardrag.data.overlay.overlay_video`).
    A preview newer than its sample is kept; returns the keys written or kept."""
    from ardrag.data.codec import get_decoder
    from ardrag.data.overlay import overlay_mp4
    from ardrag.data.shards import decode_sample

    wanted = None if items is None else {i.id for i in items}
    keys = []
    for r in store.records():
        if wanted is not None and r["id"] not in wanted:
            continue
        for c in r["clips"]:
            if not c.get("sample"):
                continue
            sample_file, preview = store.root / c["sample"], store.preview_path(c["key"])
            if not preview.is_file() or preview.stat().st_mtime_ns < sample_file.stat().st_mtime_ns:
                key, members = read_sample_file(sample_file)
                sample = decode_sample(key, members, get_decoder("pyav"))
                preview.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(preview, overlay_mp4(sample))
            keys.append(c["key"])
    return keys
