"""Fixed-horizon frequentist tests: Welch's t-test and the two-proportion z-test.

Both compare treatment against control from per-arm sufficient statistics and return a
:class:`~nexus.experiments.stats.results.TestResult` with the absolute effect, the relative
effect (lift, delta-method interval), the statistic and the p-value. They are valid when the
sample size is fixed in advance; for looking at an experiment while it runs use
:func:`nexus.experiments.stats.sequential.sequential`.
"""

from __future__ import annotations

import math

from nexus.experiments.stats._inference import (
    check_alpha,
    check_alternative,
    compare_means,
    failed_test,
    welch_satterthwaite,
)
from nexus.experiments.stats.results import Alternative, StatsError, TestResult
from nexus.experiments.stats.summaries import ProportionStats, SampleStats

MINIMUM_UNITS_PER_ARM = 2
"""An arm needs two units for a sample variance."""


def welch(
    control: SampleStats,
    treatment: SampleStats,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Welch's unequal-variance t-test of ``mean(treatment) - mean(control)``.

    With s_i^2 the unbiased sample variances and v_i = s_i^2 / n_i (Welch 1947):

        t  = (mean_t - mean_c) / sqrt(v_c + v_t)
        df = Welch-Satterthwaite (see ``_inference.welch_satterthwaite``)
        CI = (mean_t - mean_c) -+ t_{df, 1 - alpha/2} sqrt(v_c + v_t)     (two-sided)

    It equals ``scipy.stats.ttest_ind(treatment, control, equal_var=False)`` and that result's
    ``confidence_interval(1 - alpha)``. The relative effect is the lift over the control mean
    with a delta-method standard error and the same t quantile (as GrowthBook's gbstats).

    Errors: ``invalid_input``, ``insufficient_data`` (an arm with n < 2), ``zero_variance``
    (both arms constant), ``zero_control_mean`` (absolute effect kept, relative dropped).
    """
    check_alpha(alpha)
    check_alternative(alternative)
    if not (control.is_valid and treatment.is_valid):
        return failed_test(StatsError.INVALID_INPUT, alpha=alpha, alternative=alternative)
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return failed_test(
            StatsError.INSUFFICIENT_DATA,
            alpha=alpha,
            alternative=alternative,
            control_mean=control.mean if control.n else None,
            treatment_mean=treatment.mean if treatment.n else None,
        )
    control_mean_variance = control.variance / control.n
    treatment_mean_variance = treatment.variance / treatment.n
    degrees_of_freedom: float | None = None
    if control_mean_variance + treatment_mean_variance > 0.0:
        degrees_of_freedom = welch_satterthwaite(
            control_mean_variance, control.n, treatment_mean_variance, treatment.n
        )
    return compare_means(
        control_mean=control.mean,
        control_mean_variance=control_mean_variance,
        treatment_mean=treatment.mean,
        treatment_mean_variance=treatment_mean_variance,
        degrees_of_freedom=degrees_of_freedom,
        alpha=alpha,
        alternative=alternative,
    )


def two_proportions(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """The two-proportion z-test of ``p_t - p_c``: pooled for the p-value, unpooled for the CI.

    p-value: under H0 both arms share one rate, estimated by pooling,
    p = (x_c + x_t) / (n_c + n_t), so (the classical pooled z statistic, e.g. Fleiss, Levin &
    Paik 2003, "Statistical Methods for Rates and Proportions", 3rd ed.; statsmodels
    ``proportions_ztest`` with its default ``prop_var=False``):

        z = (p_t - p_c) / sqrt(p (1 - p) (1 / n_c + 1 / n_t))

    Confidence interval: away from H0 the rates differ, so the Wald interval uses the unpooled
    standard error (the Wald interval for a difference of proportions, Agresti 2013,
    "Categorical Data Analysis", 3rd ed., Sec. 3.1; statsmodels
    ``confint_proportions_2indep(method="wald", compare="diff")``):

        (p_t - p_c) -+ z_{1 - alpha/2} sqrt(p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t)

    The relative effect is the lift ``p_t / p_c - 1`` with a delta-method interval on the
    unpooled variances. The two standard errors differ, so the p-value and the interval can
    disagree at the margin (p just below alpha with the CI just touching 0, or the reverse).

    Errors: ``invalid_input``, ``insufficient_data`` (n < 2 in an arm), ``zero_variance``
    (both arms at 0% or both at 100%, or one at each), ``zero_control_mean`` (control at 0%:
    absolute effect kept, relative dropped).
    """
    check_alpha(alpha)
    check_alternative(alternative)
    if not (control.is_valid and treatment.is_valid):
        return failed_test(StatsError.INVALID_INPUT, alpha=alpha, alternative=alternative)
    if min(control.n, treatment.n) < MINIMUM_UNITS_PER_ARM:
        return failed_test(
            StatsError.INSUFFICIENT_DATA,
            alpha=alpha,
            alternative=alternative,
            control_mean=control.proportion if control.n else None,
            treatment_mean=treatment.proportion if treatment.n else None,
        )
    control_rate, treatment_rate = control.proportion, treatment.proportion
    pooled_rate = (control.successes + treatment.successes) / (control.n + treatment.n)
    pooled_standard_error = math.sqrt(
        pooled_rate * (1.0 - pooled_rate) * (1.0 / control.n + 1.0 / treatment.n)
    )
    return compare_means(
        control_mean=control_rate,
        control_mean_variance=control_rate * (1.0 - control_rate) / control.n,
        treatment_mean=treatment_rate,
        treatment_mean_variance=treatment_rate * (1.0 - treatment_rate) / treatment.n,
        degrees_of_freedom=None,
        alpha=alpha,
        alternative=alternative,
        test_standard_error=pooled_standard_error,
    )
