"""The sequential test: Howard et al.'s boundary, always-valid p-values, and A/A simulations.

The A/A simulations are the point of the module: 1,000 experiments with no effect, looked at
after every 100 visitors per arm up to 5,000 per arm (10,000 in total, 50 looks). A naive
Welch test stopped at the first p <= 0.05 declares a winner in about a third of them; the
sequential test, looked at just as often, stays under alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from nexus.experiments.stats import (
    ProportionStats,
    SampleStats,
    StatsError,
    sequential,
    sequential_arrays,
)
from nexus.experiments.stats.sequential import boundary_multiplier, tuning_rho

ALPHA = 0.05
SIMULATIONS = 1_000
LOOKS = 50
VISITORS_PER_LOOK = 100  # per arm, between looks
TOTAL_VISITORS = 2 * LOOKS * VISITORS_PER_LOOK  # 10,000

FloatArray = np.ndarray


def howard_two_sided_normal_mixture(v: float, rho_h: float, alpha: float) -> float:
    """Howard et al. 2021, eq. (14): sqrt((v + rho) log((v + rho) / (rho alpha^2)))."""
    return math.sqrt((v + rho_h) * math.log((v + rho_h) / (rho_h * alpha**2)))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    control_n=st.integers(2, 3_000),
    treatment_n=st.integers(2, 3_000),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
    tuning_n=st.sampled_from([100, 1_000, 10_000, 100_000]),
)
def test_interval_is_howard_eq_14_for_the_difference(
    seed: int, control_n: int, treatment_n: int, alpha: float, tuning_n: int
) -> None:
    rng = np.random.default_rng(seed)
    control, treatment = rng.normal(5.0, 2.0, control_n), rng.normal(5.2, 3.0, treatment_n)
    result = sequential(
        SampleStats.from_values(control),
        SampleStats.from_values(treatment),
        alpha=alpha,
        tuning_n=tuning_n,
    )
    assert result.absolute is not None
    # Howard's sum form: S_N = N (d_hat - d), V_N = N sigma^2 with sigma^2 = N Var(d_hat), and
    # rho_H = sigma^2 / rho^2 (the per-unit rho of the GrowthBook form).
    n_total = control_n + treatment_n
    variance_of_difference = control.var(ddof=1) / control_n + treatment.var(ddof=1) / treatment_n
    sigma_squared = n_total * variance_of_difference
    rho_h = sigma_squared / tuning_rho(alpha, tuning_n) ** 2
    halfwidth = howard_two_sided_normal_mixture(n_total * sigma_squared, rho_h, alpha) / n_total
    effect = treatment.mean() - control.mean()
    assert result.absolute.value == pytest.approx(effect, rel=1e-9, abs=1e-12)
    assert result.absolute.ci_lower == pytest.approx(effect - halfwidth, rel=1e-9, abs=1e-12)
    assert result.absolute.ci_upper == pytest.approx(effect + halfwidth, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("tuning_n", [1_000, 20_000])
def test_rho_makes_the_sequence_tightest_at_the_tuning_sample_size(
    alpha: float, tuning_n: int
) -> None:
    rho = tuning_rho(alpha, tuning_n)
    best = boundary_multiplier(tuning_n, alpha=alpha, rho=rho)
    for factor in (0.7, 0.9, 1.1, 1.4):
        assert best < boundary_multiplier(tuning_n, alpha=alpha, rho=rho * factor)


def test_tuning_rho_is_growthbooks_formula() -> None:
    # gbstats: rho = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / N*)
    expected = math.sqrt((-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 5_000)
    assert tuning_rho(0.05, 5_000) == pytest.approx(expected, rel=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(20, 2_000),
    shift=st.floats(0.0, 0.5),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_p_value_is_the_level_at_which_the_sequence_touches_zero(
    seed: int, n: int, shift: float, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    result = sequential(
        SampleStats.from_values(rng.normal(0.0, 1.0, n)),
        SampleStats.from_values(rng.normal(shift, 1.0, n)),
        alpha=alpha,
        tuning_n=2_000,
    )
    assert result.absolute is not None
    assert result.p_value is not None
    lower, upper = result.absolute.ci_lower, result.absolute.ci_upper
    assert result.significant == (lower > 0 or upper < 0)
    if result.p_value < 1.0:
        # The sequence at level p (same rho) has an end exactly at zero.
        halfwidth = boundary_multiplier(2 * n, alpha=result.p_value, rho=result.rho)
        assert float(halfwidth) * result.absolute.standard_error == pytest.approx(
            abs(result.absolute.value), rel=1e-9
        )


def test_sequence_is_wider_than_the_fixed_horizon_interval() -> None:
    rng = np.random.default_rng(4)
    for n in (50, 500, 5_000, 50_000):
        result = sequential(
            SampleStats.from_values(rng.normal(0, 1, n)),
            SampleStats.from_values(rng.normal(0, 1, n)),
        )
        assert result.absolute is not None
        fixed_halfwidth = stats.norm.ppf(0.975) * result.absolute.standard_error
        assert result.absolute.ci_upper - result.absolute.value > fixed_halfwidth


def test_arrays_equal_the_scalar_test() -> None:
    rng = np.random.default_rng(12)
    control = [SampleStats.from_values(rng.normal(1, 2, n)) for n in (2, 30, 400)]
    treatment = [SampleStats.from_values(rng.exponential(1.2, n)) for n in (5, 30, 100)]
    arrays = sequential_arrays(
        [arm.n for arm in control],
        [arm.sum for arm in control],
        [arm.sum_of_squares for arm in control],
        [arm.n for arm in treatment],
        [arm.sum for arm in treatment],
        [arm.sum_of_squares for arm in treatment],
        alpha=0.1,
        tuning_n=800,
    )
    for index, (c, t) in enumerate(zip(control, treatment, strict=True)):
        scalar = sequential(c, t, alpha=0.1, tuning_n=800)
        assert scalar.absolute is not None
        assert arrays.effect[index] == pytest.approx(scalar.absolute.value, rel=1e-12)
        assert arrays.ci_lower[index] == pytest.approx(scalar.absolute.ci_lower, rel=1e-12)
        assert arrays.ci_upper[index] == pytest.approx(scalar.absolute.ci_upper, rel=1e-12)
        assert arrays.p_value[index] == pytest.approx(scalar.p_value, rel=1e-12)


# --------------------------------------------------------------------------------------------
# A/A simulations: peeking after every 100 visitors per arm.
# --------------------------------------------------------------------------------------------


def cumulative_normal_arm(rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Raw values (simulations, visitors) and cumulative sums and sums of squares per look."""
    values = rng.standard_normal((SIMULATIONS, LOOKS * VISITORS_PER_LOOK))
    blocks = values.reshape(SIMULATIONS, LOOKS, VISITORS_PER_LOOK)
    return values, blocks.sum(axis=2).cumsum(axis=1), (blocks**2).sum(axis=2).cumsum(axis=1)


def naive_welch_p_values(
    n: FloatArray,
    sum_c: FloatArray,
    squares_c: FloatArray,
    sum_t: FloatArray,
    squares_t: FloatArray,
) -> FloatArray:
    """Fixed-horizon Welch p-values at every look (what a dashboard without sequential shows)."""
    mean_c, mean_t = sum_c / n, sum_t / n
    variance_c = (squares_c - sum_c * mean_c) / (n - 1)
    variance_t = (squares_t - sum_t * mean_t) / (n - 1)
    v_c, v_t = variance_c / n, variance_t / n
    t = (mean_t - mean_c) / np.sqrt(v_c + v_t)
    df = (v_c + v_t) ** 2 / (v_c**2 / (n - 1) + v_t**2 / (n - 1))
    p_values: FloatArray = 2 * stats.t.sf(np.abs(t), df)
    return p_values


def test_aa_sequential_stays_under_alpha_while_naive_peeking_does_not() -> None:
    rng = np.random.default_rng(20_240_501)
    n = np.arange(1, LOOKS + 1, dtype=float) * VISITORS_PER_LOOK  # per arm, at each look
    raw_c, sum_c, squares_c = cumulative_normal_arm(rng)
    raw_t, sum_t, squares_t = cumulative_normal_arm(rng)

    sequential_p = sequential_arrays(
        n, sum_c, squares_c, n, sum_t, squares_t, alpha=ALPHA, tuning_n=TOTAL_VISITORS
    ).p_value
    naive_p = naive_welch_p_values(n, sum_c, squares_c, sum_t, squares_t)
    # The vectorised naive test is SciPy's Welch test at each look.
    for simulation, look in ((0, 0), (1, 9), (2, LOOKS - 1)):
        visitors = int(n[look])
        reference = stats.ttest_ind(
            raw_t[simulation, :visitors], raw_c[simulation, :visitors], equal_var=False
        )
        assert naive_p[simulation, look] == pytest.approx(reference.pvalue, rel=1e-6)

    sequential_false_positive_rate = float((sequential_p <= ALPHA).any(axis=1).mean())
    naive_false_positive_rate = float((naive_p <= ALPHA).any(axis=1).mean())
    naive_single_look_rate = float((naive_p[:, -1] <= ALPHA).mean())
    assert sequential_false_positive_rate <= ALPHA  # measured: 0.019
    assert naive_false_positive_rate > 2 * ALPHA  # measured: 0.325
    # One look is fine for the naive test; it is the peeking that breaks it.
    assert 0.03 <= naive_single_look_rate <= 0.07  # measured: 0.049


def test_aa_sequential_stays_under_alpha_for_conversion_rates() -> None:
    # A 10% conversion rate: per-look conversions are binomial, sum of squares = sum for 0/1.
    rng = np.random.default_rng(7)
    n = np.arange(1, LOOKS + 1, dtype=float) * VISITORS_PER_LOOK
    conversions_c = rng.binomial(VISITORS_PER_LOOK, 0.1, (SIMULATIONS, LOOKS)).cumsum(axis=1)
    conversions_t = rng.binomial(VISITORS_PER_LOOK, 0.1, (SIMULATIONS, LOOKS)).cumsum(axis=1)
    sum_c, sum_t = conversions_c.astype(float), conversions_t.astype(float)
    for tuning_n in (1_000, TOTAL_VISITORS):
        sequential_p = sequential_arrays(
            n, sum_c, sum_c, n, sum_t, sum_t, alpha=ALPHA, tuning_n=tuning_n
        ).p_value
        # measured: 0.020 (tuning_n 1,000) and 0.016 (10,000)
        assert float((sequential_p <= ALPHA).any(axis=1).mean()) <= ALPHA
    naive_p = naive_welch_p_values(n, sum_c, sum_c, sum_t, sum_t)
    assert float((naive_p <= ALPHA).any(axis=1).mean()) > 2 * ALPHA  # measured: 0.319


def test_sequential_detects_a_real_effect() -> None:
    # +0.1 standard deviations: at 5,000 per arm a fixed test has z ~ 5; the sequence, looked
    # at 50 times, finds it in nearly every experiment.
    rng = np.random.default_rng(31)
    simulations = 200
    n = np.arange(1, LOOKS + 1, dtype=float) * VISITORS_PER_LOOK
    shape = (simulations, LOOKS, VISITORS_PER_LOOK)
    control = rng.standard_normal(shape)
    treatment = rng.standard_normal(shape) + 0.1
    result = sequential_arrays(
        n,
        control.sum(axis=2).cumsum(axis=1),
        (control**2).sum(axis=2).cumsum(axis=1),
        n,
        treatment.sum(axis=2).cumsum(axis=1),
        (treatment**2).sum(axis=2).cumsum(axis=1),
        alpha=ALPHA,
        tuning_n=TOTAL_VISITORS,
    )
    detected = (result.p_value <= ALPHA) & (result.effect > 0)
    assert float(detected.any(axis=1).mean()) >= 0.95


# --------------------------------------------------------------------------------------------
# Degenerate data and parameters.
# --------------------------------------------------------------------------------------------


def test_sequential_degenerate_cases() -> None:
    arm = SampleStats.from_values([1.0, 2.0, 3.0])
    assert sequential(SampleStats.from_values([1.0]), arm).error == StatsError.INSUFFICIENT_DATA
    constant = SampleStats.from_values([4.0] * 10)
    assert sequential(constant, constant).error == StatsError.ZERO_VARIANCE
    zero_mean = sequential(SampleStats.from_values([-1.0, 0.0, 1.0]), arm)
    assert zero_mean.error == StatsError.ZERO_CONTROL_MEAN
    assert zero_mean.absolute is not None
    assert zero_mean.relative is None
    invalid = sequential(ProportionStats(5, 6), ProportionStats(5, 1))
    assert invalid.error == StatsError.INVALID_INPUT
    assert invalid.control_mean is None
    assert not invalid.significant


def test_arrays_mark_unusable_looks_as_nan() -> None:
    arrays = sequential_arrays([1, 10], [1.0, 10.0], [1.0, 10.0], [1, 10], [1.0, 10.0], [1.0, 10.0])
    assert np.isnan(arrays.p_value).all()  # n < 2, then two constant arms
    assert not (arrays.p_value <= ALPHA).any()


def test_proportions_are_analysed_as_zero_one_metrics() -> None:
    control, treatment = ProportionStats(4_000, 400), ProportionStats(4_000, 480)
    as_proportions = sequential(control, treatment)
    as_means = sequential(control.as_sample_stats(), treatment.as_sample_stats())
    assert as_proportions == as_means
    assert as_proportions.relative is not None


@pytest.mark.parametrize("tuning_n", [0, -5, math.inf, math.nan])
def test_impossible_tuning_n_raises(tuning_n: float) -> None:
    arm = SampleStats.from_values([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="tuning_n"):
        sequential(arm, arm, tuning_n=tuning_n)
