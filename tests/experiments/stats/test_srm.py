"""The sample-ratio-mismatch check equals SciPy's chi-square goodness-of-fit test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from nexus.experiments.stats import StatsError, srm


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 1_000_000), st.floats(0.01, 100.0)), min_size=2, max_size=8
    )
)
def test_srm_matches_scipy_chisquare(data: list[tuple[int, float]]) -> None:
    observed = [count for count, _ in data]
    weights = [weight for _, weight in data]
    assume(sum(observed) > 0)
    result = srm(observed, weights)
    expected = [sum(observed) * weight / sum(weights) for weight in weights]
    reference = stats.chisquare(observed, f_exp=expected)
    assert result.error is None
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-6, abs=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12)
    assert result.degrees_of_freedom == len(observed) - 1
    assert result.mismatch == (reference.pvalue < 0.001)


def test_a_broken_split_is_flagged_and_a_fair_one_is_not() -> None:
    broken = srm([50_800, 49_200], [50, 50])  # 50.8 / 49.2 over 100,000 visitors
    fair = srm([50_100, 49_900], [50, 50])
    assert broken.mismatch
    assert broken.p_value is not None
    assert broken.p_value < 1e-6
    assert not fair.mismatch
    assert fair.expected == (50_000.0, 50_000.0)


def test_weights_may_be_percentages_or_fractions_and_the_threshold_is_configurable() -> None:
    as_percentages = srm([1_030, 2_000, 970], [25, 50, 25])
    as_fractions = srm([1_030, 2_000, 970], [0.25, 0.5, 0.25])
    assert as_percentages.p_value == pytest.approx(as_fractions.p_value, rel=1e-12)
    lenient = srm([1_030, 2_000, 970], [25, 50, 25], threshold=0.5)
    assert lenient.p_value is not None
    assert lenient.mismatch == (lenient.p_value < 0.5)
    assert not as_percentages.mismatch


def test_numpy_counts_are_accepted() -> None:
    counts = np.array([5_000, 5_300], dtype=np.int64)
    assert srm(counts, [50, 50]).p_value == pytest.approx(srm([5_000, 5_300], [50, 50]).p_value)


def test_srm_degenerate_data() -> None:
    assert srm([0, 0], [50, 50]).error == StatsError.INSUFFICIENT_DATA
    assert srm([10, -1], [50, 50]).error == StatsError.INVALID_INPUT
    assert srm([10, 2.5], [50, 50]).error == StatsError.INVALID_INPUT  # type: ignore[list-item]
    assert not srm([0, 0], [50, 50]).mismatch


@pytest.mark.parametrize(
    ("weights", "threshold"),
    [([50], 0.001), ([50, 50, 0], 0.001), ([50, -50], 0.001), ([50, math.nan], 0.001),
     ([50, 50], 0.0)],
)  # fmt: skip
def test_bad_configuration_raises(weights: list[float], threshold: float) -> None:
    observed = [10] * len(weights) if len(weights) > 1 else [10, 10]
    with pytest.raises(ValueError, match=r"weight|threshold"):
        srm(observed, weights, threshold=threshold)
