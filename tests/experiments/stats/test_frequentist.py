"""Welch's t-test equals SciPy; the two-proportion z-test equals statsmodels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from nexus.experiments.stats import (
    Alternative,
    ProportionStats,
    SampleStats,
    StatsError,
    TestResult,
    two_proportions,
    welch,
)

ALTERNATIVES: tuple[Alternative, ...] = ("two-sided", "greater", "less")
STATSMODELS_ALTERNATIVE = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}


def close(expected: float) -> Any:
    """The brief's tolerance: 1e-6 relative (absolute 1e-12 near zero)."""
    return pytest.approx(expected, rel=1e-6, abs=1e-12)


def assert_matches_scipy_welch(
    control: np.ndarray, treatment: np.ndarray, alternative: Alternative, alpha: float
) -> None:
    result = welch(
        SampleStats.from_values(control),
        SampleStats.from_values(treatment),
        alpha=alpha,
        alternative=alternative,
    )
    reference = stats.ttest_ind(treatment, control, equal_var=False, alternative=alternative)
    interval = reference.confidence_interval(confidence_level=1 - alpha)
    assert result.error in {None, StatsError.ZERO_CONTROL_MEAN}  # ratings may average 0
    assert result.absolute is not None
    assert result.statistic == close(reference.statistic)
    assert result.p_value == close(reference.pvalue)
    assert result.degrees_of_freedom == close(reference.df)
    assert result.absolute.value == close(treatment.mean() - control.mean())
    assert result.absolute.ci_lower == close(interval.low)
    assert result.absolute.ci_upper == close(interval.high)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_welch_matches_scipy(alternative: Alternative, alpha: float) -> None:
    rng = np.random.default_rng(11)
    control, treatment = rng.normal(10.0, 2.0, 80), rng.normal(10.6, 3.5, 55)
    assert_matches_scipy_welch(control, treatment, alternative, alpha)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    control_n=st.integers(2, 400),
    treatment_n=st.integers(2, 400),
    location=st.floats(-100.0, 100.0),
    shift=st.floats(-5.0, 5.0),
    # Sums of squares lose eps (mean / sd)^2 of the variance (summaries docstring): keep
    # mean / sd below 1,000, where that is < 1e-9, far inside the 1e-6 being checked.
    control_scale=st.floats(0.1, 50.0),
    treatment_scale=st.floats(0.1, 50.0),
    alternative=st.sampled_from(ALTERNATIVES),
)
def test_welch_matches_scipy_on_generated_data(
    seed: int,
    control_n: int,
    treatment_n: int,
    location: float,
    shift: float,
    control_scale: float,
    treatment_scale: float,
    alternative: Alternative,
) -> None:
    rng = np.random.default_rng(seed)
    control = rng.normal(location, control_scale, control_n)
    treatment = rng.normal(location + shift, treatment_scale, treatment_n)
    assert_matches_scipy_welch(control, treatment, alternative, 0.05)


# SciPy warns that a constant arm's variance suffers cancellation; its answer is still exact.
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
@settings(max_examples=80, deadline=None)
@given(
    control=st.lists(st.integers(0, 5), min_size=2, max_size=60),
    treatment=st.lists(st.integers(0, 5), min_size=2, max_size=60),
)
def test_welch_matches_scipy_on_tied_ratings(control: list[int], treatment: list[int]) -> None:
    # Ratings: heavy ties, and one arm may be constant (the other still has variance).
    assume(len(set(control)) > 1 or len(set(treatment)) > 1)
    assert_matches_scipy_welch(
        np.asarray(control, dtype=float), np.asarray(treatment, dtype=float), "two-sided", 0.05
    )


def test_relative_effect_uses_the_delta_method() -> None:
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(20.0, 4.0, 300), rng.normal(21.0, 5.0, 250)
    result = welch(SampleStats.from_values(control), SampleStats.from_values(treatment))
    assert result.relative is not None
    assert result.degrees_of_freedom is not None
    mean_c, mean_t = control.mean(), treatment.mean()
    var_mean_c = control.var(ddof=1) / control.size
    var_mean_t = treatment.var(ddof=1) / treatment.size
    # Var(m_t / m_c) ~= Var(m_t) / m_c^2 + m_t^2 Var(m_c) / m_c^4, by hand.
    standard_error = math.sqrt(var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4)
    critical = stats.t.ppf(0.975, result.degrees_of_freedom)
    assert result.relative.value == close(mean_t / mean_c - 1)
    assert result.relative.standard_error == close(standard_error)
    assert result.relative.ci_lower == close(mean_t / mean_c - 1 - critical * standard_error)
    assert result.relative.ci_upper == close(mean_t / mean_c - 1 + critical * standard_error)


def test_relative_interval_covers_the_true_lift() -> None:
    # 2,000 experiments with a true lift of +5%: the 95% delta-method interval should cover it
    # about 95% of the time (binomial standard error ~0.5%).
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(2_000):
        control = SampleStats.from_values(rng.normal(10.0, 3.0, 400))
        treatment = SampleStats.from_values(rng.normal(10.5, 3.0, 400))
        relative = welch(control, treatment).relative
        assert relative is not None
        covered += relative.ci_lower <= 0.05 <= relative.ci_upper
    assert 0.93 <= covered / 2_000 <= 0.97


def test_negative_control_mean_keeps_the_lift_sign_of_the_effect() -> None:
    control = SampleStats.from_moments(n=100, mean=-10.0, variance=4.0)
    treatment = SampleStats.from_moments(n=100, mean=-8.0, variance=4.0)
    result = welch(control, treatment)
    assert result.absolute is not None
    assert result.relative is not None
    assert result.absolute.value == pytest.approx(2.0)
    assert result.relative.value == pytest.approx(0.2)


def test_one_sided_intervals_are_open_on_the_far_side() -> None:
    control = SampleStats.from_moments(n=50, mean=1.0, variance=1.0)
    treatment = SampleStats.from_moments(n=50, mean=1.3, variance=1.0)
    greater = welch(control, treatment, alternative="greater").absolute
    less = welch(control, treatment, alternative="less").absolute
    assert greater is not None
    assert less is not None
    assert greater.ci_upper == math.inf
    assert less.ci_lower == -math.inf


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_two_proportions_matches_statsmodels(alternative: Alternative) -> None:
    control, treatment = ProportionStats(2_000, 210), ProportionStats(1_800, 240)
    result = two_proportions(control, treatment, alternative=alternative)
    statistic, p_value = proportions_ztest(
        count=[240, 210], nobs=[1_800, 2_000], alternative=STATSMODELS_ALTERNATIVE[alternative]
    )
    assert result.statistic == close(statistic)
    assert result.p_value == close(p_value)
    assert result.degrees_of_freedom is None


@settings(max_examples=100, deadline=None)
@given(
    control_n=st.integers(2, 5_000),
    treatment_n=st.integers(2, 5_000),
    control_rate=st.floats(0.0, 1.0),
    treatment_rate=st.floats(0.0, 1.0),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_two_proportions_pooled_test_and_wald_interval_match_statsmodels(
    control_n: int, treatment_n: int, control_rate: float, treatment_rate: float, alpha: float
) -> None:
    control = ProportionStats(control_n, round(control_rate * control_n))
    treatment = ProportionStats(treatment_n, round(treatment_rate * treatment_n))
    result = two_proportions(control, treatment, alpha=alpha)
    p_c, p_t = control.proportion, treatment.proportion
    if p_c * (1 - p_c) + p_t * (1 - p_t) == 0:
        assert result.error == StatsError.ZERO_VARIANCE
        return
    statistic, p_value = proportions_ztest(
        count=[treatment.successes, control.successes], nobs=[treatment_n, control_n]
    )
    low, high = confint_proportions_2indep(
        treatment.successes,
        treatment_n,
        control.successes,
        control_n,
        method="wald",
        compare="diff",
        alpha=alpha,
    )
    assert result.absolute is not None
    assert result.statistic == close(statistic)
    assert result.p_value == close(p_value)
    assert result.absolute.ci_lower == close(low)
    assert result.absolute.ci_upper == close(high)


def test_two_proportions_relative_and_one_sided_interval_by_hand() -> None:
    result = two_proportions(ProportionStats(1_000, 100), ProportionStats(1_000, 130), alpha=0.1)
    one_sided = two_proportions(
        ProportionStats(1_000, 100), ProportionStats(1_000, 130), alternative="greater"
    )
    assert result.relative is not None
    assert one_sided.absolute is not None
    variance_c, variance_t = 0.1 * 0.9 / 1_000, 0.13 * 0.87 / 1_000
    lift_se = math.sqrt(variance_t / 0.1**2 + 0.13**2 * variance_c / 0.1**4)
    z = stats.norm.ppf(0.95)
    assert result.relative.value == close(0.3)
    assert result.relative.ci_lower == close(0.3 - z * lift_se)
    assert one_sided.absolute.ci_lower == close(0.03 - z * math.sqrt(variance_c + variance_t))
    assert one_sided.absolute.ci_upper == math.inf


# --------------------------------------------------------------------------------------------
# Degenerate data: error codes, never exceptions.
# --------------------------------------------------------------------------------------------


def assert_failed(result: TestResult, error: StatsError) -> None:
    assert result.error == error
    assert result.absolute is None
    assert result.p_value is None
    assert not result.significant


def test_welch_with_one_unit_is_insufficient() -> None:
    result = welch(SampleStats.from_values([1.0]), SampleStats.from_values([1.0, 2.0, 3.0]))
    assert_failed(result, StatsError.INSUFFICIENT_DATA)
    assert result.control_mean == 1.0
    empty = welch(SampleStats(0, 0.0, 0.0), SampleStats.from_values([1.0, 2.0]))
    assert_failed(empty, StatsError.INSUFFICIENT_DATA)
    assert empty.control_mean is None


def test_welch_on_constant_arms_is_zero_variance() -> None:
    result = welch(SampleStats.from_values([0.1] * 50), SampleStats.from_values([0.1] * 40))
    assert_failed(result, StatsError.ZERO_VARIANCE)


def test_welch_with_zero_control_mean_keeps_the_absolute_effect() -> None:
    result = welch(
        SampleStats.from_values([-1.0, 1.0, 0.0]), SampleStats.from_values([1.0, 2.0, 3.0])
    )
    assert result.error == StatsError.ZERO_CONTROL_MEAN
    assert result.relative is None
    assert result.absolute is not None
    assert result.absolute.value == pytest.approx(2.0)
    assert result.p_value is not None


def test_two_proportions_degenerate_cases() -> None:
    assert_failed(
        two_proportions(ProportionStats(100, 0), ProportionStats(100, 0)),
        StatsError.ZERO_VARIANCE,
    )
    assert_failed(
        two_proportions(ProportionStats(1, 0), ProportionStats(100, 3)),
        StatsError.INSUFFICIENT_DATA,
    )
    assert_failed(
        two_proportions(ProportionStats(10, 11), ProportionStats(100, 3)),
        StatsError.INVALID_INPUT,
    )
    zero_control = two_proportions(ProportionStats(100, 0), ProportionStats(100, 5))
    assert zero_control.error == StatsError.ZERO_CONTROL_MEAN
    assert zero_control.absolute is not None
    assert zero_control.relative is None


def test_impossible_sample_stats_are_invalid_input() -> None:
    assert_failed(
        welch(SampleStats(3, 6.0, 1.0), SampleStats.from_values([1.0, 2.0])),
        StatsError.INVALID_INPUT,
    )
    assert_failed(
        welch(SampleStats(3, math.inf, 1.0), SampleStats.from_values([1.0, 2.0])),
        StatsError.INVALID_INPUT,
    )


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, math.nan])
def test_impossible_alpha_raises(alpha: float) -> None:
    arm = SampleStats.from_values([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alpha"):
        welch(arm, arm, alpha=alpha)


def test_unknown_alternative_raises() -> None:
    arm = SampleStats.from_values([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alternative"):
        welch(arm, arm, alternative="bigger")  # type: ignore[arg-type]
