"""Real video files for tests, written with PyAV, with content whose motion is known exactly.

:func:`write_video` draws a smooth random texture with a coloured square whose top-left corner moves at
a constant velocity (pixels per second) and returns a :class:`VideoSpec` that knows each frame's
presentation time and the square's centre, so a test can predict what any decoder and resampler
should produce. ``content="two-scenes"`` switches, at ``cut_at`` seconds, to a different background and
a square of another colour (a hard scene cut). The other helpers make the bad-input corpus: empty
files, text named .mp4, truncated and damaged bytes, audio-only files.

Codecs used (all in PyAV 18's wheel): libx264 for mp4/mov/mkv (yuv444p when a side is odd, which 4:2:0
cannot hold), libvpx-vp9 for webm, mpeg4 for avi, AAC or MP3 for audio.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ardrag.data.codec import x264_cpu_flags

RED = (230, 30, 30)
GREEN = (30, 210, 30)
VFR_PATTERN = (1.0, 0.5, 1.5, 1.0, 2.0, 0.5, 0.5, 1.0)  # frame intervals, in units of 1 / fps


@dataclass(frozen=True)
class VideoSpec:
    """What was written: coded size, frame times (s), the square's centre (x, y) per frame, the cut."""

    path: Path
    size: tuple[int, int]
    fps: float
    times: np.ndarray  # (n,) float64 seconds, first frame at 0
    centers: np.ndarray  # (n, 2) float64, coded-frame pixels (pixel centres at integers)
    side: int
    cut_frame: int | None = None  # first frame of the second scene
    rotation: int | None = None  # counter-clockwise degrees in the display matrix (PyAV's convention)

    @property
    def duration(self) -> float:
        """Presentation length: the last frame lasts one nominal interval (1 / fps)."""
        return float(self.times[-1] + 1.0 / self.fps)

    def frame_at(self, t: float) -> int:
        """The frame displayed at time ``t``: the latest one that starts at or before it."""
        return int(np.searchsorted(self.times, t + 1e-3, side="right") - 1)


def texture(width: int, height: int, seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    """A smooth, low-saturation random texture (enough detail for trackers, no red or green blobs)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(max(2, height // 24), max(2, width // 24))).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.uniform(-0.08, 0.08, size=(height, width)).astype(np.float32)
    lum = np.clip(0.25 + 0.5 * smooth + fine, 0, 1)
    img = lum[..., None] * np.asarray(tint, np.float32)[None, None] * 255
    return np.clip(img, 0, 255).astype(np.uint8)


def square_center(frame: np.ndarray, color: tuple[int, int, int] = RED) -> tuple[float, float] | None:
    """Centroid (x, y) of the pixels close to ``color`` in an RGB frame; None when there are none."""
    dist = np.abs(frame.astype(np.int16) - np.asarray(color, np.int16)).max(axis=-1)
    ys, xs = np.nonzero(dist < 70)
    if xs.size == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def frame_times(frames: int, fps: float, vfr: bool) -> np.ndarray:
    """Presentation times: multiples of 1 / fps, or irregular ones rounded to milliseconds."""
    if not vfr:
        return np.arange(frames) / fps
    steps = np.array([VFR_PATTERN[i % len(VFR_PATTERN)] for i in range(frames - 1)]) / fps
    return np.round(np.concatenate([[0.0], np.cumsum(steps)]), 3)


def write_video(
    path: str | Path,
    *,
    frames: int = 48,
    fps: float = 16.0,
    size: tuple[int, int] = (320, 240),
    codec: str | None = None,
    vfr: bool = False,
    rotation: int | None = None,
    audio: bool = False,
    content: str = "moving-square",
    velocity: tuple[float, float] | None = None,
    cut_at: float | None = None,
    faststart: bool = False,
    sar: Fraction | None = None,
    seed: int = 0,
) -> VideoSpec:
    """Write a real video file; the container follows the extension.

    ``velocity`` is the square's speed in pixels per second (default: 15% of the width per second,
    rightwards). ``rotation`` is stored as a display matrix (counter-clockwise degrees). ``vfr`` gives
    irregular timestamps (:data:`VFR_PATTERN`). ``sar`` stores non-square pixels (a coded pixel is
    ``sar`` times as wide as tall when shown). ``faststart`` puts the mp4 index first, so a truncated
    copy still opens and decodes its first frames.
    """
    if content not in ("moving-square", "two-scenes", "textured-square"):
        raise ValueError(
            f"content = {content!r}; expected 'moving-square', 'two-scenes' or 'textured-square'"
        )
    path = Path(path)
    ext = path.suffix.lower()
    codec = codec or {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(ext, "libx264")
    w, h = size
    times = frame_times(frames, fps, vfr)
    side = max(2, min(w, h) // 6)
    vx, vy = velocity if velocity is not None else (0.15 * w, 0.0)
    cut_frame = None
    if content == "two-scenes":
        cut_at = cut_at if cut_at is not None else times[frames // 2]
        cut_frame = int(np.searchsorted(times, cut_at - 1e-9))
    backgrounds = [texture(w, h, seed, (0.8, 0.85, 0.75)), texture(w, h, seed + 1, (0.55, 0.6, 1.0))]
    starts = [(w // 8, h // 2 - side // 2), (w // 2 - side // 2, h // 8)]
    centers = np.zeros((frames, 2))
    # "textured-square": a red-tinted checker-and-noise patch that trackers can follow inside.
    patch = None
    if content == "textured-square":
        rng = np.random.default_rng(seed + 7)
        yy, xx = np.mgrid[0:side, 0:side]
        checker = ((xx // max(2, side // 6) + yy // max(2, side // 6)) % 2).astype(np.float32)
        lum = 0.35 + 0.45 * checker + rng.uniform(-0.15, 0.15, (side, side))
        patch = (np.clip(lum, 0, 1)[..., None] * np.array([1.0, 0.35, 0.3])[None, None] * 255).astype(
            np.uint8
        )

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w, h
        odd = w % 2 or h % 2
        stream.pix_fmt = "yuv444p" if codec == "libx264" and odd else "yuv420p"
        rate = Fraction(fps).limit_denominator(1001)
        time_base = Fraction(1, 1000) if vfr else 1 / rate
        stream.codec_context.time_base = time_base
        if codec == "libx264":  # without AVX-512, as ardrag's encoder: the same frames give the same file
            flags = x264_cpu_flags()
            stream.options = {
                "preset": "ultrafast",
                "crf": "16",
                **({"x264-params": f"asm={flags}"} if flags else {}),
            }
        elif codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
        else:
            stream.bit_rate = 20_000_000
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        astream = container.add_stream("aac", rate=44100) if audio else None
        for i in range(frames):
            scene = 1 if cut_frame is not None and i >= cut_frame else 0
            t = times[i] - (times[cut_frame] if scene else 0.0)
            left = int(round(starts[scene][0] + vx * t))
            top = int(round(starts[scene][1] + (vy * t if scene == 0 else 0.12 * h * t)))
            img = backgrounds[scene].copy()
            if patch is not None:
                y0, y1 = min(max(0, top), h), min(max(0, top + side), h)
                x0, x1 = min(max(0, left), w), min(max(0, left + side), w)
                img[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
            else:
                img[max(0, top) : max(0, top + side), max(0, left) : max(0, left + side)] = (
                    RED if scene == 0 else GREEN
                )
            centers[i] = (left + (side - 1) / 2, top + (side - 1) / 2)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(times[i] * 1000)) if vfr else i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _encode_tone(container, astream, float(times[-1] + 1 / fps))
    return VideoSpec(path, (w, h), fps, times, centers, side, cut_frame, rotation)


def _encode_tone(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate, chunk = 44100, 1024
    total = int(seconds * rate)
    for i, start in enumerate(range(0, total, chunk)):
        t = (start + np.arange(chunk)) / rate
        frame = av.AudioFrame.from_ndarray(
            (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, i * chunk
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An audio-only file (MP3 for .mp3, else AAC in the container the extension names)."""
    path = Path(path)
    codec = "libmp3lame" if path.suffix.lower() == ".mp3" else "aac"
    with av.open(str(path), mode="w") as container:
        _encode_tone(container, container.add_stream(codec, rate=44100), seconds)
    return path


def write_empty(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text(path: str | Path, text: str = "this is not a video\n" * 20) -> Path:
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def truncate(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """A copy of the first ``fraction`` of ``src``'s bytes (a download that stopped)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def damage(src: str | Path, dst: str | Path, seed: int, count: int = 64, start: float = 0.05) -> Path:
    """A copy of ``src`` with ``count`` random bytes overwritten after the first ``start`` of the file."""
    data = np.frombuffer(Path(src).read_bytes(), np.uint8).copy()
    rng = np.random.default_rng(seed)
    where = rng.integers(int(len(data) * start), len(data), size=count)
    data[where] = rng.integers(0, 256, size=count, dtype=np.uint8)
    Path(dst).write_bytes(data.tobytes())
    return Path(dst)


def copy(src: str | Path, dst: str | Path) -> Path:
    shutil.copyfile(src, dst)
    return Path(dst)
