"""Per-arm sufficient statistics reproduce numpy's moments and know impossible data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexus.experiments.stats import CupedStats, ProportionStats, RatioStats, SampleStats


def test_from_values_gives_numpy_mean_and_unbiased_variance() -> None:
    values = np.random.default_rng(7).normal(12.5, 3.0, size=1_000)
    stats = SampleStats.from_values(values)
    assert stats.n == 1_000
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.variance == pytest.approx(values.var(ddof=1), rel=1e-10)


def test_from_moments_round_trips() -> None:
    stats = SampleStats.from_moments(n=40, mean=-2.5, variance=9.0)
    assert stats.mean == pytest.approx(-2.5)
    assert stats.variance == pytest.approx(9.0)


@pytest.mark.parametrize("value", [0.1, 1e6 + 0.3, -7.25])
def test_constant_values_have_exactly_zero_variance(value: float) -> None:
    # sum y^2 - (sum y)^2 / n is a few ulps off zero for constant data; it must read as 0.
    assert SampleStats.from_values(np.full(1_000, value)).variance == 0.0


def test_mean_and_variance_are_nan_without_enough_units() -> None:
    assert math.isnan(SampleStats(0, 0.0, 0.0).mean)
    assert math.isnan(SampleStats(1, 3.0, 9.0).variance)


def test_proportion_as_sample_stats_is_the_zero_one_metric() -> None:
    arm = ProportionStats(n=200, successes=30)
    as_values = SampleStats.from_values(np.r_[np.ones(30), np.zeros(170)])
    assert arm.as_sample_stats() == as_values
    assert arm.as_sample_stats().variance == pytest.approx(0.15 * 0.85 * 200 / 199)


@pytest.mark.parametrize(
    "stats",
    [
        SampleStats(-1, 0.0, 0.0),
        SampleStats(3, math.nan, 1.0),
        SampleStats(3, 6.0, 1.0),  # (sum y)^2 / n = 12 > sum y^2: no data set has these
        SampleStats(3, 1.0, -1.0),
    ],
)
def test_impossible_sample_stats_are_invalid(stats: SampleStats) -> None:
    assert not stats.is_valid


@pytest.mark.parametrize(
    "stats", [ProportionStats(10, 11), ProportionStats(10, -1), ProportionStats(-5, 0)]
)
def test_impossible_proportions_are_invalid(stats: ProportionStats) -> None:
    assert not stats.is_valid


def test_paired_statistics_need_paired_arrays() -> None:
    with pytest.raises(ValueError, match="same length"):
        RatioStats.from_values([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        CupedStats.from_values([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        SampleStats.from_values([[1.0, 2.0]])


def test_ratio_and_cuped_stats_hold_the_cross_products() -> None:
    y, x = np.array([1.0, 2.0, 4.0]), np.array([2.0, 1.0, 3.0])
    ratio = RatioStats.from_values(y, x)
    assert ratio.numerator_denominator_sum_of_products == pytest.approx(16.0)
    assert ratio.ratio == pytest.approx(7.0 / 6.0)
    cuped = CupedStats.from_values(y, x)
    assert cuped.metric_covariate_sum_of_products == pytest.approx(16.0)
    assert cuped.metric == SampleStats.from_values(y)
    assert ratio.is_valid
    assert cuped.is_valid
