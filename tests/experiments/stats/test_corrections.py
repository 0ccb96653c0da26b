"""Holm and Benjamini-Hochberg equal statsmodels' multipletests, and are monotone."""

from __future__ import annotations

import gc
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from nexus.experiments.stats import StatsError, benjamini_hochberg, holm

P_VALUES = st.lists(
    st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.0125, 0.025, 0.05, 1.0])),
    min_size=1,
    max_size=40,
)
METHODS = [(holm, "holm"), (benjamini_hochberg, "fdr_bh")]


def statsmodels_multipletests(
    p_values: list[float], alpha: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' rejections and adjusted p-values.

    Its Holm branch runs ``gc.collect()`` on every call, a tenth of a second under pytest's
    heap; the collection changes no result, so it is skipped here.
    """
    with mock.patch.object(gc, "collect", return_value=0):
        rejected, adjusted, _, _ = multipletests(p_values, alpha=alpha, method=method)
    return rejected, adjusted


@pytest.mark.parametrize(("correction", "statsmodels_method"), METHODS)
@settings(max_examples=150, deadline=None)
@given(p_values=P_VALUES, alpha=st.sampled_from([0.01, 0.05, 0.1]))
def test_matches_statsmodels(
    correction: object, statsmodels_method: str, p_values: list[float], alpha: float
) -> None:
    result = correction(p_values, alpha=alpha)  # type: ignore[operator]
    rejected, adjusted = statsmodels_multipletests(p_values, alpha, statsmodels_method)
    assert result.error is None
    np.testing.assert_allclose(result.adjusted_p_values, adjusted, rtol=1e-12, atol=1e-15)
    assert result.rejected == tuple(bool(r) for r in rejected)


@pytest.mark.parametrize(("correction", "statsmodels_method"), METHODS)
@settings(max_examples=100, deadline=None)
@given(p_values=P_VALUES)
def test_adjusted_p_values_are_monotone_and_never_smaller(
    correction: object, statsmodels_method: str, p_values: list[float]
) -> None:
    del statsmodels_method
    adjusted = correction(p_values).adjusted_p_values  # type: ignore[operator]
    for raw_i, adjusted_i in zip(p_values, adjusted, strict=True):
        assert raw_i <= adjusted_i <= 1.0
    order = np.argsort(p_values, kind="stable")
    assert np.all(np.diff(np.asarray(adjusted)[order]) >= 0)


def test_textbook_example() -> None:
    # Four tests; Holm: 0.01 * 4 = 0.04 passes, 0.02 * 3 = 0.06 fails and stops.
    # BH: the largest i with p_(i) <= 0.05 i / 4 is i = 3 (0.03 <= 0.0375).
    p_values = [0.03, 0.01, 0.2, 0.02]
    holm_result = holm(p_values)
    bh_result = benjamini_hochberg(p_values)
    assert holm_result.adjusted_p_values == pytest.approx((0.06, 0.04, 0.2, 0.06))
    assert holm_result.rejected == (False, True, False, False)
    assert bh_result.adjusted_p_values == pytest.approx((0.04, 0.04, 0.2, 0.04))
    assert bh_result.rejected == (True, True, False, True)


def test_empty_and_invalid_p_values() -> None:
    empty = holm([])
    assert empty.adjusted_p_values == ()
    assert empty.error is None
    assert benjamini_hochberg([0.1, 1.5]).error == StatsError.INVALID_INPUT
    assert holm([0.1, math.nan]).error == StatsError.INVALID_INPUT
    assert holm([0.1, -0.01]).rejected == ()
