"""Ratio metrics: the delta-method variance equals the linearised per-unit metric's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from nexus.experiments.stats import RatioStats, StatsError, ratio


def sessions_and_revenue(
    rng: np.random.Generator, users: int, revenue_per_session: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user revenue and sessions, correlated through the session count."""
    sessions = rng.poisson(3.0, users) + 1.0
    revenue = rng.gamma(2.0, revenue_per_session / 2.0, users) * sessions
    return revenue, sessions


def reference(
    control: tuple[np.ndarray, np.ndarray], treatment: tuple[np.ndarray, np.ndarray], alpha: float
) -> dict[str, float]:
    """Each arm's ratio variance from the linearised metric y - R x, computed on raw arrays."""

    def arm(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
        estimate = y.mean() / x.mean()
        linearised = y - estimate * x
        return estimate, linearised.var(ddof=1) / (y.size * x.mean() ** 2)

    ratio_c, variance_c = arm(*control)
    ratio_t, variance_t = arm(*treatment)
    standard_error = np.sqrt(variance_c + variance_t)
    z = (ratio_t - ratio_c) / standard_error
    margin = stats.norm.ppf(1 - alpha / 2) * standard_error
    return {
        "effect": ratio_t - ratio_c,
        "statistic": z,
        "p_value": 2 * stats.norm.sf(abs(z)),
        "ci_lower": ratio_t - ratio_c - margin,
        "ci_upper": ratio_t - ratio_c + margin,
    }


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    control_users=st.integers(2, 500),
    treatment_users=st.integers(2, 500),
    lift=st.floats(-0.3, 0.3),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_ratio_matches_the_linearised_reference(
    seed: int, control_users: int, treatment_users: int, lift: float, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    control = sessions_and_revenue(rng, control_users, 10.0)
    treatment = sessions_and_revenue(rng, treatment_users, 10.0 * (1 + lift))
    result = ratio(
        RatioStats.from_values(*control), RatioStats.from_values(*treatment), alpha=alpha
    )
    expected = reference(control, treatment, alpha)
    assert result.absolute is not None
    assert result.absolute.value == pytest.approx(expected["effect"], rel=1e-6, abs=1e-12)
    assert result.statistic == pytest.approx(expected["statistic"], rel=1e-6, abs=1e-12)
    assert result.p_value == pytest.approx(expected["p_value"], rel=1e-6, abs=1e-12)
    assert result.absolute.ci_lower == pytest.approx(expected["ci_lower"], rel=1e-6, abs=1e-12)
    assert result.absolute.ci_upper == pytest.approx(expected["ci_upper"], rel=1e-6, abs=1e-12)


def test_ratio_variance_is_deng_et_al_formula() -> None:
    # The textbook form with the covariance term, from numpy's covariance matrix.
    rng = np.random.default_rng(5)
    y, x = sessions_and_revenue(rng, 800, 4.0)
    arm = RatioStats.from_values(y, x)
    covariance = np.cov(y, x, ddof=1)
    mean_y, mean_x = y.mean(), x.mean()
    expected = (
        covariance[0, 0] / mean_x**2
        - 2 * mean_y * covariance[0, 1] / mean_x**3
        + mean_y**2 * covariance[1, 1] / mean_x**4
    ) / y.size
    result = ratio(arm, arm)
    assert result.absolute is not None
    assert result.absolute.standard_error == pytest.approx(np.sqrt(2 * expected), rel=1e-9)


def test_ratio_interval_covers_the_true_difference() -> None:
    # Users are the unit; sessions per user vary. The delta-method 95% interval for the
    # difference in revenue per session should cover the truth ~95% of the time.
    rng = np.random.default_rng(99)
    covered = 0
    for _ in range(1_000):
        control = RatioStats.from_values(*sessions_and_revenue(rng, 300, 10.0))
        treatment = RatioStats.from_values(*sessions_and_revenue(rng, 300, 11.0))
        absolute = ratio(control, treatment).absolute
        assert absolute is not None
        covered += absolute.ci_lower <= 1.0 <= absolute.ci_upper
    assert 0.925 <= covered / 1_000 <= 0.975


def test_ratio_degenerate_cases() -> None:
    good = RatioStats.from_values([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    no_sessions = RatioStats.from_values([0.0, 0.0], [0.0, 0.0])
    assert ratio(good, no_sessions).error == StatsError.ZERO_DENOMINATOR
    assert ratio(RatioStats.from_values([1.0], [1.0]), good).error == (StatsError.INSUFFICIENT_DATA)
    constant = RatioStats.from_values([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert ratio(constant, constant).error == StatsError.ZERO_VARIANCE
    # Revenue exactly proportional to sessions: every unit's ratio is 2.7, no variance at all.
    sessions = np.random.default_rng(0).poisson(3.0, 1_000) + 1.0
    proportional = RatioStats.from_values(2.7 * sessions, sessions)
    assert ratio(proportional, proportional).error == StatsError.ZERO_VARIANCE
    zero_revenue = RatioStats.from_values([0.0, 0.0, 0.0], [1.0, 2.0, 1.0])
    result = ratio(zero_revenue, good)
    assert result.error == StatsError.ZERO_CONTROL_MEAN
    assert result.absolute is not None
    assert result.relative is None
    broken = RatioStats(3, 1.0, -1.0, 1.0, 1.0, 1.0)
    assert ratio(broken, good).error == StatsError.INVALID_INPUT
