"""Segment messages in, validated and normalized event rows out (pure: no I/O).

The rules follow Segment's HTTP Tracking API (https://segment.com/docs/connections/sources/
catalog/libraries/server/http-api/) so that unmodified Segment and RudderStack SDKs work:

* ``type`` is one of track, page, screen, identify, alias, group (the single-call endpoints
  imply it); every message needs ``userId`` or ``anonymousId`` (numbers are accepted and kept
  as strings, as the SDKs coerce them);
* ``track`` needs ``event``, ``alias`` needs ``previousId`` and ``userId``, ``group`` needs
  ``groupId``;
* one message may be at most 32 KB of JSON, a batch at most 500 KB;
* a message without ``messageId`` gets one from the server (it then cannot be deduplicated
  across client retries, which is why every SDK sends one).

Clock skew is corrected as Segment documents it: when the client says when it sent the message
(``sentAt``) and when the event happened by its own clock (``originalTimestamp``, or
``timestamp`` when only that is given), the stored ``timestamp`` is
``receivedAt - (sentAt - originalTimestamp)`` -- the client's delay between the event and the
send, measured on the client's clock, applied to the server's clock. Without ``sentAt`` an
explicit ``timestamp`` is kept as given (historical imports), and without any client time the
event happened at ``receivedAt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from nexus.core.ids import new_id

MAX_EVENT_BYTES: Final = 32 * 1024
MAX_BATCH_BYTES: Final = 500 * 1024
MAX_ID_LENGTH: Final = 1024
MAX_NAME_LENGTH: Final = 512

EVENT_TYPES: Final = ("track", "page", "screen", "identify", "alias", "group")
# The event name stored for calls that are not ``track``: funnels and exports can select them
# like any other event ("$page" with a filter on ``name`` or ``properties.path``).
SYNTHETIC_EVENT_NAMES: Final = {
    "page": "$page",
    "screen": "$screen",
    "identify": "$identify",
    "alias": "$alias",
    "group": "$group",
}
_KNOWN_FIELDS: Final = frozenset(
    {
        "type",
        "event",
        "userId",
        "anonymousId",
        "messageId",
        "properties",
        "traits",
        "context",
        "integrations",
        "timestamp",
        "sentAt",
        "originalTimestamp",
        "receivedAt",
        "name",
        "category",
        "groupId",
        "previousId",
        "writeKey",
    }
)
_US: Final = 1_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)
_MIN_US: Final = -62_135_596_800 * _US  # 0001-01-01T00:00:00Z
_MAX_US: Final = 253_402_300_800 * _US - 1  # 9999-12-31T23:59:59.999999Z

# Column order of an event row everywhere (journal, store, export).
ROW_FIELDS: Final = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "name",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "extra",
)


class EventRejected(ValueError):
    """One message is invalid: ``field`` names the offending field (``None`` = whole message)."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message of a batch that was not accepted, by its index in the batch."""

    index: int
    detail: str
    field: str | None


EventRow = list[Any]
"""One normalized event, values in :data:`ROW_FIELDS` order; times are microseconds since the
epoch (UTC), JSON objects are serialized JSON text."""


def parse_time(value: object, field: str) -> int | None:
    """An RFC 3339 / ISO 8601 string as microseconds since the epoch (naive = UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventRejected(f"{field} must be an ISO 8601 date-time string", field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventRejected(
            f"{field} is not an ISO 8601 date-time: {value[:40]!r}", field
        ) from None
    # Local time minus offset, in integers: an offset may carry an instant just past year 1 or
    # 9999, which a datetime cannot hold but an integer can (format_time clamps for display).
    offset = parsed.utcoffset()
    delta = parsed.replace(tzinfo=None) - _NAIVE_EPOCH - (offset or timedelta(0))
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def format_time(us: int | None) -> str | None:
    """Microseconds since the epoch as RFC 3339 UTC (``2026-11-21T10:00:00.123Z``)."""
    if us is None:
        return None
    moment = _EPOCH + timedelta(microseconds=min(max(us, _MIN_US), _MAX_US))
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    micros = moment.microsecond
    return f"{text}.{micros // 1000:03d}Z" if micros % 1000 == 0 else f"{text}.{micros:06d}Z"


def _identifier(message: Mapping[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EventRejected(f"{field} must be a string", field)
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_ID_LENGTH:
        raise EventRejected(f"{field} is longer than {MAX_ID_LENGTH} characters", field)
    return text


def _text(message: Mapping[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventRejected(f"{field} must be a string", field)
    if len(value) > MAX_NAME_LENGTH:
        raise EventRejected(f"{field} is longer than {MAX_NAME_LENGTH} characters", field)
    return value


def _object(message: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventRejected(f"{field} must be a JSON object", field)
    return value


def _json(value: Mapping[str, Any] | None) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _event_name(message: Mapping[str, Any], kind: str) -> str:
    if kind != "track":
        return SYNTHETIC_EVENT_NAMES[kind]
    event = _text(message, "event")
    if not event:
        raise EventRejected("a track message needs an event name", "event")
    return event


def _times(
    message: Mapping[str, Any], received_at: int, batch_sent_at: int | None
) -> tuple[int, int | None, int | None]:
    """(corrected timestamp, original timestamp, sentAt): see the module docstring."""
    original = parse_time(message.get("originalTimestamp"), "originalTimestamp")
    explicit = parse_time(message.get("timestamp"), "timestamp")
    sent_at = parse_time(message.get("sentAt"), "sentAt")
    if sent_at is None:
        sent_at = batch_sent_at
    client_time = original if original is not None else explicit
    corrected = None
    if sent_at is not None and client_time is not None:
        corrected = received_at - (sent_at - client_time)
        if not _MIN_US <= corrected <= _MAX_US:
            corrected = None  # an absurd client clock: keep its own time instead
    if corrected is not None:
        timestamp = corrected
    elif explicit is not None:
        timestamp = explicit
    elif original is not None:
        timestamp = original
    else:
        timestamp = received_at
    return timestamp, client_time, sent_at


def track_row(
    event: str,
    *,
    anonymous_id: str,
    message_id: str,
    at_us: int,
    properties: Mapping[str, Any],
) -> EventRow:
    """The row :func:`normalize` makes of a track message NEXUS itself writes (decisions,
    exposures): no validation to do, so none of its cost on the decision path."""
    return [
        message_id,
        "track",
        event,
        None,
        anonymous_id,
        None,
        None,
        None,
        at_us,
        None,
        None,
        at_us,
        _json(properties),
        None,
        None,
        None,
    ]


def normalize(
    message: object,
    *,
    received_at: int,
    implied_type: str | None = None,
    batch_sent_at: int | None = None,
    batch_context: Mapping[str, Any] | None = None,
    encoded_size: int | None = None,
) -> EventRow:
    """Validate one Segment message and return its :data:`EventRow`.

    ``implied_type`` is the type of a single-call endpoint (``/v1/track``); a batch message
    carries its own. ``batch_sent_at`` and ``batch_context`` are the batch envelope's, which
    apply to every message that lacks its own. Raises :class:`EventRejected`.
    """
    if not isinstance(message, dict):
        raise EventRejected("a message must be a JSON object")
    size = encoded_size if encoded_size is not None else len(orjson.dumps(message))
    if size > MAX_EVENT_BYTES:
        raise EventRejected(
            f"the message is {size} bytes of JSON; the limit is {MAX_EVENT_BYTES} (32 KB)"
        )
    kind = message.get("type", implied_type)
    if implied_type is not None and kind != implied_type:
        raise EventRejected(f"type must be {implied_type!r} on this endpoint", "type")
    if kind not in EVENT_TYPES:
        raise EventRejected(f"type must be one of {', '.join(EVENT_TYPES)}", "type")

    user_id = _identifier(message, "userId")
    anonymous_id = _identifier(message, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise EventRejected("a message needs a userId or an anonymousId", "userId")
    group_id = _identifier(message, "groupId")
    previous_id = _identifier(message, "previousId")
    event = _event_name(message, kind)
    if kind == "alias" and (previous_id is None or user_id is None):
        raise EventRejected("an alias message needs previousId and userId", "previousId")
    if kind == "group" and group_id is None:
        raise EventRejected("a group message needs a groupId", "groupId")
    name = _text(message, "name")

    properties = _object(message, "properties")
    traits = _object(message, "traits")
    context = _object(message, "context")
    integrations = _object(message, "integrations")
    if batch_context:
        context = {**batch_context, **(context or {})}
    in_context = context.get("traits") if context else None
    if kind == "identify" and traits is None and isinstance(in_context, dict):
        traits = in_context  # analytics.js sends identify traits in context.traits

    message_id = _identifier(message, "messageId") or new_id("msg")
    timestamp, original, sent_at = _times(message, received_at, batch_sent_at)

    extra = {k: v for k, v in message.items() if k not in _KNOWN_FIELDS}
    if integrations:
        extra["integrations"] = integrations
    if message.get("category") is not None:
        extra["category"] = message["category"]
    return [
        message_id,
        kind,
        event,
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        name,
        timestamp,
        original,
        sent_at,
        received_at,
        _json(properties),
        _json(traits),
        _json(context),
        _json(extra),
    ]


def row_to_message(row: EventRow) -> dict[str, Any]:
    """An :data:`EventRow` back as a Segment-shaped message (export, live stream, API)."""
    values = dict(zip(ROW_FIELDS, row, strict=True))
    out: dict[str, Any] = {
        "type": values["type"],
        "messageId": values["message_id"],
        "timestamp": format_time(values["timestamp"]),
        "receivedAt": format_time(values["received_at"]),
    }
    if values["type"] == "track":
        out["event"] = values["event"]
    for field, key in (
        ("user_id", "userId"),
        ("anonymous_id", "anonymousId"),
        ("group_id", "groupId"),
        ("previous_id", "previousId"),
        ("name", "name"),
    ):
        if values[field] is not None:
            out[key] = values[field]
    for field, key in (("original_timestamp", "originalTimestamp"), ("sent_at", "sentAt")):
        if values[field] is not None:
            out[key] = format_time(values[field])
    for field in ("properties", "traits", "context"):
        if values[field]:
            out[field] = orjson.loads(values[field])
    if values["extra"]:
        out.update(orjson.loads(values["extra"]))
    return out
