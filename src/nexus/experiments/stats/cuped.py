"""CUPED: variance reduction with a pre-exposure covariate (Deng, Xu, Kohavi & Walker 2013).

Deng, Xu, Kohavi & Walker 2013, "Improving the Sensitivity of Online Controlled Experiments by
Utilizing Pre-Experiment Data", WSDM, Sec. 3 (control variates): for a metric Y and a covariate
X unaffected by the treatment (measured before exposure),

    Y_cv = Y - theta (X - E[X]),   theta = cov(Y, X) / var(X)

is unbiased for E[Y] and has variance var(Y) (1 - corr(Y, X)^2), the least over all theta.
theta is estimated once on both arms pooled (as the paper recommends, so both arms are
adjusted by the same amount and the difference stays unbiased; gbstats does the same), E[X]
by the pooled covariate mean, and the adjusted per-unit values Y - theta X are then compared
with Welch's t-test. Everything comes from per-arm sums (n, sum y, sum y^2, sum x, sum x^2,
sum x y), so the analysis runs on SQL aggregates.

The standard errors treat theta as known (the paper does too): its estimation error is
O(1 / n) and negligible at experiment sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus.experiments.stats._inference import (
    check_alpha,
    check_alternative,
    compare_means,
    failed_test,
    welch_satterthwaite,
)
from nexus.experiments.stats.frequentist import MINIMUM_UNITS_PER_ARM
from nexus.experiments.stats.results import Alternative, StatsError, TestResult
from nexus.experiments.stats.summaries import (
    CupedStats,
    centred_sum_of_products,
    centred_sum_of_squares,
    zero_within_rounding,
)


@dataclass(frozen=True, slots=True)
class CupedResult:
    """The CUPED-adjusted Welch test, with the adjustment it made.

    ``theta`` is the pooled regression coefficient of the metric on the covariate (0 when the
    covariate is constant: nothing to adjust with). ``variance_reduction`` is the share of the
    variance of the difference in means that the adjustment removed,
    ``1 - Var_adjusted / Var_unadjusted`` (about corr(Y, X)^2; slightly negative when the
    covariate is useless). ``test.control_mean`` and ``test.treatment_mean`` are the adjusted
    means, ``mean(y) - theta (mean(x) - pooled mean(x))``.
    """

    theta: float | None
    variance_reduction: float | None
    test: TestResult

    @property
    def error(self) -> StatsError | None:
        """The adjusted test's error code, if any."""
        return self.test.error


def pooled_theta(control: CupedStats, treatment: CupedStats) -> float:
    """theta = cov(Y, X) / var(X) over both arms' units together (0 if X is constant).

    Pooled sums are the sums of the arms' sums; the (N - 1) divisors cancel, leaving
    theta = sum (x - mean x)(y - mean y) / sum (x - mean x)^2 with pooled means.
    """
    n = control.n + treatment.n
    covariate_sum = control.covariate_sum + treatment.covariate_sum
    covariate_css = centred_sum_of_squares(
        n, covariate_sum, control.covariate_sum_of_squares + treatment.covariate_sum_of_squares
    )
    if covariate_css == 0.0:
        return 0.0
    cross_csp = centred_sum_of_products(
        n,
        covariate_sum,
        control.metric_sum + treatment.metric_sum,
        control.metric_covariate_sum_of_products + treatment.metric_covariate_sum_of_products,
    )
    return cross_csp / covariate_css


def _adjusted_variance(arm: CupedStats, theta: float) -> float:
    """The unbiased sample variance of ``y - theta x`` within the arm.

    s^2(y - theta x) = s_y^2 - 2 theta s_xy + theta^2 s_x^2 (Deng et al. 2013, Sec. 3), from
    centred sums; within rounding of zero it is zero (an exactly linear metric).
    """
    n = arm.n
    metric_css = centred_sum_of_squares(n, arm.metric_sum, arm.metric_sum_of_squares)
    covariate_css = centred_sum_of_squares(n, arm.covariate_sum, arm.covariate_sum_of_squares)
    cross_csp = centred_sum_of_products(
        n, arm.metric_sum, arm.covariate_sum, arm.metric_covariate_sum_of_products
    )
    adjusted_css = zero_within_rounding(
        metric_css - 2.0 * theta * cross_csp + theta * theta * covariate_css,
        arm.metric_sum_of_squares + theta * theta * arm.covariate_sum_of_squares,
    )
    return adjusted_css / (n - 1)


def cuped(
    control: CupedStats,
    treatment: CupedStats,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> CupedResult:
    """Welch's t-test on the CUPED-adjusted metric ``y - theta (x - pooled mean x)``.

    Equal to computing theta with numpy on the raw pooled arrays, adjusting every unit and
    running ``scipy.stats.ttest_ind(adjusted_t, adjusted_c, equal_var=False)``.

    Errors (on ``test``): ``invalid_input``, ``insufficient_data`` (n < 2),
    ``zero_variance`` (the adjusted metric is constant in both arms), ``zero_control_mean``.
    """
    check_alpha(alpha)
    check_alternative(alternative)
    if not (control.is_valid and treatment.is_valid):
        return CupedResult(
            None, None, failed_test(StatsError.INVALID_INPUT, alpha=alpha, alternative=alternative)
        )
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return CupedResult(
            None,
            None,
            failed_test(StatsError.INSUFFICIENT_DATA, alpha=alpha, alternative=alternative),
        )
    theta = pooled_theta(control, treatment)
    pooled_covariate_mean = (control.covariate_sum + treatment.covariate_sum) / (
        control.n + treatment.n
    )

    def adjusted_mean(arm: CupedStats) -> float:
        return (
            arm.metric_sum - theta * (arm.covariate_sum - arm.n * pooled_covariate_mean)
        ) / arm.n

    control_mean_variance = _adjusted_variance(control, theta) / control.n
    treatment_mean_variance = _adjusted_variance(treatment, theta) / treatment.n
    unadjusted_variance = (
        control.metric.variance / control.n + treatment.metric.variance / treatment.n
    )
    adjusted_variance = control_mean_variance + treatment_mean_variance
    variance_reduction = (
        1.0 - adjusted_variance / unadjusted_variance if unadjusted_variance > 0.0 else None
    )
    degrees_of_freedom = (
        welch_satterthwaite(control_mean_variance, control.n, treatment_mean_variance, treatment.n)
        if adjusted_variance > 0.0
        else None
    )
    test = compare_means(
        control_mean=adjusted_mean(control),
        control_mean_variance=control_mean_variance,
        treatment_mean=adjusted_mean(treatment),
        treatment_mean_variance=treatment_mean_variance,
        degrees_of_freedom=degrees_of_freedom,
        alpha=alpha,
        alternative=alternative,
    )
    return CupedResult(theta=theta, variance_reduction=variance_reduction, test=test)
