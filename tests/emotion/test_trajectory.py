"""The OU Kalman filter equals exact Gaussian conditioning; fitting, forecasting and the
Ekman-7 chain behave as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.emotion.models.trajectory import (
    DEFAULT_OU,
    N_LABELS,
    UNIFORM_TRANSITIONS,
    Observation,
    OUParams,
    VADParams,
    clean_sequence,
    evaluate_forecasts,
    fit_ou,
    fit_transitions,
    forecast,
    forecast_labels,
    kalman_filter,
    log_likelihood,
    simulate_ou_sequences,
    stationary_distribution,
    step_horizons,
    trajectory,
    transition,
)

TRUE = VADParams(
    valence=OUParams(mu=0.2, theta=1 / 60, sigma2=2 / 60 * 0.09, r=0.02),
    arousal=OUParams(mu=-0.1, theta=1 / 20, sigma2=2 / 20 * 0.05, r=0.01),
    dominance=OUParams(mu=0.0, theta=1 / 200, sigma2=2 / 200 * 0.1, r=0.04),
    typical_gap=30.0,
)

# --------------------------------------------------------------------------------------------
# Reference: the exact Gaussian posterior from the joint covariance of the stationary OU
# process, Cov(x(s), x(t)) = sigma^2 / (2 theta) · exp(-theta |s - t|), with y = x + v.
# --------------------------------------------------------------------------------------------


def exact_posterior(
    times: np.ndarray, values: np.ndarray, params: OUParams, noise: np.ndarray
) -> tuple[float, float, float]:
    """Mean and variance of the last state given all readings, and the log-likelihood."""
    s = params.stationary_variance
    state_cov = s * np.exp(-params.theta * np.abs(times[:, None] - times[None, :]))
    reading_cov = state_cov + np.diag(noise)
    residual = values - params.mu
    cross = state_cov[-1]
    mean = params.mu + cross @ np.linalg.solve(reading_cov, residual)
    variance = s - cross @ np.linalg.solve(reading_cov, cross)
    _, logdet = np.linalg.slogdet(reading_cov)
    loglik = -0.5 * (
        len(values) * math.log(2 * math.pi)
        + logdet
        + residual @ np.linalg.solve(reading_cov, residual)
    )
    return float(mean), float(variance), float(loglik)


gap = st.one_of(st.just(0.0), st.floats(0.01, 300.0))
ou_params = st.builds(
    lambda mu, theta, s, r: OUParams(mu=mu, theta=theta, sigma2=2 * theta * s, r=r),
    st.floats(-0.8, 0.8),
    st.floats(1e-3, 0.5),
    st.floats(0.01, 1.0),
    st.floats(0.005, 0.5),
)


@st.composite
def readings(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 8))
    gaps = draw(st.lists(gap, min_size=n - 1, max_size=n - 1))
    values = draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n))
    noise = draw(
        st.lists(st.one_of(st.just(math.nan), st.floats(0.005, 0.5)), min_size=n, max_size=n)
    )
    return np.concatenate([[0.0], np.cumsum(gaps)]), np.asarray(values), np.asarray(noise)


@settings(max_examples=300, deadline=None)
@given(data=readings(), params=ou_params)
def test_filter_equals_exact_conditioning_of_every_prefix(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], params: OUParams
) -> None:
    times, values, noise = data
    run = kalman_filter(times, values, params, noise)
    effective_noise = np.where(np.isnan(noise), params.r, noise)
    for end in range(1, len(times) + 1):
        mean, variance, loglik = exact_posterior(
            times[:end], values[:end], params, effective_noise[:end]
        )
        assert run.filtered_mean[end - 1] == pytest.approx(mean, rel=1e-7, abs=1e-9)
        assert run.filtered_variance[end - 1] == pytest.approx(variance, rel=1e-7, abs=1e-9)
    assert run.log_likelihood == pytest.approx(loglik, rel=1e-7, abs=1e-7)


def test_zero_gap_adds_no_process_noise() -> None:
    assert transition(0.3, 0.02, DEFAULT_OU, 0.0) == (0.3, 0.02)


def test_simultaneous_readings_are_fused_by_precision() -> None:
    params = OUParams(mu=0.0, theta=0.1, sigma2=0.2, r=0.05)
    run = kalman_filter([5.0, 5.0], [0.4, 0.6], params)
    precision = 1 / params.stationary_variance + 2 / params.r
    assert run.filtered_variance[-1] == pytest.approx(1 / precision)
    assert run.filtered_mean[-1] == pytest.approx((0.4 + 0.6) / params.r / precision)


def test_filter_rejects_decreasing_times() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        kalman_filter([1.0, 0.0], [0.1, 0.2], DEFAULT_OU)


def test_pooled_likelihood_is_the_sum_of_per_visitor_likelihoods() -> None:
    sequences = simulate_ou_sequences(12, TRUE, seed=3, min_length=1, max_length=9, resolution=5)
    noisy = [
        [
            Observation(o.t, o.valence, o.arousal, o.dominance, o.label, 0.03 if i % 3 else None)
            for i, o in enumerate(sequence)
        ]
        for sequence in sequences
    ]
    for dimension, params in enumerate(TRUE.dimensions()):
        expected = sum(
            kalman_filter(
                [o.t for o in s],
                [o.vad()[dimension] for o in s],
                params,
                [math.nan if o.noise_variance is None else o.noise_variance for o in s],
            ).log_likelihood
            for s in noisy
        )
        assert log_likelihood(noisy, params, dimension) == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def test_fit_recovers_known_parameters() -> None:
    fitted = fit_ou(simulate_ou_sequences(300, TRUE, seed=1))
    assert fitted.error is None
    assert fitted.typical_gap == pytest.approx(30.0 * math.log(2), rel=0.1)  # exponential median
    for got, true in zip(fitted.dimensions(), TRUE.dimensions(), strict=True):
        assert got.mu == pytest.approx(true.mu, abs=0.05)
        assert got.theta == pytest.approx(true.theta, rel=0.3)
        assert got.stationary_variance == pytest.approx(true.stationary_variance, rel=0.2)
        assert got.r == pytest.approx(true.r, rel=0.25)


def test_fit_is_deterministic() -> None:
    sequences = simulate_ou_sequences(40, TRUE, seed=5)
    assert fit_ou(sequences) == fit_ou(sequences)


def test_fit_without_sequences_returns_defaults() -> None:
    fitted = fit_ou([])
    assert fitted.error == "no_sequences"
    assert fitted.dimensions() == (DEFAULT_OU, DEFAULT_OU, DEFAULT_OU)


def test_fit_with_too_few_readings_returns_defaults() -> None:
    fitted = fit_ou([[Observation(float(t), 0.1, 0.2, 0.3, 3) for t in range(4)]])
    assert fitted.error == "too_few_observations"
    assert fitted.n_observations == 4
    assert fitted.valence == DEFAULT_OU


def test_fit_without_time_gaps_returns_defaults() -> None:
    sequence = [Observation(7.0, 0.1 * i, 0.0, 0.0, 6) for i in range(20)]
    assert fit_ou([sequence]).error == "too_few_gaps"


def test_fit_drops_non_finite_readings() -> None:
    sequences = simulate_ou_sequences(30, TRUE, seed=9)
    polluted = [[*s, Observation(1e3, math.nan, 0.0, 0.0, 6)] for s in sequences]
    assert fit_ou(polluted).dimensions() == fit_ou(sequences).dimensions()


# --------------------------------------------------------------------------------------------
# Forecasting
# --------------------------------------------------------------------------------------------


def test_filter_beats_last_value_carried_forward_on_held_out_visitors() -> None:
    evaluation = evaluate_forecasts(
        simulate_ou_sequences(200, TRUE, seed=11), simulate_ou_sequences(100, TRUE, seed=12)
    )
    assert evaluation.error is None
    assert evaluation.n_forecasts > 1000
    for dimension in evaluation.dimensions:
        assert dimension.ratio is not None
        assert dimension.ratio < 0.85, dimension


def test_evaluation_without_pairs_reports_an_error() -> None:
    train = simulate_ou_sequences(30, TRUE, seed=1)
    evaluation = evaluate_forecasts(train, [[Observation(0.0, 0.0, 0.0, 0.0, 6)]])
    assert evaluation.error == "no_test_pairs"
    assert all(d.ratio is None for d in evaluation.dimensions)


def test_forecast_at_zero_horizon_is_the_filtered_state() -> None:
    (now,) = forecast(0.4, 0.01, DEFAULT_OU, [0.0])
    assert (now.mean, now.variance) == (pytest.approx(0.4), pytest.approx(0.01))


def test_far_forecast_is_the_stationary_distribution() -> None:
    (far,) = forecast(0.9, 0.001, DEFAULT_OU, [1e6])
    assert far.mean == pytest.approx(DEFAULT_OU.mu)
    assert far.variance == pytest.approx(DEFAULT_OU.stationary_variance)


@given(
    mean=st.floats(-1.0, 1.0),
    variance=st.floats(0.0, 2.0),
    params=ou_params,
    horizons=st.lists(st.floats(0.0, 1e4), min_size=1, max_size=5),
)
def test_forecast_band_is_inside_the_scale_and_around_the_mean(
    mean: float, variance: float, params: OUParams, horizons: list[float]
) -> None:
    for step in forecast(mean, variance, params, horizons):
        assert -1.0 <= step.lower <= step.upper <= 1.0
        assert step.sd == pytest.approx(math.sqrt(step.variance))
        assert step.lower == pytest.approx(max(-1.0, min(1.0, step.mean - 1.959964 * step.sd)))


def test_steps_are_multiples_of_the_visitors_median_gap() -> None:
    assert step_horizons([0.0, 10.0, 30.0, 31.0], 3) == (10.0, 20.0, 30.0)


@pytest.mark.parametrize("times", [[], [4.0], [4.0, 4.0]])
def test_steps_fall_back_to_the_population_gap(times: list[float]) -> None:
    assert step_horizons(times, 2, default_gap=45.0) == (45.0, 90.0)


# --------------------------------------------------------------------------------------------
# Ekman-7 transitions
# --------------------------------------------------------------------------------------------

label_sequences = st.lists(st.lists(st.integers(-1, N_LABELS), max_size=30), max_size=10)


@given(sequences=label_sequences, alpha=st.floats(0.01, 5.0))
def test_transition_rows_are_distributions(sequences: list[list[int]], alpha: float) -> None:
    matrix = fit_transitions(sequences, alpha=alpha).array()
    assert np.all(matrix > 0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


@given(
    sequences=label_sequences,
    current=st.integers(0, N_LABELS - 1),
    k=st.integers(0, 40),
)
def test_label_forecast_is_a_distribution_equal_to_repeated_steps(
    sequences: list[list[int]], current: int, k: int
) -> None:
    transitions = fit_transitions(sequences)
    p = np.eye(N_LABELS)[current]
    for _ in range(k):
        p = p @ transitions.array()
    forecast_k = forecast_labels(transitions, current, k)
    assert sum(forecast_k) == pytest.approx(1.0)
    np.testing.assert_allclose(forecast_k, p, atol=1e-12)


def test_label_forecast_converges_to_the_stationary_distribution() -> None:
    transitions = fit_transitions([[0, 0, 3, 3, 3, 6, 6, 1, 3, 6, 6, 6, 2, 4, 5, 3]], alpha=0.5)
    pi = np.asarray(stationary_distribution(transitions))
    np.testing.assert_allclose(pi @ transitions.array(), pi, atol=1e-12)
    for start in range(N_LABELS):
        np.testing.assert_allclose(forecast_labels(transitions, start, 200), pi, atol=1e-9)


def test_transitions_recover_a_known_chain() -> None:
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(N_LABELS), size=N_LABELS)
    cumulative = true.cumsum(axis=1)
    labels = [0]
    for u in rng.random(30_000):
        labels.append(min(int(np.searchsorted(cumulative[labels[-1]], u)), N_LABELS - 1))
    fitted = fit_transitions([labels])
    visits = np.asarray(fitted.counts).sum(axis=1, keepdims=True)
    assert visits.min() > 500
    # Four binomial standard errors per entry, plus the most add-one smoothing can shift it.
    tolerance = 4 * np.sqrt(true * (1 - true) / visits) + N_LABELS / (visits + N_LABELS)
    assert np.all(np.abs(fitted.array() - true) < tolerance)


def test_without_data_every_row_is_uniform() -> None:
    np.testing.assert_allclose(UNIFORM_TRANSITIONS.array(), 1 / N_LABELS)


def test_invalid_labels_break_the_chain() -> None:
    counts = np.asarray(fit_transitions([[0, 1, 99, 2, -1, 3]]).counts)
    assert counts.sum() == 1
    assert counts[0, 1] == 1


def test_a_distribution_can_be_the_starting_point() -> None:
    transitions = fit_transitions([[0, 1, 0, 1, 2]])
    mixed = forecast_labels(transitions, [1, 1, 0, 0, 0, 0, 0], 1)
    halves = np.add(forecast_labels(transitions, 0, 1), forecast_labels(transitions, 1, 1)) / 2
    np.testing.assert_allclose(mixed, halves)


# --------------------------------------------------------------------------------------------
# One visitor's trajectory
# --------------------------------------------------------------------------------------------


def test_trajectory_filters_history_and_forecasts_k_steps() -> None:
    readings = [
        Observation(40.0, 0.5, 0.1, 0.0, 3),
        Observation(0.0, -0.2, 0.3, 0.1, 4),
        Observation(20.0, 0.1, 0.2, 0.0, 6),
    ]
    transitions = fit_transitions([[4, 6, 3, 3, 6, 3]])
    result = trajectory(readings, TRUE, transitions, k=3)
    assert result.error is None
    assert [p.t for p in result.history] == [0.0, 20.0, 40.0]
    ordered = clean_sequence(readings)
    valence = kalman_filter([o.t for o in ordered], [o.valence for o in ordered], TRUE.valence)
    assert result.current.valence.mean == pytest.approx(valence.filtered_mean[-1])
    assert result.current.labels == tuple(float(i == 3) for i in range(N_LABELS))
    assert [f.horizon for f in result.forecasts] == [20.0, 40.0, 60.0]
    step_two = result.forecasts[1]
    expected = transition(
        valence.filtered_mean[-1], valence.filtered_variance[-1], TRUE.valence, 40
    )
    assert (step_two.valence.mean, step_two.valence.variance) == pytest.approx(expected)
    assert step_two.labels == forecast_labels(transitions, 3, 2)


def test_trajectory_without_readings_is_the_long_run_belief() -> None:
    result = trajectory([], TRUE, UNIFORM_TRANSITIONS, k=2)
    assert result.error == "no_observations"
    assert result.current.t is None
    assert result.current.arousal.mean == TRUE.arousal.mu
    assert [f.horizon for f in result.forecasts] == [30.0, 60.0]
    assert result.forecasts[0].labels == pytest.approx([1 / N_LABELS] * N_LABELS)


def test_simulation_is_reproducible_and_seeded() -> None:
    first = simulate_ou_sequences(5, TRUE, seed=42, resolution=10.0)
    assert first == simulate_ou_sequences(5, TRUE, seed=42, resolution=10.0)
    assert first != simulate_ou_sequences(5, TRUE, seed=43, resolution=10.0)
    assert all(t % 10.0 == 0 for s in first for t in (o.t for o in s))
