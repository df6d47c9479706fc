"""Point trackers: one small protocol and an explicit registry from name to implementation.

``opencv`` (pyramidal Lucas-Kanade with forward-backward and appearance checks) runs anywhere and is the
default; ``cotracker`` wraps the CoTracker3 predictors, which the user installs (CC-BY-NC 4.0). Each
implementation takes its own config (:class:`OpenCVConfig`, :class:`CoTrackerConfig`), loads models in
``setup()`` and returns a :class:`TrackResult`. :mod:`~ardrag.data.trackers.select` chooses query points
and control trajectories; :mod:`~ardrag.data.trackers.metrics` scores tracks against ground truth.
"""

from __future__ import annotations

from typing import Any

from ardrag.config import build_config
from ardrag.data.trackers.base import Tracker, TrackResult
from ardrag.data.trackers.cotracker import CoTrackerConfig, CoTrackerTracker
from ardrag.data.trackers.opencv import OpenCVConfig, OpenCVTracker
from ardrag.errors import ConfigError

TRACKERS: dict[str, type] = {"opencv": OpenCVTracker, "cotracker": CoTrackerTracker}
CONFIGS: dict[str, type] = {"opencv": OpenCVConfig, "cotracker": CoTrackerConfig}


def get_tracker(name: str, config_dict: dict[str, Any] | None = None) -> Tracker:
    """The tracker ``name`` built from a plain dict of config fields (validated; unknown keys fail).
    Call ``setup()`` on the result before tracking (in the worker, when there are workers)."""
    if name not in TRACKERS:
        raise ConfigError(f"tracker {name!r} is unknown; expected one of {sorted(TRACKERS)}")
    config = build_config(CONFIGS[name], config_dict, source=f"tracker {name!r}")
    return TRACKERS[name](config)


__all__ = [
    "CONFIGS",
    "TRACKERS",
    "CoTrackerConfig",
    "CoTrackerTracker",
    "OpenCVConfig",
    "OpenCVTracker",
    "TrackResult",
    "Tracker",
    "get_tracker",
]
