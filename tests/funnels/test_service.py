"""Funnel reports end to end below the API: events in a real DuckDB store, the store's scan
and filters, identity, the engine and the report shapes, checked against the brute-force
reference run on the same events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.core.errors import InvalidInput
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.normalize import normalize
from nexus.events.store import WorkspaceBatch
from nexus.funnels import service
from nexus.funnels.models import FunnelDefinition, Interval
from tests.funnels.reference import Event, reference_paths, reference_summary

WS = "ws_test"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
US = 1_000_000
NAMES = ("A", "B", "C")


def _message(person: str, event: str, second: int, plan: str | None, index: int) -> dict[str, Any]:
    properties = {} if plan is None else {"plan": plan}
    return {
        "type": "track",
        "event": event,
        "anonymousId": person,
        "messageId": f"m{index}",
        "timestamp": (T0 + timedelta(seconds=second)).isoformat(),
        "properties": properties,
    }


def _store(tmp_path: Path, messages: list[dict[str, Any]]) -> DuckDBEventStore:
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    rows = [normalize(m, received_at=0) for m in messages]
    store.append([WorkspaceBatch(WS, rows)])
    return store


SPAN = service.Period(T0 - timedelta(days=1), T0 + timedelta(days=1))

events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["p0", "p1", "p2", "p3"]),
        st.sampled_from(NAMES),
        st.integers(0, 12),  # few distinct seconds: plenty of ties
        st.sampled_from([None, "free", "pro"]),
    ),
    max_size=30,
)
funnel_strategy = st.fixed_dictionaries(
    {
        "steps": st.lists(st.sampled_from(NAMES), min_size=2, max_size=4),
        "mode": st.sampled_from(["ordered", "strict", "unordered"]),
        "window_seconds": st.integers(1, 14),
        "pro_filter_on": st.sampled_from([None, 0, 1]),
    }
)


def _definition(funnel: dict[str, Any]) -> FunnelDefinition:
    steps: list[dict[str, Any]] = [{"event": name} for name in funnel["steps"]]
    if funnel["pro_filter_on"] is not None:
        steps[funnel["pro_filter_on"]]["filters"] = [
            {"property": "plan", "op": "eq", "value": "pro"}
        ]
    return FunnelDefinition.model_validate(
        {"steps": steps, "mode": funnel["mode"], "window_seconds": funnel["window_seconds"]}
    )


def _reference_counts(
    events: list[tuple[str, str, int, str | None]], definition: FunnelDefinition
) -> tuple[list[int], dict[str | None, list[int]]]:
    """Step counts, overall and by plan, by the reference implementation."""
    spec, _ = service._spec(definition)
    labels: list[str | None] = [None, "free", "pro"]
    ref_events = []
    for person, name, second, plan in events:
        mask = 0
        for index, step in enumerate(definition.steps):
            wants_pro = any(f.value == "pro" for f in step.filters)
            if step.event == name and (not wants_pro or plan == "pro"):
                mask |= 1 << index
        ref_events.append(
            Event(int(person[1:]), (int(T0.timestamp()) + second) * US, mask, labels.index(plan))
        )
    summary = reference_summary(spec, reference_paths(spec, ref_events, labels), labels)
    overall = [s["count"] for s in summary["overall"]["steps"]]
    by_plan = {label: [s["count"] for s in t["steps"]] for label, t in summary["breakdown"]}
    return overall, by_plan


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=events_strategy, funnel=funnel_strategy)
def test_report_equals_the_reference_on_stored_events(
    tmp_path_factory: pytest.TempPathFactory,
    events: list[tuple[str, str, int, str | None]],
    funnel: dict[str, Any],
) -> None:
    messages = [_message(p, n, s, plan, i) for i, (p, n, s, plan) in enumerate(events)]
    store = _store(tmp_path_factory.mktemp("store"), messages)
    try:
        definition = _definition(funnel)
        report = service.report(
            store, workspace_id=WS, definition=definition, span=SPAN, breakdown="plan"
        )
    finally:
        store.close()
    overall, by_plan = _reference_counts(events, definition)
    assert [s.count for s in report.steps] == overall
    assert {b.value: [s.count for s in b.steps] for b in report.breakdown} == by_plan


def test_identified_visitor_counts_once_across_devices(tmp_path: Path) -> None:
    """Two devices of one customer: anonymous landing on each, then identify, then purchase."""
    messages = [
        _message("phone", "A", 0, None, 1),
        _message("laptop", "A", 1, None, 2),
        {"type": "identify", "anonymousId": "phone", "userId": "ana", "messageId": "i1",
         "timestamp": (T0 + timedelta(seconds=2)).isoformat()},
        {"type": "identify", "anonymousId": "laptop", "userId": "ana", "messageId": "i2",
         "timestamp": (T0 + timedelta(seconds=3)).isoformat()},
        {"type": "track", "event": "B", "userId": "ana", "messageId": "b1",
         "timestamp": (T0 + timedelta(seconds=4)).isoformat()},
    ]  # fmt: skip
    store = _store(tmp_path, messages)
    definition = FunnelDefinition.model_validate({"steps": [{"event": "A"}, {"event": "B"}]})
    try:
        retro = service.report(store, workspace_id=WS, definition=definition, span=SPAN)
        forward = service.report(
            store, workspace_id=WS, definition=definition, span=SPAN, identity="forward"
        )
    finally:
        store.close()
    assert [s.count for s in retro.steps] == [1, 1]  # one person, converted
    # From identification on only: the anonymous landings stay two other persons.
    assert [s.count for s in forward.steps] == [2, 0]


def test_dropped_people_are_listed_by_id_with_pages(tmp_path: Path) -> None:
    messages = [_message(f"v{i}", "A", i, None, i) for i in range(5)]
    messages.append(_message("v2", "B", 10, None, 99))
    store = _store(tmp_path, messages)
    definition = FunnelDefinition.model_validate({"steps": [{"event": "A"}, {"event": "B"}]})
    try:
        first = service.dropped_people(
            store, workspace_id=WS, definition=definition, span=SPAN, step=1, limit=3
        )
        assert first.items == ["v0", "v1", "v3"]
        rest = service.dropped_people(
            store,
            workspace_id=WS,
            definition=definition,
            span=SPAN,
            step=1,
            limit=3,
            cursor=first.next_cursor,
        )
    finally:
        store.close()
    assert rest.items == ["v4"]
    assert rest.next_cursor is None


def test_trend_and_time_to_convert_in_seconds(tmp_path: Path) -> None:
    messages = [
        _message("x", "A", 0, None, 1),
        _message("x", "B", 30, None, 2),
        _message("y", "A", 86_400, None, 3),
    ]
    store = _store(tmp_path, messages)
    definition = FunnelDefinition.model_validate({"steps": [{"event": "A"}, {"event": "B"}]})
    span = service.period(T0, T0 + timedelta(days=3), interval="day")
    try:
        report = service.report(
            store, workspace_id=WS, definition=definition, span=span, interval="day"
        )
    finally:
        store.close()
    assert report.time_to_convert.median_seconds == 30.0
    assert [(p.start, p.entered, p.converted) for p in report.trend] == [
        (T0, 1, 1),
        (T0 + timedelta(days=1), 1, 0),
    ]


def test_an_unusable_regex_is_the_callers_error(tmp_path: Path) -> None:
    store = _store(tmp_path, [_message("x", "A", 0, "pro", 1)])
    # Python's re accepts a backreference; RE2 (DuckDB, ClickHouse) does not.
    definition = FunnelDefinition.model_validate(
        {
            "steps": [
                {"event": "A", "filters": [{"property": "plan", "op": "regex", "value": r"(a)\1"}]},
                {"event": "B"},
            ]
        }
    )
    try:
        with pytest.raises(InvalidInput):
            service.report(store, workspace_id=WS, definition=definition, span=SPAN)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("start", "end", "interval"),
    [
        (T0, T0, None),  # empty period
        (T0, T0 - timedelta(days=1), None),  # reversed
        (T0, T0 + timedelta(days=4 * 366), None),  # too long
        (T0, T0 + timedelta(days=365), "hour"),  # too many trend points
        # No start, and an end so early the default period would begin before year 1
        # (schemathesis found it as a 500).
        (None, datetime(1, 1, 1, tzinfo=UTC), None),
    ],
)
def test_bad_periods_are_refused(
    start: datetime | None, end: datetime, interval: Interval | None
) -> None:
    with pytest.raises(InvalidInput):
        service.period(start, end, interval=interval)
