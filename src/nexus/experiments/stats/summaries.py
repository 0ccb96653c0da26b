"""Per-arm sufficient statistics: the aggregates an analysis needs, never the raw rows.

Each is what one SQL ``GROUP BY arm`` produces (``COUNT(*)``, ``SUM(y)``, ``SUM(y * y)``, ...),
so the experiment service can analyse an arm of millions of units from one row. Variances and
covariances are recovered with the unbiased (n - 1) estimators

    s_y^2  = (sum y^2 - (sum y)^2 / n) / (n - 1)
    s_xy   = (sum x y - (sum x)(sum y) / n) / (n - 1)

(the "textbook" one-pass formulas of Chan, Golub & LeVeque 1983, "Algorithms for computing
the sample variance: analysis and recommendations", The American Statistician 37(3), Sec. 1).
That subtraction loses digits when the mean is large against the spread: the variance carries
a relative error of about eps * (mean / sd)^2 (eps = 2.2e-16), negligible for business metrics
(1e-10 at mean / sd = 1,000) but not for, say, raw epoch timestamps; centre such values before
aggregating. A centred sum of squares at or below ``ROUNDING_TOLERANCE`` times the raw sum of
squares is taken to be rounding error and treated as exactly zero (constant data), so a
constant metric is reported as ``zero_variance`` rather than as a huge t statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ROUNDING_TOLERANCE = 1e-13
"""Centred sums of squares at or below this fraction of the raw sum of squares count as zero."""


def zero_within_rounding(centred: float, raw_sum_of_squares: float) -> float:
    """``centred``, or 0.0 when it is at most rounding error of sums as large as the raw one.

    Also clamps the small negative values that cancellation can produce.
    """
    if centred <= ROUNDING_TOLERANCE * abs(raw_sum_of_squares):
        return 0.0
    return centred


def centred_sum_of_squares(n: int, total: float, total_of_squares: float) -> float:
    """``sum (y - mean)^2 = sum y^2 - (sum y)^2 / n``, clamped to zero within rounding."""
    return zero_within_rounding(total_of_squares - total * total / n, total_of_squares)


def centred_sum_of_products(n: int, sum_a: float, sum_b: float, sum_of_products: float) -> float:
    """``sum (a - mean_a)(b - mean_b) = sum a b - (sum a)(sum b) / n``."""
    return sum_of_products - sum_a * sum_b / n


def _is_count(n: int) -> bool:
    return isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 0


def _finite(*values: float) -> bool:
    return all(math.isfinite(value) for value in values)


def _consistent_squares(n: int, total: float, total_of_squares: float) -> bool:
    """Cauchy-Schwarz: ``(sum y)^2 <= n sum y^2``; allows rounding on the order of the tolerance."""
    if total_of_squares < 0:
        return False
    if n == 0:
        return total == 0 and total_of_squares == 0
    return total * total / n <= total_of_squares * (1 + 1e-9) + 1e-300


def _as_vector(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"expected a one-dimensional array of values, got shape {vector.shape}")
    return vector


@dataclass(frozen=True, slots=True)
class SampleStats:
    """A continuous metric in one arm: unit count, sum and sum of squares of the unit values."""

    n: int
    sum: float
    sum_of_squares: float

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> SampleStats:
        """The statistics of a one-dimensional array of per-unit values."""
        vector = _as_vector(values)
        return cls(
            n=int(vector.size),
            sum=float(vector.sum()),
            sum_of_squares=float(np.dot(vector, vector)),
        )

    @classmethod
    def from_moments(cls, n: int, mean: float, variance: float) -> SampleStats:
        """The statistics of ``n`` units with this mean and unbiased (n - 1) sample variance."""
        return cls(n=n, sum=n * mean, sum_of_squares=(n - 1) * variance + n * mean * mean)

    @property
    def mean(self) -> float:
        """The sample mean (NaN without units)."""
        return self.sum / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """The unbiased sample variance (NaN below two units)."""
        if self.n < 2:
            return math.nan
        return centred_sum_of_squares(self.n, self.sum, self.sum_of_squares) / (self.n - 1)

    @property
    def is_valid(self) -> bool:
        """Whether some data set has these statistics."""
        return (
            _is_count(self.n)
            and _finite(self.sum, self.sum_of_squares)
            and _consistent_squares(self.n, self.sum, self.sum_of_squares)
        )


@dataclass(frozen=True, slots=True)
class ProportionStats:
    """A binary metric (converted or not) in one arm: units and how many converted."""

    n: int
    successes: int

    @property
    def proportion(self) -> float:
        """The observed conversion rate (NaN without units)."""
        return self.successes / self.n if self.n > 0 else math.nan

    @property
    def is_valid(self) -> bool:
        """Whether ``0 <= successes <= n`` with both integral."""
        return _is_count(self.n) and _is_count(self.successes) and self.successes <= self.n

    def as_sample_stats(self) -> SampleStats:
        """The same arm as a 0/1-valued continuous metric (sum of squares = sum = successes)."""
        return SampleStats(
            n=self.n, sum=float(self.successes), sum_of_squares=float(self.successes)
        )


@dataclass(frozen=True, slots=True)
class RatioStats:
    """A ratio metric in one arm, e.g. revenue per session with the user as the unit.

    Each unit ``i`` contributes a numerator ``y_i`` (revenue) and a denominator ``x_i``
    (sessions); the metric is ``sum y / sum x``. The cross products carry the correlation
    between numerator and denominator that the delta method needs.
    """

    n: int
    numerator_sum: float
    numerator_sum_of_squares: float
    denominator_sum: float
    denominator_sum_of_squares: float
    numerator_denominator_sum_of_products: float

    @classmethod
    def from_values(cls, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> RatioStats:
        """The statistics of paired per-unit numerators and denominators."""
        numerator, denominator = _as_vector(numerators), _as_vector(denominators)
        if numerator.shape != denominator.shape:
            raise ValueError("numerators and denominators must have the same length")
        return cls(
            n=int(numerator.size),
            numerator_sum=float(numerator.sum()),
            numerator_sum_of_squares=float(np.dot(numerator, numerator)),
            denominator_sum=float(denominator.sum()),
            denominator_sum_of_squares=float(np.dot(denominator, denominator)),
            numerator_denominator_sum_of_products=float(np.dot(numerator, denominator)),
        )

    @property
    def ratio(self) -> float:
        """``sum y / sum x`` (NaN when the denominator sums to zero)."""
        return self.numerator_sum / self.denominator_sum if self.denominator_sum else math.nan

    @property
    def is_valid(self) -> bool:
        """Whether some data set has these statistics."""
        return (
            _is_count(self.n)
            and _finite(
                self.numerator_sum,
                self.numerator_sum_of_squares,
                self.denominator_sum,
                self.denominator_sum_of_squares,
                self.numerator_denominator_sum_of_products,
            )
            and _consistent_squares(self.n, self.numerator_sum, self.numerator_sum_of_squares)
            and _consistent_squares(self.n, self.denominator_sum, self.denominator_sum_of_squares)
        )


@dataclass(frozen=True, slots=True)
class CupedStats:
    """A metric with its pre-exposure covariate in one arm, for CUPED.

    ``y`` is the metric measured during the experiment, ``x`` the same unit's pre-exposure
    covariate (usually the same metric over the weeks before the unit entered the experiment).
    """

    n: int
    metric_sum: float
    metric_sum_of_squares: float
    covariate_sum: float
    covariate_sum_of_squares: float
    metric_covariate_sum_of_products: float

    @classmethod
    def from_values(cls, metric: npt.ArrayLike, covariate: npt.ArrayLike) -> CupedStats:
        """The statistics of paired per-unit metric and pre-exposure covariate values."""
        y, x = _as_vector(metric), _as_vector(covariate)
        if y.shape != x.shape:
            raise ValueError("metric and covariate must have the same length")
        return cls(
            n=int(y.size),
            metric_sum=float(y.sum()),
            metric_sum_of_squares=float(np.dot(y, y)),
            covariate_sum=float(x.sum()),
            covariate_sum_of_squares=float(np.dot(x, x)),
            metric_covariate_sum_of_products=float(np.dot(y, x)),
        )

    @property
    def metric(self) -> SampleStats:
        """The metric alone, as for an unadjusted analysis."""
        return SampleStats(self.n, self.metric_sum, self.metric_sum_of_squares)

    @property
    def is_valid(self) -> bool:
        """Whether some data set has these statistics."""
        return (
            _is_count(self.n)
            and _finite(
                self.metric_sum,
                self.metric_sum_of_squares,
                self.covariate_sum,
                self.covariate_sum_of_squares,
                self.metric_covariate_sum_of_products,
            )
            and _consistent_squares(self.n, self.metric_sum, self.metric_sum_of_squares)
            and _consistent_squares(self.n, self.covariate_sum, self.covariate_sum_of_squares)
        )
