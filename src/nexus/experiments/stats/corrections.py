"""Multiple-comparison corrections: Holm-Bonferroni (FWER) and Benjamini-Hochberg (FDR).

An experiment with several treatment arms or several metrics tests many hypotheses at once;
at alpha = 0.05 each, twenty true nulls give about one false positive. Both procedures take the
m raw p-values and return monotone adjusted p-values (reject H_i at level alpha exactly when
its adjusted p-value is at most alpha, Wright 1992, "Adjusted P-values for simultaneous
inference", Biometrics 48(4)) and the rejections themselves. With p_(1) <= ... <= p_(m) sorted:

Holm 1979, "A simple sequentially rejective multiple test procedure", Scandinavian Journal of
Statistics 6(2), controls the family-wise error rate. Step down: reject H_(1), H_(2), ... while
p_(i) <= alpha / (m - i + 1); stop at the first that fails. Adjusted:

    p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))

Benjamini & Hochberg 1995, "Controlling the false discovery rate", JRSS B 57(1), controls the
false discovery rate (independent or positively dependent tests). Step up: with k the largest
i such that p_(i) <= (i / m) alpha, reject H_(1), ..., H_(k). Adjusted:

    p~_(i) = min(1, min_{j >= i} m p_(j) / j)

Ties are harmless: both adjustments give tied p-values the same adjusted value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from nexus.experiments.stats._inference import check_alpha
from nexus.experiments.stats.results import StatsError

CorrectionMethod = Literal["holm", "benjamini-hochberg"]


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    """Adjusted p-values and rejections at ``alpha``, in the order the p-values were given."""

    adjusted_p_values: tuple[float, ...]
    rejected: tuple[bool, ...]
    alpha: float
    method: CorrectionMethod
    error: StatsError | None = None


def _prepare(
    p_values: Collection[float], alpha: float, method: CorrectionMethod
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]] | CorrectionResult:
    """The p-values as an array with their ascending order, or a failed result."""
    check_alpha(alpha)
    if not all(
        isinstance(p, numbers.Real) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in p_values
    ):
        return CorrectionResult((), (), alpha, method, StatsError.INVALID_INPUT)
    values = np.asarray(p_values, dtype=np.float64)
    return values, np.argsort(values, kind="stable")


def _in_given_order(
    order: npt.NDArray[np.intp],
    adjusted_sorted: npt.NDArray[np.float64],
    rejected_sorted: npt.NDArray[np.bool_],
) -> tuple[tuple[float, ...], tuple[bool, ...]]:
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    rejected = np.empty_like(rejected_sorted)
    rejected[order] = rejected_sorted
    return tuple(float(p) for p in adjusted), tuple(bool(r) for r in rejected)


def holm(p_values: Collection[float], *, alpha: float = 0.05) -> CorrectionResult:
    """Holm-Bonferroni step-down adjustment (module docstring); matches statsmodels' ``holm``.

    Errors: ``invalid_input`` (a p-value outside [0, 1] or not finite).
    """
    prepared = _prepare(p_values, alpha, "holm")
    if isinstance(prepared, CorrectionResult):
        return prepared
    values, order = prepared
    count = values.size
    ordered = values[order]
    multipliers = np.arange(count, 0, -1, dtype=np.float64)  # m - i + 1 for i = 1..m
    adjusted_sorted = np.minimum(np.maximum.accumulate(ordered * multipliers), 1.0)
    fails = ordered > alpha / multipliers
    first_failure = int(np.argmax(fails)) if fails.any() else count
    rejected_sorted = np.arange(count) < first_failure
    adjusted, rejected = _in_given_order(order, adjusted_sorted, rejected_sorted)
    return CorrectionResult(adjusted, rejected, alpha, "holm")


def benjamini_hochberg(p_values: Collection[float], *, alpha: float = 0.05) -> CorrectionResult:
    """Benjamini-Hochberg step-up adjustment (module docstring); matches statsmodels' ``fdr_bh``.

    Errors: ``invalid_input`` (a p-value outside [0, 1] or not finite).
    """
    prepared = _prepare(p_values, alpha, "benjamini-hochberg")
    if isinstance(prepared, CorrectionResult):
        return prepared
    values, order = prepared
    count = values.size
    ordered = values[order]
    fractions = np.arange(1, count + 1, dtype=np.float64) / count  # i / m
    adjusted_sorted = np.minimum(np.minimum.accumulate((ordered / fractions)[::-1])[::-1], 1.0)
    passes = np.flatnonzero(ordered <= fractions * alpha)
    last_pass = int(passes[-1]) if passes.size else -1
    rejected_sorted = np.arange(count) <= last_pass
    adjusted, rejected = _in_given_order(order, adjusted_sorted, rejected_sorted)
    return CorrectionResult(adjusted, rejected, alpha, "benjamini-hochberg")
