"""What every analysis returns: error codes, effect estimates and the frequentist test result.

Data never raises. An analysis that cannot be carried out on the data it was given (too few
units, no variance, a zero control mean for a relative effect, impossible counts) returns its
result with ``error`` set to a :class:`StatsError` code and every field it could not compute set
to ``None``; fields that could be computed are still filled (a zero control mean leaves the
absolute effect and its test in place and only drops the relative one). Parameters (``alpha``,
``tuning_n``, priors, thresholds) are configuration, validated where the experiment is set up:
an impossible one raises :class:`ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Alternative = Literal["two-sided", "greater", "less"]
"""The alternative hypothesis about the treatment-minus-control effect, named as SciPy names
them: ``"greater"`` is H1: treatment > control, ``"less"`` is H1: treatment < control."""

ALTERNATIVES: tuple[Alternative, ...] = ("two-sided", "greater", "less")


class StatsError(StrEnum):
    """Why (part of) a result is missing. A ``StrEnum``: each compares equal to its string."""

    INSUFFICIENT_DATA = "insufficient_data"
    """Fewer than two units in an arm (or no units at all, for SRM)."""
    ZERO_VARIANCE = "zero_variance"
    """The standard error of the difference is zero: every unit has the same value."""
    ZERO_CONTROL_MEAN = "zero_control_mean"
    """The control mean is zero, so the relative effect (lift) is undefined."""
    ZERO_DENOMINATOR = "zero_denominator"
    """A ratio metric's denominator sums to zero in an arm, so the ratio is undefined."""
    INVALID_INPUT = "invalid_input"
    """Statistics no data set can have: negative or non-integral counts, successes above the
    number of trials, non-finite sums, a sum of squares below what the sum implies, p-values
    outside [0, 1]."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its standard error and its interval.

    For a frequentist result the interval is the (1 - alpha) confidence interval (or, for the
    sequential test, the always-valid confidence sequence at this look); for a Bayesian one it
    is the (1 - alpha) equal-tailed credible interval and ``standard_error`` is the posterior
    standard deviation. One-sided alternatives give a one-sided interval: ``"greater"`` has
    ``ci_upper = inf``, ``"less"`` has ``ci_lower = -inf`` (as SciPy's
    ``TtestResult.confidence_interval`` does).
    """

    value: float
    standard_error: float
    ci_lower: float
    ci_upper: float


@dataclass(frozen=True, slots=True)
class TestResult:
    """A two-arm frequentist comparison of treatment against control.

    ``absolute`` estimates ``treatment_mean - control_mean``; ``relative`` estimates the lift
    ``(treatment_mean - control_mean) / |control_mean|`` (equal to ``treatment / control - 1``
    for a positive control mean) with a delta-method interval. ``statistic`` and ``p_value``
    test H0: no difference in means. ``degrees_of_freedom`` is the Welch-Satterthwaite value for
    t-tests and ``None`` for z-tests (normal reference distribution).
    """

    __test__ = False  # a result type, not a pytest test class

    control_mean: float | None
    treatment_mean: float | None
    absolute: Estimate | None
    relative: Estimate | None
    statistic: float | None
    p_value: float | None
    degrees_of_freedom: float | None
    alpha: float
    alternative: Alternative
    error: StatsError | None = None

    @property
    def significant(self) -> bool:
        """Whether H0 is rejected at ``alpha`` (``p_value <= alpha``)."""
        return self.p_value is not None and self.p_value <= self.alpha
