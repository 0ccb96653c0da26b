"""Funnels: saved definitions (metadata database) and reports (event store + pure engine).

A report is three steps: the event store scans the period for events matching any step or
exclusion (one bit per condition, sorted by person and time), the engine in
:mod:`nexus.funnels.engine` finds each person's path, and the totals are turned into the API's
shapes here. The store does the filtering in its own SQL; the funnel logic is the same for
every store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus.core.clock import as_utc, utcnow
from nexus.core.errors import FieldError, InvalidInput, NotFound
from nexus.core.ids import new_id
from nexus.events import service as events
from nexus.events.store import (
    Condition,
    EventStore,
    IdentityMode,
    PropertyFilter,
    PropertyPath,
    StepScan,
    bots_marker,
)
from nexus.funnels import engine
from nexus.funnels.models import (
    BreakdownResult,
    Funnel,
    FunnelCreate,
    FunnelDefinition,
    FunnelPeople,
    FunnelReport,
    FunnelResult,
    FunnelUpdate,
    HistogramBinRead,
    Interval,
    PropertyFilterIn,
    StepReport,
    TimeToConvertRead,
    TrendPoint,
)
from nexus.security.service import append_entry
from nexus.storage.pagination import Page, decode_cursor, encode_cursor, paginate

US = 1_000_000
DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=3 * 366)
MAX_TREND_BUCKETS = 5000
INTERVAL_US: dict[str, int] = {"hour": 3600 * US, "day": 86_400 * US}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- CRUD ---------------------------------------------------------------------------------


def create_funnel(
    session: Session, *, workspace_id: str, data: FunnelCreate, actor: str = "system"
) -> Funnel:
    funnel = Funnel(
        id=new_id("fnl"),
        workspace_id=workspace_id,
        name=data.name,
        definition=FunnelDefinition.model_validate(data.model_dump(exclude={"name"})).model_dump(),
    )
    session.add(funnel)
    session.flush()
    _audit(session, funnel, actor=actor, action="funnel.created", details={"name": funnel.name})
    return funnel


def _audit(
    session: Session, funnel: Funnel, *, actor: str, action: str, details: dict[str, Any]
) -> None:
    append_entry(
        session,
        workspace_id=funnel.workspace_id,
        actor=actor,
        action=action,
        target=funnel.id,
        details=details,
    )


def get_funnel(session: Session, *, workspace_id: str, funnel_id: str) -> Funnel:
    funnel = session.get(Funnel, funnel_id)
    if funnel is None or funnel.workspace_id != workspace_id:
        raise NotFound(f"No funnel {funnel_id}.")
    return funnel


def list_funnels(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> Page[Funnel]:
    stmt = select(Funnel).where(Funnel.workspace_id == workspace_id)
    return paginate(session, stmt, key=Funnel.id, cursor=cursor, limit=limit)


def update_funnel(
    session: Session,
    *,
    workspace_id: str,
    funnel_id: str,
    data: FunnelUpdate,
    actor: str = "system",
) -> Funnel:
    funnel = get_funnel(session, workspace_id=workspace_id, funnel_id=funnel_id)
    changes = data.model_dump(exclude_unset=True)
    changed = sorted(changes)
    name = changes.pop("name", None)
    if changes:
        merged = {**funnel.definition, **changes}
        try:
            funnel.definition = FunnelDefinition.model_validate(merged).model_dump()
        except ValidationError as exc:
            raise InvalidInput(
                "The changed funnel is not valid: "
                + "; ".join(str(e["msg"]) for e in exc.errors()),
                errors=[
                    FieldError(("body", *map(_loc, e["loc"])), str(e["msg"])) for e in exc.errors()
                ],
            ) from None
    if name is not None:
        funnel.name = name
    funnel.updated_at = utcnow()
    session.flush()
    _audit(session, funnel, actor=actor, action="funnel.updated", details={"changed": changed})
    return funnel


def _loc(part: Any) -> str | int:
    return part if isinstance(part, int) else str(part)


def delete_funnel(
    session: Session, *, workspace_id: str, funnel_id: str, actor: str = "system"
) -> None:
    funnel = get_funnel(session, workspace_id=workspace_id, funnel_id=funnel_id)
    _audit(session, funnel, actor=actor, action="funnel.deleted", details={"name": funnel.name})
    session.delete(funnel)
    session.flush()


def definition_of(funnel: Funnel) -> FunnelDefinition:
    return FunnelDefinition.model_validate(funnel.definition)


# --- reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def start_us(self) -> int:
        return _to_us(self.start)

    @property
    def end_us(self) -> int:
        return _to_us(self.end)


def _to_us(moment: datetime) -> int:
    delta = as_utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def period(
    start: datetime | None, end: datetime | None, *, interval: Interval | None = None
) -> Period:
    """The reporting period, defaulted and checked (``start < end``, at most ~3 years)."""
    end = as_utc(end) if end is not None else utcnow()
    if start is None:
        try:
            start = end - DEFAULT_PERIOD
        except OverflowError:  # an end in the first days of year 1
            raise InvalidInput(
                f"end must be after {datetime.min.year + 1:04d}-01-01.",
                errors=[FieldError(("query", "end"), "too early")],
            ) from None
    start = as_utc(start)
    if start >= end:
        raise InvalidInput(
            "start must be before end.", errors=[FieldError(("query", "start"), "after end")]
        )
    if end - start > MAX_PERIOD:
        raise InvalidInput("The period may be at most 3 years.")
    if interval is not None:
        buckets = (_to_us(end) - _to_us(start)) // INTERVAL_US[interval]
        if buckets > MAX_TREND_BUCKETS:
            raise InvalidInput(
                f"A {interval}ly trend over this period has {buckets} points; the most is "
                f"{MAX_TREND_BUCKETS}. Use a shorter period or interval=day."
            )
    return Period(start, end)


BOT_PROPERTY = PropertyPath("context", ("bot",))


def _condition(event: str, filters: list[PropertyFilterIn]) -> Condition:
    return Condition(
        event=event,
        filters=tuple(
            PropertyFilter(PropertyPath.parse(f.property), f.op, f.value) for f in filters
        ),
    )


def _spec(
    definition: FunnelDefinition, *, bots_marked: bool = True
) -> tuple[engine.FunnelSpec, tuple[Condition, ...]]:
    """The engine's spec and the store's conditions; ``bots_marked``: whether the workspace
    has any event marked as a bot's (without, leaving bots out needs no filter)."""
    conditions = [_condition(s.event, s.filters) for s in definition.steps]
    if definition.bots == "only" or (definition.bots == "exclude" and bots_marked):
        marked = PropertyFilter(BOT_PROPERTY, "is_set", definition.bots == "only")
        conditions = [replace(c, filters=(*c.filters, marked)) for c in conditions]
    steps = tuple(engine.Step(i, s.optional) for i, s in enumerate(definition.steps))
    exclusions = []
    for exclusion in definition.exclusions:
        exclusions.append(
            engine.Exclusion(len(conditions), exclusion.after_step, exclusion.before_step)
        )
        conditions.append(_condition(exclusion.event, exclusion.filters))
    spec = engine.FunnelSpec(
        steps=steps,
        mode=definition.mode,
        window_us=definition.window_seconds * US,
        exclusions=tuple(exclusions),
    )
    return spec, tuple(conditions)


@dataclass(frozen=True)
class PersonGroups:
    """A breakdown by something known of each person rather than of a path's first event
    (the emotion that prevailed in what they wrote, say): ``labels`` maps the person codes
    of the store's scans to a group; people without one form the group None."""

    name: str
    labels: Mapping[int, str]


def _person_breakdown(
    person: NDArray[np.int64], groups: PersonGroups
) -> tuple[NDArray[np.int32], tuple[str | None, ...]]:
    names = tuple(sorted(set(groups.labels.values())))
    code_of = {name: i for i, name in enumerate(names)}
    keys = np.fromiter(groups.labels.keys(), np.int64, len(groups.labels))
    codes = np.fromiter((code_of[v] for v in groups.labels.values()), np.int32, len(keys))
    order = np.argsort(keys)
    keys, codes = keys[order], codes[order]
    out = np.full(len(person), len(names), dtype=np.int32)
    if len(keys):
        at = np.clip(np.searchsorted(keys, person), 0, len(keys) - 1)
        hit = keys[at] == person
        out[hit] = codes[at[hit]]
    return out, (*names, None)


@dataclass(frozen=True)
class Analysis:
    spec: engine.FunnelSpec
    paths: engine.PersonPaths
    labels: tuple[str | None, ...]
    person_ids: dict[int, str]


def analyse(
    store: EventStore,
    *,
    workspace_id: str,
    definition: FunnelDefinition,
    span: Period,
    breakdown: str | None = None,
    identity: IdentityMode = "retroactive",
    with_person_ids: bool = False,
    person_groups: PersonGroups | None = None,
) -> Analysis:
    """Each person's best path; broken down by ``breakdown`` (a property of the path's first
    event) or, instead, by ``person_groups``."""
    marked = store.marker(bots_marker(workspace_id)) is not None
    spec, conditions = _spec(definition, bots_marked=marked)
    try:
        breakdown_path = (
            PropertyPath.parse(breakdown) if breakdown and person_groups is None else None
        )
    except ValueError as exc:
        raise InvalidInput(f"breakdown: {exc}") from None
    rows = events.scan(
        store,
        StepScan(
            workspace_id=workspace_id,
            conditions=conditions,
            start_us=span.start_us,
            end_us=span.end_us,
            breakdown=breakdown_path,
            all_events=definition.mode == "strict",
            identity=identity,
            with_person_ids=with_person_ids,
        ),
    )
    codes, labels = rows.breakdown, rows.breakdown_labels
    if person_groups is not None:
        codes, labels = _person_breakdown(rows.person, person_groups)
    matrix = engine.EventMatrix(
        person=rows.person, ts=rows.ts, mask=rows.mask, breakdown=codes, breakdown_labels=labels
    )
    return Analysis(spec, engine.paths(spec, matrix), labels, rows.person_ids)


def report(
    store: EventStore,
    *,
    workspace_id: str,
    definition: FunnelDefinition,
    span: Period,
    breakdown: str | None = None,
    interval: Interval | None = None,
    bins: int = 10,
    identity: IdentityMode = "retroactive",
    person_groups: PersonGroups | None = None,
) -> FunnelReport:
    """The funnel over ``span``; ``breakdown`` overrides the definition's default, and
    ``person_groups`` (see :class:`PersonGroups`) both."""
    breakdown = person_groups.name if person_groups else breakdown or definition.breakdown
    analysis = analyse(
        store,
        workspace_id=workspace_id,
        definition=definition,
        span=span,
        breakdown=breakdown,
        identity=identity,
        person_groups=person_groups,
    )
    interval_us = INTERVAL_US[interval] if interval else None
    origin = span.start_us - span.start_us % interval_us if interval_us else 0
    summary = engine.summarize(
        analysis.spec,
        analysis.paths,
        labels=analysis.labels,
        interval_us=interval_us,
        origin_us=origin,
        bins=bins,
    )
    overall = _result(definition, summary.overall)
    return FunnelReport(
        **overall.model_dump(),
        start=span.start,
        end=span.end,
        mode=definition.mode,
        window_seconds=definition.window_seconds,
        breakdown_property=breakdown,
        breakdown=[
            BreakdownResult(value=label, **_result(definition, totals).model_dump())
            for label, totals in summary.breakdown
        ],
    )


def _seconds(us: float | None) -> float | None:
    return None if us is None else us / US


def _result(definition: FunnelDefinition, totals: engine.FunnelTotals) -> FunnelResult:
    ttc = totals.time_to_convert
    unordered = definition.mode == "unordered"
    steps = []
    for index, (step, step_totals) in enumerate(zip(definition.steps, totals.steps, strict=True)):
        steps.append(
            StepReport(
                index=index,
                # In unordered mode position k means "any k+1 of the steps".
                event=f"any {index + 1} of {len(definition.steps)}" if unordered else step.event,
                label=None if unordered else step.label,
                optional=step.optional,
                count=step_totals.count,
                conversion_from_start=step_totals.conversion_from_start,
                conversion_from_previous=step_totals.conversion_from_previous,
                dropped=step_totals.dropped,
                median_seconds_from_start=_seconds(ttc.median_to_step_us[index]),
            )
        )
    return FunnelResult(
        entered=totals.entered,
        steps=steps,
        time_to_convert=TimeToConvertRead(
            converted=ttc.converted,
            median_seconds=_seconds(ttc.median_us),
            p90_seconds=_seconds(ttc.p90_us),
            mean_seconds=_seconds(ttc.mean_us),
            histogram=[
                HistogramBinRead(from_seconds=lo / US, to_seconds=hi / US, count=count)
                for lo, hi, count in ttc.histogram
            ],
        ),
        trend=[
            TrendPoint(
                start=_from_us(b.start_us),
                entered=b.entered,
                converted=b.converted,
                conversion_rate=b.conversion_rate,
            )
            for b in totals.trend
        ],
    )


def dropped_people(
    store: EventStore,
    *,
    workspace_id: str,
    definition: FunnelDefinition,
    span: Period,
    step: int,
    limit: int = 100,
    cursor: str | None = None,
    identity: IdentityMode = "retroactive",
) -> FunnelPeople:
    """Who reached the step before ``step`` (1-based index of the step they missed is
    ``step``, 0-based like the report) and went no further, sorted by person id."""
    if not 1 <= step < len(definition.steps):
        raise InvalidInput(
            f"step must be between 1 and {len(definition.steps) - 1}.",
            errors=[FieldError(("query", "step"), "out of range")],
        )
    analysis = analyse(
        store,
        workspace_id=workspace_id,
        definition=definition,
        span=span,
        identity=identity,
        with_person_ids=True,
    )
    codes = engine.dropped_at(analysis.spec, analysis.paths, step)
    people = sorted(analysis.person_ids[int(c)] for c in codes)
    if cursor:
        after = decode_cursor(cursor)
        people = [p for p in people if p > after]
    page = people[:limit]
    next_cursor = encode_cursor(page[-1]) if len(people) > limit else None
    return FunnelPeople(step=step, items=page, next_cursor=next_cursor)
