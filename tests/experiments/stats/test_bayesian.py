"""Bayesian analysis against exact formulas, adaptive quadrature and seeded Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from nexus.experiments.stats import (
    BetaPrior,
    NormalPrior,
    ProportionStats,
    SampleStats,
    StatsError,
    bayesian_means,
    bayesian_proportions,
)


def miller_chance_to_beat(a_c: float, b_c: float, a_t: int, b_t: float) -> float:
    """Evan Miller (2015), "Formulas for Bayesian A/B Testing": P(p_T > p_C), integer a_T.

    sum_{i=0}^{a_T - 1} B(a_C + i, b_C + b_T) / ((b_T + i) B(1 + i, b_T) B(a_C, b_C))
    """
    i = np.arange(a_t, dtype=float)
    log_terms = (
        special.betaln(a_c + i, b_c + b_t)
        - np.log(b_t + i)
        - special.betaln(1 + i, b_t)
        - special.betaln(a_c, b_c)
    )
    return float(np.exp(log_terms).sum())


def posteriors(
    control: ProportionStats, treatment: ProportionStats, prior: BetaPrior
) -> tuple[tuple[float, float], tuple[float, float]]:
    def one(arm: ProportionStats) -> tuple[float, float]:
        return prior.successes + arm.successes, prior.failures + arm.n - arm.successes

    return one(control), one(treatment)


def integrate_over(a: float, b: float, function: object) -> float:
    """int f_{a,b}(c) function(c) dc by adaptive quadrature on the posterior's bulk."""
    low, high = special.betaincinv(a, b, 1e-15), special.betaincinv(a, b, 1 - 1e-15)
    value, _ = integrate.quad(
        lambda c: stats.beta.pdf(c, a, b) * function(c),  # type: ignore[operator]
        low,
        high,
        points=[a / (a + b)],
        epsabs=1e-13,
        epsrel=1e-11,
        limit=500,
    )
    return float(value)


@settings(max_examples=100, deadline=None)
@given(
    control_n=st.integers(2, 3_000),
    treatment_n=st.integers(2, 3_000),
    control_rate=st.floats(0.0, 1.0),
    treatment_rate=st.floats(0.0, 1.0),
    prior_successes=st.integers(1, 3),
    prior_failures=st.integers(1, 3),
)
def test_chance_to_beat_equals_evan_millers_closed_form(
    control_n: int,
    treatment_n: int,
    control_rate: float,
    treatment_rate: float,
    prior_successes: int,
    prior_failures: int,
) -> None:
    prior = BetaPrior(prior_successes, prior_failures)
    control = ProportionStats(control_n, round(control_rate * control_n))
    treatment = ProportionStats(treatment_n, round(treatment_rate * treatment_n))
    result = bayesian_proportions(control, treatment, prior=prior)
    (a_c, b_c), (a_t, b_t) = posteriors(control, treatment, prior)
    expected = miller_chance_to_beat(a_c, b_c, int(a_t), b_t)
    assert result.chance_to_beat_control == pytest.approx(expected, abs=1e-8)  # brief: 1e-6


PROPORTION_CASES = [
    (ProportionStats(40, 3), ProportionStats(35, 7)),
    (ProportionStats(1_000, 100), ProportionStats(1_000, 120)),
    (ProportionStats(150, 12), ProportionStats(20_000, 1_900)),  # one posterior far narrower
]


@pytest.mark.parametrize(("control", "treatment"), PROPORTION_CASES)
def test_expected_losses_equal_adaptive_quadrature(
    control: ProportionStats, treatment: ProportionStats
) -> None:
    result = bayesian_proportions(control, treatment)
    (a_c, b_c), (a_t, b_t) = posteriors(control, treatment, BetaPrior())

    def integrated_cdf(a: float, b: float, x: float) -> float:
        # E[(x - T)^+] = int_0^x F_{a,b}(t) dt, integrated numerically (no closed form shared
        # with the implementation's partial expectations).
        value, _ = integrate.quad(
            lambda t: float(special.betainc(a, b, t)), 0.0, x, epsabs=1e-14, limit=200
        )
        return float(value)

    # E[(C - T)^+] = E_C[int_0^C F_T(t) dt]; E[(T - C)^+] = E_T[int_0^T F_C(c) dc].
    loss_treatment = integrate_over(a_c, b_c, lambda c: integrated_cdf(a_t, b_t, c))
    loss_control = integrate_over(a_t, b_t, lambda t: integrated_cdf(a_c, b_c, t))
    assert result.expected_loss_choosing_treatment == pytest.approx(loss_treatment, abs=1e-9)
    assert result.expected_loss_choosing_control == pytest.approx(loss_control, abs=1e-9)
    assert result.control_mean is not None
    assert result.treatment_mean is not None
    assert result.expected_loss_choosing_control is not None
    assert result.expected_loss_choosing_treatment is not None
    # Choosing control loses exactly E[T] - E[C] more than choosing treatment does.
    assert result.expected_loss_choosing_control - result.expected_loss_choosing_treatment == (
        pytest.approx(result.treatment_mean - result.control_mean, abs=1e-12)
    )


@pytest.mark.parametrize(("control", "treatment"), PROPORTION_CASES)
def test_credible_intervals_are_posterior_quantiles(
    control: ProportionStats, treatment: ProportionStats
) -> None:
    result = bayesian_proportions(control, treatment, alpha=0.1)
    assert result.absolute is not None
    assert result.relative is not None
    (a_c, b_c), (a_t, b_t) = posteriors(control, treatment, BetaPrior())

    def difference_cdf(d: float) -> float:  # P(T - C <= d) = E_C[F_T(C + d)]
        return integrate_over(a_c, b_c, lambda c: special.betainc(a_t, b_t, min(max(c + d, 0), 1)))

    def lift_cdf(lift: float) -> float:  # P(T / C - 1 <= l) = E_C[F_T((1 + l) C)]
        return integrate_over(a_c, b_c, lambda c: special.betainc(a_t, b_t, min((1 + lift) * c, 1)))

    assert difference_cdf(result.absolute.ci_lower) == pytest.approx(0.05, abs=1e-7)
    assert difference_cdf(result.absolute.ci_upper) == pytest.approx(0.95, abs=1e-7)
    assert lift_cdf(result.relative.ci_lower) == pytest.approx(0.05, abs=1e-7)
    assert lift_cdf(result.relative.ci_upper) == pytest.approx(0.95, abs=1e-7)


def test_beta_results_agree_with_a_large_seeded_monte_carlo() -> None:
    control, treatment = ProportionStats(1_000, 100), ProportionStats(1_000, 120)
    result = bayesian_proportions(control, treatment)
    assert result.absolute is not None
    assert result.relative is not None
    rng = np.random.default_rng(12_345)
    draws = 2_000_000
    c, t = rng.beta(101, 901, draws), rng.beta(121, 881, draws)
    # Tolerances are ~5 Monte Carlo standard errors.
    assert result.chance_to_beat_control == pytest.approx((t > c).mean(), abs=1e-3)
    assert result.expected_loss_choosing_treatment == pytest.approx(
        np.maximum(c - t, 0).mean(), abs=2e-5
    )
    assert result.expected_loss_choosing_control == pytest.approx(
        np.maximum(t - c, 0).mean(), abs=5e-5
    )
    low, high = np.quantile(t - c, [0.025, 0.975])
    assert result.absolute.ci_lower == pytest.approx(low, abs=2e-4)
    assert result.absolute.ci_upper == pytest.approx(high, abs=2e-4)
    low, high = np.quantile(t / c - 1, [0.025, 0.975])
    assert result.relative.ci_lower == pytest.approx(low, abs=3e-3)
    assert result.relative.ci_upper == pytest.approx(high, abs=3e-3)


def test_identical_arms_are_a_coin_flip() -> None:
    arm = ProportionStats(500, 60)
    result = bayesian_proportions(arm, arm)
    assert result.chance_to_beat_control == pytest.approx(0.5, abs=1e-12)
    assert result.expected_loss_choosing_treatment == pytest.approx(
        result.expected_loss_choosing_control, rel=1e-10
    )


def test_prior_adds_pseudo_counts() -> None:
    result = bayesian_proportions(
        ProportionStats(10, 2), ProportionStats(10, 5), prior=BetaPrior(successes=3, failures=7)
    )
    assert result.control_mean == pytest.approx(5 / 20)
    assert result.treatment_mean == pytest.approx(8 / 20)


# --------------------------------------------------------------------------------------------
# Gaussian approximation for means.
# --------------------------------------------------------------------------------------------


def test_gaussian_results_equal_numeric_integration() -> None:
    rng = np.random.default_rng(6)
    control_values, treatment_values = rng.normal(10, 3, 200), rng.normal(10.4, 4, 150)
    result = bayesian_means(
        SampleStats.from_values(control_values), SampleStats.from_values(treatment_values)
    )
    mean_c, sd_c = control_values.mean(), control_values.std(ddof=1) / math.sqrt(200)
    mean_t, sd_t = treatment_values.mean(), treatment_values.std(ddof=1) / math.sqrt(150)
    control_posterior, treatment_posterior = stats.norm(mean_c, sd_c), stats.norm(mean_t, sd_t)
    low, high = mean_c - 12 * sd_c, mean_c + 12 * sd_c

    def over_control(function: object) -> float:
        value, _ = integrate.quad(
            lambda x: control_posterior.pdf(x) * function(x),  # type: ignore[operator]
            low,
            high,
            epsabs=1e-12,
            limit=200,
        )
        return float(value)

    difference = stats.norm(mean_t - mean_c, math.hypot(sd_c, sd_t))
    assert result.chance_to_beat_control == pytest.approx(
        over_control(treatment_posterior.sf), abs=1e-9
    )
    assert result.expected_loss_choosing_treatment == pytest.approx(
        difference.expect(lambda d: max(-d, 0.0), epsabs=1e-12), abs=1e-9
    )
    assert result.expected_loss_choosing_control == pytest.approx(
        difference.expect(lambda d: max(d, 0.0), epsabs=1e-12), abs=1e-9
    )
    assert result.absolute is not None
    assert result.absolute.ci_lower == pytest.approx(difference.ppf(0.025), rel=1e-9)
    assert result.absolute.ci_upper == pytest.approx(difference.ppf(0.975), rel=1e-9)


def test_normal_prior_is_the_conjugate_update() -> None:
    control = SampleStats.from_moments(n=25, mean=4.0, variance=9.0)  # sampling variance 0.36
    treatment = SampleStats.from_moments(n=100, mean=5.0, variance=16.0)  # 0.16
    prior = NormalPrior(mean=4.5, variance=0.25)
    result = bayesian_means(control, treatment, prior=prior)
    precision_c = 1 / 0.25 + 1 / 0.36
    precision_t = 1 / 0.25 + 1 / 0.16
    assert result.control_mean == pytest.approx((4.5 / 0.25 + 4.0 / 0.36) / precision_c)
    assert result.treatment_mean == pytest.approx((4.5 / 0.25 + 5.0 / 0.16) / precision_t)
    assert result.absolute is not None
    assert result.absolute.standard_error == pytest.approx(
        math.sqrt(1 / precision_c + 1 / precision_t)
    )


# --------------------------------------------------------------------------------------------
# Degenerate data and parameters.
# --------------------------------------------------------------------------------------------


def test_bayesian_degenerate_cases() -> None:
    arm = ProportionStats(100, 10)
    short = bayesian_proportions(ProportionStats(1, 1), arm)
    assert short.error == StatsError.INSUFFICIENT_DATA
    assert short.chance_to_beat_control is None
    assert bayesian_proportions(ProportionStats(5, 9), arm).error == StatsError.INVALID_INPUT
    # No conversions at all is not degenerate for the Beta model: the prior keeps it proper.
    assert bayesian_proportions(ProportionStats(100, 0), ProportionStats(100, 0)).error is None

    constant = SampleStats.from_values([2.0] * 20)
    assert bayesian_means(constant, constant).error == StatsError.ZERO_VARIANCE
    zero_mean = bayesian_means(
        SampleStats.from_values([-1.0, 0.0, 1.0]), SampleStats.from_values([1.0, 2.0, 3.0])
    )
    assert zero_mean.error == StatsError.ZERO_CONTROL_MEAN
    assert zero_mean.chance_to_beat_control is not None
    assert zero_mean.relative is None
    assert bayesian_means(SampleStats(1, 1.0, 1.0), constant).error == (
        StatsError.INSUFFICIENT_DATA
    )


@pytest.mark.parametrize("pseudo_counts", [(0.0, 1.0), (1.0, -1.0), (math.inf, 1.0)])
def test_impossible_beta_prior_raises(pseudo_counts: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="Beta prior"):
        BetaPrior(*pseudo_counts)


def test_impossible_normal_prior_raises() -> None:
    with pytest.raises(ValueError, match="normal prior"):
        NormalPrior(mean=0.0, variance=0.0)
