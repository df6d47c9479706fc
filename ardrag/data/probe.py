"""Decode one untrusted video file in a child process: probe, resample to a constant rate, rotate, resize.

Why a child process: FFmpeg-based decoders crash (decord 0.6 segfaults on some damaged mp4 bytes) or hang
(decord on files whose container over-reports frame counts) on inputs nobody has checked. The decoding
runs in ``python -m ardrag.data.probe WORKDIR``; the parent watches it, and a crash or a hang costs
that one input (:class:`~ardrag.data.clip.InputRejected` ``"decoder-crashed"`` / ``"decode-timeout"``),
never the run. The child uses PyAV (FFmpeg libraries bundled in its wheel), not decord.

Protocol, all files in ``WORKDIR`` (a fresh temporary folder the parent removes afterwards):
``request.json`` (parent), then from the child ``info.json`` (after opening: the container's duration,
which sets the overall time limit), ``frames.u8`` (output frames appended as raw uint8 RGB at the
bucket size: its growth is the progress the parent watches, and the parent memory-maps it, so a long
input never sits in memory), ``src_index.npy`` and ``scores.npy`` (per output frame), and
``result.json`` last (metadata, or a rejection reason). Each step is documented where it is done:

* **Timing**: the output is constant-rate at ``fps``: output frame k shows the source frame displayed at
  time k / fps (the latest frame whose presentation time is <= k / fps, with 1 ms of slack for
  containers that round timestamps), times relative to the first frame. Variable frame rates, any
  source rate and duplicated or dropped timestamps are handled alike. The last source frame lasts its
  own duration (else the median frame interval).
* **Rotation**: frames are rotated as the display matrix says (``VideoFrame.rotation``, counter-clockwise
  degrees, multiples of 90), so they are upright as a player shows them; flips are not applied.
  Non-square pixels (sample aspect ratio) are corrected in the same resize.
* **Size**: each needed source frame is converted and resized on its own (memory stays bounded for 4K),
  scaled to cover the nearest bucket then centre-cropped (:class:`~ardrag.data.buckets.ResizeCrop`).
* **Damage**: decoding stops at the first error (a failed packet, a corrupt packet or frame, a demuxer
  error) and the frames decoded before it are kept, marked ``truncated``; a damaged region is never
  concealed into clips. ``truncated`` is also set when the decoded duration falls short of the
  container's by more than max(0.5 s, 3 frame intervals) (header frame counts are unreliable).
* **Limits** (checked before and while decoding): ``max_pixels`` ("too-large"), ``min_side``
  ("too-small"), ``max_duration_s`` ("too-long": it also bounds the frames spooled to disk).
* **Scene scores**: for every output frame that shows a new source frame, the mean absolute difference
  of HSV values (0-255 scale) between it and the previous output frame, on a quarter-size copy (the
  "content value" of PySceneDetect's ContentDetector); the parent decides the cuts.

Work folders are named ``ardrag-probe-<parent pid>-<random>``: a parent killed with ``kill -9`` cannot
remove its folder, so :func:`clean_stale_workdirs` (called when a run starts) removes the folders whose
parent process no longer runs.

The parent kills the child after ``timeout_s`` without progress (a new output frame) or past
``timeout_s + timeout_per_s * duration``; a child killed by a signal is "decoder-crashed"; a child that
has written its result but does not exit within :data:`EXIT_GRACE_S` is killed and its result used.
The child disables core files (a crash on untrusted data is expected and counted).

Test-only hook: the environment variable ``ARDRAG_PROBE_TEST_HOOK`` (``"hang"``: the child sleeps
forever before decoding; ``"crash"``: it kills itself with SIGSEGV; ``"hang-at-exit"``: it sleeps
forever after writing its result) lets tests exercise these paths with a real child. Only the child
reads it; never set it outside tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ardrag.data.clip import InputRejected
from ardrag.errors import ArdragError

logger = logging.getLogger(__name__)

TEST_HOOK_ENV = "ARDRAG_PROBE_TEST_HOOK"
WORKDIR_PREFIX = "ardrag-probe-"
TIME_SLACK = Fraction(1, 1000)  # seconds: containers with a millisecond time base round timestamps
EXIT_GRACE_S = 5.0  # seconds a child that has written its result gets to exit
SCENE_DOWNSCALE = 4  # scene scores are computed on frames this many times smaller than the bucket
# Leading bytes of containers FFmpeg reads: a file that starts like a video but does not open is
# "unreadable" (damaged), anything else that does not open is "not-a-video".
_MAGIC = (
    (4, (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")),  # mp4, mov
    (0, (b"\x1a\x45\xdf\xa3",)),  # Matroska, WebM
    (0, (b"RIFF",)),  # AVI
    (0, (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")),  # MPEG-PS, MPEG-1/2 video
    (0, (b"FLV", b"OggS", b"\x30\x26\xb2\x75")),  # FLV, Ogg, ASF/WMV
)


@dataclass(frozen=True)
class ProbeRequest:
    """What the child does with one file (JSON-serialisable: it travels as ``request.json``)."""

    path: str
    fps: float = 16.0
    buckets: list[str] = field(default_factory=list)  # "WxH"; resolved by the parent, never empty here
    max_pixels: int = 8192 * 4320
    min_side: int = 16
    max_duration_s: float = 600.0
    threads: int = 2  # FFmpeg decoder threads; 0 lets FFmpeg choose


@dataclass(eq=False)
class DecodedVideo:
    """A decoded, constant-rate, bucket-sized video; ``frames`` is memory-mapped from the work folder."""

    frames: np.ndarray  # uint8 (T, H, W, 3), read-only memmap
    src_index: np.ndarray  # int64 (T,): the source frame (decode order) each output frame shows
    scores: np.ndarray  # float32 (T,): HSV difference to the previous output frame, 0 for repeats
    bucket: str
    fps: float
    meta: dict[str, Any]  # source_fps, vfr, rotation, size, sar, codec, container, truncated, ...


# ---------------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------------


def sniff_container(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a video container (tells "unreadable" from "not-a-video")."""
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[off : off + len(m)] == m for off, magics in _MAGIC for m in magics)


@contextlib.contextmanager
def decode_video(
    request: ProbeRequest,
    *,
    timeout_s: float = 120.0,
    timeout_per_s: float = 1.0,
    tmp_dir: str | None = None,
) -> Iterator[DecodedVideo]:
    """Decode ``request.path`` in a child process; the frames live until the ``with`` block ends.

    The child is killed when it makes no progress (no new output frame) for ``timeout_s`` seconds, or
    runs longer than ``timeout_s + timeout_per_s * duration`` in all. Verdicts on the input raise
    :class:`InputRejected`; a child that fails with a Python error (a bug, not bad data) raises
    :class:`ArdragError` with its traceback, so it is retried and seen rather than counted as data.
    """
    if timeout_s <= 0 or timeout_per_s < 0:
        raise ValueError(f"timeout_s = {timeout_s} must be > 0 and timeout_per_s = {timeout_per_s} >= 0")
    if not request.buckets:
        raise ValueError("ProbeRequest.buckets is empty; resolve the bucket names before decoding")
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=tmp_dir))
    try:
        data = {**asdict(request), "path": os.path.abspath(request.path)}  # the child runs in workdir
        (workdir / "request.json").write_text(json.dumps(data), encoding="utf-8")
        _run_child(workdir, request.path, timeout_s, timeout_per_s)
        result = json.loads((workdir / "result.json").read_text(encoding="utf-8"))
        if not result["ok"]:
            raise InputRejected(result["reason"], result["detail"])
        n, h, w = result["shape"]
        frames = np.memmap(workdir / "frames.u8", dtype=np.uint8, mode="r", shape=(n, h, w, 3))
        yield DecodedVideo(
            frames=frames,
            src_index=np.load(workdir / "src_index.npy"),
            scores=np.load(workdir / "scores.npy"),
            bucket=result["bucket"],
            fps=request.fps,
            meta=result["meta"],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean up after
        return True
    return True


def clean_stale_workdirs(tmp_dir: str | None = None) -> list[str]:
    """Remove the work folders in ``tmp_dir`` (None: the system's temporary folder) whose parent process
    is gone (a killed run's); returns what was removed. Folders of running processes stay, as do the
    unnamed ones of older versions (``ardrag-probe-<random>``) younger than a day."""
    root = Path(tmp_dir or tempfile.gettempdir())
    removed = []
    for path in sorted(root.glob(f"{WORKDIR_PREFIX}*")):
        if not path.is_dir() or path.is_symlink():
            continue
        pid_text = path.name[len(WORKDIR_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit():
            stale = not _alive(int(pid_text))
        else:
            stale = time.time() - path.stat().st_mtime > 86400
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if removed:
        logger.info("removed %d temporary folder(s) of killed runs, e.g. %s", len(removed), removed[0])
    return removed


def _child_env() -> dict[str, str]:
    """The parent's environment, with this checkout importable even when ardrag is not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_child(workdir: Path, path: str, timeout_s: float, timeout_per_s: float) -> None:
    frames_file, info_file = workdir / "frames.u8", workdir / "info.json"
    with open(workdir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ardrag.data.probe", str(workdir)],
            cwd=workdir,  # anything the decoder leaves behind is removed with the work folder
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_child_env(),
        )
    result_file = workdir / "result.json"
    try:
        start = last_progress = time.monotonic()
        total, progress, poll, done_at = None, (-1, False), 0.02, None
        while True:
            try:
                rc = proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                pass
            poll = min(poll * 1.5, 0.5)
            now = time.monotonic()
            if result_file.exists():  # done; a child stuck in its own shutdown is not the input's fault
                done_at = done_at or now
                if now - done_at > EXIT_GRACE_S:
                    logger.warning("decoder for %s wrote its result but did not exit; killed", path)
                    proc.kill()
                    proc.wait()
                    rc = 0
                    break
                continue
            size = frames_file.stat().st_size if frames_file.exists() else 0
            current = (size, info_file.exists())
            if current != progress:
                progress, last_progress = current, now
            if total is None and current[1]:
                duration = json.loads(info_file.read_text(encoding="utf-8")).get("duration_s")
                total = timeout_s + timeout_per_s * duration if duration else None
            stalled = now - last_progress > timeout_s
            if stalled or (total is not None and now - start > total):
                proc.kill()
                proc.wait()
                why = f"no progress for {timeout_s:g} s" if stalled else f"over the limit of {total:.0f} s"
                raise InputRejected(
                    "decode-timeout", f"{path}: decoder killed after {now - start:.1f} s, {why}"
                )
    finally:
        if proc.poll() is None:  # the parent was interrupted: never leave a decoder behind
            proc.kill()
            proc.wait()
    if rc < 0 or rc > 128:
        sig = -rc if rc < 0 else rc - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        raise InputRejected("decoder-crashed", f"{path}: decoder process died with signal {name}")
    if rc != 0 or not result_file.exists():
        tail = (workdir / "stderr.txt").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise ArdragError(f"decoder process failed on {path} (exit code {rc}):\n{tail}")


# ---------------------------------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------------------------------


class _Reject(Exception):  # noqa: N818 - a verdict the child reports in result.json
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


class CfrTimeline:
    """Constant-rate output slots over frames with presentation times (seconds, first frame at 0).

    Slot k shows the latest frame whose time is <= k / fps + :data:`TIME_SLACK`.
    """

    def __init__(self, fps: float):
        self.fps = Fraction(fps).limit_denominator(1001)
        self.next = 0  # first slot not yet assigned

    def slots_before(self, t: Fraction) -> int:
        """Slots that end before time ``t``: they show the frame before the one at ``t``."""
        n = max(0, math.ceil((t - TIME_SLACK) * self.fps) - self.next)
        self.next += n
        return n


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write, then rename: the parent never reads a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _decoded_frames(container: Any, stream: Any, state: dict[str, Any]) -> Iterator[Any]:
    """Frames in presentation order until the end or the first error; then the decoder is flushed."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            if packet.is_corrupt:
                raise ValueError(f"corrupt packet at pts {packet.pts}")
            frames = packet.decode()  # the final empty packet flushes the decoder
        except StopIteration:
            return
        except Exception as err:  # FFmpegError, and PyAV raises others on some damage: all mean "stop here"
            state["error"] = f"{type(err).__name__}: {err}"
            break
        for frame in frames:
            if frame.is_corrupt:  # later frames in the buffer come after it: stop without flushing
                state["error"] = f"corrupt frame at pts {frame.pts}"
                return
            yield frame
    try:  # keep the frames the decoder still holds from packets before the error
        flushed = stream.codec_context.decode(None)
    except Exception as err:  # a failed flush only loses buffered frames; recorded with the error
        state["error"] += f"; flushing the decoder: {type(err).__name__}: {err}"
        return
    yield from (f for f in flushed if not f.is_corrupt)


def _open(path: str) -> tuple[Any, Any]:
    import av

    try:
        container = av.open(path, metadata_errors="replace")
    except Exception as err:  # FFmpeg cannot open it at all
        reason = "unreadable" if sniff_container(path) else "not-a-video"
        raise _Reject(reason, f"{path}: FFmpeg cannot open it ({type(err).__name__}: {err})") from None
    videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise _Reject("no-video-stream", f"{path}: no video stream (streams: {', '.join(kinds)})")
    stream = videos[0]
    if stream.codec_context is None:
        container.close()
        raise _Reject("unreadable", f"{path}: no decoder for the video codec of stream {stream.index}")
    return container, stream


class _Geometry:
    """Rotation, display size and the resize to the nearest bucket, fixed by the first decoded frame."""

    def __init__(self, req: ProbeRequest, frame: Any, stream: Any):
        from ardrag.data.buckets import Bucket, ResizeCrop, nearest_bucket

        w, h = frame.width, frame.height
        if min(w, h) < req.min_side:
            raise _Reject("too-small", f"{req.path}: {w}x{h} has a side under min_side = {req.min_side}")
        self.coded = (w, h)
        self.quarters = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns
        sar = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
        dw = max(1, round(w * sar)) if sar and sar > 0 and sar != 1 else w  # square pixels
        dw, dh = (h, dw) if self.quarters % 2 else (dw, h)
        self.fit = ResizeCrop.fit(dw, dh, nearest_bucket(dw, dh, tuple(Bucket.parse(b) for b in req.buckets)))
        b = self.fit.bucket
        self.small = (max(1, b.width // SCENE_DOWNSCALE), max(1, b.height // SCENE_DOWNSCALE))
        self.meta = {
            "size": [dw, dh],
            "coded_size": [w, h],
            "rotation": (-90 * self.quarters) % 360,  # clockwise degrees applied (the "rotate" tag's sense)
            "sar": f"{sar.numerator}:{sar.denominator}" if sar else None,
            "codec": stream.codec_context.name,
            "container": stream.container.format.name,
        }


class _Spool:
    """Output frames on disk; each source frame shown is converted once, written once per slot."""

    def __init__(self, sink: Any, geometry: _Geometry):
        import cv2

        self.cv2, self.sink, self.geo = cv2, sink, geometry
        self.src_index: list[int] = []
        self.scores: list[float] = []
        self.small: np.ndarray | None = None

    def emit(self, count: int, index: int, frame: Any) -> None:
        if not count:
            return
        cv2, geo = self.cv2, self.geo
        image = frame.to_ndarray(format="rgb24")
        if geo.quarters:
            image = np.ascontiguousarray(np.rot90(image, geo.quarters))
        image = geo.fit.apply_frames(image)
        small = cv2.resize(image, geo.small, interpolation=cv2.INTER_AREA)
        small = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).astype(np.int16)
        score = 0.0 if self.small is None else float(np.mean(np.abs(small - self.small)))
        self.small = small
        for i in range(count):
            self.sink.write(image.data)
            self.src_index.append(index)
            self.scores.append(score if i == 0 else 0.0)


def decode_to_dir(req: ProbeRequest, out: Path) -> dict[str, Any]:
    """The child's work (see the module docstring); returns what goes into ``result.json``."""
    import cv2

    cv2.setNumThreads(1)
    path = req.path
    container, stream = _open(path)
    with container, open(out / "frames.u8", "wb", buffering=0) as sink:
        w, h = stream.codec_context.width, stream.codec_context.height
        if w and h and w * h > req.max_pixels:
            raise _Reject("too-large", f"{path}: {w}x{h} is over max_pixels = {req.max_pixels}")
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        if duration is not None and duration > req.max_duration_s:
            raise _Reject(
                "too-long", f"{path}: {duration:.1f} s is over max_duration_s = {req.max_duration_s:g}"
            )
        _write_json(out / "info.json", {"duration_s": duration})
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = req.threads
        rate = stream.guessed_rate or stream.average_rate or Fraction(req.fps).limit_denominator(1001)
        nominal = 1 / Fraction(rate)  # frame interval when a frame has no timestamp or duration

        timeline = CfrTimeline(req.fps)
        state: dict[str, Any] = {"error": None}
        deltas: list[Fraction] = []
        geo: _Geometry | None = None
        spool: _Spool | None = None
        size_changes = pts_anomalies = n_frames = 0
        prev: tuple[int, Fraction, Any] | None = None  # (index, time, frame) of the last accepted frame
        first_pts = None
        for frame in _decoded_frames(container, stream, state):
            if geo is None:
                geo = _Geometry(req, frame, stream)
                spool = _Spool(sink, geo)
            elif (frame.width, frame.height) != geo.coded:
                size_changes += 1  # resized to the first frame's bucket all the same
            if frame.width * frame.height > req.max_pixels:
                raise _Reject(
                    "too-large", f"{path}: a frame of {frame.width}x{frame.height} is over max_pixels"
                )
            if frame.pts is None:
                t = prev[1] + (deltas[-1] if deltas else nominal) if prev else Fraction(0)
            else:
                first_pts = frame.pts if first_pts is None else first_pts
                t = Fraction(frame.pts - first_pts) * (frame.time_base or stream.time_base)
            if prev is not None and t <= prev[1]:
                pts_anomalies += 1  # a repeated or backwards timestamp: that frame is never displayed
                continue
            if t > req.max_duration_s:
                raise _Reject("too-long", f"{path}: still decoding at {float(t):.1f} s (max_duration_s)")
            if prev is not None:
                deltas.append(t - prev[1])
                spool.emit(timeline.slots_before(t), prev[0], prev[2])
            prev = (n_frames, t, frame)
            n_frames += 1
        declared_frames = stream.frames or None  # read now: the stream is freed with its container
        if prev is None:
            why = f" ({state['error']})" if state["error"] else ""
            raise _Reject("unreadable", f"{path}: no frame decodes{why}")
        median = float(np.median(np.array(deltas, dtype=np.float64))) if deltas else float(nominal)
        last = Fraction(prev[2].duration or 0) * (prev[2].time_base or stream.time_base or 0)
        end = prev[1] + (last if last > 0 else Fraction(median))
        spool.emit(timeline.slots_before(end), prev[0], prev[2])
        if not spool.src_index:
            raise _Reject("too-short", f"{path}: {float(end):.4f} s gives no frame at {req.fps:g} fps")

    span = float(prev[1])
    # Frame counts in headers are unreliable (0 in Matroska, ticks in some AVIs): compare durations.
    short = duration is not None and float(end) < duration - max(0.5, 3 * median)
    meta = {
        **geo.meta,
        "source_fps": round((n_frames - 1) / span, 2) if span > 0 else round(float(rate), 2),
        "vfr": bool(deltas) and float(max(deltas) - min(deltas)) > 0.25 * median,
        "frames_decoded": n_frames,
        "frames_declared": declared_frames,
        "duration_s": round(float(end), 4),
        "duration_declared_s": round(duration, 4) if duration is not None else None,
        "truncated": state["error"] is not None or short,
        "decode_error": state["error"],
        "size_changes": size_changes,
        "pts_anomalies": pts_anomalies,
    }
    np.save(out / "src_index.npy", np.asarray(spool.src_index, dtype=np.int64))
    np.save(out / "scores.npy", np.asarray(spool.scores, dtype=np.float32))
    b = geo.fit.bucket
    return {"ok": True, "shape": [len(spool.src_index), b.height, b.width], "bucket": b.name, "meta": meta}


def _child_main(workdir: str) -> int:
    import resource

    # No core files: a decoder crash on untrusted data is expected, counted, and would dump GBs.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    hook = os.environ.get(TEST_HOOK_ENV, "")
    if hook == "hang":
        while True:
            time.sleep(3600)
    if hook == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    out = Path(workdir)
    req = ProbeRequest(**json.loads((out / "request.json").read_text(encoding="utf-8")))
    try:
        result = decode_to_dir(req, out)
    except _Reject as r:
        result = {"ok": False, "reason": r.reason, "detail": r.detail}
    _write_json(out / "result.json", result)
    if hook == "hang-at-exit":
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(_child_main(sys.argv[1]))
