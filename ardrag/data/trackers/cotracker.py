"""CoTracker3 (Karaev et al., 2024) behind ardrag's :class:`~ardrag.data.trackers.base.Tracker` interface.

CoTracker's code and weights are licensed CC-BY-NC 4.0, so ardrag never installs or downloads them by
itself: this backend is optional and chosen by the user. To use it, either

- install the package and point ``checkpoint`` at a downloaded ``scaled_offline.pth`` /
  ``scaled_online.pth``::

      pip install git+https://github.com/facebookresearch/co-tracker

- or leave ``checkpoint`` unset: ``setup()`` calls ``torch.hub.load(hub_repo, entrypoint)``, which fetches
  the repository and the weights (network access on first use, then torch's hub cache).

and select it by name, e.g. ``get_tracker("cotracker", {"mode": "online", "device": "cuda"})``.

The adapter follows the published predictor API. Video goes in as float (1, T, 3, H, W) in 0..255 and
queries as (1, N, 3) (t, x, y) pixels. Offline: ``tracks, visibility = model(video, queries=queries,
backward_tracking=True)`` (backward tracking fills the frames before a query's frame). Online (window 16,
step 8, for long clips): ``model(video_chunk=video[:, : 2 * step], is_first_step=True, queries=queries)``
once, then ``model(video_chunk=video[:, i : i + 2 * step])`` for ``i`` in ``range(0, T - step, step)``,
whose last output covers all T frames; the online model only tracks forward, so queries after frame 0
are tracked a second time on the time-reversed clip to fill their earlier frames. Outputs are
(1, T, N, 2) pixels and (1, T, N) bool; confidence is the visibility as 0/1 (the predictors return no
separate score), unless a predictor returns a third output, which is then used as confidence.

Loading: the model loads once per process for the same settings. ``setup()`` is safe to call from
several threads at once (an instance lock, double-checked), and the loaded predictor sits in a
module-level cache keyed by the JSON of the fields that build it (source, entrypoint, device, window;
not ``backward_tracking``), filled under a module-level lock, so two trackers with the same settings share
one model. Calls into a shared model are serialised by a lock that travels with it (the online predictor
keeps state between calls). A pickled tracker carries neither the model nor the locks; the copy builds
its own on ``setup()``.

Memory: online mode streams. The clip stays uint8 on the CPU and only the window being fed (``2 * step``
frames) is moved to the device and converted to float, also for the time-reversed pass (a reversed
NumPy view, no flipped copy), so device memory is bounded by a window whatever the clip length. The
online predictor's first call (``is_first_step=True``) reads only the chunk's shape and device, to scale
the queries, so it gets the first window, not the clip. The published offline predictor needs the
whole clip at once (as float on the device, plus a reversed copy for backward tracking), so its memory
grows with the clip: use ``mode="online"`` for long clips.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ardrag.config import Config
from ardrag.data.trackers.base import TrackResult, check_track_inputs

logger = logging.getLogger(__name__)

INSTALL_HINT = "install CoTracker (licence CC-BY-NC 4.0) with `pip install git+https://github.com/facebookresearch/co-tracker`"


@dataclass(frozen=True)
class _Loaded:
    """A loaded predictor and the lock that serialises calls into it (it may be shared by trackers)."""

    model: Any
    lock: threading.Lock


_MODELS: dict[str, _Loaded] = {}  # model key -> the predictor loaded in this process
_MODELS_LOCK = threading.Lock()  # held while loading, so each key loads once per process


def _package_available() -> bool:
    if sys.modules.get("cotracker") is not None:  # imported already (or a stand-in in tests)
        return True
    try:
        return importlib.util.find_spec("cotracker") is not None
    except (ImportError, ValueError):
        return False


class CoTrackerConfig(Config):
    """Which CoTracker3 predictor to build and where it runs."""

    checkpoint: str | None = None  # local .pth (needs the installed package); None: torch.hub
    hub_repo: str = "facebookresearch/co-tracker"
    mode: Literal["offline", "online"] = "offline"
    entrypoint: Literal["cotracker3_offline", "cotracker3_online"] | None = None  # None: from mode
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    offline_window: int = Field(60, ge=2)  # window_len of the published offline predictor
    online_window: int = Field(16, ge=2)  # window_len of the online predictor; its step is half of it
    backward_tracking: bool = True  # also track frames before each query's frame

    @model_validator(mode="after")
    def _check(self) -> CoTrackerConfig:
        if self.entrypoint is not None and self.entrypoint != f"cotracker3_{self.mode}":
            raise ValueError(
                f"entrypoint {self.entrypoint!r} does not match mode {self.mode!r}; "
                f"use 'cotracker3_{self.mode}' or leave entrypoint unset"
            )
        if not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device {self.device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
        return self

    @property
    def hub_entrypoint(self) -> str:
        return self.entrypoint or f"cotracker3_{self.mode}"

    def model_key(self) -> str:
        """JSON of the fields that decide which predictor is built: the key of the process-wide cache."""
        window = self.offline_window if self.mode == "offline" else self.online_window
        fields = {
            "checkpoint": self.checkpoint,
            "hub_repo": None if self.checkpoint is not None else self.hub_repo,
            "entrypoint": self.hub_entrypoint,
            "device": self.device,
            "window_len": window,
        }
        return json.dumps(fields, sort_keys=True)


class CoTrackerTracker:
    """CoTracker3 offline or online predictor; the model loads in :meth:`setup`."""

    name = "cotracker"
    thread_safe = False  # the online predictor keeps state between calls: one caller at a time

    def __init__(self, config: CoTrackerConfig | None = None):
        self.config = config or CoTrackerConfig()
        try:
            import torch  # noqa: F401
        except ImportError as err:  # torch is a core dependency, but a slim install may lack it
            raise ImportError(
                f"the cotracker tracker needs torch: pip install torch; then {INSTALL_HINT}"
            ) from err
        if self.config.checkpoint is not None and not _package_available():
            raise ImportError(
                f"checkpoint={self.config.checkpoint!r} needs the cotracker package: {INSTALL_HINT}"
            )
        source = self.config.checkpoint or f"hub:{self.config.hub_repo}"
        self.version = f"{self.config.hub_entrypoint}@{source}"
        self._model: Any = None
        self._run_lock: threading.Lock | None = None  # serialises calls into the (maybe shared) model
        self._lock = threading.Lock()  # guards setup()

    def __getstate__(self) -> dict[str, Any]:
        # workers call setup() themselves; locks do not pickle
        return {**self.__dict__, "_model": None, "_run_lock": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Build the predictor once (from the local checkpoint with the installed package, else
        torch.hub), or reuse the one this process already loaded with the same settings."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:  # another thread finished setup() while this one waited
                return
            loaded = _load(self.config)
            self._run_lock = loaded.lock  # before _model: a thread that sees _model sees the lock too
            self._model = loaded.model

    def track(self, video: np.ndarray, queries: np.ndarray) -> TrackResult:
        """Track ``queries`` (N, 3) through ``video`` (T, H, W, 3) uint8; runs :meth:`setup` if needed."""
        import torch

        video, queries, qt = check_track_inputs(video, queries)
        self.setup()
        T, N = video.shape[0], len(queries)
        if N == 0:
            empty = np.zeros((T, 0), np.float32)
            return TrackResult(np.zeros((T, 0, 2), np.float32), empty.astype(bool), empty)
        dev = torch.device(self.config.device)
        q = torch.from_numpy(queries).to(dev)[None]
        with self._run_lock, torch.inference_mode():
            if self.config.mode == "offline":
                clip = _to_device(video, dev)  # the offline predictor needs the whole clip
                out = self._model(clip, queries=q, backward_tracking=self.config.backward_tracking)
                del clip
                tracks, vis, conf = self._unpack(out, T, N)
            else:
                tracks, vis, conf = self._online(video, q, T, N)
                before = qt > 0
                if self.config.backward_tracking and before.any():
                    rq = q[:, torch.from_numpy(before).to(dev)].clone()
                    rq[..., 0] = (T - 1) - rq[..., 0]
                    rt, rv, rc = self._online(video[::-1], rq, T, int(before.sum()))
                    rt, rv, rc = rt[::-1], rv[::-1], rc[::-1]
                    cols = np.flatnonzero(before)
                    earlier = np.arange(T)[:, None] < qt[None, cols]
                    tracks[:, cols] = np.where(earlier[..., None], rt, tracks[:, cols])
                    vis[:, cols] = np.where(earlier, rv, vis[:, cols])
                    conf[:, cols] = np.where(earlier, rc, conf[:, cols])
        # the query frame holds the query itself, as the offline predictor also enforces
        tracks[qt, np.arange(N)] = queries[:, 1:]
        vis[qt, np.arange(N)] = True
        conf[qt, np.arange(N)] = 1.0
        return TrackResult(tracks, vis, np.clip(conf, 0.0, 1.0).astype(np.float32))

    def _online(self, video: np.ndarray, q: Any, T: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The published online protocol on a uint8 (T, H, W, 3) clip kept on the CPU: initialise with
        the queries, then feed windows of 2 * step frames, each moved to the device only when fed."""
        model = self._model
        step = int(getattr(model, "step", self.config.online_window // 2))
        dev = q.device

        def window(i: int) -> Any:  # freed once the call that takes it returns
            return _to_device(video[i : i + 2 * step], dev)

        # the first step reads only the chunk's shape (H, W to scale the queries) and device
        model(video_chunk=window(0), is_first_step=True, queries=q)
        out = None
        for i in range(0, max(T - step, 1), step):
            out = model(video_chunk=window(i))
        return self._unpack(out, T, N)

    @staticmethod
    def _unpack(out: Any, T: int, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(1, T, N, 2) tracks, (1, T, N[, 1]) visibility and an optional confidence, to numpy (T, N)."""
        if not isinstance(out, tuple | list) or len(out) < 2 or out[0] is None:
            raise RuntimeError(f"CoTracker returned {type(out).__name__}; expected (tracks, visibility)")
        tracks = out[0].detach().float().cpu().numpy()
        vis = out[1].detach().cpu().numpy()
        if vis.ndim == 4:  # (B, T, N, 1) in some releases
            vis = vis[..., 0]
        good = tracks.shape[0] == 1 and tracks.shape[1] >= T and tracks.shape[2:] == (N, 2)
        if not good or vis.shape != tracks.shape[:3]:
            raise RuntimeError(
                f"CoTracker returned tracks {tuple(tracks.shape)} and visibility {tuple(vis.shape)}; "
                f"expected (1, {T}, {N}, 2) and (1, {T}, {N})"
            )
        tracks = tracks[0, :T].astype(np.float32)
        visible = vis[0, :T] > 0.5 if vis.dtype != np.bool_ else vis[0, :T].copy()
        if len(out) > 2 and out[2] is not None:
            conf = out[2].detach().float().cpu().numpy().reshape(1, -1, N)[0, :T]
        else:
            conf = visible.astype(np.float32)
        return np.ascontiguousarray(tracks), np.ascontiguousarray(visible), conf.astype(np.float32)


def _to_device(frames: np.ndarray, device: Any) -> Any:
    """uint8 (T, H, W, 3) frames (a view is fine) as the float (1, T, 3, H, W) tensor the predictors take;
    the copy to the device stays uint8 and is converted there."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)[None].float()


def _load(c: CoTrackerConfig) -> _Loaded:
    """The predictor for ``c``, built on first use in this process and cached by :meth:`model_key`."""
    key = c.model_key()
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _Loaded(_build(c), threading.Lock())
            _MODELS[key] = loaded
        return loaded


def _build(c: CoTrackerConfig) -> Any:
    import torch

    if c.checkpoint is not None:
        try:
            from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor
        except ImportError as err:
            raise ImportError(f"cannot import cotracker.predictor: {INSTALL_HINT}") from err
        if c.mode == "offline":
            model = CoTrackerPredictor(checkpoint=c.checkpoint, offline=True, window_len=c.offline_window)
        else:
            model = CoTrackerOnlinePredictor(checkpoint=c.checkpoint, window_len=c.online_window)
    else:
        try:
            model = torch.hub.load(c.hub_repo, c.hub_entrypoint)
        except Exception as err:
            raise RuntimeError(
                f"torch.hub.load({c.hub_repo!r}, {c.hub_entrypoint!r}) failed ({err}); without network "
                f"access, {INSTALL_HINT} and set checkpoint to a downloaded .pth file"
            ) from err
    model = model.to(c.device).eval()
    source = c.checkpoint or f"hub:{c.hub_repo}"
    logger.info("CoTracker %s@%s loaded on %s", c.hub_entrypoint, source, c.device)
    return model
