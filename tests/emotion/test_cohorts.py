"""Cohort bootstrap intervals and resonance, against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nexus.emotion.models.cohorts import (
    NEUTRAL_RESONANCE,
    RESONANCE_DIMENSIONS,
    CohortStat,
    aggregate,
    resonance,
)
from nexus.emotion.models.taxonomy import EKMAN, VAD


def by_key(stats: list[CohortStat]) -> dict[tuple[str, str, str], CohortStat]:
    return {(s.group, s.kind, s.dimension): s for s in stats}


def width(stat: CohortStat) -> float:
    assert stat.lower is not None
    assert stat.upper is not None
    return stat.upper - stat.lower


# --------------------------------------------------------------------------------------------
# Bootstrap aggregates
# --------------------------------------------------------------------------------------------


def test_interval_contains_the_true_mean() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal([0.3, -0.2, 0.0], 0.25, size=(200, 3))
    stats = aggregate({"paid": values}, dimensions=VAD, seed=7)
    for stat, true in zip(stats, [0.3, -0.2, 0.0], strict=True):
        assert stat.error is None
        assert stat.count == 200
        assert stat.lower is not None
        assert stat.upper is not None
        assert stat.lower < true < stat.upper


def test_intervals_cover_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(6)
    groups = {f"g{i}": rng.normal(0.1, 0.3, size=(60, 1)) for i in range(300)}
    stats = aggregate(groups, dimensions=["valence"], seed=1, resamples=400)
    covered = [
        s.lower is not None and s.upper is not None and s.lower < 0.1 < s.upper for s in stats
    ]
    # 95% nominal; the percentile interval runs slightly short at n = 60. Binomial sd ~ 1.3%.
    assert 0.89 < np.mean(covered) < 0.99


def test_interval_agrees_with_normal_theory_on_a_large_sample() -> None:
    values = np.random.default_rng(2).normal(0.0, 0.3, size=(2000, 1))
    (stat,) = aggregate({"a": values}, dimensions=["valence"], seed=0, resamples=2000)
    half_width = 1.959964 * values.std(ddof=1) / math.sqrt(len(values))
    assert width(stat) / 2 == pytest.approx(half_width, rel=0.1)
    assert stat.mean == pytest.approx(float(values.mean()))


def test_interval_narrows_with_more_data() -> None:
    rng = np.random.default_rng(3)
    stats = by_key(
        aggregate(
            {"few": rng.normal(0, 0.3, size=(30, 1)), "many": rng.normal(0, 0.3, size=(3000, 1))},
            dimensions=["valence"],
            seed=0,
        )
    )
    assert width(stats["many", "mean", "valence"]) < width(stats["few", "mean", "valence"]) / 5


def test_same_seed_same_intervals_other_seed_other_intervals() -> None:
    groups = {"a": np.random.default_rng(4).uniform(-1, 1, size=(50, 3))}
    assert aggregate(groups, dimensions=VAD, seed=1) == aggregate(groups, dimensions=VAD, seed=1)
    assert aggregate(groups, dimensions=VAD, seed=1) != aggregate(groups, dimensions=VAD, seed=2)


def test_a_groups_interval_does_not_depend_on_the_other_groups() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-1, 1, size=(40, 3)), rng.uniform(-1, 1, size=(60, 3))
    alone = aggregate({"a": a}, dimensions=VAD, seed=3)
    together = aggregate({"b": b, "a": a}, dimensions=VAD, seed=3)
    assert [s for s in together if s.group == "a"] == alone


def test_single_reading_collapses_the_interval_and_says_so() -> None:
    (stat,) = aggregate({"one": [[0.4]]}, dimensions=["valence"], seed=0)
    assert (stat.mean, stat.lower, stat.upper, stat.count) == (0.4, 0.4, 0.4, 1)
    assert stat.error == "single_observation"


def test_empty_group_has_no_estimate() -> None:
    stats = aggregate({"none": np.empty((0, 3))}, dimensions=VAD, seed=0)
    assert all(s.mean is None and s.lower is None and s.count == 0 for s in stats)
    assert all(s.error == "no_observations" for s in stats)


def test_non_finite_values_are_dropped_per_dimension() -> None:
    values = np.asarray([[0.1, np.nan], [0.3, 0.5], [0.5, np.inf]])
    stats = by_key(aggregate({"g": values}, dimensions=["valence", "arousal"], seed=0))
    assert stats["g", "mean", "valence"].count == 3
    assert stats["g", "mean", "valence"].mean == pytest.approx(0.3)
    assert stats["g", "mean", "arousal"].count == 1
    assert stats["g", "mean", "arousal"].error == "single_observation"


def test_label_shares_are_bootstrapped_indicator_means() -> None:
    labels = np.asarray([3] * 60 + [6] * 30 + [0] * 10 + [-1] * 5)
    stats = aggregate({}, dimensions=VAD, seed=0, labels={"g": labels})
    shares = {s.dimension: s for s in stats}
    assert list(shares) == list(EKMAN)
    assert all(s.kind == "share" and s.count == 100 for s in stats)
    assert shares["joy"].mean == pytest.approx(0.6)
    assert shares["fear"].mean == 0.0
    assert shares["fear"].upper == 0.0
    assert sum(s.mean or 0.0 for s in stats) == pytest.approx(1.0)
    joy = shares["joy"]
    assert joy.lower is not None
    assert joy.upper is not None
    assert joy.lower < 0.6 < joy.upper


def test_shapes_that_do_not_match_the_dimensions_are_refused() -> None:
    with pytest.raises(ValueError, match="expected shape"):
        aggregate({"g": np.zeros((4, 2))}, dimensions=VAD, seed=0)


def test_one_dimension_may_be_given_as_a_flat_array() -> None:
    (stat,) = aggregate({"g": [0.1, 0.2, 0.3]}, dimensions=["valence"], seed=0)
    assert stat.mean == pytest.approx(0.2)


@settings(max_examples=80, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 40), st.just(2)),
        elements=st.floats(-1.0, 1.0, allow_nan=False),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_interval_lies_within_the_data(values: np.ndarray, seed: int) -> None:
    for column, stat in enumerate(
        aggregate({"g": values}, dimensions=["x", "y"], seed=seed, resamples=200)
    ):
        assert stat.lower is not None
        assert stat.upper is not None
        tolerance = 1e-12
        assert values[:, column].min() - tolerance <= stat.lower <= stat.upper
        assert stat.upper <= values[:, column].max() + tolerance


# --------------------------------------------------------------------------------------------
# Resonance
# --------------------------------------------------------------------------------------------


def centred(vector: np.ndarray) -> np.ndarray:
    return np.concatenate([2 * vector[:8] - 1, vector[8:]])


states = st.tuples(
    hnp.arrays(np.float64, 8, elements=st.floats(0.0, 1.0)),
    # Rounded so no value is so tiny that its square underflows.
    hnp.arrays(np.float64, 3, elements=st.floats(-1.0, 1.0).map(lambda v: round(v, 6))),
).map(np.concatenate)


def opposite(vector: np.ndarray) -> np.ndarray:
    return np.concatenate([1 - vector[:8], -vector[8:]])


@given(state=states)
def test_identical_vectors_resonate_fully_and_opposite_ones_not_at_all(state: np.ndarray) -> None:
    if not np.any(centred(state)):
        assert resonance(state, state) == pytest.approx(NEUTRAL_RESONANCE)
        return
    assert resonance(state, state) == pytest.approx(1.0)
    assert resonance(state, opposite(state)) == pytest.approx(0.0, abs=1e-9)


@given(state=states, profile=states)
def test_resonance_is_bounded_and_symmetric(state: np.ndarray, profile: np.ndarray) -> None:
    value = resonance(state, profile)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(resonance(profile, state))


@given(state=states, profile=states, ignored=st.sets(st.integers(0, 10), max_size=10))
def test_missing_profile_entries_are_left_out(
    state: np.ndarray, profile: np.ndarray, ignored: set[int]
) -> None:
    kept = [i for i in range(11) if i not in ignored]
    a, b = centred(state)[kept], centred(profile)[kept]
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    expected = (1 + a @ b / norm) / 2 if norm > 0 else NEUTRAL_RESONANCE
    with_gaps = profile.copy()
    with_gaps[list(ignored)] = np.nan
    assert resonance(state, with_gaps) == pytest.approx(expected, abs=1e-6)


def test_matching_profile_beats_opposing_profile() -> None:
    joyful = np.asarray([0.9, 0.6, 0.05, 0.3, 0.05, 0.05, 0.05, 0.7, 0.8, 0.5, 0.4])
    wants_joy = np.full(len(RESONANCE_DIMENSIONS), np.nan)
    wants_joy[[0, 8]] = [1.0, 0.9]
    wants_sadness = np.full(len(RESONANCE_DIMENSIONS), np.nan)
    wants_sadness[[4, 8]] = [1.0, -0.9]
    assert resonance(joyful, wants_joy) > 0.9
    assert resonance(joyful, wants_sadness) < 0.5


def test_mild_and_intense_versions_of_one_emotion_resonate_fully() -> None:
    intense = np.asarray([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.8, 0.6, 0.0])
    mild = np.asarray([0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.16, 0.12, 0.0])
    assert resonance(mild, intense) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "state",
    [np.asarray([0.5] * 8 + [0.0] * 3), np.full(11, np.nan)],
    ids=["neutral", "unknown"],
)
def test_no_direction_gives_neutral_resonance(state: np.ndarray) -> None:
    assert resonance(state, np.full(11, 0.9)) == NEUTRAL_RESONANCE


def test_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        resonance(np.zeros(10), np.zeros(11))
