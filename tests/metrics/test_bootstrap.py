"""Bootstrap intervals over clips: seeded, the right width and centre, pairing, and clear errors."""

import numpy as np
import pytest

from ardrag.errors import ConfigError
from ardrag.metrics.bootstrap import difference_interval, mean_interval, ratio_interval


def test_the_mean_interval_is_seeded_centred_and_shrinks_with_more_clips():
    rng = np.random.default_rng(0)
    few, many = rng.normal(10, 2, 16), rng.normal(10, 2, 400)
    a, b = mean_interval(few, seed=3), mean_interval(few, seed=3)
    assert a == b and a != mean_interval(few, seed=4)
    assert a.estimate == pytest.approx(few.mean()) and a.low < a.estimate < a.high and a.n == 16
    wide, narrow = a.high - a.low, mean_interval(many).high - mean_interval(many).low
    # a 95% interval of a mean is about 2 x 1.96 standard errors wide: 2 x 1.96 x 2 / sqrt(n)
    assert wide == pytest.approx(2 * 1.96 * few.std(ddof=1) / 4, rel=0.35)
    assert narrow < wide / 3
    assert mean_interval([5.0, 5.0, 5.0]).low == mean_interval([5.0, 5.0, 5.0]).high == 5.0


def test_the_interval_covers_the_true_mean_about_as_often_as_its_level_says():
    rng = np.random.default_rng(1)
    covered = [
        mean_interval(rng.exponential(3.0, 40), resamples=1000, seed=k).excludes(3.0) for k in range(200)
    ]
    miss = sum(covered) / len(covered)
    assert (
        0.01 <= miss <= 0.12
    )  # 5 % nominal; the percentile bootstrap runs a little narrow on 40 skewed values


def test_pairing_finds_a_small_change_that_clip_difficulty_hides():
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(2, 20, 32)  # px: some clips are much harder than others
    before = difficulty + rng.normal(0, 0.3, 32)
    after = difficulty - 1.0 + rng.normal(0, 0.3, 32)  # every clip 1 px better
    diff = difference_interval(before, after)
    assert diff.estimate == pytest.approx(-1.0, abs=0.2) and diff.excludes(0) and diff.high < 0
    unpaired = [mean_interval(before), mean_interval(after)]
    assert unpaired[1].high > unpaired[0].low  # the two runs' own intervals overlap: no verdict from them
    ratio = ratio_interval(before, after)
    assert ratio.estimate == pytest.approx(after.mean() / before.mean()) and ratio.high < 1


def test_bad_values_are_refused_with_what_was_expected():
    with pytest.raises(
        ConfigError, match=r"before has 3 clips and after 2; a paired interval needs the same"
    ):
        difference_interval([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="values: 1 values are not finite"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ConfigError, match=r"values: \(0,\) values; expected a non-empty list"):
        mean_interval([])
    with pytest.raises(ConfigError, match="resamples = 10; expected at least 100"):
        mean_interval([1.0, 2.0], resamples=10)
    with pytest.raises(ConfigError, match="level = 95; expected a fraction"):
        mean_interval([1.0, 2.0], level=95)
    with pytest.raises(ConfigError, match="before has a mean of 0"):
        ratio_interval([0.0, 0.0], [1.0, 2.0])
