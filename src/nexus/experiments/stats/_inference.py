"""Shared machinery: parameter checks, reference distributions, intervals, the delta method.

Every frequentist comparison here reduces to the same shape: two independent arm means with the
variances of those means, a reference distribution (Student t with Welch-Satterthwaite degrees
of freedom, or the standard normal) and an alternative. :func:`compare_means` turns that into a
:class:`~nexus.experiments.stats.results.TestResult`.
"""

from __future__ import annotations

import math

from scipy import stats as scipy_stats

from nexus.experiments.stats.results import (
    ALTERNATIVES,
    Alternative,
    Estimate,
    StatsError,
    TestResult,
)


def check_alpha(alpha: float) -> None:
    """``alpha`` must lie strictly between 0 and 1."""
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def check_alternative(alternative: str) -> None:
    """``alternative`` must be one of ``"two-sided"``, ``"greater"``, ``"less"``."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _survival(statistic: float, degrees_of_freedom: float | None) -> float:
    if degrees_of_freedom is None:
        return float(scipy_stats.norm.sf(statistic))
    return float(scipy_stats.t.sf(statistic, degrees_of_freedom))


def p_value(statistic: float, alternative: Alternative, degrees_of_freedom: float | None) -> float:
    """The p-value of ``statistic`` against Student t (``degrees_of_freedom``) or N(0, 1).

    Two-sided: 2 P(T >= |t|); ``"greater"``: P(T >= t); ``"less"``: P(T <= t) = P(T >= -t).
    """
    if alternative == "greater":
        return _survival(statistic, degrees_of_freedom)
    if alternative == "less":
        return _survival(-statistic, degrees_of_freedom)
    return min(1.0, 2.0 * _survival(abs(statistic), degrees_of_freedom))


def critical_value(
    alpha: float, alternative: Alternative, degrees_of_freedom: float | None
) -> float:
    """The upper ``alpha / 2`` (two-sided) or ``alpha`` (one-sided) quantile of the reference."""
    tail = alpha / 2.0 if alternative == "two-sided" else alpha
    if degrees_of_freedom is None:
        return float(scipy_stats.norm.isf(tail))
    return float(scipy_stats.t.isf(tail, degrees_of_freedom))


def interval(
    value: float, standard_error: float, critical: float, alternative: Alternative
) -> Estimate:
    """``value -+ critical * standard_error``, opened to infinity on the side H1 does not bound."""
    margin = critical * standard_error
    lower = -math.inf if alternative == "less" else value - margin
    upper = math.inf if alternative == "greater" else value + margin
    return Estimate(value=value, standard_error=standard_error, ci_lower=lower, ci_upper=upper)


def welch_satterthwaite(
    control_mean_variance: float,
    control_n: int,
    treatment_mean_variance: float,
    treatment_n: int,
) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two independent means.

    With v_i = s_i^2 / n_i the variance of arm i's mean (Welch 1947, Biometrika 34(1-2),
    28-35; Satterthwaite 1946, Biometrics Bulletin 2(6), 110-114):

        df = (v_c + v_t)^2 / (v_c^2 / (n_c - 1) + v_t^2 / (n_t - 1))
    """
    numerator = (control_mean_variance + treatment_mean_variance) ** 2
    denominator = control_mean_variance**2 / (control_n - 1) + treatment_mean_variance**2 / (
        treatment_n - 1
    )
    return numerator / denominator


def relative_lift(
    control_mean: float,
    control_mean_variance: float,
    treatment_mean: float,
    treatment_mean_variance: float,
) -> tuple[float, float]:
    """The lift ``(m_t - m_c) / |m_c|`` and its delta-method variance.

    First-order Taylor expansion of g(m_c, m_t) = m_t / m_c around the estimates, with the arms
    independent (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics: A
    Practical Guide with Novel Ideas", KDD, section on the percentage change; the same formula
    GrowthBook's gbstats uses for relative effects):

        Var(m_t / m_c) ~= Var(m_t) / m_c^2 + m_t^2 Var(m_c) / m_c^4

    Dividing by |m_c| instead of m_c keeps the lift's sign that of the absolute effect when the
    control mean is negative; the variance is unchanged because only squares of m_c appear.
    The caller guarantees ``control_mean != 0``.
    """
    lift = (treatment_mean - control_mean) / abs(control_mean)
    variance = (
        treatment_mean_variance / control_mean**2
        + treatment_mean**2 * control_mean_variance / control_mean**4
    )
    return lift, variance


def compare_means(
    *,
    control_mean: float,
    control_mean_variance: float,
    treatment_mean: float,
    treatment_mean_variance: float,
    degrees_of_freedom: float | None,
    alpha: float,
    alternative: Alternative,
    test_standard_error: float | None = None,
) -> TestResult:
    """Test, estimate and bound ``treatment_mean - control_mean`` for two independent means.

    ``*_mean_variance`` is the variance of each arm's mean (s^2 / n for a sample mean). The
    statistic is ``(m_t - m_c) / se`` with ``se = sqrt(v_c + v_t)``, unless
    ``test_standard_error`` supplies the standard error under H0 (the pooled two-proportion
    test); the intervals always use ``sqrt(v_c + v_t)``.
    """
    standard_error = math.sqrt(control_mean_variance + treatment_mean_variance)
    null_standard_error = standard_error if test_standard_error is None else test_standard_error
    if not (standard_error > 0.0 and null_standard_error > 0.0):
        return failed_test(
            StatsError.ZERO_VARIANCE,
            alpha=alpha,
            alternative=alternative,
            control_mean=control_mean,
            treatment_mean=treatment_mean,
        )
    difference = treatment_mean - control_mean
    statistic = difference / null_standard_error
    critical = critical_value(alpha, alternative, degrees_of_freedom)
    absolute = interval(difference, standard_error, critical, alternative)
    relative: Estimate | None = None
    error: StatsError | None = None
    if control_mean == 0.0:
        error = StatsError.ZERO_CONTROL_MEAN
    else:
        lift, lift_variance = relative_lift(
            control_mean, control_mean_variance, treatment_mean, treatment_mean_variance
        )
        relative = interval(lift, math.sqrt(lift_variance), critical, alternative)
    return TestResult(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        absolute=absolute,
        relative=relative,
        statistic=statistic,
        p_value=p_value(statistic, alternative, degrees_of_freedom),
        degrees_of_freedom=degrees_of_freedom,
        alpha=alpha,
        alternative=alternative,
        error=error,
    )


def failed_test(
    error: StatsError,
    *,
    alpha: float,
    alternative: Alternative,
    control_mean: float | None = None,
    treatment_mean: float | None = None,
) -> TestResult:
    """A :class:`TestResult` carrying only ``error`` (and the means, where they exist)."""
    return TestResult(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        absolute=None,
        relative=None,
        statistic=None,
        p_value=None,
        degrees_of_freedom=None,
        alpha=alpha,
        alternative=alternative,
        error=error,
    )
