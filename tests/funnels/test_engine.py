"""The funnel engine equals the brute-force reference, and the semantics pinned by examples."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.funnels import engine
from nexus.funnels.engine import (
    NO_TIME,
    EventMatrix,
    Exclusion,
    FunnelSpec,
    Mode,
    PersonPaths,
    Step,
    dropped_at,
    paths,
    summarize,
)
from tests.funnels.reference import (
    Event,
    RefPath,
    furthest_step_by_enumeration,
    reference_dropped_at,
    reference_paths,
    reference_summary,
)

MODES: tuple[Mode, ...] = ("ordered", "strict", "unordered")
EPOCH_2023 = 1_700_000_000_000_000  # a realistic timestamp offset, in microseconds

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def matrix(events: Sequence[Event], labels: Sequence[str | None] | None = None) -> EventMatrix:
    """The engine's input for ``events`` (``labels=None``: no breakdown)."""
    return EventMatrix(
        person=np.array([e.person for e in events], dtype=np.int64),
        ts=np.array([e.t for e in events], dtype=np.int64),
        mask=np.array([e.mask for e in events], dtype=np.int64),
        breakdown=None if labels is None else np.array([e.code for e in events], dtype=np.int32),
        breakdown_labels=() if labels is None else tuple(labels),
    )


def as_reference(result: PersonPaths) -> dict[int, RefPath]:
    """The engine's paths in the reference's shape, checking the layout on the way."""
    k = result.matched.shape[1]
    assert result.times.shape == result.matched.shape == (result.n_persons, k)
    assert result.start.shape == result.breakdown.shape == (result.n_persons,)
    assert result.person.tolist() == sorted(set(result.person.tolist()))
    assert np.all(result.times[~result.matched] == NO_TIME)
    out = {}
    for i, person in enumerate(result.person.tolist()):
        times = tuple(
            t if m else None
            for t, m in zip(result.times[i].tolist(), result.matched[i].tolist(), strict=True)
        )
        out[person] = RefPath(times, int(result.start[i]), int(result.breakdown[i]))
    return out


def plain(value: Any) -> Any:
    """Dataclasses to dicts and tuples to lists, for comparing with the reference's dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def assert_close(actual: Any, expected: Any, where: str = "") -> None:
    """Structural equality, floats compared with ``pytest.approx``."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), where
    else:
        assert actual == expected, where


# --------------------------------------------------------------------------------------------
# Random funnels and event streams
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    spec: FunnelSpec
    events: list[Event]
    labels: tuple[str | None, ...] | None


def _signed(bits: int) -> int:
    return bits - (1 << 64) if bits >= 1 << 63 else bits


@st.composite
def scenarios(
    draw: st.DrawFn,
    modes: Sequence[Mode] = MODES,
    *,
    optional: bool = True,
    exclusions: bool = True,
    breakdown: bool = True,
    max_events: int = 30,
    max_persons: int = 6,
) -> Scenario:
    """A funnel over a few conditions and a small, tie-heavy event stream in random order.

    Conditions are random bit positions (bit 63, the sign bit, included); an event matches a
    random subset of them, possibly none. Timestamps come from 16 values so ties are common.
    """
    mode = draw(st.sampled_from(modes))
    bits = draw(st.lists(st.integers(0, 63), min_size=1, max_size=4, unique=True))
    condition = st.sampled_from(bits)
    k = draw(st.integers(2, 5))
    steps = [Step(draw(condition))]
    for _ in range(k - 1):
        steps.append(
            Step(draw(condition), optional=optional and mode == "ordered" and draw(st.booleans()))
        )
    excl: list[Exclusion] = []
    if exclusions:
        for _ in range(draw(st.integers(0, 2))):
            after = draw(st.integers(0, k - 2))
            before = draw(st.integers(after + 1, k - 1))
            excl.append(Exclusion(draw(condition), after, before))
    spec = FunnelSpec(tuple(steps), mode, draw(st.integers(1, 12)), tuple(excl))

    persons = draw(
        st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=max_persons, unique=True)
    )
    offset = draw(st.sampled_from([0, EPOCH_2023]))
    labels: tuple[str | None, ...] | None = None
    if breakdown and draw(st.booleans()):
        labels = tuple(
            draw(st.lists(st.sampled_from([None, "", "a", "b", "B"]), min_size=1, max_size=4))
        )
    code = st.just(-1) if labels is None else st.integers(0, len(labels) - 1)
    event = st.builds(
        Event,
        person=st.sampled_from(persons),
        t=st.integers(0, 15).map(lambda t: t + offset),
        mask=st.sets(condition).map(lambda s: _signed(sum(1 << b for b in s))),
        code=code,
    )
    # Draw the size first: left to itself, hypothesis favours very short lists.
    n_events = draw(st.integers(0, max_events))
    return Scenario(spec, draw(st.lists(event, min_size=n_events, max_size=n_events)), labels)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(scenarios())
def test_paths_equal_the_reference(case: Scenario) -> None:
    expected = reference_paths(case.spec, case.events, case.labels or ())
    assert as_reference(paths(case.spec, matrix(case.events, case.labels))) == expected


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.data())
def test_row_order_does_not_matter(case: Scenario, data: st.DataObject) -> None:
    """Any permutation, and the store's (person, time) order with ties in any order, agree."""
    baseline = as_reference(paths(case.spec, matrix(case.events, case.labels)))
    shuffled = data.draw(st.permutations(case.events))
    assert as_reference(paths(case.spec, matrix(shuffled, case.labels))) == baseline
    store_order = sorted(shuffled, key=lambda e: (e.person, e.t))
    assert as_reference(paths(case.spec, matrix(store_order, case.labels))) == baseline


@settings(max_examples=250, deadline=None)
@given(
    scenarios(),
    st.one_of(st.none(), st.integers(1, 7)),
    st.integers(-20, 20),
    st.integers(1, 6),
)
def test_summary_equals_the_reference(
    case: Scenario, interval_us: int | None, origin_us: int, bins: int
) -> None:
    labels = case.labels or ()
    result = paths(case.spec, matrix(case.events, case.labels))
    actual = summarize(
        case.spec, result, labels=labels, interval_us=interval_us, origin_us=origin_us, bins=bins
    )
    expected = reference_summary(
        case.spec,
        reference_paths(case.spec, case.events, labels),
        labels,
        interval_us=interval_us,
        origin_us=origin_us,
        bins=bins,
    )
    assert_close(plain(actual), plain(expected))


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.data())
def test_dropped_at_equals_the_reference(case: Scenario, data: st.DataObject) -> None:
    step = data.draw(st.integers(1, len(case.spec.steps) - 1))
    result = paths(case.spec, matrix(case.events, case.labels))
    reference = reference_paths(case.spec, case.events, case.labels or ())
    expected = reference_dropped_at(case.spec, reference, step)
    assert dropped_at(case.spec, result, step).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    scenarios(
        ("ordered",),
        optional=False,
        exclusions=False,
        breakdown=False,
        max_events=14,
        max_persons=3,
    )
)
def test_greedy_path_reaches_as_far_as_any_chain(case: Scenario) -> None:
    """The greedy definition itself: the furthest step equals the best of all event chains."""
    result = as_reference(paths(case.spec, matrix(case.events)))
    conditions = [s.condition for s in case.spec.steps]
    for person in {e.person for e in case.events}:
        evs = [e for e in case.events if e.person == person]
        expected = furthest_step_by_enumeration(conditions, case.spec.window_us, evs)
        if expected is None:
            assert person not in result
        else:
            reached = [j for j, t in enumerate(result[person].times) if t is not None]
            assert reached == list(range(expected + 1))


@settings(max_examples=300, deadline=None)
@given(scenarios(("ordered",), optional=False, exclusions=False, max_events=60, max_persons=8))
def test_plain_ordered_funnels_equal_the_reference(case: Scenario) -> None:
    """Ordered funnels without optional steps or exclusions take a leaner path of their own."""
    expected = reference_paths(case.spec, case.events, case.labels or ())
    assert as_reference(paths(case.spec, matrix(case.events, case.labels))) == expected


@pytest.mark.parametrize("seed", range(6))
def test_plain_ordered_path_equals_the_general_one_on_larger_input(seed: int) -> None:
    """Enough events for both searches of the lean path (running counts and binary search),
    against the general ordered path on the same moments."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2_000, 20_000))
    bits = rng.choice(64, size=4, replace=False).tolist()
    k = int(rng.integers(2, 7))
    steps = tuple(Step(int(rng.choice(bits))) for _ in range(k))
    spec = FunnelSpec(steps, "ordered", int(rng.choice([1, 50, 400, 2**63 - 1])))
    chosen = rng.random((n, len(bits))) < rng.uniform(0.05, 0.6, size=len(bits))
    weights = [_signed(1 << b) for b in bits]
    mask = np.array([sum(w for w, c in zip(weights, row, strict=True) if c) for row in chosen])
    labels = ("b", None, "a")
    events = EventMatrix(
        person=rng.integers(0, int(rng.integers(1, 3_000)), size=n) * 7_919 - 10**6,
        ts=rng.integers(0, 2_000, size=n) + int(rng.choice([0, EPOCH_2023, 2**62])),
        mask=mask.astype(np.int64),
        breakdown=rng.integers(0, len(labels), size=n).astype(np.int32),
        breakdown_labels=labels,
    )
    keep_bits = sum(1 << b for b in bits)
    mo = engine._moments(events, keep_bits=keep_bits, start_bits=1 << steps[0].condition)
    lean, general = engine._ordered_plain(spec, mo), engine._ordered(spec, mo)
    for field in ("person", "matched", "times", "start", "breakdown"):
        a, b = getattr(lean, field), getattr(general, field)
        assert a.dtype == b.dtype, field
        assert np.array_equal(a, b), field
    assert as_reference(paths(spec, events)) == as_reference(general)


# --------------------------------------------------------------------------------------------
# Examples that pin the semantics
# --------------------------------------------------------------------------------------------

A, B, C, X = 0, 1, 2, 3  # condition bits: three step events and one to exclude


def ev(person: int, t: int, *conditions: int, code: int = -1) -> Event:
    return Event(person, t, sum(1 << c for c in conditions), code)


def funnel(
    *conditions: int,
    mode: Mode = "ordered",
    window_us: int = 100,
    optional: Sequence[int] = (),
    exclusions: Sequence[Exclusion] = (),
) -> FunnelSpec:
    steps = tuple(Step(c, optional=i in optional) for i, c in enumerate(conditions))
    return FunnelSpec(steps, mode, window_us, tuple(exclusions))


def run(
    spec: FunnelSpec, events: Sequence[Event], labels: Sequence[str | None] | None = None
) -> dict[int, RefPath]:
    """Each person's path, in the reference's shape."""
    return as_reference(paths(spec, matrix(events, labels)))


def test_equal_timestamps_never_chain() -> None:
    assert run(funnel(A, B), [ev(1, 5, A), ev(1, 5, B)]) == {1: RefPath((5, None), 5, -1)}


def test_one_event_never_fills_two_ordered_steps() -> None:
    assert run(funnel(A, B), [ev(1, 5, A, B)]) == {1: RefPath((5, None), 5, -1)}


def test_rows_may_come_in_any_order() -> None:
    assert run(funnel(A, B, C), [ev(7, 3, C), ev(7, 2, B), ev(7, 1, A)]) == {
        7: RefPath((1, 2, 3), 1, -1)
    }


def test_the_window_boundary_is_inclusive() -> None:
    events = [ev(1, 0, A), ev(1, 10, B)]
    assert run(funnel(A, B, window_us=10), events)[1].times == (0, 10)
    assert run(funnel(A, B, window_us=9), events)[1].times == (0, None)


def test_strict_mode_is_broken_by_any_intervening_event() -> None:
    events = [ev(1, 0, A), ev(1, 1), ev(1, 2, B)]  # the event at 1 matches nothing
    assert run(funnel(A, B, mode="strict"), events)[1].times == (0, None)
    assert run(funnel(A, B, mode="ordered"), events)[1].times == (0, 2)
    assert run(funnel(A, B, mode="strict"), [ev(1, 0, A), ev(1, 2, B)])[1].times == (0, 2)


def test_an_optional_step_is_counted_but_not_required() -> None:
    spec = funnel(A, B, C, optional=[1])
    result = run(spec, [ev(1, 0, A), ev(1, 2, C), ev(2, 0, A), ev(2, 1, B), ev(2, 2, C)])
    assert result[1].times == (0, None, 2)  # converted without the optional step
    assert result[2].times == (0, 1, 2)
    # After the last reached required step, the optional step may fill the rest of the window.
    assert run(spec, [ev(3, 0, A), ev(3, 5, B)])[3].times == (0, 5, None)


def test_an_exclusion_discards_a_path_but_a_later_clean_path_counts() -> None:
    spec = funnel(A, B, exclusions=[Exclusion(X, 0, 1)])
    events = [ev(1, 0, A), ev(1, 1, X), ev(1, 2, B), ev(1, 3, A), ev(1, 4, B)]
    assert run(spec, events) == {1: RefPath((3, 4), 3, -1)}
    assert run(spec, events[:3]) == {}  # no clean path: not in the funnel


def test_unordered_mode_counts_conditions_in_any_order() -> None:
    spec = funnel(A, B, C, mode="unordered", window_us=5)
    assert run(spec, [ev(1, 0, C), ev(1, 1, A), ev(1, 2, B)])[1] == RefPath((0, 1, 2), 0, -1)
    # One event may satisfy several steps; an event outside the window does not count.
    assert run(spec, [ev(2, 0, A, B), ev(2, 9, C)])[2] == RefPath((0, 0, None), 0, -1)


def test_breakdown_comes_from_the_start_event() -> None:
    labels = ["chrome", "firefox"]
    events = [ev(1, 0, A, code=1), ev(1, 1, B, code=0)]
    assert run(funnel(A, B), events, labels)[1].code == 1


def test_tied_starts_take_the_smallest_label() -> None:
    labels = ["b", None, "a"]
    events = [ev(1, 0, A, code=0), ev(1, 0, A, code=2), ev(1, 0, A, code=1), ev(1, 1, B, code=0)]
    assert run(funnel(A, B), events, labels)[1].code == 1  # None sorts first


def test_dropped_at_lists_who_left_at_a_step() -> None:
    spec = funnel(A, B, C)
    events = [ev(1, 0, A), ev(2, 0, A), ev(2, 1, B), ev(3, 0, A), ev(3, 1, B), ev(3, 2, C)]
    result = paths(spec, matrix(events))
    assert dropped_at(spec, result, 1).tolist() == [1]
    assert dropped_at(spec, result, 2).tolist() == [2]
    with pytest.raises(ValueError, match="step"):
        dropped_at(spec, result, 0)


def test_summary_counts_conversions_and_time_to_convert() -> None:
    spec = funnel(A, B, C)
    events = [ev(1, 0, A), ev(2, 0, A), ev(2, 1, B), ev(3, 0, A), ev(3, 1, B), ev(3, 4, C)]
    overall = summarize(spec, paths(spec, matrix(events))).overall
    assert [s.count for s in overall.steps] == [3, 2, 1]
    assert [s.dropped for s in overall.steps] == [0, 1, 1]
    assert overall.steps[2].conversion_from_start == pytest.approx(1 / 3)
    assert overall.steps[2].conversion_from_previous == pytest.approx(1 / 2)
    assert overall.time_to_convert.median_us == 4.0
    assert overall.time_to_convert.median_to_step_us == (0.0, 1.0, 4.0)


def test_trend_buckets_persons_by_start_time() -> None:
    spec = funnel(A, B)
    events = [ev(1, 3, A), ev(1, 4, B), ev(2, 12, A), ev(3, 15, A), ev(3, 16, B)]
    trend = summarize(spec, paths(spec, matrix(events)), interval_us=10, origin_us=0).overall.trend
    assert [(b.start_us, b.entered, b.converted) for b in trend] == [(0, 1, 1), (10, 2, 1)]
    assert trend[1].conversion_rate == 0.5


def test_summary_breakdown_groups_by_label_none_first() -> None:
    spec = funnel(A, B)
    labels = ["web", None, "web"]  # two codes share a label: one group
    events = [ev(1, 0, A, code=0), ev(2, 0, A, code=1), ev(3, 0, A, code=2), ev(3, 1, B, code=1)]
    summary = summarize(spec, paths(spec, matrix(events, labels)), labels=tuple(labels))
    assert [(label, t.entered) for label, t in summary.breakdown] == [(None, 1), ("web", 2)]


@pytest.mark.parametrize(
    ("steps", "mode", "exclusions", "message"),
    [
        ((Step(A),), "ordered", (), "2 to 20 steps"),
        (tuple(Step(A) for _ in range(21)), "ordered", (), "2 to 20 steps"),
        ((Step(A, optional=True), Step(B)), "ordered", (), "step 0"),
        ((Step(A), Step(B, optional=True)), "strict", (), "only allowed in ordered"),
        ((Step(A), Step(B, optional=True)), "unordered", (), "only allowed in ordered"),
        ((Step(A), Step(B)), "ordered", (Exclusion(X, 1, 1),), "after_step < before_step"),
        ((Step(A), Step(B)), "ordered", (Exclusion(X, 0, 2),), "before_step < 2"),
        ((Step(A), Step(64)), "ordered", (), "condition bit"),
        ((Step(A), Step(B)), "sideways", (), "mode"),
    ],
)
def test_invalid_specs_are_refused(
    steps: tuple[Step, ...], mode: Mode, exclusions: tuple[Exclusion, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FunnelSpec(steps, mode, 10, exclusions)


def test_a_non_positive_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window_us"):
        funnel(A, B, window_us=0)


def test_breakdown_codes_must_index_the_labels() -> None:
    with pytest.raises(ValueError, match="breakdown codes"):
        paths(funnel(A, B), matrix([ev(1, 0, A, code=2)], ["only"]))


def test_no_events_give_an_empty_funnel() -> None:
    spec = funnel(A, B)
    result = paths(spec, matrix([]))
    assert result.n_persons == 0
    assert result.matched.shape == (0, 2)
    overall = summarize(spec, result).overall
    assert overall.entered == 0
    assert overall.time_to_convert.median_us is None


def test_a_window_of_forever_does_not_overflow() -> None:
    spec = funnel(A, B, window_us=2**63 - 1)
    events = [ev(1, EPOCH_2023, A), ev(1, EPOCH_2023 + 10**12, B)]
    assert run(spec, events)[1].times == (EPOCH_2023, EPOCH_2023 + 10**12)


def test_event_columns_must_have_equal_length() -> None:
    with pytest.raises(ValueError, match="equal length"):
        EventMatrix(
            person=np.zeros(2, dtype=np.int64),
            ts=np.zeros(3, dtype=np.int64),
            mask=np.zeros(2, dtype=np.int64),
        )
