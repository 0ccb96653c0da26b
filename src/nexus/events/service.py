"""The events domain's service: opening the store and journal, ingesting, listing, importing.

Other domains (funnels, later emotion and experiments) reach events only through this module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from nexus.core.clock import utcnow
from nexus.core.errors import (
    FieldError,
    InvalidInput,
    NexusError,
    PayloadTooLarge,
    Unavailable,
)
from nexus.core.logging import get_logger
from nexus.core.ratelimit import RateLimit
from nexus.core.settings import Settings
from nexus.events.bots import BotMarker
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.journal import Journal
from nexus.events.live import LiveFeed
from nexus.events.normalize import (
    MAX_EVENT_BYTES,
    EventRejected,
    EventRow,
    Rejection,
    normalize,
    parse_time,
)
from nexus.events.pipeline import JOURNAL_MARKER, IngestPipeline, encode_record
from nexus.events.store import (
    Condition,
    EventStore,
    IdentityMode,
    PropertyPath,
    PropertyScan,
    StepRows,
    StepScan,
    StoreBusy,
)
from nexus.privacy.runtime import PrivacyRuntime
from nexus.storage import pagination

log = get_logger("nexus.events")
RETRY_AFTER_SECONDS = 1


class MessageRejected(NexusError):
    status = 400
    code = "invalid-message"
    title = "Invalid message"


class MalformedBody(NexusError):
    status = 400
    code = "malformed-body"
    title = "Malformed request body"


def open_store(settings: Settings) -> EventStore:
    """The embedded event store of ``settings.data_dir``; refuses if another process has it."""
    try:
        return DuckDBEventStore(settings.events_path, memory_limit=settings.events_memory_limit)
    except StoreBusy as exc:
        raise Unavailable(str(exc)) from None


@dataclass
class EventsRuntime:
    """What a serving process holds for events: store, journal pipeline, live feed, limits."""

    settings: Settings
    store: EventStore
    pipeline: IngestPipeline
    live: LiveFeed
    rate_limit: RateLimit | None = None
    in_flight: int = field(default=0)
    # Set by the app: consent and PII screening before anything is journaled.
    privacy: PrivacyRuntime | None = None
    bots: BotMarker | None = None

    @classmethod
    def open(cls, settings: Settings) -> EventsRuntime:
        store = open_store(settings)
        live = LiveFeed()
        pipeline = IngestPipeline(
            Journal(settings.journal_dir, min_position=store.marker(JOURNAL_MARKER) or 0),
            store,
            max_lag_bytes=settings.ingest_max_lag_mb * 1024 * 1024,
            on_stored=live.publish,
        )
        rate = (
            RateLimit(
                settings.ingest_rate_limit,
                message="This workspace sends events faster than its ingest limit.",
            )
            if settings.ingest_rate_limit
            else None
        )
        return cls(settings=settings, store=store, pipeline=pipeline, live=live, rate_limit=rate)

    def start(self) -> None:
        self.live.bind(asyncio.get_running_loop())
        self.pipeline.start()

    def close(self) -> None:
        self.pipeline.stop()
        self.store.close()


# --- ingestion ------------------------------------------------------------------------------


def decode_body(raw: bytes, *, content_encoding: str | None, limit: int) -> Any:
    """The JSON document of an ingest request (gzip/deflate allowed), within ``limit`` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            raw = decompressor.decompress(raw, limit + 1)
        except (zlib.error, gzip.BadGzipFile):
            raise MalformedBody(f"The body is not valid {encoding} data.") from None
    elif encoding != "identity":
        raise MalformedBody(f"Content-Encoding {encoding!r} is not supported; use gzip.")
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"The body is over {limit} bytes ({limit // 1024} KB), Segment's limit for this call."
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"The body is not valid JSON: {exc}.") from None


def write_key_from_body(document: Any) -> str | None:
    """analytics.js puts the write key in the body (so that it can post without a preflight)."""
    if isinstance(document, dict):
        key = document.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None


def basic_write_key(header: str) -> str | None:
    try:
        username, _, _ = base64.b64decode(header, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return username or None


@dataclass(frozen=True)
class Prepared:
    rows: list[EventRow]
    rejected: list[Rejection]


def prepare(
    document: Any, *, implied_type: str | None, received_at: int, body_bytes: int | None = None
) -> Prepared:
    """Validate a request's messages: a batch (``implied_type=None``) or one message.

    ``body_bytes`` is the size of the JSON body: when the whole batch is within the 32 KB a
    message may have, no message can be over it and none needs measuring.
    """
    if implied_type is not None:
        if not isinstance(document, dict):
            raise MalformedBody("The body must be a JSON object (one Segment message).")
        size = len(orjson.dumps(document))
        if size > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"The message is {size} bytes; Segment's limit is {MAX_EVENT_BYTES} (32 KB)."
            )
        messages: list[Any] = [document]
        sent_at = None
        context = None
    else:
        if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
            raise MalformedBody('The body must be a JSON object with a "batch" array.')
        messages = document["batch"]
        try:
            sent_at = parse_time(document.get("sentAt"), "sentAt")
        except EventRejected as exc:
            raise InvalidInput(exc.detail) from None
        context = document.get("context")
        if context is not None and not isinstance(context, dict):
            raise InvalidInput("The batch context must be a JSON object.")
    rows: list[EventRow] = []
    rejected: list[Rejection] = []
    small = body_bytes is not None and body_bytes <= MAX_EVENT_BYTES
    for index, message in enumerate(messages):
        try:
            rows.append(
                normalize(
                    message,
                    received_at=received_at,
                    implied_type=implied_type,
                    batch_sent_at=sent_at,
                    batch_context=context,
                    encoded_size=0 if small else None,
                )
            )
        except EventRejected as exc:
            rejected.append(Rejection(index, exc.detail, exc.field))
    return Prepared(rows, rejected)


def now_us() -> int:
    now = utcnow()
    return int(now.timestamp()) * 1_000_000 + now.microsecond


async def screen(
    runtime: EventsRuntime, *, workspace_id: str, rows: list[EventRow]
) -> list[EventRow]:
    """The rows consent lets us keep, with visitor text and PII handled as the workspace's
    privacy settings say: what the journal, the store and every model downstream see."""
    privacy = runtime.privacy
    if privacy is None or not rows:
        return rows
    policy = (
        None if privacy.needs_preparing(workspace_id, rows) else privacy.cached_policy(workspace_id)
    )
    if policy is None:
        policy = await run_in_threadpool(privacy.prepare_screen, workspace_id, rows)
    if policy.redactor is None:
        return privacy.screen(policy, rows)
    # PII detection is CPU work: off the event loop.
    return await run_in_threadpool(privacy.screen, policy, rows)


async def ingest(
    runtime: EventsRuntime, *, workspace_id: str, prepared: Prepared
) -> tuple[int, int]:
    """Journal the valid rows durably; returns (acknowledged, withheld for consent) once
    they are fsync'd (the acknowledgement).

    Refuses with 503 while the store is too far behind and 429 past the workspace's rate limit,
    before anything is written, so a refused request can simply be retried.
    """
    if runtime.pipeline.overloaded:
        raise Unavailable(
            "Ingestion is behind; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if not prepared.rows:
        return 0, 0
    if runtime.rate_limit is not None:
        runtime.rate_limit.hit("ingest", workspace_id, cost=len(prepared.rows))
    rows = await screen(runtime, workspace_id=workspace_id, rows=prepared.rows)
    withheld = len(prepared.rows) - len(rows)
    if not rows:
        return 0, withheld
    try:
        await runtime.pipeline.journal.append(encode_record(workspace_id, rows))
    except OSError as exc:
        log.error("ingest journal failed", error=str(exc))
        raise Unavailable(
            "Events cannot be stored right now (the journal failed); nothing of this request "
            "was acknowledged.",
            headers={"Retry-After": "30"},
        ) from None
    return len(rows), withheld


def rejection_problem(rejected: Sequence[Rejection], *, single: bool) -> MessageRejected:
    """The 400 answer when no message of a request was valid (Segment answers 400 too)."""
    errors = [
        FieldError(
            ("body", *(() if single else ("batch", r.index)), *((r.field,) if r.field else ())),
            r.detail,
            "invalid_event",
        )
        for r in rejected
    ]
    first = rejected[0]
    detail = (
        f"The message is invalid: {first.detail}."
        if single
        else f"No message was valid; message {first.index}: {first.detail}."
    )
    return MessageRejected(detail, errors=errors)


# --- reading --------------------------------------------------------------------------------


def recent_events(
    store: EventStore,
    *,
    workspace_id: str,
    limit: int,
    cursor: str | None,
    event: str | None = None,
    person: str | None = None,
) -> tuple[list[EventRow], str | None]:
    before = decode_cursor(cursor) if cursor else None
    rows = store.recent(workspace_id, limit=limit + 1, before=before, event=event, person=person)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(last[11], last[0])
    return rows, next_cursor


def encode_cursor(received_at: int, message_id: str) -> str:
    return pagination.encode_cursor(f"{received_at}.{message_id}")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (received_at, message_id) a cursor points before. Like every cursor of the API, any
    well-formed one decodes to a place in the key order, issued by us or not."""
    text = pagination.decode_cursor(cursor)
    head, _, message_id = text.partition(".")
    received_at = int(head) if head.isdigit() and len(head) < 19 else 0
    return received_at, message_id


def scan(store: EventStore, query: StepScan) -> StepRows:
    """Events matching funnel conditions; a query the store cannot run is the caller's 422."""
    try:
        return store.scan(query)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


DAY_US = 86_400_000_000
# What NEXUS records about visitors itself (see nexus.events.bots): not their activity.
SYSTEM_EVENTS = ("$decision", "$exposure")
_BOT = PropertyPath("context", ("bot",))


@dataclass(frozen=True, slots=True)
class DayActivity:
    """One UTC day of a workspace's traffic: people (identity-resolved), their events, those
    who did the goal event and the value it carried; bots apart."""

    start_us: int
    visitors: int
    events: int
    converted: int
    revenue: float
    bot_visitors: int
    bot_events: int

    @property
    def conversion(self) -> float:
        return self.converted / self.visitors if self.visitors else 0.0


@dataclass(frozen=True, slots=True)
class Activity:
    """A period's totals (each person counted once) and its days, oldest first."""

    visitors: int
    events: int
    converted: int
    revenue: float
    bot_visitors: int
    bot_events: int
    days: tuple[DayActivity, ...]

    @property
    def conversion(self) -> float:
        return self.converted / self.visitors if self.visitors else 0.0


def _distinct_per_day(day: NDArray[np.int64], person: NDArray[np.int64], n: int) -> list[int]:
    if not len(day):
        return [0] * n
    pairs = np.unique(np.column_stack([day, person]), axis=0)
    return [int(c) for c in np.bincount(pairs[:, 0], minlength=n)]


def activity(
    store: EventStore,
    *,
    workspace_id: str,
    start_us: int,
    end_us: int,
    goal_event: str,
    value_property: str = "properties.revenue",
    identity: IdentityMode = "retroactive",
) -> Activity:
    """Visitors, events, conversions (people who did ``goal_event``) and the sum of
    ``value_property`` on goal events in ``[start_us, end_us)``, per UTC day and in total.

    A person any of whose events in the period is marked as a bot's (``context.bot``, set on
    ingest) counts as a bot visitor with all their events, also those sent before the
    verdict; bots' conversions and revenue are left out. NEXUS's own records
    (:data:`SYSTEM_EVENTS`) are not activity. Built on the store's funnel scan and property
    rows, so every store answers it the same way.
    """
    if end_us <= start_us:
        raise InvalidInput("The period must end after it starts.")
    rows = scan(
        store,
        StepScan(
            workspace_id=workspace_id,
            conditions=(Condition(goal_event), *(Condition(e) for e in SYSTEM_EVENTS)),
            start_us=start_us,
            end_us=end_us,
            breakdown=_BOT,
            all_events=True,
            identity=identity,
        ),
    )
    own = (rows.mask & 0b110) == 0
    person, ts, goal = rows.person[own], rows.ts[own], (rows.mask[own] & 1) == 1
    marked_codes = [i for i, label in enumerate(rows.breakdown_labels) if label is not None]
    assert rows.breakdown is not None
    marked = np.isin(rows.breakdown[own], marked_codes)
    bots = np.unique(person[marked])
    is_bot = np.isin(person, bots)
    origin = start_us - start_us % DAY_US
    n_days = (end_us - 1 - origin) // DAY_US + 1
    day = (ts - origin) // DAY_US
    human = ~is_bot
    visitors = _distinct_per_day(day[human], person[human], n_days)
    converted = _distinct_per_day(day[human & goal], person[human & goal], n_days)
    bot_visitors = _distinct_per_day(day[is_bot], person[is_bot], n_days)
    events = np.bincount(day[human], minlength=n_days)
    bot_events = np.bincount(day[is_bot], minlength=n_days)
    revenue = _revenue_per_day(
        store,
        workspace_id=workspace_id,
        start_us=start_us,
        end_us=end_us,
        goal_event=goal_event,
        value_property=value_property,
        identity=identity,
        bots=bots,
        origin=origin,
        n_days=n_days,
    )
    days = tuple(
        DayActivity(
            start_us=origin + i * DAY_US,
            visitors=visitors[i],
            events=int(events[i]),
            converted=converted[i],
            revenue=revenue[i],
            bot_visitors=bot_visitors[i],
            bot_events=int(bot_events[i]),
        )
        for i in range(n_days)
    )
    return Activity(
        visitors=int(np.unique(person[human]).size),
        events=int(human.sum()),
        converted=int(np.unique(person[human & goal]).size),
        revenue=sum(revenue),
        bot_visitors=int(bots.size),
        bot_events=int(is_bot.sum()),
        days=days,
    )


def _revenue_per_day(
    store: EventStore,
    *,
    workspace_id: str,
    start_us: int,
    end_us: int,
    goal_event: str,
    value_property: str,
    identity: IdentityMode,
    bots: NDArray[np.int64],
    origin: int,
    n_days: int,
) -> list[float]:
    """The sum of ``value_property`` on humans' goal events per day; values that are not
    finite numbers count as none."""
    try:
        path = PropertyPath.parse(value_property)
    except ValueError as exc:
        raise InvalidInput(f"value property: {exc}") from None
    try:
        found = store.property_rows(
            PropertyScan(
                workspace_id=workspace_id,
                events=(goal_event,),
                start_us=start_us,
                end_us=end_us,
                properties=(path,),
                identity=identity,
            )
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    totals = [0.0] * n_days
    human = ~np.isin(found.person, bots)
    for index in np.flatnonzero(human).tolist():
        value = _number(found.values[0][index])
        if value is not None:
            totals[(int(found.ts[index]) - origin) // DAY_US] += value
    return totals


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


@contextmanager
def store_for_cli(settings: Settings) -> Iterator[EventStore]:
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def messages_from_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A flat mapping (a CSV row after column mapping) as a nested Segment message:
    ``properties.plan`` -> ``{"properties": {"plan": ...}}``."""
    message: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        target = message
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InvalidInput(f"column mapping {key!r} conflicts with another column")
        target[parts[-1]] = value
    return message
