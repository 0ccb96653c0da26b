"""Sample-ratio mismatch: did the arms get the traffic split they were configured for?

A mismatch (say 50.0/50.0 configured, 50.8/49.2 observed over 100,000 visitors) means the
assignment or the logging is broken and the experiment's results cannot be trusted (Fabijan et
al. 2019, "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD). The check
is Pearson's chi-square goodness-of-fit test of the observed counts against the expected ones
(Pearson 1900; e.g. Agresti 2013, "Categorical Data Analysis", 3rd ed., Sec. 1.5):

    E_i = N w_i / sum(w),   X^2 = sum_i (O_i - E_i)^2 / E_i,   p = P(chi^2_{k - 1} >= X^2)

with N the total count and k the number of arms. The usual threshold is strict (p < 0.001):
the test runs continuously on large counts, where a real mismatch gives a minute p-value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from dataclasses import dataclass

from scipy import stats as scipy_stats

from nexus.experiments.stats.results import StatsError

DEFAULT_SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SRMResult:
    """The chi-square test of observed arm counts against the configured weights.

    ``mismatch`` is ``p_value < threshold``; ``expected`` holds the expected counts.
    """

    statistic: float | None
    p_value: float | None
    degrees_of_freedom: int | None
    expected: tuple[float, ...] | None
    threshold: float
    mismatch: bool
    error: StatsError | None = None


def srm(
    observed: Collection[int],
    weights: Collection[float],
    *,
    threshold: float = DEFAULT_SRM_THRESHOLD,
) -> SRMResult:
    """Pearson's chi-square goodness-of-fit of ``observed`` counts against ``weights``.

    ``weights`` are the configured traffic shares in any unit (percentages, fractions); they
    are configuration, so a bad set (fewer than two, a length other than ``observed``'s, a
    non-positive or non-finite weight) raises ``ValueError``. Equals
    ``scipy.stats.chisquare(observed, f_exp=expected)``.

    Errors: ``invalid_input`` (a negative, non-integral or non-finite count),
    ``insufficient_data`` (no units at all).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    if len(weights) < 2 or len(weights) != len(observed):
        raise ValueError("need one weight per arm and at least two arms")
    if not all(math.isfinite(weight) and weight > 0 for weight in weights):
        raise ValueError("weights must be finite and positive")

    def failed(error: StatsError) -> SRMResult:
        return SRMResult(None, None, None, None, threshold, mismatch=False, error=error)

    if not all(
        isinstance(count, numbers.Real)
        and math.isfinite(count)
        and count >= 0
        and count == int(count)
        for count in observed
    ):
        return failed(StatsError.INVALID_INPUT)
    total = float(sum(observed))
    if total == 0:
        return failed(StatsError.INSUFFICIENT_DATA)
    weight_total = math.fsum(weights)
    expected = tuple(total * weight / weight_total for weight in weights)
    statistic = math.fsum(
        (count - expect) ** 2 / expect for count, expect in zip(observed, expected, strict=True)
    )
    degrees_of_freedom = len(observed) - 1
    p_value = float(scipy_stats.chi2.sf(statistic, degrees_of_freedom))
    return SRMResult(
        statistic=statistic,
        p_value=p_value,
        degrees_of_freedom=degrees_of_freedom,
        expected=expected,
        threshold=threshold,
        mismatch=p_value < threshold,
    )
