"""CUPED from sufficient statistics equals theta and adjustment on raw arrays, then SciPy Welch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from nexus.experiments.stats import CupedStats, SampleStats, StatsError, cuped, welch


def experiment(
    rng: np.random.Generator, control_n: int, treatment_n: int, correlation: float, effect: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(metric, covariate) per arm; the covariate is pre-exposure, so untouched by treatment."""

    def arm(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        covariate = rng.normal(50.0, 10.0, n)
        noise = rng.normal(0.0, 10.0, n)
        metric = 5.0 + correlation * covariate + np.sqrt(1 - correlation**2) * noise + shift
        return metric, covariate

    return arm(control_n, 0.0), arm(treatment_n, effect)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    control_n=st.integers(2, 400),
    treatment_n=st.integers(2, 400),
    correlation=st.floats(-0.95, 0.95),
    effect=st.floats(-3.0, 3.0),
    alternative=st.sampled_from(["two-sided", "greater", "less"]),
)
def test_cuped_matches_numpy_adjustment_then_scipy_welch(
    seed: int,
    control_n: int,
    treatment_n: int,
    correlation: float,
    effect: float,
    alternative: str,
) -> None:
    rng = np.random.default_rng(seed)
    (y_c, x_c), (y_t, x_t) = experiment(rng, control_n, treatment_n, correlation, effect)
    # Reference on raw arrays: pooled theta = cov(Y, X) / var(X), adjust, Welch via SciPy.
    y_all, x_all = np.r_[y_c, y_t], np.r_[x_c, x_t]
    theta = np.cov(y_all, x_all, ddof=1)[0, 1] / x_all.var(ddof=1)
    adjusted_c = y_c - theta * (x_c - x_all.mean())
    adjusted_t = y_t - theta * (x_t - x_all.mean())
    reference = stats.ttest_ind(adjusted_t, adjusted_c, equal_var=False, alternative=alternative)
    interval = reference.confidence_interval(0.95)

    result = cuped(
        CupedStats.from_values(y_c, x_c),
        CupedStats.from_values(y_t, x_t),
        alternative=alternative,  # type: ignore[arg-type]
    )
    test = result.test
    assert result.error is None
    assert test.absolute is not None
    assert result.theta == pytest.approx(theta, rel=1e-6, abs=1e-12)
    assert test.control_mean == pytest.approx(adjusted_c.mean(), rel=1e-6)
    assert test.treatment_mean == pytest.approx(adjusted_t.mean(), rel=1e-6)
    assert test.statistic == pytest.approx(reference.statistic, rel=1e-6, abs=1e-12)
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12)
    assert test.degrees_of_freedom == pytest.approx(reference.df, rel=1e-6)
    assert test.absolute.ci_lower == pytest.approx(interval.low, rel=1e-6, abs=1e-12)
    assert test.absolute.ci_upper == pytest.approx(interval.high, rel=1e-6, abs=1e-12)


def test_variance_reduction_is_about_the_squared_correlation() -> None:
    rng = np.random.default_rng(8)
    (y_c, x_c), (y_t, x_t) = experiment(rng, 20_000, 20_000, 0.8, 0.5)
    result = cuped(CupedStats.from_values(y_c, x_c), CupedStats.from_values(y_t, x_t))
    unadjusted = welch(SampleStats.from_values(y_c), SampleStats.from_values(y_t))
    assert result.variance_reduction == pytest.approx(0.64, abs=0.02)
    assert result.test.absolute is not None
    assert unadjusted.absolute is not None
    assert result.test.absolute.standard_error == pytest.approx(
        unadjusted.absolute.standard_error * np.sqrt(1 - 0.64), rel=0.03
    )


def test_constant_covariate_means_no_adjustment() -> None:
    rng = np.random.default_rng(1)
    y_c, y_t = rng.normal(3.0, 1.0, 100), rng.normal(3.2, 1.0, 90)
    result = cuped(
        CupedStats.from_values(y_c, np.full(100, 7.0)),
        CupedStats.from_values(y_t, np.full(90, 7.0)),
    )
    plain = welch(SampleStats.from_values(y_c), SampleStats.from_values(y_t))
    assert result.theta == 0.0
    assert result.variance_reduction == pytest.approx(0.0, abs=1e-12)
    assert result.test.p_value == pytest.approx(plain.p_value, rel=1e-12)


def test_cuped_degenerate_cases() -> None:
    good = CupedStats.from_values([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])
    short = cuped(CupedStats.from_values([1.0], [1.0]), good)
    assert short.error == StatsError.INSUFFICIENT_DATA
    assert short.theta is None
    # The metric is exactly linear in the covariate: the adjusted metric is constant, and the
    # few ulps the sums leave over must not pass for variance (a t of 1e7 from nothing).
    rng = np.random.default_rng(0)
    x_c, x_t = rng.normal(50.0, 10.0, 1_000), rng.normal(50.0, 10.0, 1_000)
    exact = cuped(
        CupedStats.from_values(2.3 * x_c + 1.7, x_c), CupedStats.from_values(2.3 * x_t + 1.7, x_t)
    )
    assert exact.error == StatsError.ZERO_VARIANCE
    broken = CupedStats(3, 1.0, -1.0, 1.0, 1.0, 1.0)
    assert cuped(broken, good).error == StatsError.INVALID_INPUT
