"""Per-visitor emotional trajectories: where a visitor's mood is, and where it is heading.

A visitor's emotion readings arrive at irregular times (a page view, a chat message, a
form field) and each reading is noisy, so neither the last reading nor a plain average says
where the visitor *is*. We model each of valence, arousal and dominance independently as an
Ornstein-Uhlenbeck process — a mood that drifts but is pulled back to a baseline ``mu`` at
rate ``theta`` (Uhlenbeck & Ornstein, *Phys. Rev.* 36, 1930) — observed with noise:

    dx = theta (mu - x) dt + sigma dW,        y_i = x(t_i) + v_i,   Var(v_i) = r_i.

The transition over any gap ``delta >= 0`` is exact, not an Euler step (e.g. Särkkä &
Solin, *Applied Stochastic Differential Equations*, 2019, ch. 6):

    x(t + delta) = mu + a (x(t) - mu) + w,   a = exp(-theta delta),
    Var(w) = sigma^2 / (2 theta) · (1 - exp(-2 theta delta)),

so irregular gaps and simultaneous readings (``delta = 0``: no process noise, the readings
are simply fused) need no special casing. A scalar Kalman filter gives the filtered state
after each reading, and its prediction-error decomposition the exact Gaussian likelihood
that :func:`fit_ou` maximises over many visitors at once. Forecasts follow the same
transition from the last filtered state.

The dominant Ekman-7 label moves as a first-order Markov chain over *reading steps* (not
seconds); :func:`trajectory` maps steps to seconds with the visitor's median gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from nexus.emotion.models.taxonomy import EKMAN, VAD

FloatArray = NDArray[np.float64]

Z_95: Final = 1.959963984540054  # Φ^-1(0.975)
N_LABELS: Final = len(EKMAN)
NEUTRAL: Final = EKMAN.index("neutral")
DEFAULT_GAP_SECONDS: Final = 30.0
MIN_FIT_OBSERVATIONS: Final = 10
MIN_FIT_GAPS: Final = 5
_LOG_2PI: Final = math.log(2.0 * math.pi)
_TINY: Final = 1e-12

FitError = Literal["no_sequences", "too_few_observations", "too_few_gaps"]
TrajectoryError = Literal["no_observations"]
EvaluationError = Literal["no_test_pairs"]


# --------------------------------------------------------------------------------------------
# Data in
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One emotion reading of one visitor.

    ``t`` is in seconds on any clock (only differences matter); valence, arousal and
    dominance lie in [-1, 1]; ``label`` indexes :data:`~nexus.emotion.models.taxonomy.EKMAN`
    (anger, disgust, fear, joy, sadness, surprise, neutral). ``noise_variance``, when the
    reading knows how sure it is, replaces the model's ``r`` for this reading on all three
    dimensions. A label outside 0..6 is kept for the VAD filter but carries no label
    information (transition counting skips it; a current label falls back to the chain's
    stationary distribution).
    """

    t: float
    valence: float
    arousal: float
    dominance: float
    label: int
    noise_variance: float | None = None

    def vad(self) -> tuple[float, float, float]:
        return (self.valence, self.arousal, self.dominance)


@dataclass(frozen=True, slots=True)
class OUParams:
    """One dimension's Ornstein-Uhlenbeck parameters, in the notation of the module docstring.

    ``mu`` is the baseline the mood returns to, ``theta`` the return rate (1/s; the
    half-life is ``ln 2 / theta``), ``sigma2`` the diffusion ``sigma^2`` (1/s) and ``r`` the
    variance of a reading around the true state.
    """

    mu: float
    theta: float
    sigma2: float
    r: float

    def __post_init__(self) -> None:
        if not (self.theta > 0 and self.sigma2 >= 0 and self.r >= 0):
            raise ValueError(f"need theta > 0, sigma2 >= 0, r >= 0, got {self}")

    @property
    def stationary_variance(self) -> float:
        """Var(x) in the long run, ``sigma^2 / (2 theta)``: how far moods spread around mu."""
        return self.sigma2 / (2.0 * self.theta)

    @property
    def half_life(self) -> float:
        return math.log(2.0) / self.theta


# Assumptions, not measurements: a mood relaxes to a neutral baseline with a half-life of
# about 80 s (theta = 1/120), spreads with a long-run sd of 0.3 on the [-1, 1] scale, and a
# model's reading is off by an sd of about 0.14.
DEFAULT_OU: Final = OUParams(mu=0.0, theta=1.0 / 120.0, sigma2=2.0 / 120.0 * 0.09, r=0.02)


@dataclass(frozen=True, slots=True)
class VADParams:
    """Fitted (or default) dynamics of valence, arousal and dominance.

    ``typical_gap`` is the median positive gap between readings in the fitted data, the
    step length used for a visitor with too few readings of their own. ``error`` says why
    defaults were returned (then ``n_observations`` counts what was usable).
    """

    valence: OUParams = DEFAULT_OU
    arousal: OUParams = DEFAULT_OU
    dominance: OUParams = DEFAULT_OU
    typical_gap: float = DEFAULT_GAP_SECONDS
    n_sequences: int = 0
    n_observations: int = 0
    error: FitError | None = None

    def dimensions(self) -> tuple[OUParams, OUParams, OUParams]:
        """The three parameter sets in :data:`~nexus.emotion.models.taxonomy.VAD` order."""
        return (self.valence, self.arousal, self.dominance)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DimensionEstimate:
    """A Gaussian belief about one dimension, with its 95% band clipped to [-1, 1]."""

    mean: float
    variance: float
    sd: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class FilterResult:
    """A scalar Kalman filter run: the one-step prediction before each reading, the filtered
    belief after it, and the log-likelihood of all readings."""

    predicted_mean: tuple[float, ...]
    predicted_variance: tuple[float, ...]
    filtered_mean: tuple[float, ...]
    filtered_variance: tuple[float, ...]
    log_likelihood: float


@dataclass(frozen=True, slots=True)
class FilteredPoint:
    """The filtered state right after one reading (history of a trajectory)."""

    t: float
    observed: tuple[float, float, float]
    label: int
    valence: DimensionEstimate
    arousal: DimensionEstimate
    dominance: DimensionEstimate


@dataclass(frozen=True, slots=True)
class CurrentState:
    """Where the visitor is now: ``t`` of the last reading (None without readings) and the
    Ekman-7 distribution (one-hot on the last label; the chain's stationary distribution
    without readings)."""

    t: float | None
    valence: DimensionEstimate
    arousal: DimensionEstimate
    dominance: DimensionEstimate
    labels: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ForecastStep:
    """The belief ``step`` readings ahead, ``horizon`` seconds after the last reading."""

    step: int
    horizon: float
    valence: DimensionEstimate
    arousal: DimensionEstimate
    dominance: DimensionEstimate
    labels: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A visitor's filtered history, current state and k-step forecast."""

    history: tuple[FilteredPoint, ...]
    current: CurrentState
    forecasts: tuple[ForecastStep, ...]
    step_seconds: float
    error: TrajectoryError | None = None


# --------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck transition and the Kalman filter
# --------------------------------------------------------------------------------------------


def estimate(mean: float, variance: float) -> DimensionEstimate:
    """A :class:`DimensionEstimate` with the band ``mean ± 1.96 sd`` clipped to [-1, 1]."""
    variance = max(float(variance), 0.0)
    sd = math.sqrt(variance)
    return DimensionEstimate(
        mean=float(mean),
        variance=variance,
        sd=sd,
        lower=min(max(mean - Z_95 * sd, -1.0), 1.0),
        upper=min(max(mean + Z_95 * sd, -1.0), 1.0),
    )


def transition(mean: float, variance: float, params: OUParams, delta: float) -> tuple[float, float]:
    """Propagate a Gaussian belief ``delta >= 0`` seconds with the exact OU transition.

    ``m' = mu + a (m - mu)``, ``P' = a^2 P + s (1 - a^2)`` with ``a = exp(-theta delta)``
    and ``s = sigma^2 / (2 theta)`` (Särkkä & Solin 2019, ch. 6); ``-expm1`` keeps
    ``1 - a^2`` accurate for small gaps and exactly 0 at ``delta = 0``.
    """
    if delta < 0:
        raise ValueError(f"gap must be >= 0, got {delta}")
    a = math.exp(-params.theta * delta)
    q = params.stationary_variance * -math.expm1(-2.0 * params.theta * delta)
    return params.mu + a * (mean - params.mu), a * a * variance + q


def kalman_filter(
    times: ArrayLike,
    values: ArrayLike,
    params: OUParams,
    noise_variances: ArrayLike | None = None,
) -> FilterResult:
    """Filter one dimension of one visitor's readings (times non-decreasing).

    The state starts from the stationary distribution ``N(mu, sigma^2 / (2 theta))``: a
    visitor is assumed to arrive in a typical mood. Predict with :func:`transition`, update
    with the scalar Kalman gain ``K = P / (P + r)`` (Särkkä, *Bayesian Filtering and
    Smoothing*, 2013, §4.3), and accumulate ``log N(y_i; m_i^-, P_i^- + r_i)`` — the
    prediction-error decomposition of the exact likelihood (Harvey, *Forecasting, Structural
    Time Series Models and the Kalman Filter*, 1989, ch. 3). ``noise_variances`` entries
    that are NaN fall back to ``params.r``.
    """
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError("times and values must be 1-D and of equal length")
    if np.any(np.diff(t) < 0):
        raise ValueError("times must be non-decreasing")
    r = np.full(len(y), params.r)
    if noise_variances is not None:
        given = np.asarray(noise_variances, dtype=np.float64)
        r = np.where(np.isnan(given), params.r, given)
    mean, variance = params.mu, params.stationary_variance
    predicted_mean, predicted_variance, filtered_mean, filtered_variance = [], [], [], []
    log_likelihood = 0.0
    for i in range(len(y)):
        if i:
            mean, variance = transition(mean, variance, params, float(t[i] - t[i - 1]))
        predicted_mean.append(mean)
        predicted_variance.append(variance)
        innovation_variance = max(variance + float(r[i]), _TINY)
        innovation = float(y[i]) - mean
        log_likelihood -= 0.5 * (
            _LOG_2PI + math.log(innovation_variance) + innovation**2 / innovation_variance
        )
        gain = variance / innovation_variance
        mean += gain * innovation
        variance -= gain * variance
        filtered_mean.append(mean)
        filtered_variance.append(variance)
    return FilterResult(
        predicted_mean=tuple(predicted_mean),
        predicted_variance=tuple(predicted_variance),
        filtered_mean=tuple(filtered_mean),
        filtered_variance=tuple(filtered_variance),
        log_likelihood=log_likelihood,
    )


def forecast(
    mean: float,
    variance: float,
    params: OUParams,
    horizons: Sequence[float],
    *,
    include_noise: bool = False,
) -> tuple[DimensionEstimate, ...]:
    """The belief about the state ``h`` seconds after a filtered ``N(mean, variance)``.

    By default the band is for the visitor's *state*; ``include_noise`` widens it by ``r``
    to cover the next *reading*. Far ahead it tends to the stationary ``N(mu, s)``.
    """
    out = []
    for horizon in horizons:
        m, p = transition(mean, variance, params, float(horizon))
        out.append(estimate(m, p + (params.r if include_noise else 0.0)))
    return tuple(out)


def step_horizons(
    times: Sequence[float], k: int, default_gap: float = DEFAULT_GAP_SECONDS
) -> tuple[float, ...]:
    """Seconds ahead of steps ``1..k``: multiples of the visitor's median gap between readings.

    With fewer than two readings, or only simultaneous ones, the visitor has no gap of their
    own and ``default_gap`` (the population's, :attr:`VADParams.typical_gap`) is used.
    """
    gaps = np.diff(np.sort(np.asarray(times, dtype=np.float64)))
    gap = float(np.median(gaps)) if len(gaps) else 0.0
    if not gap > 0:
        gap = default_gap
    return tuple(step * gap for step in range(1, k + 1))


# --------------------------------------------------------------------------------------------
# Fitting by maximum likelihood, pooled over visitors
# --------------------------------------------------------------------------------------------


def clean_sequence(observations: Iterable[Observation]) -> list[Observation]:
    """Readings with finite time and values, sorted by time (stable, so ties keep order)."""
    kept = [
        o
        for o in observations
        if all(math.isfinite(v) for v in (o.t, o.valence, o.arousal, o.dominance))
    ]
    return sorted(kept, key=lambda o: o.t)


@dataclass(frozen=True, slots=True, eq=False)
class _Panel:
    """Sequences padded into ``(S, L)`` matrices so the filter runs over visitors at once."""

    values: FloatArray  # (S, L, 3)
    gaps: FloatArray  # (S, L): gap to the previous reading, 0 in column 0 and in padding
    noise: FloatArray  # (S, L): per-reading variance, NaN for "use the model's r"
    mask: NDArray[np.bool_]  # (S, L): a real reading
    n_observations: int
    n_gaps: int
    typical_gap: float


def _panel(sequences: Sequence[Sequence[Observation]]) -> _Panel:
    cleaned = [s for s in (clean_sequence(seq) for seq in sequences) if s]
    n_seq = len(cleaned)
    length = max((len(s) for s in cleaned), default=0)
    values = np.zeros((n_seq, length, 3))
    gaps = np.zeros((n_seq, length))
    noise = np.full((n_seq, length), np.nan)
    mask = np.zeros((n_seq, length), dtype=bool)
    for row, seq in enumerate(cleaned):
        n = len(seq)
        values[row, :n] = [o.vad() for o in seq]
        times = np.asarray([o.t for o in seq])
        gaps[row, 1:n] = np.diff(times)
        noise[row, :n] = [np.nan if o.noise_variance is None else o.noise_variance for o in seq]
        mask[row, :n] = True
    positive = gaps[gaps > 0]
    return _Panel(
        values=values,
        gaps=gaps,
        noise=noise,
        mask=mask,
        n_observations=int(mask.sum()),
        n_gaps=len(positive),
        typical_gap=float(np.median(positive)) if len(positive) else DEFAULT_GAP_SECONDS,
    )


def _panel_log_likelihood(panel: _Panel, dimension: int, params: OUParams) -> float:
    """Sum of :func:`kalman_filter` log-likelihoods over the panel's rows, vectorised.

    Padding sits only after a row's last reading, so the state it corrupts is never read.
    """
    y = panel.values[:, :, dimension]
    mu, s = params.mu, params.stationary_variance
    decay = np.exp(-params.theta * panel.gaps)
    process = s * -np.expm1(-2.0 * params.theta * panel.gaps)
    r = np.where(np.isnan(panel.noise), params.r, panel.noise)
    mean = np.full(y.shape[0], mu)
    variance = np.full(y.shape[0], s)
    total = 0.0
    for j in range(y.shape[1]):
        # Column 0 has gap 0: decay 1 and no process noise, so this is the prior itself.
        mean = mu + decay[:, j] * (mean - mu)
        variance = decay[:, j] ** 2 * variance + process[:, j]
        innovation_variance = np.maximum(variance + r[:, j], _TINY)
        innovation = y[:, j] - mean
        terms = _LOG_2PI + np.log(innovation_variance) + innovation**2 / innovation_variance
        total -= 0.5 * float(np.sum(terms, where=panel.mask[:, j]))
        gain = variance / innovation_variance
        mean = mean + gain * innovation
        variance = variance - gain * variance
    return total


def log_likelihood(
    sequences: Sequence[Sequence[Observation]], params: OUParams, dimension: int
) -> float:
    """Exact log-likelihood of one dimension (0 valence, 1 arousal, 2 dominance) of many
    independent visitors' readings under ``params``."""
    return _panel_log_likelihood(_panel(sequences), dimension, params)


def _params_from(z: NDArray[np.float64]) -> OUParams:
    # Optimised as (mu, log theta, log s, log r) with s = sigma^2 / (2 theta): theta and
    # sigma^2 are strongly correlated, theta and s much less, which helps L-BFGS-B.
    mu, log_theta, log_s, log_r = (float(v) for v in z)
    theta = math.exp(log_theta)
    return OUParams(mu=mu, theta=theta, sigma2=2.0 * theta * math.exp(log_s), r=math.exp(log_r))


def _fit_dimension(panel: _Panel, dimension: int) -> OUParams:
    y = panel.values[:, :, dimension][panel.mask]
    mu0 = float(np.clip(np.mean(y), -1.0, 1.0))
    spread = max(float(np.var(y)), 1e-4)
    gap = panel.typical_gap
    bounds = [
        (-1.0, 1.0),
        (math.log(1e-3 / gap), math.log(1e2 / gap)),
        (math.log(1e-6), math.log(4.0)),
        (math.log(1e-6), math.log(4.0)),
    ]

    def objective(z: NDArray[np.float64]) -> float:
        value = -_panel_log_likelihood(panel, dimension, _params_from(z)) / panel.n_observations
        return value if math.isfinite(value) else 1e12

    # Deterministic start: moments for mu and the spread (split 70/30 between state and
    # reading noise), and the best of a coarse grid of return rates relative to the gap.
    starts = [
        np.asarray([mu0, math.log(rate / gap), math.log(0.7 * spread), math.log(0.3 * spread)])
        for rate in (0.03, 0.1, 0.3, 1.0, 3.0)
    ]
    x0 = min(starts, key=objective)
    result: Any = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
    z = np.asarray(result.x, dtype=np.float64)
    return _params_from(z if objective(z) <= objective(x0) else x0)


def fit_ou(sequences: Sequence[Sequence[Observation]]) -> VADParams:
    """Maximum-likelihood OU parameters per dimension, pooled over visitors.

    Every visitor shares the parameters; their readings are independent given them, so the
    log-likelihood is the sum of :func:`kalman_filter`'s. Readings with non-finite values are
    dropped. With no sequences, fewer than :data:`MIN_FIT_OBSERVATIONS` readings or fewer
    than :data:`MIN_FIT_GAPS` positive gaps (the return rate is not identified without
    gaps) the defaults (:data:`DEFAULT_OU`) come back with ``error`` set; this never raises.
    """
    if not sequences:
        return VADParams(error="no_sequences")
    panel = _panel(sequences)
    n_seq = int(panel.mask.any(axis=1).sum())
    if panel.n_observations < MIN_FIT_OBSERVATIONS:
        return VADParams(
            n_sequences=n_seq, n_observations=panel.n_observations, error="too_few_observations"
        )
    if panel.n_gaps < MIN_FIT_GAPS:
        return VADParams(
            n_sequences=n_seq, n_observations=panel.n_observations, error="too_few_gaps"
        )
    valence, arousal, dominance = (_fit_dimension(panel, d) for d in range(3))
    return VADParams(
        valence=valence,
        arousal=arousal,
        dominance=dominance,
        typical_gap=panel.typical_gap,
        n_sequences=n_seq,
        n_observations=panel.n_observations,
    )


# --------------------------------------------------------------------------------------------
# Ekman-7 label transitions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelTransitions:
    """A first-order Markov chain over Ekman-7 labels, one step per reading.

    ``matrix[i][j]`` is P(next label j | label i), the posterior mean under a symmetric
    Dirichlet(``alpha``) prior on each row: ``(n_ij + alpha) / (n_i + 7 alpha)`` (add-alpha
    or Lidstone smoothing), so unseen transitions keep some probability and rows of labels
    never seen are uniform. ``counts`` are the raw transition counts ``n_ij``.
    """

    matrix: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]
    alpha: float

    def array(self) -> FloatArray:
        return np.asarray(self.matrix, dtype=np.float64)


def fit_transitions(
    label_sequences: Iterable[Sequence[int]], *, alpha: float = 1.0
) -> LabelTransitions:
    """Count label-to-next-label transitions within each visitor's sequence and smooth them.

    A label outside ``0..6`` breaks the chain at that point (the pairs it belongs to are not
    counted) rather than raising, as a bad reading should not stop a report.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    counts = np.zeros((N_LABELS, N_LABELS), dtype=np.int64)
    for sequence in label_sequences:
        labels = np.asarray(sequence, dtype=np.int64).ravel()
        if len(labels) < 2:
            continue
        source, target = labels[:-1], labels[1:]
        valid = (source >= 0) & (source < N_LABELS) & (target >= 0) & (target < N_LABELS)
        np.add.at(counts, (source[valid], target[valid]), 1)
    smoothed = counts + alpha
    matrix = smoothed / smoothed.sum(axis=1, keepdims=True)
    return LabelTransitions(
        matrix=tuple(tuple(float(v) for v in row) for row in matrix),
        counts=tuple(tuple(int(v) for v in row) for row in counts),
        alpha=float(alpha),
    )


UNIFORM_TRANSITIONS: Final = fit_transitions([])


def label_distribution(current: int | Sequence[float]) -> FloatArray:
    """A label index as a one-hot row, or a distribution normalised to sum to 1."""
    if isinstance(current, int | np.integer):
        if not 0 <= int(current) < N_LABELS:
            raise ValueError(f"label must be in 0..{N_LABELS - 1}, got {current}")
        return np.asarray(np.eye(N_LABELS)[int(current)], dtype=np.float64)
    p = np.asarray(current, dtype=np.float64)
    if p.shape != (N_LABELS,) or np.any(~np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"need {N_LABELS} non-negative weights with a positive sum")
    return np.asarray(p / p.sum(), dtype=np.float64)


def forecast_labels(
    transitions: LabelTransitions, current: int | Sequence[float], k: int
) -> tuple[float, ...]:
    """The Ekman-7 distribution ``k`` readings ahead, ``p · T^k`` (Chapman-Kolmogorov)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    p = label_distribution(current) @ np.linalg.matrix_power(transitions.array(), k)
    return tuple(float(v) for v in p / p.sum())


def stationary_distribution(transitions: LabelTransitions) -> tuple[float, ...]:
    """The chain's long-run label shares: the ``pi`` with ``pi T = pi``, ``sum(pi) = 1``.

    With ``alpha > 0`` every entry of ``T`` is positive, so the chain is irreducible and
    aperiodic and ``pi`` is unique (Perron-Frobenius); ``p T^k -> pi`` from any ``p``.
    """
    matrix = transitions.array()
    system = np.vstack([matrix.T - np.eye(N_LABELS), np.ones(N_LABELS)])
    target = np.zeros(N_LABELS + 1)
    target[-1] = 1.0
    pi = np.linalg.lstsq(system, target, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return tuple(float(v) for v in pi / pi.sum())


# --------------------------------------------------------------------------------------------
# One visitor's trajectory
# --------------------------------------------------------------------------------------------


def trajectory(
    observations: Sequence[Observation],
    params: VADParams,
    transitions: LabelTransitions,
    k: int,
) -> Trajectory:
    """Filter a visitor's readings and forecast ``k`` readings ahead.

    Readings are cleaned and sorted (:func:`clean_sequence`). Without any, the current
    state and every forecast are the model's long-run beliefs (stationary OU state,
    stationary label shares) and ``error`` is ``"no_observations"``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    readings = clean_sequence(observations)
    dimensions = params.dimensions()
    if not readings:
        valence, arousal, dominance = (estimate(p.mu, p.stationary_variance) for p in dimensions)
        labels = stationary_distribution(transitions)
        horizons = step_horizons([], k, params.typical_gap)
        return Trajectory(
            history=(),
            current=CurrentState(
                t=None, valence=valence, arousal=arousal, dominance=dominance, labels=labels
            ),
            forecasts=tuple(
                ForecastStep(
                    step=step,
                    horizon=horizon,
                    valence=valence,
                    arousal=arousal,
                    dominance=dominance,
                    labels=labels,
                )
                for step, horizon in enumerate(horizons, start=1)
            ),
            step_seconds=params.typical_gap,
            error="no_observations",
        )

    times = [o.t for o in readings]
    noise = [np.nan if o.noise_variance is None else o.noise_variance for o in readings]
    runs = [
        kalman_filter(times, [o.vad()[d] for o in readings], p, noise)
        for d, p in enumerate(dimensions)
    ]
    history = tuple(
        FilteredPoint(
            t=o.t,
            observed=o.vad(),
            label=o.label,
            valence=estimate(runs[0].filtered_mean[i], runs[0].filtered_variance[i]),
            arousal=estimate(runs[1].filtered_mean[i], runs[1].filtered_variance[i]),
            dominance=estimate(runs[2].filtered_mean[i], runs[2].filtered_variance[i]),
        )
        for i, o in enumerate(readings)
    )
    last = history[-1]
    current_labels = (
        label_distribution(last.label)
        if 0 <= last.label < N_LABELS
        else np.asarray(stationary_distribution(transitions))
    )
    horizons = step_horizons(times, k, params.typical_gap)
    per_dimension = [
        forecast(run.filtered_mean[-1], run.filtered_variance[-1], p, horizons)
        for run, p in zip(runs, dimensions, strict=True)
    ]
    forecasts = tuple(
        ForecastStep(
            step=step,
            horizon=horizon,
            valence=per_dimension[0][step - 1],
            arousal=per_dimension[1][step - 1],
            dominance=per_dimension[2][step - 1],
            labels=forecast_labels(transitions, tuple(current_labels), step),
        )
        for step, horizon in enumerate(horizons, start=1)
    )
    return Trajectory(
        history=history,
        current=CurrentState(
            t=last.t,
            valence=last.valence,
            arousal=last.arousal,
            dominance=last.dominance,
            labels=tuple(float(v) for v in current_labels),
        ),
        forecasts=forecasts,
        step_seconds=horizons[0] if horizons else step_horizons(times, 1, params.typical_gap)[0],
    )


# --------------------------------------------------------------------------------------------
# Synthetic data and evaluation
# --------------------------------------------------------------------------------------------


def simulate_ou_sequences(
    n_sequences: int,
    params: VADParams,
    *,
    seed: int,
    min_length: int = 5,
    max_length: int = 30,
    mean_gap: float | None = None,
    resolution: float | None = None,
    transitions: LabelTransitions = UNIFORM_TRANSITIONS,
) -> list[list[Observation]]:
    """Visitors whose readings follow the model exactly, for tests and evaluation.

    Each visitor has a uniform number of readings in ``[min_length, max_length]`` with
    exponential gaps of mean ``mean_gap`` (default ``params.typical_gap``), rounded to
    multiples of ``resolution`` when given (which produces simultaneous readings). The state
    starts stationary and moves by the exact transition; readings add ``N(0, r)`` noise and
    are not clipped to [-1, 1], so the data are exactly what the model assumes. Labels
    follow ``transitions`` from its stationary distribution.
    """
    rng = np.random.default_rng(seed)
    gap = params.typical_gap if mean_gap is None else mean_gap
    matrix = transitions.array()
    start = np.asarray(stationary_distribution(transitions))
    sequences = []
    for _ in range(n_sequences):
        n = int(rng.integers(min_length, max_length + 1))
        gaps = rng.exponential(gap, size=max(n - 1, 0))
        if resolution:
            gaps = np.round(gaps / resolution) * resolution
        times = np.concatenate([[0.0], np.cumsum(gaps)])
        readings = np.empty((n, 3))
        for d, p in enumerate(params.dimensions()):
            s = p.stationary_variance
            x = p.mu + math.sqrt(s) * rng.standard_normal()
            for i in range(n):
                if i:
                    a = math.exp(-p.theta * gaps[i - 1])
                    q = s * -math.expm1(-2.0 * p.theta * gaps[i - 1])
                    x = p.mu + a * (x - p.mu) + math.sqrt(q) * rng.standard_normal()
                readings[i, d] = x + math.sqrt(p.r) * rng.standard_normal()
        labels = [int(rng.choice(N_LABELS, p=start))]
        for _ in range(n - 1):
            labels.append(int(rng.choice(N_LABELS, p=matrix[labels[-1]])))
        sequences.append(
            [
                Observation(
                    t=float(t),
                    valence=float(row[0]),
                    arousal=float(row[1]),
                    dominance=float(row[2]),
                    label=label,
                )
                for t, row, label in zip(times, readings, labels, strict=True)
            ]
        )
    return sequences


@dataclass(frozen=True, slots=True)
class DimensionEvaluation:
    """One-step-ahead forecast error of one dimension: the filter against carrying the last
    reading forward. ``ratio = filter_mse / last_value_mse``; below 1 the filter wins."""

    dimension: str
    filter_mse: float | None
    last_value_mse: float | None
    ratio: float | None


@dataclass(frozen=True, slots=True)
class ForecastEvaluation:
    """Held-out evaluation of :func:`fit_ou` plus filtering (see :func:`evaluate_forecasts`)."""

    params: VADParams
    n_forecasts: int
    dimensions: tuple[DimensionEvaluation, ...]
    error: EvaluationError | None = None


def evaluate_forecasts(
    train_sequences: Sequence[Sequence[Observation]],
    test_sequences: Sequence[Sequence[Observation]],
) -> ForecastEvaluation:
    """Fit on ``train``, then forecast every held-out reading after a visitor's first.

    The filter's forecast of reading ``i`` is its prediction from readings ``0..i-1`` over
    the gap to reading ``i`` — exactly the Kalman predict step — and is compared with
    reading ``i - 1`` carried forward, the baseline a dashboard would show otherwise.
    """
    params = fit_ou(train_sequences)
    errors: list[list[float]] = [[], [], []]
    baseline: list[list[float]] = [[], [], []]
    for sequence in test_sequences:
        readings = clean_sequence(sequence)
        if len(readings) < 2:
            continue
        times = [o.t for o in readings]
        noise = [np.nan if o.noise_variance is None else o.noise_variance for o in readings]
        for d, p in enumerate(params.dimensions()):
            y = np.asarray([o.vad()[d] for o in readings])
            run = kalman_filter(times, y, p, noise)
            errors[d].extend((np.asarray(run.predicted_mean[1:]) - y[1:]) ** 2)
            baseline[d].extend((y[:-1] - y[1:]) ** 2)
    n_forecasts = len(errors[0])
    if not n_forecasts:
        return ForecastEvaluation(
            params=params,
            n_forecasts=0,
            dimensions=tuple(DimensionEvaluation(name, None, None, None) for name in VAD),
            error="no_test_pairs",
        )
    dimensions = []
    for d, name in enumerate(VAD):
        filter_mse = float(np.mean(errors[d]))
        last_value_mse = float(np.mean(baseline[d]))
        dimensions.append(
            DimensionEvaluation(
                dimension=name,
                filter_mse=filter_mse,
                last_value_mse=last_value_mse,
                ratio=filter_mse / last_value_mse if last_value_mse > 0 else None,
            )
        )
    return ForecastEvaluation(params=params, n_forecasts=n_forecasts, dimensions=tuple(dimensions))
