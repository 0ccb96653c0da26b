"""The dashboard's analytics pages: overview, funnels and emotion.

Read-only pages for every member of the workspace (the ``read`` permission): what they show
comes from the same service functions as the API (``nexus.events``, ``nexus.funnels``,
``nexus.emotion``). Each chart carries its data as a table too (``templates/_charts.html``).
Query parameters are checked here and a bad one answers a page that says what is wrong (400,
or 404 for a funnel or visitor that is not there), never a 500 or a JSON problem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from nexus.core.clock import utcnow
from nexus.core.errors import NexusError, NotFound, PermissionDenied
from nexus.emotion import service as emotion_service
from nexus.emotion.schemas import VisitorEmotion
from nexus.events import service as events_service
from nexus.events.live import summarize_row
from nexus.events.store import PropertyPath
from nexus.experiments import service as experiments_service
from nexus.funnels import service as funnels_service
from nexus.funnels.models import FunnelReport
from nexus.web import charts
from nexus.web.charts import Band, Series
from nexus.web.routes import CurrentDashboard, Dashboard, _render
from nexus.workspaces import service as workspaces_service
from nexus.workspaces.deps import DbSession

router = APIRouter(include_in_schema=False)
router.include_router(charts.router)

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_FUNNELS = 50
RECENT_EVENTS = 10
FORECAST_STEPS = 5
MAX_COHORTS = 12
Z95 = 1.959964  # the 97.5th percentile of the standard normal: 95% bands
BREAKDOWNS: dict[str, str] = {
    "": "The funnel's own",
    "properties.variant": "Variant",
    "context.campaign.source": "Source",
    "emotion": "Emotion",
}
COHORTS: dict[str, str] = {
    "properties.variant": "Variant",
    "context.campaign.source": "Source",
    "context.campaign.name": "Campaign",
}
PLUTCHIK = emotion_service.SUMMARY_DIMENSIONS[:8]
NONE = "\u2013"  # an en dash: no value
EMOTION_COLUMNS = (*PLUTCHIK, "valence")
_VISITOR_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,512}$")


class PageQueryInvalid(NexusError):
    """A query parameter of a dashboard page that the page cannot show."""

    status = 400
    code = "invalid-page-query"
    title = "This page cannot show that"


# --- query parameters -----------------------------------------------------------------------


def parse_days(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_DAYS
    if raw.isdigit() and int(raw) in PERIODS:
        return int(raw)
    choices = ", ".join(str(p) for p in PERIODS)
    raise PageQueryInvalid(f"days must be one of {choices}; got {raw[:40]!r}.")


def parse_property(raw: str | None, *, name: str, extra: Sequence[str] = ()) -> str | None:
    """A property path (``properties.variant``, ``context.campaign.source`` …) or one of
    ``extra``; None when not given."""
    if raw is None or raw == "":
        return None
    if raw in extra:
        return raw
    try:
        PropertyPath.parse(raw)
    except ValueError as exc:
        raise PageQueryInvalid(
            f"{name} must be a property such as properties.variant: {exc}."
        ) from None
    return raw


def parse_visitor(raw: str | None) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    visitor = raw.strip()
    if not _VISITOR_ID.match(visitor):
        raise PageQueryInvalid(
            "visitor must be a user or anonymous id of 1 to 512 characters without control "
            "characters."
        )
    return visitor


@dataclass(frozen=True)
class Window:
    """The last ``days`` UTC days, today included (today up to now)."""

    days: int
    span: funnels_service.Period

    def labels(self) -> list[str]:
        """Each day of the window, oldest first, as ``YYYY-MM-DD``."""
        first = self.span.start.date()
        return [(first + timedelta(days=i)).isoformat() for i in range(self.days)]

    @classmethod
    def last(cls, days: int) -> Window:
        now = utcnow()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(days, funnels_service.Period(midnight - timedelta(days=days - 1), now))


# --- rendering helpers ----------------------------------------------------------------------


def _problem(request: Request, dashboard: Dashboard, exc: NexusError) -> HTMLResponse:
    return _render(request, "error.html", status_code=exc.status, error=exc, d=dashboard)


def _chart_page(
    request: Request, name: str, *, has_charts: bool, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page; one that draws charts loads plotly.js and gets the policy it needs."""
    response = _render(request, name, status_code=status_code, has_charts=has_charts, **context)
    if has_charts:
        charts.allow_chart_styles(response)
    return response


def _require_read(dashboard: Dashboard) -> None:
    if not dashboard.can("read"):
        raise PermissionDenied("Your role cannot see this workspace's analytics.")


def day_label(start_us: int) -> str:
    return datetime.fromtimestamp(start_us / 1_000_000, tz=UTC).date().isoformat()


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def number(value: float | None, digits: int = 2) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """``95 s``, ``12 min``, ``3.5 h``, ``2.0 d``."""
    if seconds is None:
        return NONE
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def money(value: float) -> str:
    return f"{value:,.2f}"


# --- overview -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartData:
    """What the chart macro takes: a figure and its table."""

    figure: dict[str, Any]
    headers: list[str]
    rows: list[list[Any]]


def overview_charts(activity: events_service.Activity) -> dict[str, ChartData]:
    days = [day_label(d.start_us) for d in activity.days]
    traffic = charts.line_figure(
        days,
        [
            Series("Visitors", [d.visitors for d in activity.days]),
            Series("Converted", [d.converted for d in activity.days]),
            Series("Bot visitors", [d.bot_visitors for d in activity.days], color="#667085"),
        ],
        y_title="People",
    )
    revenue = charts.bar_figure(
        days, [Series("Revenue", [round(d.revenue, 2) for d in activity.days])], dates=True
    )
    conversion = charts.line_figure(
        days,
        [Series("Conversion", [d.conversion if d.visitors else None for d in activity.days])],
        y_title="Conversion",
        y_format=".0%",
    )
    return {
        "traffic": ChartData(
            traffic,
            ["Day", "Visitors", "Events", "Converted", "Conversion", "Bot visitors", "Bot events"],
            [
                [
                    day,
                    d.visitors,
                    d.events,
                    d.converted,
                    percent(d.conversion if d.visitors else None),
                    d.bot_visitors,
                    d.bot_events,
                ]
                for day, d in zip(days, activity.days, strict=True)
            ],
        ),
        "conversion": ChartData(
            conversion,
            ["Day", "Visitors", "Converted", "Conversion"],
            [
                [day, d.visitors, d.converted, percent(d.conversion if d.visitors else None)]
                for day, d in zip(days, activity.days, strict=True)
            ],
        ),
        "revenue": ChartData(
            revenue,
            ["Day", "Revenue"],
            [[day, money(d.revenue)] for day, d in zip(days, activity.days, strict=True)],
        ),
    }


@router.get("/")
def overview(
    request: Request, dashboard: CurrentDashboard, db: DbSession, days: str | None = None
) -> HTMLResponse:
    """Visitors, conversion, revenue and bots apart over the last days, and live events."""
    context: dict[str, Any] = {"d": dashboard, "page": "overview", "periods": PERIODS}
    if dashboard.current is None:
        return _render(request, "overview.html", **context)
    workspace_id = dashboard.current.id
    context["write_key"] = workspaces_service.public_write_key(db, workspace_id=workspace_id)
    try:
        _require_read(dashboard)
        window = Window.last(parse_days(days))
        goal = experiments_service.get_decision_settings(db, workspace_id=workspace_id).goal_event
        store = request.app.state.events.store
        activity = events_service.activity(
            store,
            workspace_id=workspace_id,
            start_us=window.span.start_us,
            end_us=window.span.end_us,
            goal_event=goal,
            identity=request.app.state.settings.identity_merge,
        )
    except NexusError as exc:
        return _problem(request, dashboard, exc)
    rows, _ = events_service.recent_events(
        store, workspace_id=workspace_id, limit=RECENT_EVENTS, cursor=None
    )
    return _chart_page(
        request,
        "overview.html",
        has_charts=bool(activity.visitors or activity.bot_visitors),
        **context,
        days=window.days,
        goal=goal,
        activity=activity,
        charts=overview_charts(activity),
        recent=[summarize_row(r) for r in rows],
        money=money,
        percent=percent,
    )


# --- funnels --------------------------------------------------------------------------------


def _step_name(step: Any) -> str:
    return str(step.label or step.event) + (" (optional)" if step.optional else "")


def funnel_charts(
    report: FunnelReport, *, days: Sequence[str], emotion: bool
) -> dict[str, ChartData]:
    """Steps, time to convert, daily trend (every day of ``days``, also those nobody entered
    on) and, when the report has one, its breakdown."""
    names = [f"{s.index + 1}. {_step_name(s)}" for s in report.steps]
    out: dict[str, ChartData] = {}
    out["steps"] = ChartData(
        charts.bar_figure(
            names,
            [
                Series("Reached", [s.count for s in report.steps]),
                Series("Dropped here", [s.dropped for s in report.steps], color="#f4b183"),
            ],
            horizontal=True,
            stacked=True,
            value_title="People",
            height=max(200, 70 + 44 * len(names)),
        ),
        ["#", "Step", "People", "From start", "From previous", "Dropped", "Median time"],
        [
            [
                s.index + 1,
                _step_name(s),
                {"value": s.count, "testid": "step-count"},
                percent(s.conversion_from_start),
                percent(s.conversion_from_previous),
                s.dropped,
                duration(s.median_seconds_from_start),
            ]
            for s in report.steps
        ],
    )
    histogram = report.time_to_convert.histogram
    bins = [f"{duration(b.from_seconds)} to {duration(b.to_seconds)}" for b in histogram]
    out["time"] = ChartData(
        charts.bar_figure(
            bins,
            [Series("Converted", [b.count for b in histogram], color=charts.PALETTE[2])],
            value_title="People",
            category_title="Time from the first step to the last",
            height=260,
        ),
        ["From", "To", "People"],
        [[duration(b.from_seconds), duration(b.to_seconds), b.count] for b in histogram],
    )
    points = {p.start.date().isoformat(): p for p in report.trend}
    entered = [points[d].entered if d in points else 0 for d in days]
    converted = [points[d].converted if d in points else 0 for d in days]
    rates = [c / e if e else None for c, e in zip(converted, entered, strict=True)]
    out["trend"] = ChartData(
        charts.line_figure(
            list(days),
            [Series("Conversion", rates)],
            y_title="Converted of entered",
            y_format=".0%",
            height=260,
        ),
        ["Day", "Entered", "Converted", "Conversion"],
        [
            [day, e, c, percent(r)]
            for day, e, c, r in zip(days, entered, converted, rates, strict=True)
        ],
    )
    if report.breakdown:
        empty = "no text" if emotion else "(not set)"
        groups = [(b.value if b.value is not None else empty, b) for b in report.breakdown]
        out["breakdown"] = ChartData(
            charts.bar_figure(
                names,
                [Series(label, [s.conversion_from_start for s in b.steps]) for label, b in groups],
                horizontal=True,
                value_title="Reached, of those who entered",
                value_format=".0%",
                height=max(220, 80 + 30 * len(names) * min(len(groups), 6)),
            ),
            ["Group", "Entered", *names, "Converted", "Median time to convert"],
            [
                [
                    label,
                    b.entered,
                    *(f"{s.count} ({percent(s.conversion_from_start)})" for s in b.steps),
                    b.time_to_convert.converted,
                    duration(b.time_to_convert.median_seconds),
                ]
                for label, b in groups
            ],
        )
    return out


@router.get("/funnels")
def funnels_page(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    days: str | None = None,
    breakdown: str | None = None,
) -> HTMLResponse:
    """Each saved funnel: steps with conversion and drop-off, time to convert, a breakdown and
    the daily conversion trend."""
    context: dict[str, Any] = {
        "d": dashboard,
        "page": "funnels",
        "periods": PERIODS,
        "breakdowns": BREAKDOWNS,
    }
    if dashboard.current is None:
        return _render(request, "funnels.html", **context, sections=[])
    workspace_id = dashboard.current.id
    identity = request.app.state.settings.identity_merge
    store = request.app.state.events.store
    try:
        _require_read(dashboard)
        window = Window.last(parse_days(days))
        chosen = parse_property(breakdown, name="breakdown", extra=("emotion",))
        groups = None
        if chosen == "emotion":
            groups = funnels_service.PersonGroups(
                "emotion",
                emotion_service.dominant_emotions(
                    store, workspace_id=workspace_id, span=window.span, identity=identity
                ),
            )
        sections = []
        for funnel in funnels_service.list_funnels(
            db, workspace_id=workspace_id, limit=MAX_FUNNELS
        ).items:
            report = funnels_service.report(
                store,
                workspace_id=workspace_id,
                definition=funnels_service.definition_of(funnel),
                span=window.span,
                breakdown=None if groups else chosen,
                interval="day",
                identity=identity,
                person_groups=groups,
            )
            built = funnel_charts(report, days=window.labels(), emotion=bool(groups))
            sections.append((funnel, report, built))
    except NexusError as exc:
        return _problem(request, dashboard, exc)
    return _chart_page(
        request,
        "funnels.html",
        has_charts=any(report.entered for _, report, _ in sections),
        **context,
        days=window.days,
        breakdown=chosen or "",
        sections=sections,
        percent=percent,
        duration=duration,
    )


# --- emotion --------------------------------------------------------------------------------


def _row(means: emotion_service.EmotionMeans, columns: Sequence[str]) -> list[float | None]:
    return [means.means[c] for c in columns]


def emotion_charts(
    summary: emotion_service.EmotionSummary, *, cohort_name: str
) -> dict[str, ChartData]:
    out: dict[str, ChartData] = {}
    days = [m.group for m in summary.by_day]
    out["time"] = ChartData(
        charts.line_figure(
            days,
            [Series(name, [m.means[name] for m in summary.by_day]) for name in EMOTION_COLUMNS],
            y_title="Mean (emotions 0 to 1, valence -1 to 1)",
            y_range=(-1.0, 1.0),
        ),
        ["Day", "Readings", *EMOTION_COLUMNS],
        [
            [m.group, m.readings, *(number(v) for v in _row(m, EMOTION_COLUMNS))]
            for m in summary.by_day
        ],
    )
    if summary.by_step:
        out["steps"] = ChartData(
            charts.heatmap_figure(
                list(EMOTION_COLUMNS),
                [m.group for m in summary.by_step],
                [_row(m, EMOTION_COLUMNS) for m in summary.by_step],
                zmin=-1.0,
                zmax=1.0,
                value_title="Mean",
            ),
            ["Step", "Readings", *EMOTION_COLUMNS],
            [
                [m.group, m.readings, *(number(v) for v in _row(m, EMOTION_COLUMNS))]
                for m in summary.by_step
            ],
        )
    if summary.by_cohort:
        cohorts = sorted(summary.by_cohort, key=lambda m: (-m.readings, m.group))[:MAX_COHORTS]
        out["cohorts"] = ChartData(
            charts.bar_figure(
                list(EMOTION_COLUMNS),
                [Series(f"{m.group} ({m.readings})", _row(m, EMOTION_COLUMNS)) for m in cohorts],
                value_title="Mean",
            ),
            [cohort_name, "Readings", *EMOTION_COLUMNS],
            [
                [m.group, m.readings, *(number(v) for v in _row(m, EMOTION_COLUMNS))]
                for m in cohorts
            ],
        )
    return out


def trajectory_chart(visitor: VisitorEmotion) -> ChartData:
    """Valence: the readings, the filtered state with its 95% band, and the forecast's."""
    history = visitor.history
    times = [p.timestamp.isoformat() for p in history]
    last = history[-1].timestamp if history else utcnow()
    ahead = [(last + timedelta(seconds=f.horizon_seconds)).isoformat() for f in visitor.forecast]

    def clip(x: float) -> float:
        return max(-1.0, min(1.0, x))

    lower = [clip(p.filtered.valence - Z95 * p.filtered_sd.valence) for p in history]
    upper = [clip(p.filtered.valence + Z95 * p.filtered_sd.valence) for p in history]
    figure = charts.band_figure(
        lines=[
            (times, Series("Estimated valence", [p.filtered.valence for p in history])),
            (
                times[-1:] + ahead,
                Series(
                    "Forecast",
                    [p.filtered.valence for p in history[-1:]]
                    + [f.valence.mean for f in visitor.forecast],
                    color=charts.PALETTE[3],
                ),
            ),
        ],
        bands=[
            Band(
                "95% band",
                times + ahead,
                lower + [f.valence.lower for f in visitor.forecast],
                upper + [f.valence.upper for f in visitor.forecast],
            )
        ],
        markers=[(times, Series("Reading", [p.observed.valence for p in history]))],
        y_title="Valence",
        y_range=(-1.05, 1.05),
    )
    rows: list[list[Any]] = [
        [
            t,
            "reading",
            number(p.observed.valence),
            number(p.filtered.valence),
            number(lo),
            number(hi),
            p.ekman,
        ]
        for t, p, lo, hi in zip(times, history, lower, upper, strict=True)
    ]
    rows += [
        [
            t,
            f"forecast +{f.step}",
            "",
            number(f.valence.mean),
            number(f.valence.lower),
            number(f.valence.upper),
            max(f.ekman, key=lambda k: f.ekman[k]),
        ]
        for t, f in zip(ahead, visitor.forecast, strict=True)
    ]
    return ChartData(
        figure,
        ["Time (UTC)", "Point", "Reading", "Estimate", "Lower 95%", "Upper 95%", "Ekman"],
        rows,
    )


@router.get("/emotion")
def emotion_page(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    days: str | None = None,
    funnel: str | None = None,
    cohort: str | None = None,
    visitor: str | None = None,
) -> HTMLResponse:
    """Emotion over time, by funnel step, by cohort, and one visitor's trajectory."""
    context: dict[str, Any] = {
        "d": dashboard,
        "page": "emotion",
        "periods": PERIODS,
        "cohorts": COHORTS,
    }
    if dashboard.current is None:
        return _render(request, "emotion.html", **context)
    workspace_id = dashboard.current.id
    identity = request.app.state.settings.identity_merge
    store = request.app.state.events.store
    try:
        _require_read(dashboard)
        window = Window.last(parse_days(days))
        cohort_property = parse_property(cohort, name="cohort") or "properties.variant"
        visitor_id = parse_visitor(visitor)
        funnels = funnels_service.list_funnels(
            db, workspace_id=workspace_id, limit=MAX_FUNNELS
        ).items
        funnel_id = funnel or (funnels[0].id if funnels else None)
        if funnel_id is not None and funnel_id not in {f.id for f in funnels}:
            raise NotFound(f"No funnel {funnel_id[:64]} in this workspace.")
        summary = emotion_service.emotion_summary(
            store,
            db,
            workspace_id=workspace_id,
            span=window.span,
            funnel_id=funnel_id,
            cohort_property=cohort_property,
            identity=identity,
        )
    except NexusError as exc:
        return _problem(request, dashboard, exc)
    trajectory = None
    missing_visitor = None
    if visitor_id is not None:
        try:
            trajectory = emotion_service.visitor_emotion(
                store,
                request.app.state.emotion.dynamics,
                workspace_id=workspace_id,
                visitor_id=visitor_id,
                steps=FORECAST_STEPS,
                identity=identity,
            )
        except NotFound:
            missing_visitor = visitor_id
    built = emotion_charts(summary, cohort_name=COHORTS.get(cohort_property, cohort_property))
    if trajectory is not None:
        built["trajectory"] = trajectory_chart(trajectory)
    return _chart_page(
        request,
        "emotion.html",
        has_charts=bool(summary.readings or trajectory),
        # A visitor without readings: the rest of the page, and a 404 that says so.
        status_code=404 if missing_visitor else 200,
        **context,
        days=window.days,
        funnels=funnels,
        funnel_id=funnel_id,
        cohort=cohort_property,
        visitor=visitor_id or "",
        missing_visitor=missing_visitor,
        trajectory=trajectory,
        summary=summary,
        charts=built,
        number=number,
    )
