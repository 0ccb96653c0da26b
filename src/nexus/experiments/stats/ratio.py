"""Ratio metrics (revenue per session, clicks per page view) by the delta method.

When the metric's denominator is not the unit of randomisation (sessions of a randomised user),
the per-arm metric is a ratio of two means, R = mean(y) / mean(x), whose numerator and
denominator are correlated. Treating sessions as independent understates the variance; the
delta method gives it from per-unit sums (Deng, Knoblich & Lu 2018, "Applying the Delta Method
in Metric Analytics: A Practical Guide with Novel Ideas", KDD, the variance of a ratio of two
means; also Kohavi, Tang & Xu 2020, "Trustworthy Online Controlled Experiments", ch. 18):

    Var(R) ~= (1 / n) [ s_y^2 / mx^2 - 2 my s_xy / mx^3 + my^2 s_x^2 / mx^4 ]

with mx, my the arm means and s_x^2, s_y^2, s_xy the unbiased sample (co)variances. The bracket
equals s^2(y - R x) / mx^2, the variance of the linearised per-unit metric, which is how it is
computed here (one centred quadratic form; within rounding of zero it is zero, as in
:mod:`.summaries`).
"""

from __future__ import annotations

from nexus.experiments.stats._inference import (
    check_alpha,
    check_alternative,
    compare_means,
    failed_test,
)
from nexus.experiments.stats.frequentist import MINIMUM_UNITS_PER_ARM
from nexus.experiments.stats.results import Alternative, StatsError, TestResult
from nexus.experiments.stats.summaries import (
    RatioStats,
    centred_sum_of_products,
    centred_sum_of_squares,
    zero_within_rounding,
)


def ratio_variance(arm: RatioStats) -> float:
    """The delta-method variance of ``arm.ratio`` (module docstring); needs n >= 2, sum x != 0."""
    n = arm.n
    ratio = arm.numerator_sum / arm.denominator_sum
    denominator_mean = arm.denominator_sum / n
    numerator_css = centred_sum_of_squares(n, arm.numerator_sum, arm.numerator_sum_of_squares)
    denominator_css = centred_sum_of_squares(n, arm.denominator_sum, arm.denominator_sum_of_squares)
    cross_csp = centred_sum_of_products(
        n, arm.numerator_sum, arm.denominator_sum, arm.numerator_denominator_sum_of_products
    )
    linearised_css = zero_within_rounding(
        numerator_css - 2.0 * ratio * cross_csp + ratio * ratio * denominator_css,
        arm.numerator_sum_of_squares + ratio * ratio * arm.denominator_sum_of_squares,
    )
    linearised_variance = linearised_css / (n - 1)
    return linearised_variance / (n * denominator_mean * denominator_mean)


def ratio(
    control: RatioStats,
    treatment: RatioStats,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """A z-test of ``R_t - R_c`` for a ratio metric, with delta-method variances.

    ``statistic = (R_t - R_c) / sqrt(Var(R_c) + Var(R_t))`` against N(0, 1) (the delta method is
    a large-sample approximation, so no t correction is claimed: ``degrees_of_freedom`` is
    ``None``). ``control_mean`` / ``treatment_mean`` of the result are the ratios; the relative
    effect is ``R_t / R_c - 1`` with the delta-method interval of ``_inference.relative_lift``.

    Errors: ``invalid_input``, ``insufficient_data`` (n < 2), ``zero_denominator`` (an arm's
    denominators sum to zero), ``zero_variance``, ``zero_control_mean`` (R_c = 0).
    """
    check_alpha(alpha)
    check_alternative(alternative)
    if not (control.is_valid and treatment.is_valid):
        return failed_test(StatsError.INVALID_INPUT, alpha=alpha, alternative=alternative)
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return failed_test(StatsError.INSUFFICIENT_DATA, alpha=alpha, alternative=alternative)
    if control.denominator_sum == 0.0 or treatment.denominator_sum == 0.0:
        return failed_test(StatsError.ZERO_DENOMINATOR, alpha=alpha, alternative=alternative)
    return compare_means(
        control_mean=control.ratio,
        control_mean_variance=ratio_variance(control),
        treatment_mean=treatment.ratio,
        treatment_mean_variance=ratio_variance(treatment),
        degrees_of_freedom=None,
        alpha=alpha,
        alternative=alternative,
    )
