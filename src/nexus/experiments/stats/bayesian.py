"""Bayesian A/B analysis: chance to beat control, expected loss and credible intervals.

Proportions use the conjugate Beta-Binomial model: with a Beta(a, b) prior and x successes in
n trials an arm's rate has the posterior Beta(a + x, b + n - x) (Gelman et al. 2013,
"Bayesian Data Analysis", 3rd ed., Sec. 2.4). Means use the Gaussian approximation: an arm's
mean is N(mean, s^2 / n) under a flat prior, or the conjugate normal update of a
:class:`NormalPrior` (Gelman et al. 2013, Sec. 2.5, a normal mean with known variance, taking
s^2 / n as the known sampling variance of the arm mean).

For each model the result gives, for the treatment T against the control C:

* chance to beat control, P(T > C);
* expected loss (risk) of each decision (Stucchio 2015, "Bayesian A/B Testing at VWO",
  VWO whitepaper, its loss function): choosing treatment loses E[max(C - T, 0)], choosing
  control loses E[max(T - C, 0)]; the two differ by E[C] - E[T] exactly;
* the posterior of the absolute difference T - C and of the lift T / C - 1, with equal-tailed
  (1 - alpha) credible intervals.

Beta quantities are computed by deterministic quadrature, not Monte Carlo. Each is a single
expectation over one arm's posterior, e.g. P(T > C) = E_C[S_T(C)] = E_T[F_C(T)], taken over the
arm with the narrower posterior so the integrand varies slowly (on the scale of the wider
posterior). Writing that arm's value as a function of a normal score, X = F^{-1}(Phi(Z)) with
Z ~ N(0, 1), turns the expectation into a Gauss-Hermite integral (Abramowitz & Stegun 1964,
"Handbook of Mathematical Functions", 25.4.46, in the probabilists' weight exp(-z^2 / 2)):

    E[g(X)] = int g(F^{-1}(Phi(z))) phi(z) dz ~= sum_k w_k g(F^{-1}(Phi(z_k)))

X(z) is smooth in z for any Beta posterior (and nearly linear once it holds a few dozen
successes and failures), so a fixed rule of ``GAUSS_HERMITE_NODES`` nodes converges to
rounding; the tests check the chance to beat against
Evan Miller's exact closed form to 1e-8 and the other quantities against adaptive quadrature.
The Beta CDF F, survival function S and quantile function F^{-1} are the regularised
incomplete beta function and its inverses. Partial expectations use
t f_{a,b}(t) = a / (a + b) f_{a+1,b}(t), so E[T 1{T > c}] = E[T] S_{a+1,b}(c).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.polynomial import hermite_e
from scipy import optimize, special
from scipy import stats as scipy_stats

from nexus.experiments.stats._inference import check_alpha, relative_lift
from nexus.experiments.stats.frequentist import MINIMUM_UNITS_PER_ARM
from nexus.experiments.stats.results import Estimate, StatsError
from nexus.experiments.stats.summaries import ProportionStats, SampleStats

FloatArray = npt.NDArray[np.float64]

GAUSS_HERMITE_NODES = 96
"""Nodes of the Gauss-Hermite rule for Beta posteriors (converged to rounding well before)."""

_QUANTILE_TOLERANCE = 1e-12


def _gauss_hermite_rule() -> tuple[FloatArray, FloatArray]:
    """Nodes and weights for E[g(Z)], Z ~ N(0, 1); nodes whose weight underflows are dropped."""
    nodes, weights = hermite_e.hermegauss(GAUSS_HERMITE_NODES)
    weights = weights / math.sqrt(2.0 * math.pi)
    kept = weights > 1e-300
    return nodes[kept], weights[kept]


_NORMAL_SCORES, _NORMAL_WEIGHTS = _gauss_hermite_rule()


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """A Beta(successes, failures) prior on a conversion rate: pseudo-counts added to the data.

    The default Beta(1, 1) is uniform on [0, 1].
    """

    successes: float = 1.0
    failures: float = 1.0

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.successes)
            and math.isfinite(self.failures)
            and self.successes > 0
            and self.failures > 0
        ):
            raise ValueError("a Beta prior needs finite, positive pseudo-counts")


@dataclass(frozen=True, slots=True)
class NormalPrior:
    """A N(mean, variance) prior on each arm's mean (the same prior for both arms)."""

    mean: float
    variance: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.variance) and self.variance > 0):
            raise ValueError("a normal prior needs a finite mean and a finite, positive variance")


@dataclass(frozen=True, slots=True)
class BayesianResult:
    """A Bayesian comparison of treatment against control.

    ``control_mean`` / ``treatment_mean`` are posterior means. ``absolute`` is the posterior of
    ``T - C`` (its mean, standard deviation and equal-tailed credible interval); ``relative``
    is the lift ``T / C - 1``: value ``E[T] / E[C] - 1``, delta-method standard deviation, and
    the credible interval from the exact posterior of T / C for proportions or the Gaussian
    delta-method approximation for means. The credible level is ``1 - alpha``.
    """

    control_mean: float | None
    treatment_mean: float | None
    chance_to_beat_control: float | None
    expected_loss_choosing_treatment: float | None
    expected_loss_choosing_control: float | None
    absolute: Estimate | None
    relative: Estimate | None
    alpha: float
    error: StatsError | None = None


def _failed(error: StatsError, alpha: float) -> BayesianResult:
    return BayesianResult(None, None, None, None, None, None, None, alpha, error)


# --------------------------------------------------------------------------------------------
# Beta posteriors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Beta:
    a: float
    b: float

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    @property
    def variance(self) -> float:
        total = self.a + self.b
        return self.a * self.b / (total * total * (total + 1.0))

    @property
    def size_biased(self) -> _Beta:
        """Beta(a + 1, b), whose density is t f_{a,b}(t) / E[T]."""
        return _Beta(self.a + 1.0, self.b)

    def cdf(self, x: FloatArray) -> FloatArray:
        result: FloatArray = special.betainc(self.a, self.b, np.clip(x, 0.0, 1.0))
        return result

    def sf(self, x: FloatArray) -> FloatArray:
        result: FloatArray = special.betaincc(self.a, self.b, np.clip(x, 0.0, 1.0))
        return result

    def at_normal_scores(self) -> FloatArray:
        """F^{-1}(Phi(z_k)) at the Gauss-Hermite nodes, each tail from its own side."""
        lower = special.betaincinv(self.a, self.b, special.ndtr(_NORMAL_SCORES))
        upper = special.betainccinv(self.a, self.b, special.ndtr(-_NORMAL_SCORES))
        result: FloatArray = np.where(_NORMAL_SCORES < 0.0, lower, upper)
        return result


def _expectation(values: FloatArray) -> float:
    """sum_k w_k g(X(z_k)) for the integrand ``values`` = g evaluated at the nodes."""
    return float(np.dot(_NORMAL_WEIGHTS, values))


def _narrower_first(control: _Beta, treatment: _Beta) -> bool:
    """Whether to integrate over the control arm (its posterior is the narrower)."""
    return control.variance <= treatment.variance


def beta_chance_to_beat(control: _Beta, treatment: _Beta) -> float:
    """P(T > C) = E_C[S_T(C)] = E_T[F_C(T)] for independent Beta posteriors."""
    if _narrower_first(control, treatment):
        value = _expectation(treatment.sf(control.at_normal_scores()))
    else:
        value = _expectation(control.cdf(treatment.at_normal_scores()))
    return min(max(value, 0.0), 1.0)


def _expected_shortfall(lower: _Beta, higher: _Beta) -> float:
    """E[max(H - L, 0)] for independent Betas H (``higher``) and L (``lower``).

    Over L: E[(H - l)^+] = E[H] S_{H+}(l) - l S_H(l); over H: E[(h - L)^+] =
    h F_L(h) - E[L] F_{L+}(h), with H+, L+ the size-biased Betas (module docstring).
    """
    if lower.variance <= higher.variance:
        point = lower.at_normal_scores()
        shortfall = higher.mean * higher.size_biased.sf(point) - point * higher.sf(point)
    else:
        point = higher.at_normal_scores()
        shortfall = point * lower.cdf(point) - lower.mean * lower.size_biased.cdf(point)
    return _expectation(np.maximum(shortfall, 0.0))


def _difference_cdf(control: _Beta, treatment: _Beta) -> Callable[[float], float]:
    """d -> P(T - C <= d) = E_C[F_T(C + d)] = E_T[S_C(T - d)]."""
    if _narrower_first(control, treatment):
        control_points = control.at_normal_scores()
        return lambda d: _expectation(treatment.cdf(control_points + d))
    treatment_points = treatment.at_normal_scores()
    return lambda d: _expectation(control.sf(treatment_points - d))


def _log_ratio_cdf(control: _Beta, treatment: _Beta) -> Callable[[float], float]:
    """x -> P(log(T / C) <= x) = P(T <= e^x C) = E_C[F_T(e^x C)] = E_T[S_C(e^-x T)]."""
    if _narrower_first(control, treatment):
        control_points = control.at_normal_scores()
        return lambda x: _expectation(treatment.cdf(math.exp(x) * control_points))
    treatment_points = treatment.at_normal_scores()
    return lambda x: _expectation(control.sf(math.exp(-x) * treatment_points))


def _solve_increasing(
    function: Callable[[float], float], target: float, guess: float, spread: float
) -> float:
    """The x with function(x) = target for increasing ``function``, bracketing from a guess.

    If the target lies beyond what the function reaches in floating point (a credible level
    so close to 1 that the quadrature's total weight falls short of it), the furthest point
    tried is returned rather than raising.
    """
    low, high = guess - spread, guess + spread
    for _ in range(60):
        if function(low) <= target:
            break
        low -= spread
        spread *= 2.0
    else:
        return low
    for _ in range(60):
        if function(high) >= target:
            break
        high += spread
        spread *= 2.0
    else:
        return high
    return float(
        optimize.brentq(lambda x: function(x) - target, low, high, xtol=_QUANTILE_TOLERANCE)
    )


def _beta_difference_interval(
    control: _Beta, treatment: _Beta, alpha: float
) -> tuple[float, float]:
    """Equal-tailed quantiles of T - C, solved around the normal approximation."""
    cdf = _difference_cdf(control, treatment)
    guess = treatment.mean - control.mean
    spread = 4.0 * math.sqrt(control.variance + treatment.variance)
    lower = _solve_increasing(cdf, alpha / 2.0, guess, spread)
    upper = _solve_increasing(cdf, 1.0 - alpha / 2.0, guess, spread)
    return lower, upper


def _beta_lift_interval(control: _Beta, treatment: _Beta, alpha: float) -> tuple[float, float]:
    """Equal-tailed quantiles of T / C - 1, solved on log(T / C) around its normal guess."""
    cdf = _log_ratio_cdf(control, treatment)
    guess = math.log(treatment.mean / control.mean)
    spread = 4.0 * math.sqrt(
        treatment.variance / treatment.mean**2 + control.variance / control.mean**2
    )
    lower = _solve_increasing(cdf, alpha / 2.0, guess, spread)
    upper = _solve_increasing(cdf, 1.0 - alpha / 2.0, guess, spread)
    return math.expm1(lower), math.expm1(upper)


def bayesian_proportions(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    prior: BetaPrior | None = None,
    alpha: float = 0.05,
) -> BayesianResult:
    """Beta-Binomial analysis of two conversion rates.

    Chance to beat, both expected losses and both credible intervals come from Gauss-Hermite
    quadratures over the exact Beta posteriors (module docstring); the chance to beat matches
    Evan Miller's closed form (2015, "Formulas for Bayesian A/B Testing") to about 1e-9.

    Errors: ``invalid_input``, ``insufficient_data`` (n < 2 in an arm).
    """
    check_alpha(alpha)
    prior = prior or BetaPrior()
    if not (control.is_valid and treatment.is_valid):
        return _failed(StatsError.INVALID_INPUT, alpha)
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return _failed(StatsError.INSUFFICIENT_DATA, alpha)
    control_posterior = _Beta(
        prior.successes + control.successes, prior.failures + control.n - control.successes
    )
    treatment_posterior = _Beta(
        prior.successes + treatment.successes,
        prior.failures + treatment.n - treatment.successes,
    )
    control_mean, treatment_mean = control_posterior.mean, treatment_posterior.mean
    lift, lift_variance = relative_lift(
        control_mean, control_posterior.variance, treatment_mean, treatment_posterior.variance
    )
    difference_lower, difference_upper = _beta_difference_interval(
        control_posterior, treatment_posterior, alpha
    )
    lift_lower, lift_upper = _beta_lift_interval(control_posterior, treatment_posterior, alpha)
    return BayesianResult(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        chance_to_beat_control=beta_chance_to_beat(control_posterior, treatment_posterior),
        expected_loss_choosing_treatment=_expected_shortfall(
            lower=treatment_posterior, higher=control_posterior
        ),
        expected_loss_choosing_control=_expected_shortfall(
            lower=control_posterior, higher=treatment_posterior
        ),
        absolute=Estimate(
            value=treatment_mean - control_mean,
            standard_error=math.sqrt(control_posterior.variance + treatment_posterior.variance),
            ci_lower=difference_lower,
            ci_upper=difference_upper,
        ),
        relative=Estimate(
            value=lift,
            standard_error=math.sqrt(lift_variance),
            ci_lower=lift_lower,
            ci_upper=lift_upper,
        ),
        alpha=alpha,
    )


# --------------------------------------------------------------------------------------------
# Gaussian posteriors
# --------------------------------------------------------------------------------------------


def _normal_posterior(arm: SampleStats, prior: NormalPrior | None) -> tuple[float, float]:
    """(mean, variance) of the arm mean's posterior (Gelman et al. 2013, Sec. 2.5).

    Flat prior: N(mean, s^2 / n). Normal prior N(m0, v0): precision 1 / v0 + n / s^2 and mean
    (m0 / v0 + n mean / s^2) / precision. A constant arm (s^2 = 0) pins the mean exactly.
    """
    sampling_variance = arm.variance / arm.n
    if prior is None or sampling_variance == 0.0:
        return arm.mean, sampling_variance
    precision = 1.0 / prior.variance + 1.0 / sampling_variance
    mean = (prior.mean / prior.variance + arm.mean / sampling_variance) / precision
    return mean, 1.0 / precision


def bayesian_means(
    control: SampleStats,
    treatment: SampleStats,
    *,
    prior: NormalPrior | None = None,
    alpha: float = 0.05,
) -> BayesianResult:
    """Gaussian-approximation analysis of two means; every quantity in closed form.

    With D = T - C ~ N(d, s^2), d = E[T] - E[C], s^2 = Var(T) + Var(C), phi and Phi the
    standard normal density and CDF:

        P(T > C)           = Phi(d / s)
        E[max(C - T, 0)]   = s phi(d / s) - d Phi(-d / s)     (loss choosing treatment)
        E[max(T - C, 0)]   = s phi(d / s) + d Phi(d / s)      (loss choosing control)
        credible interval  = d -+ z_{1 - alpha/2} s

    (the partial expectation of a normal variable, e.g. Johnson, Kotz & Balakrishnan 1994,
    "Continuous Univariate Distributions", vol. 1, ch. 13, on the truncated normal). The lift
    is E[T] / E[C] - 1 with a delta-method normal credible interval.

    Errors: ``invalid_input``, ``insufficient_data`` (n < 2), ``zero_variance`` (both
    posteriors are point masses), ``zero_control_mean`` (posterior control mean exactly 0:
    absolute results kept, lift dropped).
    """
    check_alpha(alpha)
    if not (control.is_valid and treatment.is_valid):
        return _failed(StatsError.INVALID_INPUT, alpha)
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return _failed(StatsError.INSUFFICIENT_DATA, alpha)
    control_mean, control_variance = _normal_posterior(control, prior)
    treatment_mean, treatment_variance = _normal_posterior(treatment, prior)
    spread = math.sqrt(control_variance + treatment_variance)
    if spread == 0.0:
        return BayesianResult(
            control_mean=control_mean,
            treatment_mean=treatment_mean,
            chance_to_beat_control=None,
            expected_loss_choosing_treatment=None,
            expected_loss_choosing_control=None,
            absolute=None,
            relative=None,
            alpha=alpha,
            error=StatsError.ZERO_VARIANCE,
        )
    difference = treatment_mean - control_mean
    standardised = difference / spread
    density = float(scipy_stats.norm.pdf(standardised))
    critical = float(scipy_stats.norm.isf(alpha / 2.0))
    relative: Estimate | None = None
    error: StatsError | None = None
    if control_mean == 0.0:
        error = StatsError.ZERO_CONTROL_MEAN
    else:
        lift, lift_variance = relative_lift(
            control_mean, control_variance, treatment_mean, treatment_variance
        )
        lift_spread = math.sqrt(lift_variance)
        relative = Estimate(
            lift, lift_spread, lift - critical * lift_spread, lift + critical * lift_spread
        )
    return BayesianResult(
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        chance_to_beat_control=float(scipy_stats.norm.cdf(standardised)),
        expected_loss_choosing_treatment=spread * density
        - difference * float(scipy_stats.norm.cdf(-standardised)),
        expected_loss_choosing_control=spread * density
        + difference * float(scipy_stats.norm.cdf(standardised)),
        absolute=Estimate(
            difference, spread, difference - critical * spread, difference + critical * spread
        ),
        relative=relative,
        alpha=alpha,
        error=error,
    )
