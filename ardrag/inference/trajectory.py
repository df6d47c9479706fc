"""The drag a user hands ``ardrag generate``: read, checked before any compute, fitted to the model.

File format (JSON), one list entry per frame::

    {"width": 1280, "height": 720, "fps": 16,
     "points": [{"x": [640.0, 652.5], "y": [360.0, 361.0], "visible": [true, true], "intensity": [1, 0.8]}]}

- ``width``, ``height``: the pixel size of the image the coordinates were drawn on (required).
- ``points``: 1 to 8 control points (annotation uses at most 8), all with the same number of frames (>= 1).
- ``x``, ``y``: pixels with pixel centres at integers (pixel (row i, column j) is at x=j, y=i), ardrag's
  convention (:mod:`ardrag.data.sample`). A visible point may lie at most a margin (25% of the image
  size by default) outside the image; a hidden point needs finite coordinates but may lie anywhere.
- ``visible``: booleans, optional (default all true). ``intensity``: "touch force" in [0, 1], optional
  (default 1.0).
- ``fps``: optional, in (0, 240], default 16.
- ``prompts``: optional step-wise prompts, ``[{"frame": n, "text": "...", "mode": "recache"}]``: from
  pixel frame ``n`` on (from the latent frame holding it: frame 0, then 1-4, 5-8, ...) the video follows
  ``text``. ``mode`` is how the switch treats the KV cache (``StreamSession.set_prompt``: ``recache``, the
  default, or ``keep``). Switches come in increasing order, each in a later latent frame than the one
  before (a switch's span runs to the next switch); a switch at frame 0 replaces ``--prompt``.

Unknown keys are errors: a misspelt ``"visibilty"`` would otherwise be ignored without a word.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import cv2
import numpy as np

from ardrag.data.buckets import Bucket, ResizeCrop
from ardrag.data.sample import DEFAULT_FPS
from ardrag.errors import ConfigError, describe
from ardrag.planners import latent_frame

MAX_POINTS = 8
MAX_FPS = 240.0
DEFAULT_MARGIN = 0.25
_TOP_KEYS = ("width", "height", "fps", "points", "prompts")
_PROMPT_KEYS = ("frame", "text", "mode")
PROMPT_MODES: tuple[str, ...] = ("keep", "recache")  # StreamSession.set_prompt's modes
_POINT_KEYS = ("x", "y", "visible", "intensity")
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class PromptSwitch:
    """From pixel frame ``frame`` on (from the latent frame that holds it), generate under ``text``."""

    frame: int
    text: str
    mode: str = "recache"

    @property
    def latent_frame(self) -> int:
        return latent_frame(self.frame)

    def record(self) -> dict[str, Any]:
        """The switch as a summary reports it (``ardrag generate --json``, ``ardrag eval``'s results)."""
        return {"frame": self.frame, "latent_frame": self.latent_frame, "text": self.text, "mode": self.mode}


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Validated control points and the ``width`` x ``height`` pixel frame their coordinates refer to."""

    tracks: np.ndarray  # float32 (T, N, 2), (x, y) pixels
    visible: np.ndarray  # bool (T, N)
    intensity: np.ndarray  # float32 (T, N), in [0, 1]
    width: int
    height: int
    fps: float = DEFAULT_FPS
    prompts: tuple[PromptSwitch, ...] = ()

    def __post_init__(self) -> None:
        t = self.tracks
        if t.ndim != 3 or t.shape[2] != 2 or t.dtype != np.float32 or 0 in t.shape:
            raise ConfigError(f"trajectory tracks are {describe(t)}; expected a float32 (T, N, 2) array")
        for name, dtype in (("visible", np.bool_), ("intensity", np.float32)):
            a = getattr(self, name)
            if a.shape != t.shape[:2] or a.dtype != dtype:
                expected = f"{np.dtype(dtype)} of shape {t.shape[:2]}"
                raise ConfigError(f"trajectory {name} is {describe(a)}; expected {expected}")

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[1])


def load_trajectory(path: str | os.PathLike[str], *, margin: float = DEFAULT_MARGIN) -> Trajectory:
    """Read and validate a trajectory JSON file; every problem is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            f"trajectory file '{path}' cannot be read ({reason}); expected a JSON file"
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"trajectory file '{path}' is not UTF-8 text; expected a JSON file") from err
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg}); "
            'expected {"width": W, "height": H, "points": [{"x": [...], "y": [...]}]}'
        ) from err
    return parse_trajectory(data, source=str(path), margin=margin)


def parse_trajectory(
    data: dict[str, Any], source: str = "<trajectory>", *, margin: float = DEFAULT_MARGIN
) -> Trajectory:
    """Validate parsed JSON into a :class:`Trajectory` (format in the module docstring).

    ``margin`` is how far, as a fraction of the image's width (for x) and height (for y), a visible
    point may lie outside the image before it counts as a mistake (swapped axes, normalised
    coordinates, the wrong image size); ``math.inf`` turns the check off.
    """
    if not margin >= 0:
        raise ConfigError(f"margin is {margin!r}; expected a fraction of the image size >= 0")
    if not isinstance(data, dict):
        _fail(source, "the trajectory", data, 'a JSON object {"width": W, "height": H, "points": [...]}')
    _check_keys(data, _TOP_KEYS, "the trajectory", source)
    width, height = _size(data, "width", source), _size(data, "height", source)
    fps = data.get("fps", DEFAULT_FPS)
    if not _is_number(fps) or not 0 < fps <= MAX_FPS:
        _fail(source, "fps", fps, f"a number of frames per second in (0, {MAX_FPS:g}]")
    points = data.get("points")
    if not isinstance(points, list) or not points:
        _fail(source, "points", points, 'a non-empty list of control points [{"x": [...], "y": [...]}]')
    if len(points) > MAX_POINTS:
        raise ConfigError(
            f"{source}: points has {len(points)} entries; expected at most {MAX_POINTS} control points"
        )

    columns = [_parse_point(p, f"points[{i}]", source) for i, p in enumerate(points)]
    frames = len(columns[0][0])
    for i, col in enumerate(columns[1:], start=1):
        if len(col[0]) != frames:
            raise ConfigError(
                f"{source}: points[{i}] has {len(col[0])} frames but points[0] has {frames}; "
                "expected every point to have the same number of frames"
            )
    xy = np.array([[c[0], c[1]] for c in columns], dtype=np.float64).transpose(2, 0, 1)  # (T, N, 2)
    visible = np.array([c[2] for c in columns], dtype=bool).T
    intensity = np.array([c[3] for c in columns], dtype=np.float32).T

    lo = np.array([-0.5 - margin * width, -0.5 - margin * height])
    hi = np.array([width - 0.5 + margin * width, height - 0.5 + margin * height])
    far = visible[..., None] & ((xy < lo) | (xy > hi))
    if far.any():
        t, i, axis = (int(v) for v in np.argwhere(far)[0])
        key = "xy"[axis]
        _fail(
            source,
            f"points[{i}].{key}[{t}]",
            points[i][key][t],
            f"{key} in [{lo[axis]:g}, {hi[axis]:g}] for a visible point: the {width}x{height} image plus a "
            f"margin of {margin:g} of its size (or mark the point not visible at frame {t})",
        )
    prompts = parse_prompts(data["prompts"], frames, source) if "prompts" in data else ()
    return Trajectory(xy.astype(np.float32), visible, intensity, width, height, float(fps), prompts)


def parse_prompts(
    value: Any, frames: int | None, source: str, field: str = "prompts"
) -> tuple[PromptSwitch, ...]:
    """Validate a prompt schedule for a trajectory of ``frames`` pixel frames (format in the module
    docstring). ``frames`` None: the drag is not read yet (a benchmark list), frames are only checked
    to be >= 0; the schedule is parsed again with the drag's length before it is used."""
    if not isinstance(value, list):
        _fail(source, field, value, 'a list of switches [{"frame": n, "text": "..."}]')
    out: list[PromptSwitch] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            _fail(source, where, item, 'an object {"frame": n, "text": "...", "mode": "recache"}')
        _check_keys(item, _PROMPT_KEYS, where, source)
        frame = item.get("frame")
        end = math.inf if frames is None else frames
        if not isinstance(frame, int) or isinstance(frame, bool) or not 0 <= frame < end:
            drag = ">= 0" if frames is None else f"in 0 .. {frames - 1} (the drag's frames)"
            _fail(source, f"{where}.frame", frame, f"a pixel frame {drag}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            _fail(source, f"{where}.text", text, "a non-empty prompt")
        mode = item.get("mode", "recache")
        if mode not in PROMPT_MODES:
            _fail(source, f"{where}.mode", mode, f"one of {list(PROMPT_MODES)}")
        switch = PromptSwitch(frame, text, mode)
        if out and switch.latent_frame <= out[-1].latent_frame:
            raise ConfigError(
                f"{source}: {where}.frame is {frame} (latent frame {switch.latent_frame}), but "
                f"{field}[{i - 1}] at frame {out[-1].frame} holds latent frame {out[-1].latent_frame} on; "
                "expected switches in increasing order, each in a later latent frame (pixel frames 1-4, "
                "5-8, ... share one)"
            )
        out.append(switch)
    return tuple(out)


def load_prompt_schedule(path: str | os.PathLike[str], frames: int) -> tuple[PromptSwitch, ...]:
    """``--prompt-schedule FILE``: a JSON list of switches, or an object with a ``prompts`` list."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(
            f"prompt schedule '{path}' cannot be read ({err.strerror or err}); expected a JSON file"
        ) from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"prompt schedule '{path}' is not valid JSON ({err}); expected "
            '[{"frame": n, "text": "..."}] or {"prompts": [...]}'
        ) from err
    if isinstance(data, dict):
        _check_keys(data, ("prompts",), "the schedule", str(path))
        if "prompts" not in data:
            raise ConfigError(f"{path}: the schedule has no 'prompts'; expected a list of switches")
        data = data["prompts"]
    return parse_prompts(data, frames, str(path))


def load_reference(path: str | os.PathLike[str]) -> np.ndarray:
    """The reference (first) frame as uint8 RGB (H, W, 3); EXIF orientation applied, alpha dropped."""
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise ConfigError(f"reference image '{path}' {what}; expected an image file (PNG, JPEG, ...)")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # checked above: imread would log to stderr on a miss
    if bgr is None:
        expected = "an image OpenCV reads (PNG, JPEG, WebP, ...)"
        raise ConfigError(f"reference image '{path}' could not be decoded; expected {expected}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fit_to_resolution(
    image: np.ndarray, trajectory: Trajectory, width: int, height: int
) -> tuple[np.ndarray, Trajectory]:
    """Resize the reference image and its points to the model's ``width`` x ``height``.

    Same geometry as training data (:mod:`ardrag.data.buckets`): scale to cover, centre-crop, so the model
    sees what it was trained on. When the trajectory's frame is not the image's size, its points are first
    scaled to the image, each axis on its own (a 640x360 drawing on a 1280x720 image doubles both).
    Points the crop cuts off keep finite coordinates but become not visible, with a warning, since
    their drag no longer steers anything.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ConfigError(f"reference image is {describe(image)}; expected a uint8 (H, W, 3) RGB array")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"model {name} is {value!r}; expected a positive number of pixels")
    h, w = image.shape[:2]
    tracks = trajectory.tracks
    if (trajectory.width, trajectory.height) != (w, h):
        factor = np.array([w / trajectory.width, h / trajectory.height])
        tracks = ((tracks + 0.5) * factor - 0.5).astype(np.float32)  # pixel-centre convention
    tf = ResizeCrop.fit(w, h, Bucket(width, height))
    new_tracks, new_visible = tf.apply_points(tracks, trajectory.visible)
    lost = int((trajectory.visible & ~new_visible).sum())
    if lost:
        warnings.warn(
            f"{lost} visible point position(s) fall outside the {width}x{height} centre crop of the "
            f"{w}x{h} reference image and are treated as not visible",
            stacklevel=2,
        )
    fitted = dataclasses.replace(
        trajectory, tracks=new_tracks, visible=new_visible, width=width, height=height
    )
    return tf.apply_frames(image), fitted


def _parse_point(p: Any, where: str, source: str) -> tuple[list, list, list, list]:
    if not isinstance(p, dict):
        _fail(source, where, p, 'an object {"x": [...], "y": [...]}')
    _check_keys(p, _POINT_KEYS, where, source)
    for key in ("x", "y"):
        if key not in p:
            raise ConfigError(f"{source}: {where} has no '{key}'; expected a list with one {key} per frame")
    for key in _POINT_KEYS:
        if key in p and not isinstance(p[key], list):
            _fail(source, f"{where}.{key}", p[key], "a list with one value per frame")
    frames = len(p["x"])
    if frames == 0:
        _fail(source, f"{where}.x", p["x"], "at least one frame")
    for key in _POINT_KEYS[1:]:
        if key in p and len(p[key]) != frames:
            raise ConfigError(
                f"{source}: {where}.{key} has {len(p[key])} entries but {where}.x has {frames}; "
                "expected one entry per frame"
            )
    for key in ("x", "y"):
        for t, v in enumerate(p[key]):
            if not _is_number(v) or not abs(v) <= _F32_MAX:  # NaN fails both comparisons
                _fail(source, f"{where}.{key}[{t}]", v, "a finite number of pixels")
    visible = p.get("visible", [True] * frames)
    for t, v in enumerate(visible):
        if not isinstance(v, bool):
            _fail(source, f"{where}.visible[{t}]", v, "true or false")
    intensity = p.get("intensity", [1.0] * frames)
    for t, v in enumerate(intensity):
        if not _is_number(v) or not 0 <= v <= 1:
            _fail(source, f"{where}.intensity[{t}]", v, "a number in [0, 1]")
    return p["x"], p["y"], visible, intensity


def _size(data: dict[str, Any], key: str, source: str) -> int:
    what = f"the pixel {key} of the image the points were drawn on"
    if key not in data:
        raise ConfigError(f"{source}: {key} is missing; expected {what}")
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        _fail(source, key, value, f"a positive integer, {what}")
    return value


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...], where: str, source: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{source}: {where} has unknown key {unknown[0]!r}; expected keys among {list(allowed)}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(source: str, field: str, value: Any, expected: str) -> NoReturn:
    raise ConfigError(f"{source}: {field} is {describe(value)}; expected {expected}")
