"""Sequential testing: always-valid confidence sequences and p-values (continuous monitoring).

A fixed-horizon test looked at after every batch of visitors and stopped at the first
p < alpha has a false-positive rate far above alpha. A confidence sequence is a sequence of
intervals that covers the true effect at *every* sample size simultaneously with probability
1 - alpha, so it may be looked at as often as wanted and the experiment stopped whenever it
excludes zero.

The boundary is the two-sided normal mixture of Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 49(2),
eq. (14): mixing the sub-Gaussian supermartingale exp(lambda S_t - lambda^2 V_t / 2) over
lambda ~ N(0, 1 / rho_H) gives sqrt(rho_H / (V_t + rho_H)) exp(S_t^2 / (2 (V_t + rho_H))), and
Ville's inequality bounds the probability it ever exceeds 1 / alpha, so with probability
1 - alpha, for all t,

    |S_t| < sqrt( (V_t + rho_H) log( (V_t + rho_H) / (rho_H alpha^2) ) ).

Here S_t = N (d_hat - d) and V_t = N sigma^2, with N = n_c + n_t the units so far, d_hat the
difference in means and sigma^2 = N Var(d_hat) the per-unit variance of the difference,
estimated from the data as in the asymptotic confidence sequences of Waudby-Smith, Arbour,
Sinha, Kennedy & Ramdas 2024, "Time-uniform central limit theory and asymptotic confidence
sequences", Annals of Statistics (the form GrowthBook's gbstats and Eppo use). Writing
rho_H = sigma^2 / rho^2 and dividing by N, the half-width is

    h_N = sigma sqrt( 2 (N rho^2 + 1) / (N^2 rho^2) log( sqrt(N rho^2 + 1) / alpha ) )
        = se(d_hat) * sqrt( (N rho^2 + 1) / (N rho^2) * (log(N rho^2 + 1) + 2 log(1 / alpha)) ).

rho sets the sample size at which the sequence is tightest. Minimising the boundary at a
target N* gives (Howard et al. 2021's approximately optimal mixture variance, the authors'
confseq ``TwoSidedNormalMixture::best_rho``, and gbstats' ``sequential_tuning_parameter``)

    rho^2 = (2 log(1 / alpha) + log(1 + 2 log(1 / alpha))) / N*.

The always-valid p-value is the smallest alpha whose sequence (same rho) excludes zero, the
reciprocal of the mixture martingale at d = 0 (Howard et al. 2021; Johari, Koomen, Pekelis &
Walsh 2017, "Peeking at A/B Tests", KDD, for always-valid p-values):

    p_N = min(1, sqrt(N rho^2 + 1) exp( -(N rho^2 / (N rho^2 + 1)) z^2 / 2 )),  z = d_hat / se.

P(p_N <= alpha for some N) <= alpha; the running minimum over looks is equally valid. The
guarantee is asymptotic in the variance estimate (Waudby-Smith et al.), which the A/A
simulation in the tests checks at 100 units per arm and up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nexus.experiments.stats._inference import check_alpha, relative_lift
from nexus.experiments.stats.frequentist import MINIMUM_UNITS_PER_ARM
from nexus.experiments.stats.results import Estimate, StatsError
from nexus.experiments.stats.summaries import ROUNDING_TOLERANCE, ProportionStats, SampleStats

FloatArray = npt.NDArray[np.float64]

DEFAULT_TUNING_N = 5000
"""Total units (both arms) at which the confidence sequence is tightest, by default."""


def tuning_rho(alpha: float, tuning_n: float) -> float:
    """rho = sqrt((2 log(1/alpha) + log(1 + 2 log(1/alpha))) / tuning_n) (module docstring)."""
    check_alpha(alpha)
    if not (math.isfinite(tuning_n) and tuning_n > 0):
        raise ValueError(f"tuning_n must be a positive number of units, got {tuning_n!r}")
    twice_log_inverse_alpha = 2.0 * math.log(1.0 / alpha)
    return math.sqrt((twice_log_inverse_alpha + math.log(1.0 + twice_log_inverse_alpha)) / tuning_n)


def boundary_multiplier(n_total: npt.ArrayLike, *, alpha: float, rho: float) -> FloatArray:
    """The factor that replaces z_{1 - alpha/2}: half-width = multiplier * standard error.

    sqrt((N rho^2 + 1) / (N rho^2) * (log(N rho^2 + 1) + 2 log(1 / alpha))), Howard et al.
    2021 eq. (14) rewritten per unit (module docstring).
    """
    scaled = np.asarray(n_total, dtype=np.float64) * rho * rho
    with np.errstate(divide="ignore", invalid="ignore"):
        result: FloatArray = np.sqrt(
            (scaled + 1.0) / scaled * (np.log1p(scaled) + 2.0 * math.log(1.0 / alpha))
        )
    return result


def always_valid_p_value(z: npt.ArrayLike, n_total: npt.ArrayLike, *, rho: float) -> FloatArray:
    """min(1, sqrt(N rho^2 + 1) exp(-(N rho^2 / (N rho^2 + 1)) z^2 / 2)) (module docstring).

    Computed in logs so large z underflows cleanly to 0 instead of overflowing.
    """
    scaled = np.asarray(n_total, dtype=np.float64) * rho * rho
    z_squared = np.square(np.asarray(z, dtype=np.float64))
    log_p = 0.5 * np.log1p(scaled) - scaled / (scaled + 1.0) * z_squared / 2.0
    result: FloatArray = np.exp(np.minimum(log_p, 0.0))
    return result


def _centred_sum_of_squares(
    total: FloatArray, mean: FloatArray, total_of_squares: npt.ArrayLike
) -> FloatArray:
    """Elementwise ``summaries.centred_sum_of_squares``: zero within the rounding tolerance."""
    squares = np.asarray(total_of_squares, dtype=np.float64)
    centred = squares - total * mean
    result: FloatArray = np.where(centred <= ROUNDING_TOLERANCE * np.abs(squares), 0.0, centred)
    return result


@dataclass(frozen=True, slots=True)
class SequentialArrays:
    """Sequential results for many looks or many simulated experiments at once.

    Each field has the broadcast shape of the inputs. Entries with fewer than two units in an
    arm or a zero standard error are NaN (and NaN compares false with ``p_value <= alpha``).
    """

    effect: FloatArray
    standard_error: FloatArray
    ci_lower: FloatArray
    ci_upper: FloatArray
    p_value: FloatArray


def sequential_arrays(
    control_n: npt.ArrayLike,
    control_sum: npt.ArrayLike,
    control_sum_of_squares: npt.ArrayLike,
    treatment_n: npt.ArrayLike,
    treatment_sum: npt.ArrayLike,
    treatment_sum_of_squares: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
) -> SequentialArrays:
    """The sequential test of the difference in means, vectorised over any array shape.

    Feed cumulative sums (``np.cumsum`` along the time axis) to get the confidence sequence
    and always-valid p-values at every look, e.g. a ``(simulations, looks)`` array for an A/A
    study. Same formulas as :func:`sequential` (both use :func:`boundary_multiplier` and
    :func:`always_valid_p_value`, and the same rounding rule for constant data).
    """
    rho = tuning_rho(alpha, tuning_n)
    n_c = np.asarray(control_n, dtype=np.float64)
    n_t = np.asarray(treatment_n, dtype=np.float64)
    sum_c = np.asarray(control_sum, dtype=np.float64)
    sum_t = np.asarray(treatment_sum, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c, mean_t = sum_c / n_c, sum_t / n_t
        variance_c = _centred_sum_of_squares(sum_c, mean_c, control_sum_of_squares) / (n_c - 1.0)
        variance_t = _centred_sum_of_squares(sum_t, mean_t, treatment_sum_of_squares) / (n_t - 1.0)
        standard_error = np.sqrt(variance_c / n_c + variance_t / n_t)
        usable = (n_c >= MINIMUM_UNITS_PER_ARM) & (n_t >= MINIMUM_UNITS_PER_ARM)
        usable = usable & (standard_error > 0.0)
        effect = np.where(usable, mean_t - mean_c, np.nan)
        standard_error = np.where(usable, standard_error, np.nan)
        halfwidth = boundary_multiplier(n_c + n_t, alpha=alpha, rho=rho) * standard_error
        p_value = always_valid_p_value(effect / standard_error, n_c + n_t, rho=rho)
    return SequentialArrays(
        effect=effect,
        standard_error=standard_error,
        ci_lower=effect - halfwidth,
        ci_upper=effect + halfwidth,
        p_value=np.where(usable, p_value, np.nan),
    )


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """The sequential test at the current look.

    ``absolute`` holds the difference in means with its always-valid confidence sequence at
    this sample size; ``relative`` the lift with the same boundary applied to its delta-method
    standard error (an approximation, as in gbstats). ``p_value`` is always valid. ``rho`` is
    the mixture parameter tuned for ``tuning_n`` total units.
    """

    control_mean: float | None
    treatment_mean: float | None
    absolute: Estimate | None
    relative: Estimate | None
    p_value: float | None
    alpha: float
    tuning_n: float
    rho: float
    error: StatsError | None = None

    @property
    def significant(self) -> bool:
        """Whether the sequence excludes zero (``p_value <= alpha``); safe to act on any time."""
        return self.p_value is not None and self.p_value <= self.alpha


def sequential(
    control: SampleStats | ProportionStats,
    treatment: SampleStats | ProportionStats,
    *,
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
) -> SequentialResult:
    """Always-valid confidence sequence and p-value for ``mean(treatment) - mean(control)``.

    Two-sided. ``tuning_n`` is the total number of units (both arms) where the sequence should
    be tightest, typically the planned sample size; any value keeps the guarantee, a poor one
    only widens the intervals. Proportions are analysed as 0/1 metrics.

    Errors: ``invalid_input``, ``insufficient_data`` (n < 2), ``zero_variance``,
    ``zero_control_mean`` (absolute sequence kept, relative dropped).
    """
    rho = tuning_rho(alpha, tuning_n)
    control_stats = control.as_sample_stats() if isinstance(control, ProportionStats) else control
    treatment_stats = (
        treatment.as_sample_stats() if isinstance(treatment, ProportionStats) else treatment
    )

    def failed(error: StatsError) -> SequentialResult:
        means_exist = error != StatsError.INVALID_INPUT
        return SequentialResult(
            control_mean=control_stats.mean if means_exist and control_stats.n > 0 else None,
            treatment_mean=treatment_stats.mean if means_exist and treatment_stats.n > 0 else None,
            absolute=None,
            relative=None,
            p_value=None,
            alpha=alpha,
            tuning_n=tuning_n,
            rho=rho,
            error=error,
        )

    if not (control.is_valid and treatment.is_valid):
        return failed(StatsError.INVALID_INPUT)
    if min(control_stats.n, treatment_stats.n) < MINIMUM_UNITS_PER_ARM:
        return failed(StatsError.INSUFFICIENT_DATA)
    control_mean_variance = control_stats.variance / control_stats.n
    treatment_mean_variance = treatment_stats.variance / treatment_stats.n
    standard_error = math.sqrt(control_mean_variance + treatment_mean_variance)
    if standard_error == 0.0:
        return failed(StatsError.ZERO_VARIANCE)
    n_total = control_stats.n + treatment_stats.n
    multiplier = float(boundary_multiplier(n_total, alpha=alpha, rho=rho))
    effect = treatment_stats.mean - control_stats.mean
    absolute = Estimate(
        value=effect,
        standard_error=standard_error,
        ci_lower=effect - multiplier * standard_error,
        ci_upper=effect + multiplier * standard_error,
    )
    relative: Estimate | None = None
    error: StatsError | None = None
    if control_stats.mean == 0.0:
        error = StatsError.ZERO_CONTROL_MEAN
    else:
        lift, lift_variance = relative_lift(
            control_stats.mean, control_mean_variance, treatment_stats.mean, treatment_mean_variance
        )
        lift_standard_error = math.sqrt(lift_variance)
        relative = Estimate(
            value=lift,
            standard_error=lift_standard_error,
            ci_lower=lift - multiplier * lift_standard_error,
            ci_upper=lift + multiplier * lift_standard_error,
        )
    return SequentialResult(
        control_mean=control_stats.mean,
        treatment_mean=treatment_stats.mean,
        absolute=absolute,
        relative=relative,
        p_value=float(always_valid_p_value(effect / standard_error, n_total, rho=rho)),
        alpha=alpha,
        tuning_n=tuning_n,
        rho=rho,
        error=error,
    )
