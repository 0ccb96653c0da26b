"""Funnel health in production (issue #8, part 5): every hosted funnel watched by the monitor.

:mod:`nexus.evolution.monitor` is the pure core (buckets in, alerts out). This module is what
feeds it and acts on what it says:

* **Buckets from stored events.** For each hosted funnel, the ``$page`` views it served (the
  ``funnel``/``step`` properties the hosted pages put on them) and its goal event become one
  :class:`~nexus.evolution.monitor.Bucket` per time bucket, step and breakdown: a visitor
  *enters* a step with a view of it (a repeat view within the advance window is the same
  visit), *moves on* with a view of a step ahead (any later step; with adaptive flow also
  the other steps of its group and the reassurance step) or the goal event, within
  ``advance_window_seconds``; *time on step* is the time to that move (visitors who did not
  move on count at the mean of the step's visitors who did in that bucket, so the KPI does
  not read conversion a second time); *frustration* is the mean, over the
  visitor's emotion readings during the visit, of the stronger of ``anger + disgust``
  (Plutchik) and negative valence. Breakdowns: ``variant`` (the evolution design when the
  view has one, else the experiment variant, else ``original``), ``adaptation`` and
  ``device`` (Segment's ``context.device.type``), each only where some view of the step
  carries it. A bucket is fed once its last visitor has had the advance window to move on.
* **State.** The core keeps no serialisable state, so the worker keeps one
  :class:`~nexus.evolution.monitor.Monitor` per funnel in memory and, on start (or when a
  workspace changes its settings), rebuilds it by replaying the last ``baseline_seconds +
  guard_seconds`` of stored events. Replays are deterministic on the same events, and an
  alert already in the activity feed is not written again.
* **Alerts.** Each alert becomes an activity-feed entry (kind ``alert``, :func:`explain` as
  the message, the alert's fields as details; also in the audit chain) and a webhook notice.
  When the workspace turned ``automatic_rollback`` on, an open alert whose variant culprit is
  the design an evolution campaign is promoting on that step rolls the campaign back (its
  guarded rollout included) -- the only guarded rollouts a hosted page serves.
* **Settings** per workspace in ``funnel_monitoring`` (``GET``/``PUT
  /v1/evolution/monitoring``); alerts are read back from the feed (``GET
  /v1/evolution/alerts``), so every process answers the same.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, ForeignKey, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from starlette.concurrency import run_in_threadpool

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, NotFound
from nexus.core.logging import get_logger
from nexus.events.store import (
    EmotionScan,
    EventStore,
    PropertyFilter,
    PropertyPath,
    PropertyScan,
    bots_marker,
)
from nexus.evolution import monitor, service
from nexus.evolution.genome import DesignSpace
from nexus.evolution.models import Activity, Campaign
from nexus.evolution.runtime import post_to_webhook
from nexus.pages import service as pages_service
from nexus.pages.models import HostedFunnel, HostedFunnelBody
from nexus.security.service import append_entry
from nexus.storage.base import Base, UTCDateTime

log = get_logger("nexus.evolution.health")
ACTOR = "funnel-monitor"
ALERT_KIND = "alert"
US = 1_000_000
VARIANT, ADAPTATION, DEVICE = "variant", "adaptation", "device"
# What a view without a value of a dimension counts as, where other views of the step have one.
MISSING = {VARIANT: "original", ADAPTATION: "none", DEVICE: "unknown"}
DESIGN_PREFIX = "d-"
RECENT_ALERTS_SCANNED = 500
Notify = Callable[[str, dict[str, Any]], None]


# --- settings -------------------------------------------------------------------------------


class FunnelMonitoring(Base):
    """A workspace's funnel-monitoring settings (no row: the defaults)."""

    __tablename__ = "funnel_monitoring"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MonitoringSettings(BaseModel):
    """How a workspace's hosted funnels are watched."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Watch every hosted funnel's steps.")
    automatic_rollback: bool = Field(
        default=False,
        description="Roll back the evolution champion an open alert blames (its design is "
        "the alert's variant culprit at that step) without waiting for a person.",
    )
    false_alarms_per_day: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="Sensitivity: about how many false alarms a day per funnel to accept; "
        "lower waits for more evidence before alerting.",
    )
    bucket_seconds: int = Field(
        default=300, ge=60, le=3600, description="Length of the time buckets the KPIs are cut in."
    )
    advance_window_seconds: int = Field(
        default=600,
        ge=60,
        le=7200,
        description="How long after entering a step a visitor may take to move on; a bucket "
        "is judged once this long has passed after it (it adds to every detection delay).",
    )


class MonitoringSettingsRead(MonitoringSettings):
    updated_at: datetime | None


def get_settings(session: Session, *, workspace_id: str) -> MonitoringSettingsRead:
    row = session.get(FunnelMonitoring, workspace_id)
    if row is None:
        return MonitoringSettingsRead(**MonitoringSettings().model_dump(), updated_at=None)
    return MonitoringSettingsRead(**row.document, updated_at=row.updated_at)


def put_settings(
    session: Session, *, workspace_id: str, data: MonitoringSettings, actor: str
) -> MonitoringSettingsRead:
    row = session.get(FunnelMonitoring, workspace_id)
    document = data.model_dump(mode="json")
    before = MonitoringSettings().model_dump(mode="json") if row is None else dict(row.document)
    if row is None:
        row = FunnelMonitoring(workspace_id=workspace_id, document=document, updated_at=utcnow())
        session.add(row)
    else:
        row.document = document
        row.updated_at = utcnow()
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="evolution.monitoring_updated",
        target=workspace_id,
        details={
            "changed": {
                k: {"from": before.get(k), "to": v}
                for k, v in document.items()
                if before.get(k) != v
            }
        },
    )
    return MonitoringSettingsRead(**row.document, updated_at=row.updated_at)


def monitor_settings(settings: MonitoringSettings) -> monitor.Settings:
    """The monitor core's settings for a workspace's: its defaults but for the bucket length
    and the false-alarm rate."""
    return monitor.Settings(
        bucket_seconds=float(settings.bucket_seconds),
        false_alarms_per_day=settings.false_alarms_per_day,
    )


# --- buckets from events (pure) --------------------------------------------------------------

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Views:
    """A funnel's ``$page`` views, sorted by (person, time): ``step`` indexes the funnel's
    steps (-1: a step it no longer has); ``dims`` holds each view's breakdown values."""

    person: IntArray
    ts: IntArray  # microseconds
    step: IntArray
    dims: dict[str, list[str | None]]


@dataclass(frozen=True)
class Marks:
    """Timed events of people (goal events, emotion readings with their frustration)."""

    person: IntArray
    ts: IntArray
    score: FloatArray = field(default_factory=lambda: np.zeros(0))

    def by_person(self) -> dict[int, tuple[list[int], list[float]]]:
        """Each person's times (sorted) and scores, as lists (for bisection)."""
        order = np.lexsort((self.ts, self.person))
        person = self.person[order].tolist()
        ts = self.ts[order].tolist()
        score = self.score[order].tolist() if self.score.size else [0.0] * len(person)
        out: dict[int, tuple[list[int], list[float]]] = {}
        lo = 0
        for hi in range(1, len(person) + 1):
            if hi == len(person) or person[hi] != person[lo]:
                out[person[lo]] = (ts[lo:hi], score[lo:hi])
                lo = hi
        return out


def frustration(plutchik: FloatArray, valence: FloatArray) -> FloatArray:
    """Frustration score (0-1) per reading: the stronger of ``anger + disgust`` (``plutchik``
    is ``(n, 2)``, those two) and negative valence; NaN where a reading has neither."""
    n = len(valence)
    if plutchik.ndim == 2 and plutchik.shape == (n, 2):
        hostile = np.clip(plutchik[:, 0] + plutchik[:, 1], 0.0, 1.0)
    else:
        hostile = np.full(n, np.nan)
    # fmax takes the number where one side is NaN, NaN only where both are.
    return np.fmax(hostile, np.clip(-valence, 0.0, 1.0)).astype(np.float64)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A visitor entering a step: when, with which breakdown values, and what followed."""

    at: int  # start of its bucket, microseconds
    step: int
    row: int  # of its view, for the breakdown values
    moved: bool
    seconds: float  # to moving on (0 if it did not)
    score: float  # mean frustration during the visit (NaN: no reading)


@dataclass
class _Cell:
    entered: int = 0
    advanced: int = 0
    seconds: float = 0.0
    fsum: float = 0.0
    fn: int = 0


@dataclass(frozen=True)
class _Scope:
    """What :func:`_entries` needs to know besides the views."""

    forward: tuple[frozenset[int], ...]  # per step, the steps that are a move on from it
    has_goal: bool
    start_us: int
    end_us: int
    bucket: int  # microseconds
    window: int  # microseconds


Timed = tuple[list[int], list[float]]


@dataclass(frozen=True)
class _Person:
    """One visitor's views (times, steps, row numbers, in time order), goals and readings."""

    ts: list[int]
    step: list[int]
    rows: list[int]
    goals: Timed | None
    readings: Timed | None


def _moved_on(who: _Person, k: int, scope: _Scope) -> int | None:
    """When the visitor moved on from its ``k``-th view within the window: its first later
    view of a step ahead, or its goal event, whichever came first."""
    s, t = who.step[k], who.ts[k]
    limit = t + scope.window
    ahead = scope.forward[s]
    first: int | None = None
    for m in range(k + 1, len(who.ts)):
        if who.ts[m] > limit:
            break
        if who.ts[m] > t and who.step[m] in ahead:
            first = who.ts[m]
            break
    if who.goals is not None:
        times = who.goals[0]
        at = bisect.bisect_right(times, t)
        if at < len(times) and times[at] <= limit and (first is None or times[at] < first):
            first = times[at]
    return first


def _felt(readings: Timed | None, start: int, until: int) -> float:
    """Mean frustration of a visitor's readings in ``[start, until)`` (NaN: none)."""
    if readings is None:
        return math.nan
    times, scores = readings
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_left(times, until)
    found = [x for x in scores[lo:hi] if not math.isnan(x)]
    return sum(found) / len(found) if found else math.nan


def _people(views: Views, goals: Marks | None, readings: Marks) -> Iterator[_Person]:
    goal_of = goals.by_person() if goals is not None else {}
    reading_of = readings.by_person()
    person, ts, step = views.person.tolist(), views.ts.tolist(), views.step.tolist()
    lo = 0
    for hi in range(1, len(person) + 1):
        if hi == len(person) or person[hi] != person[lo]:
            who = person[lo]
            yield _Person(
                ts=ts[lo:hi],
                step=step[lo:hi],
                rows=list(range(lo, hi)),
                goals=goal_of.get(who),
                readings=reading_of.get(who),
            )
            lo = hi


def _entries(views: Views, goals: Marks | None, readings: Marks, scope: _Scope) -> list[_Entry]:
    out: list[_Entry] = []
    for who in _people(views, goals, readings):
        seen: dict[int, int] = {}
        for k, (s, t) in enumerate(zip(who.step, who.ts, strict=True)):
            previous = seen.get(s)
            seen[s] = t
            if s < 0 or (previous is not None and t - previous < scope.window):
                continue  # a step the funnel no longer has, or a repeat view of one visit
            if not scope.start_us <= t < scope.end_us:
                continue
            if not scope.forward[s] and not scope.has_goal:
                continue  # nowhere to move on to: the last step of a funnel without a goal
            moved = _moved_on(who, k, scope)
            until = moved if moved is not None else t + scope.window
            out.append(
                _Entry(
                    at=(t // scope.bucket) * scope.bucket,
                    step=s,
                    row=who.rows[k],
                    moved=moved is not None,
                    seconds=(moved - t) / US if moved is not None else 0.0,
                    score=_felt(who.readings, t, until),
                )
            )
    return out


def _aggregate(
    entries: list[_Entry], steps: Sequence[str], dims: dict[str, list[str | None]]
) -> list[monitor.Bucket]:
    # A step is broken down by a dimension where any of its entrants carries a value of it.
    used = {d: {e.step for e in entries if values[e.row]} for d, values in sorted(dims.items())}
    cells: dict[tuple[int, int, tuple[tuple[str, str], ...]], _Cell] = {}
    movers: dict[tuple[int, int], list[float]] = {}
    for e in entries:
        key = tuple(
            (d, dims[d][e.row] or MISSING.get(d, "none")) for d, at in used.items() if e.step in at
        )
        cell = cells.setdefault((e.at, e.step, key), _Cell())
        cell.entered += 1
        if e.moved:
            cell.advanced += 1
            cell.seconds += e.seconds
            acc = movers.setdefault((e.at, e.step), [0.0, 0.0])
            acc[0] += 1
            acc[1] += e.seconds
        if not math.isnan(e.score):
            cell.fn += 1
            cell.fsum += min(max(e.score, 0.0), 1.0)
    out = []
    for (at, s, key), cell in sorted(cells.items()):
        # Who did not move on counts at the mean time of the step's visitors who did in the
        # bucket: time on step then does not read conversion a second time, and a thin
        # breakdown's few movers do not make its time swing.
        count, total = movers.get((at, s), [0.0, 0.0])
        mean = total / count if count else 0.0
        out.append(
            monitor.Bucket(
                start=at / US,
                step=steps[s],
                dims=dict(key),
                entered=cell.entered,
                advanced=cell.advanced,
                seconds=cell.seconds + (cell.entered - cell.advanced) * mean,
                frustration_sum=min(cell.fsum, float(cell.fn)),
                frustration_n=cell.fn,
            )
        )
    return out


def forward_steps(body: HostedFunnelBody) -> tuple[frozenset[int], ...]:
    """Per step, the steps a visitor reaching them has moved on to: every later step (an
    adaptive flow may skip optional ones), the other steps of its group (which may come in
    either order) and the reassurance step (which adaptive flow may insert)."""
    steps = body.steps
    index = {s.slug: i for i, s in enumerate(steps)}
    reassurance = index.get(body.flow.reassurance or "")
    out = []
    for i, step in enumerate(steps):
        ahead = set(range(i + 1, len(steps)))
        if step.group is not None:
            ahead |= {j for j, other in enumerate(steps) if other.group == step.group}
        if reassurance is not None:
            ahead.add(reassurance)
        ahead.discard(i)
        out.append(frozenset(ahead))
    return tuple(out)


def build_buckets(
    *,
    steps: Sequence[str],
    forward: Sequence[frozenset[int]] | None = None,
    views: Views,
    goals: Marks | None,
    readings: Marks,
    start_us: int,
    end_us: int,
    bucket_seconds: int,
    window_seconds: int,
) -> list[monitor.Bucket]:
    """The monitor's buckets for the visitors who entered a step in ``[start_us, end_us)``.

    ``views`` must reach back one window before ``start_us`` (so a repeat view is known as
    one) and one window past ``end_us`` (so every entrant had the window to move on);
    ``goals`` (None: the funnel has no goal, and its last step is not watched) and
    ``readings`` likewise. ``forward`` gives, per step, the steps whose view is a move on
    (default: every later one; see :func:`forward_steps`). Bucket times are epoch seconds
    aligned to ``bucket_seconds``.
    """
    if forward is None:
        forward = [frozenset(range(i + 1, len(steps))) for i in range(len(steps))]
    scope = _Scope(
        forward=tuple(forward),
        has_goal=goals is not None,
        start_us=start_us,
        end_us=end_us,
        bucket=bucket_seconds * US,
        window=window_seconds * US,
    )
    return _aggregate(_entries(views, goals, readings, scope), steps, views.dims)


# --- reading the store -------------------------------------------------------------------------

FUNNEL = PropertyPath.parse("properties.funnel")
STEP = PropertyPath.parse("properties.step")
DESIGN = PropertyPath.parse("properties.design")
EXPERIMENT_VARIANT = PropertyPath.parse("properties.variant")
ADAPTATION_KEY = PropertyPath.parse("properties.adaptation")
DEVICE_TYPE = PropertyPath.parse("context.device.type")
BOT = PropertyPath("context", ("bot",))


def load_events(
    store: EventStore,
    *,
    workspace_id: str,
    funnel: str,
    steps: Sequence[str],
    goal: str | None,
    start_us: int,
    end_us: int,
    window_seconds: int,
) -> tuple[Views, Marks | None, Marks]:
    """What :func:`build_buckets` needs for ``[start_us, end_us)``, bots left out."""
    window = window_seconds * US
    bots = (
        (PropertyFilter(BOT, "is_set", False),)
        if store.marker(bots_marker(workspace_id)) is not None
        else ()
    )
    rows = store.property_rows(
        PropertyScan(
            workspace_id=workspace_id,
            events=(pages_service.PAGE_EVENT,),
            start_us=start_us - window,
            end_us=end_us + window,
            properties=(STEP, DESIGN, EXPERIMENT_VARIANT, ADAPTATION_KEY, DEVICE_TYPE),
            filters=(PropertyFilter(FUNNEL, "eq", funnel), *bots),
        )
    )
    index = {slug: i for i, slug in enumerate(steps)}
    step_of, design, variant, adaptation, device = rows.values
    views = Views(
        person=rows.person,
        ts=rows.ts,
        step=np.asarray([index.get(s or "", -1) for s in step_of], dtype=np.int64),
        dims={
            VARIANT: [d or v for d, v in zip(design, variant, strict=True)],
            ADAPTATION: list(adaptation),
            DEVICE: list(device),
        },
    )
    goals = None
    if goal is not None:
        found = store.property_rows(
            PropertyScan(
                workspace_id=workspace_id,
                events=(goal,),
                start_us=start_us,
                end_us=end_us + window,
                filters=bots,
            )
        )
        goals = Marks(person=found.person, ts=found.ts)
    felt = store.emotion_rows(
        EmotionScan(
            workspace_id=workspace_id,
            start_us=start_us,
            end_us=end_us + window,
            plutchik=("anger", "disgust"),
        )
    )
    readings = Marks(
        person=felt.person, ts=felt.ts, score=frustration(felt.plutchik, felt.vad[:, 0])
    )
    return views, goals, readings


# --- alerts in the activity feed ------------------------------------------------------------


def _number(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def alert_details(funnel: str, alert: monitor.Alert) -> dict[str, Any]:
    """An alert as JSON (the feed entry's details, the webhook notice's body)."""
    culprit = alert.culprit(VARIANT) or alert.culprit()
    return {
        "funnel": funnel,
        "step": alert.step,
        "metric": alert.metric.value,
        "direction": alert.direction.value,
        "status": alert.status.value,
        "scope": dict(alert.scope),
        "since": _iso(alert.since),
        "at": _iso(alert.at),
        "baseline": _number(alert.baseline),
        "current": _number(alert.current),
        "relative_change": _number(alert.relative_change),
        "statistic": _number(alert.statistic),
        "threshold": _number(alert.threshold),
        "culprit": None
        if culprit is None
        else {"dim": culprit.dim, "value": culprit.value, "share": _number(culprit.share)},
        "attribution": [
            {
                "dim": s.dim,
                "value": s.value,
                "share": _number(s.share),
                "traffic_share": _number(s.traffic_share),
                "baseline": _number(s.baseline),
                "current": _number(s.current),
                "relative_change": _number(s.relative_change),
                "z": _number(s.z),
                "concentrated": s.concentrated,
            }
            for s in alert.attribution[:12]
        ],
        "correlated": [
            {
                "metric": m.metric.value,
                "baseline": _number(m.baseline),
                "current": _number(m.current),
                "relative_change": _number(m.relative_change),
                "z": _number(m.z),
                "significant": m.significant,
            }
            for m in alert.correlated
        ],
    }


def _recent_alerts(session: Session, workspace_id: str) -> list[Activity]:
    return list(
        session.scalars(
            select(Activity)
            .where(Activity.workspace_id == workspace_id, Activity.kind == ALERT_KIND)
            .order_by(Activity.id.desc())
            .limit(RECENT_ALERTS_SCANNED)
        )
    )


def _same(entry: Activity, details: dict[str, Any]) -> bool:
    got = entry.details
    return all(got.get(k) == details[k] for k in ("funnel", "step", "metric", "status", "since"))


class AlertRead(BaseModel):
    id: str = Field(description="The activity-feed entry of the alert.")
    campaign: str | None
    funnel: str
    step: str
    metric: monitor.Metric
    direction: monitor.Direction
    status: monitor.AlertStatus
    scope: dict[str, str] = Field(description="The stream that fired ({}: the whole step).")
    since: datetime = Field(description="When the change began (the change-point estimate).")
    at: datetime = Field(description="End of the bucket that raised the alert.")
    baseline: float | None
    current: float | None
    relative_change: float | None
    culprit: dict[str, Any] | None = Field(
        description="The breakdown value the change is concentrated in: dim, value, share."
    )
    explanation: str
    action: dict[str, Any] | None = Field(
        description="What the monitor did about it (an automatic rollback), if anything."
    )
    created_at: datetime


class FunnelAlerts(BaseModel):
    funnel: str
    open: list[AlertRead] = Field(description="Regressions going on now, one per step at most.")
    recent: list[AlertRead] = Field(description="The latest alerts of every status, newest first.")


def _alert_read(entry: Activity) -> AlertRead:
    d = entry.details
    return AlertRead(
        id=entry.id,
        campaign=entry.campaign,
        funnel=d["funnel"],
        step=d["step"],
        metric=d["metric"],
        direction=d["direction"],
        status=d["status"],
        scope=d.get("scope", {}),
        since=d["since"],
        at=d["at"],
        baseline=d.get("baseline"),
        current=d.get("current"),
        relative_change=d.get("relative_change"),
        culprit=d.get("culprit"),
        explanation=entry.message,
        action=d.get("action"),
        created_at=entry.created_at,
    )


def list_alerts(
    session: Session,
    *,
    workspace_id: str,
    funnel: str | None = None,
    limit: int = 20,
    now: datetime | None = None,
) -> list[FunnelAlerts]:
    """Per funnel, its open alerts and its ``limit`` latest, from the activity feed. An open
    alert is one with no recovery or expiry after it, raised less than the monitor's longest
    open time ago."""
    now = now or utcnow()
    longest = monitor.Settings().max_open_seconds
    out: dict[str, FunnelAlerts] = {}
    ended: set[tuple[str, str, str, str]] = set()
    for entry in _recent_alerts(session, workspace_id):  # newest first
        d = entry.details
        slug = d.get("funnel")
        if not isinstance(slug, str) or (funnel is not None and slug != funnel):
            continue
        group = out.setdefault(slug, FunnelAlerts(funnel=slug, open=[], recent=[]))
        read = _alert_read(entry)
        key = (slug, read.step, read.metric.value, d["since"])
        if read.status is not monitor.AlertStatus.OPEN:
            ended.add(key)
        elif key not in ended and (now - read.at).total_seconds() < longest:
            group.open.append(read)
            ended.add(key)  # an older copy of the same alert (a replay) is not open twice
        if len(group.recent) < limit:
            group.recent.append(read)
    return [out[k] for k in sorted(out)]


# --- the worker -------------------------------------------------------------------------------


@dataclass
class _Watch:
    """One funnel's monitor and how far it has been fed."""

    monitor: monitor.Monitor
    key: tuple[Any, ...]
    fed_until: int  # epoch seconds: every bucket before it has been observed
    acted: set[tuple[str, float]] = field(default_factory=set)


@dataclass(frozen=True)
class _Funnel:
    workspace_id: str
    slug: str
    steps: tuple[str, ...]
    forward: tuple[frozenset[int], ...]
    goal: str | None
    settings: MonitoringSettings


class HealthWorker:
    """Watches every hosted funnel now and then; :meth:`run_once` is what tests call.

    ``interval`` seconds between passes (0: no loop in this process -- run the monitor in one
    replica). ``post`` sends a webhook notice; ``invalidate(workspace_id, funnel)`` drops
    what the serving runtimes cached after a rollback.
    """

    def __init__(
        self,
        *,
        session: Callable[[], AbstractContextManager[Session]],
        store: Callable[[], EventStore],
        interval: float,
        post: Callable[[str, dict[str, Any]], None] | None = None,
        invalidate: Callable[[str, str], None] | None = None,
        before_pass: Callable[[], Awaitable[Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._store = store
        self.interval = interval
        self._post = post
        self._invalidate = invalidate
        self._before_pass = before_pass
        self.clock = clock
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self.notices: list[dict[str, Any]] = []

    def notify(self, workspace_id: str, notice: dict[str, Any]) -> None:
        """Keep the notice, and POST it to the workspace's webhook if it has one."""
        self.notices.append(notice)
        post_to_webhook(self._session, self._post, workspace_id, notice)

    def _funnels(self) -> list[_Funnel]:
        with self._session() as db:
            hosted = list(db.scalars(select(HostedFunnel).order_by(HostedFunnel.id)))
            settings: dict[str, MonitoringSettings] = {}
            out = []
            for funnel in hosted:
                ws = funnel.workspace_id
                if ws not in settings:
                    read = get_settings(db, workspace_id=ws)
                    settings[ws] = MonitoringSettings(**read.model_dump(exclude={"updated_at"}))
                body = pages_service.body_of(funnel)
                out.append(
                    _Funnel(
                        workspace_id=ws,
                        slug=funnel.slug,
                        steps=tuple(s.slug for s in body.steps),
                        forward=forward_steps(body),
                        goal=body.goal_event,
                        settings=settings[ws],
                    )
                )
        return out

    def check_all(self) -> int:
        """One pass over every hosted funnel (blocking). Returns the new alerts written."""
        with self._lock:
            now = self.clock()
            raised = 0
            live: set[tuple[str, str]] = set()
            store = self._store()
            for funnel in self._funnels():
                key = (funnel.workspace_id, funnel.slug)
                if not funnel.settings.enabled:
                    continue
                live.add(key)
                try:
                    raised += self._check(store, funnel, now)
                except Exception:
                    log.exception("funnel health check failed", funnel=funnel.slug)
                    self._watches.pop(key, None)  # rebuilt from stored events next time
            for gone in set(self._watches) - live:
                del self._watches[gone]
            return raised

    def _check(self, store: EventStore, funnel: _Funnel, now: float) -> int:
        settings = funnel.settings
        core = monitor_settings(settings)
        bucket = settings.bucket_seconds
        fingerprint = (bucket, settings.false_alarms_per_day, settings.advance_window_seconds)
        key = (funnel.workspace_id, funnel.slug)
        end = int((now - settings.advance_window_seconds) // bucket) * bucket
        watch = self._watches.get(key)
        if watch is None or watch.key != fingerprint:
            lookback = core.baseline_seconds + core.guard_seconds + bucket
            start = int((end - lookback) // bucket) * bucket
            watch = _Watch(monitor.Monitor(core), fingerprint, start)
            self._watches[key] = watch
        raised = self._feed(store, funnel, watch, end) if end > watch.fed_until else 0
        if settings.automatic_rollback:
            for alert in watch.monitor.open_alerts:
                if (alert.step, alert.since) not in watch.acted:
                    watch.acted.add((alert.step, alert.since))
                    self._act(funnel, alert)
        return raised

    def _feed(self, store: EventStore, funnel: _Funnel, watch: _Watch, end: int) -> int:
        """Observe the buckets from where the monitor stopped to ``end``; announce alerts."""
        window = funnel.settings.advance_window_seconds
        views, goals, readings = load_events(
            store,
            workspace_id=funnel.workspace_id,
            funnel=funnel.slug,
            steps=funnel.steps,
            goal=funnel.goal,
            start_us=watch.fed_until * US,
            end_us=end * US,
            window_seconds=window,
        )
        buckets = build_buckets(
            steps=funnel.steps,
            forward=funnel.forward,
            views=views,
            goals=goals,
            readings=readings,
            start_us=watch.fed_until * US,
            end_us=end * US,
            bucket_seconds=funnel.settings.bucket_seconds,
            window_seconds=window,
        )
        alerts = watch.monitor.observe(buckets)
        watch.fed_until = end
        return self._announce(funnel, alerts) if alerts else 0

    def _campaign_of(
        self, db: Session, funnel: _Funnel, alert: monitor.Alert
    ) -> tuple[Campaign | None, str | None]:
        """The campaign serving the alert's step, and the design the alert blames if it is one."""
        culprit = alert.culprit(VARIANT)
        campaign = service.serving(
            db, workspace_id=funnel.workspace_id, funnel=funnel.slug, step=alert.step
        )
        design = culprit.value if culprit is not None else None
        if design is not None and not design.startswith(DESIGN_PREFIX):
            design = None
        return campaign, design

    def _announce(self, funnel: _Funnel, alerts: Iterable[monitor.Alert]) -> int:
        """Write each new alert to the feed and send its notice; returns how many."""
        notices = []
        with self._session() as db:
            known = _recent_alerts(db, funnel.workspace_id)
            for alert in alerts:
                details = alert_details(funnel.slug, alert)
                if any(_same(entry, details) for entry in known):
                    continue  # raised before this process started (a replay)
                campaign, design = self._campaign_of(db, funnel, alert)
                # The feed holds every funnel's alerts: say which funnel first.
                message = f"{funnel.slug}: {monitor.explain(alert)}"
                entry = service.record(
                    db,
                    workspace_id=funnel.workspace_id,
                    campaign=campaign.key if campaign is not None and design else None,
                    kind=ALERT_KIND,
                    message=message,
                    actor=ACTOR,
                    details=details,
                )
                known.insert(0, entry)
                notices.append(
                    {
                        "type": "funnel.alert",
                        "funnel": funnel.slug,
                        "step": alert.step,
                        "metric": alert.metric.value,
                        "status": alert.status.value,
                        "variant": (details["culprit"] or {}).get("value")
                        if (details["culprit"] or {}).get("dim") == VARIANT
                        else None,
                        "since": details["since"],
                        "at": details["at"],
                        "message": message,
                        "activity_id": entry.id,
                    }
                )
        for notice in notices:
            self.notify(funnel.workspace_id, notice)
        return len(notices)

    def _act(self, funnel: _Funnel, alert: monitor.Alert) -> None:
        """Roll back the promoted design an open alert blames, if there is one."""
        notice: dict[str, Any] | None = None
        try:
            with self._session() as db:
                campaign, design = self._campaign_of(db, funnel, alert)
                if (
                    campaign is None
                    or design is None
                    or campaign.status
                    not in (
                        "promoting",
                        "promoted",
                    )
                ):
                    return
                promoted = service.promoted_design(campaign)
                if promoted is None or DesignSpace.key(promoted) != design:
                    return
                rollout = campaign.rollout_id
                explanation = monitor.explain(alert)
                service.rollback(
                    db, campaign, actor=ACTOR, comment=f"Funnel monitor: {explanation}"
                )
                action = {
                    "kind": "rolled_back",
                    "campaign": campaign.key,
                    "design": design,
                    "rollout_id": rollout,
                    "at": utcnow().isoformat(),
                }
                details = alert_details(funnel.slug, alert)
                for entry in _recent_alerts(db, funnel.workspace_id):
                    if _same(entry, details):
                        entry.details = {**entry.details, "action": action}
                        break
                notice = {
                    "type": "funnel.rolled_back",
                    "funnel": funnel.slug,
                    "step": alert.step,
                    "reason": explanation,
                    **action,
                }
        except (Conflict, NotFound):
            log.warning("automatic rollback not possible", funnel=funnel.slug, step=alert.step)
            return
        if notice is not None:
            log.warning("funnel monitor rolled back", funnel=funnel.slug, step=alert.step)
            if self._invalidate is not None:
                self._invalidate(funnel.workspace_id, funnel.slug)
            self.notify(funnel.workspace_id, notice)

    async def run_once(self) -> int:
        if self._before_pass is not None:
            await self._before_pass()
        return await run_in_threadpool(self.check_all)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("funnel health pass failed")

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
