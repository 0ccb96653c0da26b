"""Segment message validation, clock-skew correction and the row <-> message round trip."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.events.normalize import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    ROW_FIELDS,
    SYNTHETIC_EVENT_NAMES,
    EventRejected,
    EventRow,
    format_time,
    normalize,
    parse_time,
    row_to_message,
)
from tests.events.conftest import SECOND, T0

RECEIVED = T0 + 3600 * SECOND


def field(row: EventRow, name: str) -> Any:
    return row[ROW_FIELDS.index(name)]


def rejected(message: object, **kwargs: Any) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        normalize(message, received_at=RECEIVED, **kwargs)
    return caught.value


def iso(us: int) -> str:
    text = format_time(us)
    assert text is not None
    return text


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("message", [[], "track", 3, None])
def test_a_message_must_be_an_object(message: object) -> None:
    assert rejected(message).field is None


@pytest.mark.parametrize("kind", [None, "", "Track", "pageview", 1])
def test_type_must_be_a_segment_type(kind: object) -> None:
    message = {"type": kind, "event": "x", "userId": "u"}
    assert rejected(message).field == "type"


def test_a_batch_message_without_type_is_rejected() -> None:
    assert rejected({"event": "x", "userId": "u"}).field == "type"


def test_single_call_endpoints_imply_the_type() -> None:
    row = normalize({"userId": "u", "name": "Home"}, received_at=RECEIVED, implied_type="page")
    assert field(row, "type") == "page"


def test_single_call_endpoints_refuse_another_type() -> None:
    error = rejected({"type": "track", "event": "x", "userId": "u"}, implied_type="page")
    assert error.field == "type"


@pytest.mark.parametrize("ids", [{}, {"userId": None}, {"userId": "", "anonymousId": ""}])
def test_user_id_or_anonymous_id_is_required(ids: dict[str, Any]) -> None:
    assert rejected({"type": "page", **ids}).field == "userId"


@pytest.mark.parametrize("value", [True, {"id": 1}, ["u"]])
@pytest.mark.parametrize("name", ["userId", "anonymousId", "messageId", "groupId"])
def test_ids_must_be_strings_or_numbers(name: str, value: object) -> None:
    message = {"type": "group", "groupId": "g", "anonymousId": "a", name: value}
    assert rejected(message).field == name


def test_ids_longer_than_1024_characters_are_rejected() -> None:
    assert rejected({"type": "page", "userId": "u" * 1025}).field == "userId"
    row = normalize({"type": "page", "userId": "u" * 1024}, received_at=RECEIVED)
    assert field(row, "user_id") == "u" * 1024


def test_numeric_ids_are_kept_as_strings() -> None:
    message = {
        "type": "group",
        "userId": 42,
        "anonymousId": 1.5,
        "groupId": 7,
        "messageId": 99,
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "user_id") == "42"
    assert field(row, "anonymous_id") == "1.5"
    assert field(row, "group_id") == "7"
    assert field(row, "message_id") == "99"


@pytest.mark.parametrize("event", [None, "", 5, "e" * 513])
def test_track_needs_an_event_name(event: object) -> None:
    message: dict[str, Any] = {"type": "track", "userId": "u"}
    if event is not None:
        message["event"] = event
    assert rejected(message).field == "event"


@pytest.mark.parametrize(
    "ids", [{"userId": "new"}, {"previousId": "old", "anonymousId": "a"}, {"anonymousId": "a"}]
)
def test_alias_needs_previous_id_and_user_id(ids: dict[str, str]) -> None:
    assert rejected({"type": "alias", **ids}).field == "previousId"


def test_group_needs_a_group_id() -> None:
    assert rejected({"type": "group", "userId": "u", "groupId": ""}).field == "groupId"


def test_a_message_of_exactly_32_kb_is_accepted_and_one_byte_more_is_not() -> None:
    message: dict[str, Any] = {"type": "track", "event": "x", "userId": "u", "properties": {}}
    base = len(orjson.dumps({**message, "properties": {"p": ""}}))
    message["properties"] = {"p": "x" * (MAX_EVENT_BYTES - base)}
    assert len(orjson.dumps(message)) == MAX_EVENT_BYTES
    normalize(message, received_at=RECEIVED)
    message["properties"]["p"] += "x"
    error = rejected(message)
    assert error.field is None
    assert "32 KB" in error.detail


@pytest.mark.parametrize("name", ["properties", "traits", "context", "integrations"])
@pytest.mark.parametrize("value", [[1, 2], "text", 3, True])
def test_object_fields_must_be_objects(name: str, value: object) -> None:
    assert rejected({"type": "identify", "userId": "u", name: value}).field == name


@pytest.mark.parametrize("name", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", 1_700_000_000, ""])
def test_times_must_be_iso_8601_strings(name: str, value: object) -> None:
    assert rejected({"type": "page", "userId": "u", name: value}).field == name


@pytest.mark.parametrize("name", ["timestamp", "originalTimestamp", "sentAt"])
def test_times_just_outside_rfc_3339_are_kept_and_shown_clamped(name: str) -> None:
    # Year 1 at +01:00 is year 0 in UTC: stored as given, written as the earliest RFC 3339 time.
    message = {"type": "page", "userId": "u", name: "0001-01-01T00:30:00+01:00"}
    year_1 = parse_time("0001-01-01T00:00:00Z", "t")
    assert year_1 is not None
    assert parse_time(message[name], name) == year_1 - 30 * 60 * SECOND
    out = row_to_message(normalize(message, received_at=RECEIVED))
    assert out[name] == "0001-01-01T00:00:00.000Z"


def test_an_absurd_clock_correction_keeps_the_client_time() -> None:
    message = {
        "type": "page",
        "userId": "u",
        "originalTimestamp": "0001-01-02T00:00:00Z",
        "sentAt": "9999-01-01T00:00:00Z",
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "timestamp") == parse_time("0001-01-02T00:00:00Z", "t")


# --- what a valid message becomes -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SYNTHETIC_EVENT_NAMES))
def test_calls_other_than_track_get_a_synthetic_event_name(kind: str) -> None:
    message = {
        "type": kind,
        "userId": "u",
        "previousId": "p",
        "groupId": "g",
        "event": "ignored",
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "event") == SYNTHETIC_EVENT_NAMES[kind]


def test_a_message_without_message_id_gets_a_fresh_one() -> None:
    message = {"type": "page", "userId": "u"}
    first = field(normalize(message, received_at=RECEIVED), "message_id")
    second = field(normalize(message, received_at=RECEIVED), "message_id")
    assert first
    assert second
    assert first != second


def test_batch_context_applies_and_the_message_context_wins() -> None:
    message = {"type": "page", "userId": "u", "context": {"ip": "10.0.0.1"}}
    row = normalize(
        message, received_at=RECEIVED, batch_context={"ip": "10.0.0.9", "library": {"name": "js"}}
    )
    assert orjson.loads(field(row, "context")) == {"ip": "10.0.0.1", "library": {"name": "js"}}


def test_identify_takes_traits_from_context_traits_as_analytics_js_sends_them() -> None:
    message = {"type": "identify", "userId": "u", "context": {"traits": {"plan": "pro"}}}
    row = normalize(message, received_at=RECEIVED)
    assert orjson.loads(field(row, "traits")) == {"plan": "pro"}


def test_identify_prefers_top_level_traits_over_context_traits() -> None:
    message = {
        "type": "identify",
        "userId": "u",
        "traits": {"plan": "team"},
        "context": {"traits": {"plan": "pro"}},
    }
    row = normalize(message, received_at=RECEIVED)
    assert orjson.loads(field(row, "traits")) == {"plan": "team"}


def test_context_traits_do_not_become_traits_of_a_track() -> None:
    message = {"type": "track", "event": "x", "userId": "u", "context": {"traits": {"a": 1}}}
    assert field(normalize(message, received_at=RECEIVED), "traits") is None


# --- clock-skew correction ------------------------------------------------------------------


def test_sent_at_corrects_the_client_clock() -> None:
    # The client's clock is 10 minutes fast; the event happened 5 s before it was sent.
    sent = RECEIVED + 600 * SECOND
    message = {
        "type": "track",
        "event": "x",
        "userId": "u",
        "originalTimestamp": iso(sent - 5 * SECOND),
        "sentAt": iso(sent),
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "timestamp") == RECEIVED - 5 * SECOND
    assert field(row, "original_timestamp") == sent - 5 * SECOND
    assert field(row, "sent_at") == sent
    assert field(row, "received_at") == RECEIVED


def test_sent_at_corrects_a_timestamp_when_there_is_no_original_timestamp() -> None:
    sent = RECEIVED - 3600 * SECOND  # a slow clock
    message = {
        "type": "page",
        "userId": "u",
        "timestamp": iso(sent - 2 * SECOND),
        "sentAt": iso(sent),
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "timestamp") == RECEIVED - 2 * SECOND
    assert field(row, "original_timestamp") == sent - 2 * SECOND


def test_original_timestamp_is_the_client_time_when_both_are_given() -> None:
    sent = RECEIVED + 100 * SECOND
    message = {
        "type": "page",
        "userId": "u",
        "timestamp": iso(sent - 50 * SECOND),
        "originalTimestamp": iso(sent - 7 * SECOND),
        "sentAt": iso(sent),
    }
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "timestamp") == RECEIVED - 7 * SECOND


def test_a_timestamp_without_sent_at_is_kept_as_given() -> None:
    historical = T0 - 86_400 * 365 * SECOND
    message = {"type": "page", "userId": "u", "timestamp": iso(historical)}
    row = normalize(message, received_at=RECEIVED)
    assert field(row, "timestamp") == historical
    assert field(row, "original_timestamp") == historical


def test_the_batch_sent_at_applies_to_messages_without_their_own() -> None:
    batch_sent = RECEIVED + 60 * SECOND
    message = {"type": "page", "userId": "u", "originalTimestamp": iso(batch_sent - SECOND)}
    row = normalize(message, received_at=RECEIVED, batch_sent_at=batch_sent)
    assert field(row, "timestamp") == RECEIVED - SECOND
    assert field(row, "sent_at") == batch_sent


def test_a_message_sent_at_overrides_the_batch_sent_at() -> None:
    own_sent = RECEIVED + 30 * SECOND
    message = {
        "type": "page",
        "userId": "u",
        "originalTimestamp": iso(own_sent - 4 * SECOND),
        "sentAt": iso(own_sent),
    }
    row = normalize(message, received_at=RECEIVED, batch_sent_at=RECEIVED + 999 * SECOND)
    assert field(row, "timestamp") == RECEIVED - 4 * SECOND


def test_without_client_times_the_event_happened_when_received() -> None:
    row = normalize({"type": "page", "userId": "u"}, received_at=RECEIVED, batch_sent_at=T0)
    assert field(row, "timestamp") == RECEIVED
    assert field(row, "original_timestamp") is None


def test_parse_time_reads_naive_times_as_utc_and_applies_offsets() -> None:
    assert parse_time("2023-11-14T22:13:20", "timestamp") == T0
    assert parse_time("2023-11-14T23:13:20+01:00", "timestamp") == T0
    assert parse_time("2023-11-14T22:13:20.000123Z", "timestamp") == T0 + 123


def test_format_time_writes_milliseconds_unless_microseconds_are_needed() -> None:
    assert format_time(T0 + 5000) == "2023-11-14T22:13:20.005Z"
    assert format_time(T0 + 5001) == "2023-11-14T22:13:20.005001Z"
    assert format_time(None) is None


# --- round trip -----------------------------------------------------------------------------


def test_row_to_message_restores_a_track_message() -> None:
    message = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "anonymousId": "a1",
        "messageId": "m1",
        "properties": {"revenue": 9.5, "items": [1, 2]},
        "context": {"ip": "10.0.0.1"},
        "integrations": {"All": False},
        "category": "shop",
        "version": 2,
    }
    out = row_to_message(normalize(message, received_at=RECEIVED))
    assert out == {
        **message,
        "timestamp": iso(RECEIVED),
        "receivedAt": iso(RECEIVED),
    }


def test_row_to_message_restores_alias_and_group_ids_and_names() -> None:
    alias = row_to_message(
        normalize({"type": "alias", "userId": "new", "previousId": "old"}, received_at=RECEIVED)
    )
    assert (alias["userId"], alias["previousId"]) == ("new", "old")
    assert "event" not in alias
    page = row_to_message(
        normalize({"type": "page", "anonymousId": "a", "name": "Home"}, received_at=RECEIVED)
    )
    assert page["name"] == "Home"


# --- properties -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
)
times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.none() | offsets
).map(datetime.isoformat)
ids = st.text(min_size=1, max_size=40) | st.integers(min_value=0, max_value=2**53)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field that is usually well-formed and sometimes any JSON value at all."""
    return st.one_of(valid, valid, json_values)


any_message = st.fixed_dictionaries(
    {},
    optional={
        "type": maybe(st.sampled_from(EVENT_TYPES)),
        "event": maybe(st.text(max_size=20)),
        "userId": maybe(ids),
        "anonymousId": maybe(ids),
        "messageId": maybe(ids),
        "groupId": maybe(ids),
        "previousId": maybe(ids),
        "name": maybe(st.text(max_size=20)),
        "properties": maybe(json_objects),
        "traits": maybe(json_objects),
        "context": maybe(json_objects),
        "integrations": maybe(json_objects),
        "timestamp": maybe(times),
        "originalTimestamp": maybe(times),
        "sentAt": maybe(times),
        "category": json_values,
        "extraField": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(message=any_message, sent_at=st.none() | times)
def test_normalize_raises_only_event_rejected_and_its_rows_read_back(
    message: dict[str, Any], sent_at: str | None
) -> None:
    try:
        batch_sent_at = parse_time(sent_at, "sentAt")
        row = normalize(message, received_at=RECEIVED, batch_sent_at=batch_sent_at)
    except EventRejected:
        return
    assert len(row) == len(ROW_FIELDS)
    out = row_to_message(row)  # every accepted row can be shown and exported again
    assert out["type"] == message.get("type")


valid_message = st.builds(
    lambda kind, event, user, anon, message_id, properties: {
        "type": kind,
        "event": event,
        "userId": user,
        "anonymousId": anon,
        "messageId": message_id,
        "previousId": "previous",
        "groupId": "group",
        "properties": properties,
    },
    st.sampled_from(EVENT_TYPES),
    st.text(min_size=1, max_size=30),
    ids,
    st.none() | ids,
    ids,
    json_objects,
)


@settings(max_examples=200, deadline=None)
@given(message=valid_message)
def test_valid_messages_keep_ids_event_and_properties_through_the_round_trip(
    message: dict[str, Any],
) -> None:
    out = row_to_message(normalize(message, received_at=RECEIVED))
    assert out["messageId"] == str(message["messageId"])
    assert out["userId"] == str(message["userId"])
    assert out.get("anonymousId") == (
        None if message["anonymousId"] is None else str(message["anonymousId"])
    )
    if message["type"] == "track":
        assert out["event"] == message["event"]
    assert out.get("properties", {}) == message["properties"]
    assert out["timestamp"] == out["receivedAt"] == format_time(RECEIVED)
