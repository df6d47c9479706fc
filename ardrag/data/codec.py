"""Video bytes: H.264 mp4 encoding (PyAV), and one decoder interface with decord (default) and PyAV.

Clips are stored as constant-frame-rate H.264 in mp4, yuv420p (plays in browsers, which Label Studio
needs). The same frames and settings give the same bytes, which keeps dataset versions (content hashes
of shards) reproducible:

* the encoder's thread count is a setting (``threads``), never the machine's core count: x264's output
  depends on its thread count, and with a fixed count it is deterministic;
* x264's AVX-512 code is turned off. With it, x264 (the build in PyAV 18's wheel) reads memory it has not
  written when the frame width is not a multiple of 64 (480, 400 and 368 px buckets): encoding the same
  frames twice in one process gave different bytes, and decoded pixels up to 32 levels apart. Without
  AVX-512 (AVX2 and below stay on) ten encodes of each bucket size gave one result, at the same speed.
  :func:`x264_cpu_flags` reads the CPU's flags (Linux, x86-64) and passes x264 the ones it uses, less
  AVX-512; elsewhere x264 detects the CPU itself.
"""

from __future__ import annotations

import functools
import io
import logging
import platform
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import Field

from ardrag.config import Config
from ardrag.errors import DecodeError, SampleValidationError

log = logging.getLogger(__name__)


class EncodeConfig(Config):
    crf: int = Field(default=16, ge=0, le=51, description="x264 constant rate factor: lower is better")
    preset: str = Field(default="medium", description="x264 speed/size preset")
    threads: int = Field(default=2, ge=1, le=64, description="fixed for byte-reproducible output")


# x264's names of the x86 instruction sets it uses, with the /proc/cpuinfo flag that says the CPU has each
# ("abm" is how Linux names LZCNT). AVX-512 is left out on purpose (see the module docstring).
_X264_X86 = (
    ("MMX2", "sse"),
    ("SSE", "sse"),
    ("SSE2", "sse2"),
    ("SSE3", "pni"),
    ("SSSE3", "ssse3"),
    ("SSE4.1", "sse4_1"),
    ("SSE4.2", "sse4_2"),
    ("AVX", "avx"),
    ("FMA3", "fma"),
    ("BMI1", "bmi1"),
    ("BMI2", "bmi2"),
    ("AVX2", "avx2"),
    ("LZCNT", "abm"),
)


@functools.cache
def x264_cpu_flags() -> str | None:
    """x264's ``asm`` setting: the CPU's instruction sets less AVX-512, comma-separated; None where the
    CPU's flags cannot be read (not Linux on x86-64), leaving x264 to detect them."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    names = [name for name, flag in _X264_X86 if flag in have]
    return ",".join(names) if names else None


def encode_mp4(video: np.ndarray, fps: float, config: EncodeConfig | None = None) -> bytes:
    """Encode a uint8 (T, H, W, 3) RGB clip as H.264 mp4 bytes at a constant ``fps``."""
    import av

    cfg = config or EncodeConfig()
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise SampleValidationError("video", video, "a non-empty uint8 array of shape (T, H, W, 3)")
    t, h, w = video.shape[:3]
    if h % 2 or w % 2:
        raise SampleValidationError("video", video, "even height and width (H.264 with 4:2:0 chroma)")
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = cfg.threads
        options = {"crf": str(cfg.crf), "preset": cfg.preset}
        if (flags := x264_cpu_flags()) is not None:
            options["x264-params"] = f"asm={flags}"
        stream.options = options
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(video[i]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


class VideoDecoder(Protocol):
    """Decodes mp4 (or any container the backend reads) bytes into uint8 (T, H, W, 3) RGB frames."""

    name: str

    def decode(self, data: bytes) -> np.ndarray: ...


class DecordDecoder:
    """decord's ``VideoReader`` over an in-memory file (no temporary file)."""

    name = "decord"

    def __init__(self, num_threads: int = 1):
        try:
            import decord  # noqa: F401
        except ImportError as err:  # pragma: no cover - decord is a core dependency
            raise ImportError("the 'decord' decoder needs decord: pip install decord") from err
        self.num_threads = num_threads

    def decode(self, data: bytes) -> np.ndarray:
        import decord
        from decord.bridge.torchdl import to_torch

        try:
            reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=self.num_threads)
            n = len(reader)
            batch = reader.get_batch(list(range(n))) if n else None
        except Exception as err:  # decord raises several types on damaged data; all mean "cannot decode"
            raise DecodeError(f"decord could not decode the video: {type(err).__name__}: {err}") from err
        if batch is None:
            raise DecodeError("video has no frames")
        # Hand decord's buffer over through DLPack instead of copying it (asnumpy copies).
        return to_torch(batch).numpy()


class PyAVDecoder:
    """PyAV (FFmpeg libraries bundled in its wheel)."""

    name = "pyav"

    def __init__(self, num_threads: int = 1):
        import av  # noqa: F401

        self.num_threads = num_threads

    def decode(self, data: bytes) -> np.ndarray:
        import av

        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                if not container.streams.video or container.streams.video[0].codec_context is None:
                    raise DecodeError("no decodable video stream")
                stream = container.streams.video[0]
                stream.codec_context.thread_count = self.num_threads
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except DecodeError:
            raise
        except Exception as err:  # FFmpegError, and AttributeError/UnicodeDecodeError on some damage
            raise DecodeError(f"PyAV could not decode the video: {type(err).__name__}: {err}") from err
        if not frames:
            raise DecodeError("video has no frames")
        return np.stack(frames)


class FallbackDecoder:
    """Tries ``primary``; when it fails, logs why and decodes with ``secondary``.

    decord 0.6 fails on some frame sizes that FFmpeg decodes fine (seen here: width 48), so the loader
    falls back to PyAV rather than drop the sample; data that neither can decode still raises.
    """

    def __init__(self, primary: VideoDecoder, secondary: VideoDecoder):
        self.primary, self.secondary = primary, secondary
        self.name = f"{primary.name}+{secondary.name}"

    def decode(self, data: bytes) -> np.ndarray:
        try:
            return self.primary.decode(data)
        except DecodeError as err:
            log.warning("%s failed (%s); decoding with %s", self.primary.name, err, self.secondary.name)
            return self.secondary.decode(data)


DECODERS: dict[str, type[DecordDecoder] | type[PyAVDecoder]] = {
    "decord": DecordDecoder,
    "pyav": PyAVDecoder,
}


def get_decoder(name: str = "decord", fallback: str | None = None, **kwargs) -> VideoDecoder:
    """A decoder by name; with ``fallback``, a second one used when the first fails."""
    for n in (name, fallback):
        if n is not None and n not in DECODERS:
            raise ValueError(f"decoder {n!r} is unknown; expected one of {sorted(DECODERS)}")
    primary = DECODERS[name](**kwargs)
    if fallback is None or fallback == name:
        return primary
    return FallbackDecoder(primary, DECODERS[fallback](**kwargs))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
