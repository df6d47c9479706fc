"""Percentile bootstrap intervals over clips: how sure a benchmark's mean, or a before/after change, is.

A benchmark of a few dozen clips gives a mean that moves with the clips drawn. The intervals here resample
the clips (with replacement, ``resamples`` times, from a seeded generator) and take the percentiles of the
statistic: the mean of one set of per-clip values, or, for two runs on the same clips, the mean of the
paired differences (``after - before``) or the ratio of the two means. Pairing keeps each clip's own
difficulty out of the comparison, which is what lets a small change show on few clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ardrag.errors import ConfigError


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic on the clips as they are
    low: float
    high: float
    level: float
    n: int  # clips

    def excludes(self, value: float) -> bool:
        """The whole interval lies on one side of ``value`` (e.g. 0 for a difference, 1 for a ratio)."""
        return self.high < value or self.low > value

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] ({self.level:.0%}, {self.n} clips)"


def _values(values: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise ConfigError(f"{name}: {a.shape} values; expected a non-empty list of per-clip numbers")
    if not np.isfinite(a).all():
        raise ConfigError(
            f"{name}: {int((~np.isfinite(a)).sum())} values are not finite; drop those clips first"
        )
    return a


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if resamples < 100:
        raise ConfigError(f"resamples = {resamples}; expected at least 100 for a percentile interval")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(estimate: float, draws: np.ndarray, level: float, n: int) -> Interval:
    if not 0 < level < 1:
        raise ConfigError(f"level = {level}; expected a fraction in (0, 1), e.g. 0.95")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level, n)


def mean_interval(
    values: Sequence[float], resamples: int = 5000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of per-clip ``values`` with its bootstrap interval."""
    a = _values(values, "values")
    draws = a[_indices(len(a), resamples, seed)].mean(axis=1)
    return _interval(a.mean(), draws, level, len(a))


def _paired(before: Sequence[float], after: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    b, a = _values(before, "before"), _values(after, "after")
    if len(a) != len(b):
        raise ConfigError(
            f"before has {len(b)} clips and after {len(a)}; a paired interval needs the same clips"
        )
    return b, a


def difference_interval(
    before: Sequence[float], after: Sequence[float], resamples: int = 5000, seed: int = 0, level: float = 0.95
) -> Interval:
    """``mean(after - before)`` over the same clips (in the same order), with its bootstrap interval."""
    b, a = _paired(before, after)
    d = a - b
    draws = d[_indices(len(d), resamples, seed)].mean(axis=1)
    return _interval(d.mean(), draws, level, len(d))


def ratio_interval(
    before: Sequence[float], after: Sequence[float], resamples: int = 5000, seed: int = 0, level: float = 0.95
) -> Interval:
    """``mean(after) / mean(before)`` over the same clips, resampled as pairs, with its interval."""
    b, a = _paired(before, after)
    if b.mean() == 0:
        raise ConfigError("before has a mean of 0; a ratio to it is undefined (use difference_interval)")
    idx = _indices(len(b), resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    return _interval(a.mean() / b.mean(), draws[np.isfinite(draws)], level, len(b))
