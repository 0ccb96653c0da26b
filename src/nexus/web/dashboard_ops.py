"""Dashboard pages to watch and steer what NEXUS decides, what it keeps and who may do what:
experiments (results with intervals, sequential status, sample-ratio check), the adaptation
bandit, guarded rollouts, flags (switch, edit), privacy (consent, data-subject requests, the
audit log) and the workspace's settings (keys, members and roles).

Every page is per workspace and role-aware: a control is shown only to a role that may use it,
and every form is checked again on the server -- the session's CSRF token first, then the
permission -- before it calls the same service function the API route calls, so the audit
chain, the flag's trail and decide's compiled configuration see a dashboard change exactly as
they see an API one. Bad input answers a page with the reason (4xx), never a 500; an edit form
that fails keeps what was typed.

Charts are plotly figure dicts drawn by ``static/charts.js`` through the ``chart`` macro of
``_charts.html``; the same numbers are always in a table next to them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from nexus.core.clock import as_utc, utcnow
from nexus.core.errors import Conflict, FieldError, InvalidInput, NexusError, PermissionDenied
from nexus.events.service import EventsRuntime
from nexus.events.store import EventStore, PropertyFilter, PropertyPath, PropertyScan
from nexus.experiments import analysis, guard
from nexus.experiments import service as experiments
from nexus.experiments.decisions import ADAPTATION_POLICY, DecisionRuntime
from nexus.experiments.models import (
    ExperimentRead,
    ExperimentResults,
    FlagChange,
    FlagRead,
    FlagUpdate,
    MetricIn,
    MetricResult,
    RolloutRead,
)
from nexus.privacy import service as privacy
from nexus.privacy.consent import Purpose
from nexus.privacy.models import ConsentStateRow, SubjectRequestCreate
from nexus.privacy.runtime import PrivacyRuntime
from nexus.security.audit import VerifyResult
from nexus.security.models import AuditLogEntry
from nexus.security.service import chain_for, verify_log
from nexus.web import charts
from nexus.web.routes import CurrentDashboard, Dashboard, _error_page, _render
from nexus.workspaces import service as workspaces
from nexus.workspaces.deps import DbSession, WorkspaceRequired, check_csrf, enforce
from nexus.workspaces.models import MemberCreate, Role

router = APIRouter(include_in_schema=False)

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
LIST_LIMIT = 200
AUDIT_PAGE = 50
DASH = "\N{EN DASH}"  # what a table shows where there is no number
CHANGES_SHOWN = 20
MAX_VARIATIONS = 50
ARM = PropertyPath.parse("properties.arm")
POLICY = PropertyPath.parse("properties.policy")
# An exact action ("flag.updated") or a family ("flag.*").
AUDIT_FILTER = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$")


# --- shared helpers -------------------------------------------------------------------------


def _workspace_of(dashboard: Dashboard) -> str:
    if dashboard.current is None:
        raise WorkspaceRequired("Choose a workspace first (the switcher at the top).")
    return dashboard.current.id


def _authorize_form(dashboard: Dashboard, csrf_token: str, permission: str, what: str) -> str:
    """The checks every form post makes, in order: the session's CSRF token, a workspace, and
    the permission (the service functions then ask the policies again about the object)."""
    check_csrf(dashboard.session, csrf_token)
    workspace_id = _workspace_of(dashboard)
    if not dashboard.can(permission):
        role = dashboard.principal.role.value if dashboard.principal.role else "none"
        raise PermissionDenied(
            f"{what} needs the '{permission}' permission; your role here is {role}."
        )
    return workspace_id


def _refused(request: Request, db: Session, exc: NexusError) -> HTMLResponse:
    """Nothing a refused form started is kept; the page says why."""
    db.rollback()
    return _error_page(request, exc)


def _with_charts(response: HTMLResponse) -> HTMLResponse:
    """The content security policy plotly.js needs, as the dashboard's other chart pages."""
    charts.allow_chart_styles(response)
    return response


def _store(request: Request) -> EventStore:
    events: EventsRuntime = request.app.state.events
    return events.store


def _decisions(request: Request) -> DecisionRuntime:
    runtime: DecisionRuntime = request.app.state.decisions
    return runtime


def _privacy(request: Request) -> PrivacyRuntime:
    runtime: PrivacyRuntime = request.app.state.privacy
    return runtime


def _int_param(text: str | None, name: str, *, low: int, high: int, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {text[:40]!r}.") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}.")
    return value


def _too_long(value: str, name: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidInput(f"{name} is limited to {limit} characters.")


def _validation_messages(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        out.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return out


def _number(value: float | None, *, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.{digits}g}"


def _signed(value: float | None, *, percent: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    if percent:
        return f"{value * 100:+.2f} pp"
    return f"{value:+.4g}"


def _interval(low: float | None, high: float | None, *, percent: bool = False) -> str:
    if low is None or high is None:
        return DASH
    return f"[{_signed(low, percent=percent)}, {_signed(high, percent=percent)}]"


def _p_value(value: float | None) -> str:
    if value is None:
        return DASH
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def _share(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value * 100:.1f}%"


def _when(moment: datetime | None) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M") if moment is not None else DASH


def _people(db: Session, workspace_id: str) -> dict[str, str]:
    """Who the ids in trails and logs are: members' e-mails and keys' names."""
    names = {
        m.user_id: m.email
        for m in workspaces.list_members(db, workspace_id=workspace_id, limit=LIST_LIMIT).items
    }
    for key in workspaces.list_api_keys(
        db, workspace_id=workspace_id, include_revoked=True, limit=LIST_LIMIT
    ).items:
        names[key.id] = f"key '{key.name}'"
    return names


# --- figures (plotly figure dicts; charts.js draws them) ------------------------------------


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    """The look of the dashboard's other charts (:mod:`nexus.web.charts`): its font, no
    background, room for labels by ``automargin``, the legend above the plot."""
    layout: dict[str, Any] = {
        "height": height,
        "autosize": True,
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "font": {"family": charts.FONT, "size": 12, "color": "#1d2130"},
        "paper_bgcolor": "rgba(0, 0, 0, 0)",
        "plot_bgcolor": "rgba(0, 0, 0, 0)",
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
    }
    layout.update(extra)
    return layout


def _axis(title: str = "", **extra: Any) -> dict[str, Any]:
    axis: dict[str, Any] = {"automargin": True, "gridcolor": "#e3e6ee", "zeroline": False}
    if title:
        axis["title"] = {"text": title}
    axis.update(extra)
    return axis


def effect_figure(metric: MetricResult, *, level: int, percent: bool) -> dict[str, Any]:
    """Each variant's effect against control with its fixed-horizon and its always-valid
    interval: a point and two error bars per variant, and the zero line of no effect."""
    scale = 100.0 if percent else 1.0

    def trace(
        name: str, pairs: list[tuple[str, float, float, float]], color: str, offset: float
    ) -> dict[str, Any]:
        # Each variant's row holds both intervals, a little apart so neither hides the other.
        rows = {c.variant: i for i, c in enumerate(metric.comparisons)}
        return {
            "type": "scatter",
            "mode": "markers",
            "name": name,
            "y": [rows[v] + offset for v, _, _, _ in pairs],
            "x": [e * scale for _, e, _, _ in pairs],
            "text": [v for v, _, _, _ in pairs],
            "marker": {"color": color, "size": 9},
            "error_x": {
                "type": "data",
                "symmetric": False,
                "array": [(hi - e) * scale for _, e, _, hi in pairs],
                "arrayminus": [(e - lo) * scale for _, e, lo, _ in pairs],
                "color": color,
                "thickness": 2,
                "width": 5,
            },
            "hovertemplate": "%{text}: %{x:.4g} "
            + ("pp " if percent else "")
            + f"<extra>{name}</extra>",
        }

    fixed = [
        (c.variant, c.effect, c.ci_low, c.ci_high)
        for c in metric.comparisons
        if c.effect is not None and c.ci_low is not None and c.ci_high is not None
    ]
    sequential = [
        (c.variant, c.effect, c.sequential_ci_low, c.sequential_ci_high)
        for c in metric.comparisons
        if c.effect is not None
        and c.sequential_ci_low is not None
        and c.sequential_ci_high is not None
    ]
    variants = [c.variant for c in metric.comparisons]
    return {
        "data": [
            trace(f"{level}% confidence interval", fixed, charts.PALETTE[0], -0.12),
            trace("always-valid interval", sequential, charts.PALETTE[1], 0.12),
        ],
        "layout": _layout(
            120 + 60 * max(1, len(variants)),
            xaxis=_axis(
                "effect vs control" + (" (percentage points)" if percent else ""),
                zeroline=True,
                zerolinecolor="#667085",
                zerolinewidth=2,
            ),
            yaxis=_axis(
                tickvals=list(range(len(variants))),
                ticktext=variants,
                range=[len(variants) - 0.5, -0.5],
                zeroline=False,
            ),
        ),
    }


def allocation_figure(allocation: Allocation) -> dict[str, Any]:
    """The share of each adaptation among the decisions of each hour or day (stacked), over
    the hours or days that had decisions."""
    kept = [
        i
        for i in range(len(allocation.starts))
        if any(allocation.counts[a][i] for a in allocation.arms)
    ]
    x = [allocation.starts[i].isoformat() for i in kept]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": arm,
                "x": x,
                "y": [allocation.counts[arm][i] for i in kept],
                "stackgroup": "adaptations",
                "groupnorm": "percent",
                "line": {"color": charts.PALETTE[n % len(charts.PALETTE)], "width": 1},
                "marker": {"size": 4},
            }
            for n, arm in enumerate(allocation.arms)
        ],
        "layout": _layout(
            charts.HEIGHT,
            xaxis=_axis(type="date"),
            yaxis=_axis("share of decisions", ticksuffix="%", range=[0, 100]),
        ),
    }


def consent_figure(rates: Sequence[ConsentRate]) -> dict[str, Any]:
    """Granted, denied and unanswered per purpose, as shares of the visitors with answers
    (the counts are in the table)."""
    purposes = [r.purpose for r in rates]
    colors = {"granted": charts.PALETTE[2], "denied": charts.PALETTE[3], "unanswered": "#c4c9d4"}
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": state,
                "y": purposes,
                "x": [getattr(r, state) for r in rates],
                "marker": {"color": color},
            }
            for state, color in colors.items()
        ],
        "layout": _layout(
            100 + 40 * len(purposes),
            barmode="stack",
            barnorm="percent",
            xaxis=_axis("share of the visitors with recorded consent", ticksuffix="%"),
            yaxis=_axis(type="category", autorange="reversed"),
        ),
    }


# --- experiments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """How often the adaptation bandit chose each arm, per hour or per day."""

    bucket: str  # "hour" or "day"
    starts: list[datetime]
    arms: list[str]
    counts: dict[str, list[int]]
    total: int

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows (buckets with decisions, oldest first): counts and shares."""
        headers = ["Starting (UTC)", "Decisions", *(f"{a}" for a in self.arms)]
        rows: list[list[Any]] = []
        fmt = "%Y-%m-%d %H:00" if self.bucket == "hour" else "%Y-%m-%d"
        for i, start in enumerate(self.starts):
            total = sum(self.counts[a][i] for a in self.arms)
            if total == 0:
                continue
            rows.append(
                [
                    start.strftime(fmt),
                    total,
                    *(
                        f"{self.counts[a][i]} ({_share(self.counts[a][i] / total)})"
                        for a in self.arms
                    ),
                ]
            )
        return headers, rows


def adaptation_allocation(
    store: EventStore, *, workspace_id: str, now: datetime, days: int
) -> Allocation:
    """The ``$decision`` events of the adaptation policy (``arm`` chosen, as ``decide`` logs
    them) of the last ``days``, counted per arm and per hour (up to 2 days) or UTC day."""
    step = HOUR_US if days <= 2 else DAY_US
    now_us = int(as_utc(now).timestamp() * US)
    end_us = (now_us // step + 1) * step
    start_us = end_us - days * DAY_US
    buckets = (end_us - start_us) // step
    rows = store.property_rows(
        PropertyScan(
            workspace_id=workspace_id,
            events=(analysis.DECISION_EVENT,),
            start_us=start_us,
            end_us=end_us,
            properties=(ARM,),
            filters=(PropertyFilter(POLICY, "eq", ADAPTATION_POLICY),),
        )
    )
    chosen = np.asarray([a or "" for a in rows.values[0]], dtype=object)
    index = ((rows.ts - start_us) // step).astype(np.int64)
    keep = (index >= 0) & (index < buckets) & (chosen != "")
    arms = sorted({str(a) for a in chosen[keep]})
    counts = {
        arm: np.bincount(index[keep & (chosen == arm)], minlength=buckets).astype(int).tolist()
        for arm in arms
    }
    starts = [datetime.fromtimestamp((start_us + i * step) / US, tz=UTC) for i in range(buckets)]
    return Allocation(
        bucket="hour" if step == HOUR_US else "day",
        starts=starts,
        arms=arms,
        counts=counts,
        total=int(keep.sum()),
    )


@dataclass(frozen=True)
class PolicyView:
    """What the adaptation bandit of this process has learned (``/v1/decision-policy``)."""

    kind: str | None
    arms: list[tuple[str, int, str]]  # arm, pulls, share of pulls
    updates: int
    pending: int


def _policy_view(request: Request, workspace_id: str) -> PolicyView:
    runtime = _decisions(request)
    policy = runtime.compiled(workspace_id).policy
    pending = runtime.pending_count(workspace_id)
    if policy is None:
        return PolicyView(kind=None, arms=[], updates=0, pending=pending)
    pulls = {arm: int(policy.pulls.get(arm, 0)) for arm in policy.arms}
    total = sum(pulls.values())
    return PolicyView(
        kind=type(policy).__name__,
        arms=[(a, n, _share(n / total) if total else DASH) for a, n in pulls.items()],
        updates=int(policy.n_updates),
        pending=pending,
    )


@dataclass(frozen=True)
class RolloutView:
    rollout: RolloutRead
    guardrails: list[str]
    history: list[tuple[str, str, str, str]]  # at, action, stage, detail (newest first)
    rolled_back_at: str | None
    rolled_back_reason: str | None


def _rollout_view(rollout: RolloutRead) -> RolloutView:
    guardrails = [
        f"{g.key}: {g.kind} of {g.event or g.funnel_id} ({g.direction} is good)"
        for g in rollout.guardrails
    ]
    events = sorted(rollout.history, key=lambda e: e.at, reverse=True)
    back = next((e for e in events if e.action == "rolled_back"), None)
    return RolloutView(
        rollout=rollout,
        guardrails=guardrails,
        history=[(_when(e.at), e.action, f"{e.stage:g}%", e.detail) for e in events],
        rolled_back_at=_when(back.at) if back is not None else None,
        rolled_back_reason=back.detail if back is not None else None,
    )


def _rollouts(db: Session, workspace_id: str, flag_key: str | None = None) -> list[RolloutView]:
    found = [
        guard.rollout_read(r)
        for r in guard.list_rollouts(
            db, workspace_id=workspace_id, cursor=None, limit=LIST_LIMIT
        ).items
    ]
    if flag_key is not None:
        found = [r for r in found if r.flag_key == flag_key]
    found.sort(key=lambda r: r.created_at, reverse=True)
    return [_rollout_view(r) for r in found]


@router.get("/experiments")
def experiments_page(
    request: Request, dashboard: CurrentDashboard, db: DbSession, days: str | None = None
) -> HTMLResponse:
    """Experiments with their status, the adaptation bandit and the guarded rollouts."""
    if dashboard.current is None:
        return _render(request, "experiments.html", d=dashboard, page="experiments")
    workspace_id = dashboard.current.id
    try:
        span = _int_param(days, "days", low=1, high=90, default=7)
    except NexusError as exc:
        return _error_page(request, exc)
    listed = experiments.list_experiments(db, workspace_id=workspace_id, limit=LIST_LIMIT)
    allocation = adaptation_allocation(
        _store(request), workspace_id=workspace_id, now=utcnow(), days=span
    )
    headers, rows = allocation.table()
    return _with_charts(
        _render(
            request,
            "experiments.html",
            d=dashboard,
            page="experiments",
            experiments=[experiments.experiment_read(e) for e in listed.items],
            more_experiments=listed.next_cursor is not None,
            rollouts=_rollouts(db, workspace_id),
            policy=_policy_view(request, workspace_id),
            settings=experiments.get_decision_settings(db, workspace_id=workspace_id),
            days=span,
            allocation=allocation,
            allocation_figure=allocation_figure(allocation),
            allocation_headers=headers,
            allocation_rows=rows,
            when=_when,
        )
    )


@dataclass(frozen=True)
class ComparisonView:
    variant: str
    visitors: str
    mean: str
    effect: str
    relative: str
    interval: str
    sequential_interval: str
    p_value: str
    adjusted_p_value: str
    chance: str
    loss: str
    cuped: bool
    significant: bool
    regression: bool
    status: str  # the sequential verdict, in words
    decided: bool  # the always-valid test has decided: stopping now is safe
    error: str | None


@dataclass(frozen=True)
class MetricView:
    key: str
    kind: str
    guardrail: bool
    direction: str
    chart_id: str
    figure: dict[str, Any]
    chart_headers: list[str]
    chart_rows: list[list[Any]]
    control: tuple[str, str, str]  # variant, visitors, mean
    comparisons: list[ComparisonView]
    plottable: bool  # some variant has an effect with an interval to draw


def _sequential_status(effect: float | None, decided: bool | None, direction: str) -> str:
    if decided is None:
        return "not enough data for the always-valid test yet"
    if not decided:
        return "keep running: no always-valid difference yet"
    better = effect is not None and (effect > 0 if direction == "increase" else effect < 0)
    return "decided: better than control" if better else "decided: worse than control"


def _metric_view(metric: MetricResult, definition: MetricIn | None, *, level: int) -> MetricView:
    percent = metric.kind == "conversion"
    direction = definition.direction if definition is not None else "increase"
    arms = {a.variant: a for a in metric.arms}
    compared = {c.variant for c in metric.comparisons}
    control = next((a for a in metric.arms if a.variant not in compared), None)

    def mean(value: float | None) -> str:
        return _share(value) if percent else _number(value)

    views = []
    for c in metric.comparisons:
        arm = arms.get(c.variant)
        views.append(
            ComparisonView(
                variant=c.variant,
                visitors=str(arm.visitors) if arm else DASH,
                mean=mean(arm.mean if arm else None),
                effect=_signed(c.effect, percent=percent),
                relative=_signed(c.relative_effect * 100 if c.relative_effect is not None else None)
                + ("%" if c.relative_effect is not None else ""),
                interval=_interval(c.ci_low, c.ci_high, percent=percent),
                sequential_interval=_interval(
                    c.sequential_ci_low, c.sequential_ci_high, percent=percent
                ),
                p_value=_p_value(c.p_value),
                adjusted_p_value=_p_value(c.adjusted_p_value),
                chance=_share(c.chance_to_beat_control),
                loss=_number(c.expected_loss, digits=3),
                cuped=c.cuped,
                significant=c.significant,
                regression=c.regression,
                status=_sequential_status(c.effect, c.sequential_significant, direction),
                decided=bool(c.sequential_significant),
                error=c.error,
            )
        )
    scale = 100.0 if percent else 1.0

    def plotted(value: float | None) -> str:
        return DASH if value is None else f"{value * scale:+.4g}"

    return MetricView(
        key=metric.metric,
        kind=metric.kind,
        guardrail=metric.guardrail,
        direction=direction,
        chart_id=f"effect-{metric.metric}",
        figure=effect_figure(metric, level=level, percent=percent),
        chart_headers=[
            "Variant",
            "Effect" + (" (pp)" if percent else ""),
            f"{level}% CI low",
            f"{level}% CI high",
            "Always-valid low",
            "Always-valid high",
        ],
        chart_rows=[
            [
                c.variant,
                plotted(c.effect),
                plotted(c.ci_low),
                plotted(c.ci_high),
                plotted(c.sequential_ci_low),
                plotted(c.sequential_ci_high),
            ]
            for c in metric.comparisons
        ],
        control=(
            control.variant if control else DASH,
            str(control.visitors) if control else DASH,
            mean(control.mean if control else None),
        ),
        comparisons=views,
        plottable=any(
            c.effect is not None and c.ci_low is not None and c.ci_high is not None
            for c in metric.comparisons
        ),
    )


def _stopping(views: Sequence[MetricView], primary: str | None) -> str:
    """One line on whether the experiment may stop, from the always-valid test (safe to read
    at any time, unlike the fixed-horizon p-value)."""
    judged = [v for v in views if v.key == primary] or [v for v in views if not v.guardrail]
    harmed = [
        f"{v.key} ({c.variant})"
        for v in views
        if v.guardrail
        for c in v.comparisons
        if c.decided and c.status.endswith("worse than control")
    ]
    if harmed:
        return "Stop: a guardrail is significantly worse — " + ", ".join(harmed) + "."
    decided = [f"{v.key} ({c.variant})" for v in judged for c in v.comparisons if c.decided]
    if decided:
        return "May stop: the always-valid test has decided on " + ", ".join(decided) + "."
    return "Keep running: the always-valid test has not decided yet."


@router.get("/experiments/{experiment_key}")
def experiment_page(
    request: Request, experiment_key: str, dashboard: CurrentDashboard, db: DbSession
) -> HTMLResponse:
    """One experiment's results per metric, its sequential status and the SRM check."""
    try:
        workspace_id = _workspace_of(dashboard)
        experiment = experiments.get_experiment(db, workspace_id=workspace_id, key=experiment_key)
    except NexusError as exc:
        return _error_page(request, exc)
    read: ExperimentRead = experiments.experiment_read(experiment)
    results: ExperimentResults | None = None
    problem: str | None = None
    if read.status != "draft":
        try:
            results = analysis.experiment_results(
                db, _store(request), experiment=experiment, start=None, end=None
            )
        except NexusError as exc:
            problem = exc.detail
    level = round((1 - read.alpha) * 100)
    definitions = {m.key: m for m in read.metrics}
    views = (
        [_metric_view(m, definitions.get(m.metric), level=level) for m in results.metrics]
        if results is not None
        else []
    )
    srm_rows = []
    if results is not None:
        total = sum(results.sample_ratio.observed.values())
        for variant, observed in results.sample_ratio.observed.items():
            share = results.sample_ratio.expected_share.get(variant, 0.0)
            srm_rows.append(
                (variant, observed, _share(observed / total) if total else DASH, _share(share))
            )
    return _with_charts(
        _render(
            request,
            "experiment.html",
            d=dashboard,
            page="experiments",
            experiment=read,
            results=results,
            problem=problem,
            level=level,
            metrics=views,
            srm_rows=srm_rows,
            srm_p=_p_value(results.sample_ratio.p_value) if results is not None else DASH,
            stopping=_stopping(views, read.primary_metric) if views else None,
            when=_when,
        )
    )


# --- flags ----------------------------------------------------------------------------------


def _serving(flag: FlagRead) -> str:
    serve = flag.fallthrough
    if serve.variation is not None:
        return serve.variation
    return " / ".join(f"{s.variation} {s.weight:g}%" for s in serve.rollout or [])


@router.get("/flags")
def flags_page(request: Request, dashboard: CurrentDashboard, db: DbSession) -> HTMLResponse:
    if dashboard.current is None:
        return _render(request, "flags.html", d=dashboard, page="flags")
    workspace_id = dashboard.current.id
    listed = experiments.list_flags(db, workspace_id=workspace_id, limit=LIST_LIMIT)
    running = {
        v.rollout.flag_key: v for v in _rollouts(db, workspace_id) if v.rollout.status == "running"
    }
    flags = [experiments.flag_read(f) for f in listed.items]
    return _render(
        request,
        "flags.html",
        d=dashboard,
        page="flags",
        flags=[(f, _serving(f), running.get(f.key)) for f in flags],
        more_flags=listed.next_cursor is not None,
        when=_when,
    )


def _back_to(flag_key: str, back: str) -> str:
    return f"/flags/{flag_key}" if back == "flag" else "/flags"


@router.post("/flags/{flag_key}/toggle")
def toggle_flag(
    request: Request,
    flag_key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    enabled: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Switch a flag on, or off (the kill switch: audited as ``killed``, as the API's is)."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Switching a flag")
        if enabled not in ("true", "false"):
            raise InvalidInput("Say whether the flag should be on: enabled=true or enabled=false.")
        _too_long(comment, "The comment", 2000)
        on = enabled == "true"
        experiments.update_flag(
            db,
            workspace_id=workspace_id,
            key=flag_key,
            data=FlagUpdate(enabled=on, comment=comment),
            actor=experiments.actor_of(dashboard.principal),
            action="updated" if on else "killed",
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    _decisions(request).invalidate(workspace_id)
    return RedirectResponse(_back_to(flag_key, back), status_code=303)


@dataclass
class FlagForm:
    """What the structured edit form holds (the flag's values, or what was typed)."""

    name: str
    description: str
    comment: str
    values: dict[str, str]  # variation key -> its value as JSON text
    serve: str  # "variation" or "rollout"
    fallthrough_variation: str
    weights: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, flag: FlagRead) -> FlagForm:
        rollout = {s.variation: s.weight for s in flag.fallthrough.rollout or []}
        return cls(
            name=flag.name,
            description=flag.description,
            comment="",
            values={v.key: orjson.dumps(v.value).decode() for v in flag.variations},
            serve="rollout" if flag.fallthrough.rollout is not None else "variation",
            fallthrough_variation=flag.fallthrough.variation or flag.off_variation,
            weights={v.key: f"{rollout.get(v.key, 0):g}" for v in flag.variations},
        )


def _changed_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if before is None or after is None:
        return []
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _editable(flag: FlagRead) -> str:
    """The flag as the JSON edit form shows it: every field a ``PATCH`` may change."""
    document = flag.model_dump(
        mode="json", exclude={"id", "key", "version", "created_at", "updated_at"}
    )
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _flag_context(db: Session, workspace_id: str, flag: FlagRead) -> dict[str, Any]:
    changes = db.scalars(
        select(FlagChange)
        .where(FlagChange.workspace_id == workspace_id, FlagChange.flag_key == flag.key)
        .order_by(FlagChange.at.desc(), FlagChange.id.desc())
        .limit(CHANGES_SHOWN)
    )
    people = _people(db, workspace_id)
    trail = [
        (
            _when(c.at),
            c.action,
            people.get(c.actor, c.actor),
            c.version,
            ", ".join(_changed_fields(c.before, c.after)),
            c.comment,
        )
        for c in changes
    ]
    return {
        "flag": flag,
        "serving": _serving(flag),
        "rules_json": orjson.dumps(
            [r.model_dump(mode="json", exclude_none=True) for r in flag.rules],
            option=orjson.OPT_INDENT_2,
        ).decode(),
        "trail": trail,
        "rollouts": _rollouts(db, workspace_id, flag.key),
        "when": _when,
    }


def _flag_page(
    request: Request,
    dashboard: Dashboard,
    db: Session,
    flag: FlagRead,
    *,
    form: FlagForm | None = None,
    document: str | None = None,
    document_errors: Sequence[str] = (),
    form_version: int | None = None,
    status_code: int = 200,
    saved: bool = False,
) -> HTMLResponse:
    assert dashboard.current is not None
    return _render(
        request,
        "flag.html",
        status_code=status_code,
        d=dashboard,
        page="flags",
        form=form or FlagForm.of(flag),
        document=document if document is not None else _editable(flag),
        document_errors=list(document_errors),
        form_version=form_version if form_version is not None else flag.version,
        saved=saved,
        **_flag_context(db, dashboard.current.id, flag),
    )


@router.get("/flags/{flag_key}")
def flag_page(
    request: Request,
    flag_key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    saved: str | None = None,
) -> HTMLResponse:
    try:
        workspace_id = _workspace_of(dashboard)
        flag = experiments.flag_read(
            experiments.get_flag(db, workspace_id=workspace_id, key=flag_key)
        )
    except NexusError as exc:
        return _error_page(request, exc)
    return _flag_page(request, dashboard, db, flag, saved=saved == "1")


def _check_version(flag: FlagRead, version: str) -> None:
    """Refuse to overwrite a change made since the form was opened (no lost updates)."""
    if version != str(flag.version):
        raise Conflict(
            f"The flag changed since this form was opened (version {version or '?'} → "
            f"{flag.version}). Your input is kept below; compare it with the flag, then save again."
        )


VALUE_HELP = (
    'Not a JSON value: write true, false, a number, "a string" in quotes, null, an object '
    "or a list."
)


def _form_variations(flag: FlagRead, form: FlagForm) -> list[dict[str, Any]]:
    """Each variation with the value typed for it (JSON); errors go to ``form.errors``."""
    variations = []
    for variation in flag.variations:
        try:
            value = orjson.loads(form.values.get(variation.key, ""))
        except orjson.JSONDecodeError:
            form.errors[f"value-{variation.key}"] = VALUE_HELP
            continue
        variations.append({"key": variation.key, "value": value})
    return variations


def _form_fallthrough(form: FlagForm) -> dict[str, Any] | None:
    """What the flag serves when no rule matches: one variation, or a percentage rollout."""
    if form.serve == "variation":
        if form.fallthrough_variation not in form.values:
            form.errors["fallthrough"] = "Choose one of the flag's variations."
            return None
        return {"variation": form.fallthrough_variation}
    if form.serve != "rollout":
        form.errors["serve"] = "Serve one variation to everyone, or a percentage rollout."
        return None
    split: list[tuple[str, float]] = []
    for key, text in form.weights.items():
        try:
            weight = float(text.strip() or "0")
        except ValueError:
            form.errors[f"weight-{key}"] = "A percentage, such as 25 or 12.5."
            continue
        if not math.isfinite(weight) or not 0 <= weight <= 100:
            form.errors[f"weight-{key}"] = "Between 0 and 100."
            continue
        if weight > 0:
            split.append((key, weight))
    if any(k.startswith("weight-") for k in form.errors):
        return None
    total = sum(w for _, w in split)
    if abs(total - 100) > 1e-6:
        form.errors["weights"] = f"The percentages add up to {total:g}, not 100."
        return None
    return {"rollout": [{"variation": k, "weight": w} for k, w in split]}


def _parse_flag_form(flag: FlagRead, form: FlagForm) -> FlagUpdate | None:
    """The form as a ``FlagUpdate``, or None with ``form.errors`` saying what is wrong, field
    by field (the names the template shows them under)."""
    variations = _form_variations(flag, form)
    fallthrough = _form_fallthrough(form)
    if form.errors:
        return None
    try:
        return FlagUpdate.model_validate(
            {
                "name": form.name,
                "description": form.description,
                "comment": form.comment,
                "variations": variations,
                "fallthrough": fallthrough,
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(p) for p in error.get("loc", ())]
            where = loc[0] if loc else "form"
            if where == "variations" and len(loc) > 1 and loc[1].isdigit():
                where = f"value-{variations[int(loc[1])]['key']}"
            elif where == "fallthrough":
                where = "weights" if form.serve == "rollout" else "fallthrough"
            form.errors.setdefault(where, str(error["msg"]))
        return None


@router.post("/flags/{flag_key}")
def edit_flag(
    request: Request,
    flag_key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    variation_key: Annotated[list[str] | None, Form()] = None,
    variation_value: Annotated[list[str] | None, Form()] = None,
    serve: Annotated[str, Form()] = "",
    fallthrough_variation: Annotated[str, Form()] = "",
    weight: Annotated[list[str] | None, Form()] = None,
    version: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The structured form: name, description, the variations' values and what the flag
    serves when no rule matches (one variation, or a percentage rollout)."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Editing a flag")
        flag = experiments.flag_read(
            experiments.get_flag(db, workspace_id=workspace_id, key=flag_key)
        )
        keys, values, weights = variation_key or [], variation_value or [], weight or []
        if len(keys) > MAX_VARIATIONS or not (len(keys) == len(values) == len(weights)):
            raise InvalidInput("The form's variations are incomplete; reload the page.")
        if keys != [v.key for v in flag.variations]:
            raise Conflict(
                "The flag's variations changed since this form was opened; reload the page."
            )
    except NexusError as exc:
        return _refused(request, db, exc)
    form = FlagForm(
        name=name.strip(),
        description=description,
        comment=comment,
        values=dict(zip(keys, values, strict=True)),
        serve=serve,
        fallthrough_variation=fallthrough_variation,
        weights=dict(zip(keys, weights, strict=True)),
    )
    try:
        _check_version(flag, version)
    except Conflict as exc:
        form.errors["form"] = exc.detail
        return _flag_page(
            request, dashboard, db, flag, form=form, form_version=flag.version, status_code=409
        )
    update = _parse_flag_form(flag, form)
    if update is not None:
        try:
            experiments.update_flag(
                db,
                workspace_id=workspace_id,
                key=flag_key,
                data=update,
                actor=experiments.actor_of(dashboard.principal),
            )
        except InvalidInput as exc:
            db.rollback()
            form.errors["form"] = exc.detail
        except NexusError as exc:
            return _refused(request, db, exc)
    if form.errors:
        return _flag_page(
            request, dashboard, db, flag, form=form, form_version=flag.version, status_code=422
        )
    _decisions(request).invalidate(workspace_id)
    return RedirectResponse(f"/flags/{flag_key}?saved=1", status_code=303)


@router.post("/flags/{flag_key}/document")
def edit_flag_document(
    request: Request,
    flag_key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    document: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """The whole flag as JSON, checked by the model the API's ``PATCH`` uses
    (:class:`FlagUpdate`) and then by the evaluator, errors shown beside the text."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Editing a flag")
        flag = experiments.flag_read(
            experiments.get_flag(db, workspace_id=workspace_id, key=flag_key)
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    errors: list[str] = []
    try:
        _check_version(flag, version)
        payload = orjson.loads(document)
        if not isinstance(payload, dict):
            raise InvalidInput('The document must be a JSON object: {"name": …, "rules": […]}.')
        update = FlagUpdate.model_validate(payload)
        experiments.update_flag(
            db,
            workspace_id=workspace_id,
            key=flag_key,
            data=update,
            actor=experiments.actor_of(dashboard.principal),
        )
    except orjson.JSONDecodeError as exc:
        errors.append(f"Not valid JSON: {exc}.")
    except ValidationError as exc:
        errors.extend(_validation_messages(exc))
    except (InvalidInput, Conflict) as exc:
        db.rollback()
        errors.append(exc.detail)
        errors.extend(
            f"{'.'.join(str(p) for p in e.loc[1:])}: {e.message}"
            for e in exc.errors
            if len(e.loc) > 1 and e.message not in exc.detail
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    if errors:
        status_code = 409 if version != str(flag.version) else 422
        return _flag_page(
            request,
            dashboard,
            db,
            flag,
            document=document,
            document_errors=errors,
            form_version=flag.version,
            status_code=status_code,
        )
    _decisions(request).invalidate(workspace_id)
    return RedirectResponse(f"/flags/{flag_key}?saved=1", status_code=303)


# --- privacy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRate:
    purpose: str
    granted: int
    denied: int
    unanswered: int

    @property
    def total(self) -> int:
        return self.granted + self.denied + self.unanswered


def consent_rates(db: Session, *, workspace_id: str) -> list[ConsentRate]:
    """Per purpose, how many visitors with recorded consent granted it, denied it or left it
    unanswered (their current answers, not the history)."""
    granted: Counter[str] = Counter()
    denied: Counter[str] = Counter()
    visitors = 0
    rows = db.execute(
        select(ConsentStateRow.granted, ConsentStateRow.denied)
        .where(ConsentStateRow.workspace_id == workspace_id)
        .execution_options(yield_per=1000)
    )
    for yes, no in rows:
        visitors += 1
        granted.update(yes or ())
        denied.update(no or ())
    return [
        ConsentRate(
            purpose=p.value,
            granted=granted[p.value],
            denied=denied[p.value],
            unanswered=visitors - granted[p.value] - denied[p.value],
        )
        for p in Purpose
    ]


@dataclass(frozen=True)
class AuditPage:
    entries: list[tuple[int, str, str, str, str, str]]  # seq, at, actor, action, target, details
    next_before: int | None
    actions: list[str]
    verified: VerifyResult


def _audit_page(
    db: Session, *, workspace_id: str, action: str | None, before: int | None
) -> AuditPage:
    """A page of the workspace's audit chain, newest first, optionally one action (or one
    family, ``flag.*``) only; and whether the whole chain verifies."""
    chain = chain_for(workspace_id)
    stmt = select(
        AuditLogEntry.seq,
        AuditLogEntry.at,
        AuditLogEntry.actor,
        AuditLogEntry.action,
        AuditLogEntry.target,
        AuditLogEntry.details,
    ).where(AuditLogEntry.chain == chain)
    if action is not None and action.endswith(".*"):
        stmt = stmt.where(AuditLogEntry.action.startswith(action[:-1], autoescape=True))
    elif action is not None:
        stmt = stmt.where(AuditLogEntry.action == action)
    if before is not None:
        stmt = stmt.where(AuditLogEntry.seq < before)
    rows = list(db.execute(stmt.order_by(AuditLogEntry.seq.desc()).limit(AUDIT_PAGE + 1)))
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    people = _people(db, workspace_id)
    actions = list(
        db.scalars(
            select(AuditLogEntry.action)
            .where(AuditLogEntry.chain == chain)
            .distinct()
            .order_by(AuditLogEntry.action)
        )
    )
    return AuditPage(
        entries=[
            (
                r.seq,
                as_utc(r.at).strftime("%Y-%m-%d %H:%M:%S"),
                people.get(r.actor, r.actor),
                r.action,
                r.target,
                _details(r.details),
            )
            for r in rows
        ],
        next_before=rows[-1].seq if more and rows else None,
        actions=actions,
        verified=verify_log(db, workspace_id=workspace_id),
    )


def _details(details: dict[str, Any] | None) -> str:
    """An entry's details as short ``key: value`` lines (lists joined, objects as JSON)."""
    parts = []
    for key, value in sorted((details or {}).items()):
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, str):
            text = value
        else:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        parts.append(f"{key}: {text}")
    return "; ".join(parts)


def _may_read_audit(dashboard: Dashboard) -> bool:
    try:
        enforce(dashboard.principal, "read_audit", resource="AuditLog")
    except NexusError:
        return False
    return True


def _families(actions: Iterable[str]) -> list[str]:
    return sorted({a.split(".", 1)[0] + ".*" for a in actions})


@router.get("/privacy")
def privacy_page(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    action: str | None = None,
    before: str | None = None,
) -> HTMLResponse:
    """Consent rates, data-subject requests and (for admins) the audit log."""
    if dashboard.current is None:
        return _render(request, "privacy.html", d=dashboard, page="privacy")
    workspace_id = dashboard.current.id
    try:
        chosen = action or None
        if chosen is not None and (len(chosen) > 80 or not AUDIT_FILTER.match(chosen)):
            raise InvalidInput(
                "action: name an audit action such as flag.updated, or a family such as flag.*."
            )
        first = _int_param(before, "before", low=1, high=2**62, default=0) or None
    except NexusError as exc:
        return _error_page(request, exc)
    runtime = _privacy(request)
    rates = consent_rates(db, workspace_id=workspace_id)
    counters = runtime.counters_of(workspace_id)
    audit = (
        _audit_page(db, workspace_id=workspace_id, action=chosen, before=first)
        if _may_read_audit(dashboard)
        else None
    )
    people = _people(db, workspace_id)
    requests = [
        (r, people.get(r.requested_by, r.requested_by))
        for r in privacy.list_requests(db, workspace_id=workspace_id)
    ]
    return _with_charts(
        _render(
            request,
            "privacy.html",
            d=dashboard,
            page="privacy",
            settings=privacy.get_settings(
                db, workspace_id=workspace_id, default_mode=runtime.default_mode
            ),
            rates=rates,
            visitors=rates[0].total if rates else 0,
            consent_figure=consent_figure(rates),
            consent_headers=["Purpose", "Granted", "Denied", "Unanswered", "Granted share"],
            consent_rows=[
                [
                    r.purpose,
                    {"value": r.granted, "testid": f"consent-{r.purpose}-granted"},
                    {"value": r.denied, "testid": f"consent-{r.purpose}-denied"},
                    {"value": r.unanswered, "testid": f"consent-{r.purpose}-unanswered"},
                    _share(r.granted / r.total) if r.total else DASH,
                ]
                for r in rates
            ],
            counters=counters,
            requests=requests,
            audit=audit,
            action=chosen or "",
            families=_families(audit.actions) if audit is not None else [],
            when=_when,
        )
    )


@router.post("/privacy/requests")
def file_subject_request(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    kind: Annotated[str, Form()] = "",
    visitor_id: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Erase a person everywhere, or export everything about them (a JSON download); both
    through the privacy runtime the API uses, both recorded and audited."""
    try:
        workspace_id = _authorize_form(
            dashboard, csrf_token, "admin", "Filing a data-subject request"
        )
        if kind not in ("erasure", "export"):
            raise InvalidInput("Choose the kind of request: erasure or export.")
        try:
            subject = SubjectRequestCreate(visitor_id=visitor_id.strip()).visitor_id
        except ValidationError:
            raise InvalidInput(
                "The visitor id must be 1 to 1024 characters without control characters.",
                errors=[FieldError(("form", "visitor_id"), "invalid")],
            ) from None
        if kind == "erasure" and confirm != "yes":
            raise InvalidInput(
                "An erasure cannot be undone: tick the box that confirms it, then file it again."
            )
    except NexusError as exc:
        return _refused(request, db, exc)
    # The runtime works in its own sessions: let go of this one's (SQLite has one writer).
    db.commit()
    runtime = _privacy(request)
    actor = workspaces.actor_name(dashboard.principal)
    if kind == "export":
        exported = runtime.export_request(workspace_id, subject, actor=actor)
        return Response(
            content=orjson.dumps(exported, option=orjson.OPT_INDENT_2),
            media_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="{exported["request_id"]}.json"'
            },
        )
    filed = runtime.erase(workspace_id, subject, actor=actor)
    return RedirectResponse(f"/privacy?filed={filed.id}#requests", status_code=303)


# --- settings -------------------------------------------------------------------------------

ROLES = [r.value for r in Role]


def _settings_page(
    request: Request,
    dashboard: Dashboard,
    db: Session,
    *,
    status_code: int = 200,
    member_error: str | None = None,
    member_email: str = "",
    member_role: str = Role.ANALYST.value,
) -> HTMLResponse:
    if dashboard.current is None:
        return _render(request, "settings.html", d=dashboard, page="settings")
    workspace_id = dashboard.current.id
    keys = workspaces.list_api_keys(db, workspace_id=workspace_id, limit=LIST_LIMIT).items
    return _render(
        request,
        "settings.html",
        status_code=status_code,
        d=dashboard,
        page="settings",
        keys=keys,
        key_counts=Counter(str(k.kind) for k in keys),
        write_key=workspaces.public_write_key(db, workspace_id=workspace_id),
        members=workspaces.list_members(db, workspace_id=workspace_id, limit=LIST_LIMIT).items,
        roles=ROLES if dashboard.can("owner") else [r for r in ROLES if r != Role.OWNER.value],
        privacy_settings=privacy.get_settings(
            db, workspace_id=workspace_id, default_mode=_privacy(request).default_mode
        ),
        decision_settings=experiments.get_decision_settings(db, workspace_id=workspace_id),
        member_error=member_error,
        member_email=member_email,
        member_role=member_role,
        when=_when,
    )


@router.get("/settings")
def settings_page(request: Request, dashboard: CurrentDashboard, db: DbSession) -> HTMLResponse:
    """Keys, members and their roles, and what the workspace's privacy and decisions do."""
    return _settings_page(request, dashboard, db)


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"Choose a role: {', '.join(ROLES)}.") from None


@router.post("/settings/members")
def add_member(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Add a person who has an account to the workspace, with a role (audited)."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "admin", "Adding a member")
    except NexusError as exc:
        return _refused(request, db, exc)
    try:
        try:
            body = MemberCreate(email=email.strip(), role=_role(role))
        except ValidationError:
            raise InvalidInput(
                "Enter the person's e-mail address, such as ana@example.com."
            ) from None
        workspaces.add_member(
            db,
            workspace_id=workspace_id,
            email=body.email,
            role=body.role,
            actor=dashboard.principal,
        )
    except NexusError as exc:
        db.rollback()
        return _settings_page(
            request,
            dashboard,
            db,
            status_code=exc.status,
            member_error=exc.detail,
            member_email=email[:320],
            member_role=role if role in ROLES else Role.ANALYST.value,
        )
    return RedirectResponse("/settings#members", status_code=303)


@router.post("/settings/members/{user_id}/role")
def change_role(
    request: Request,
    user_id: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    role: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Change a member's role; only an owner gives or takes the owner role, and a workspace
    keeps at least one owner (the service's rules, the API's too)."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "admin", "Changing a role")
        workspaces.set_member_role(
            db,
            workspace_id=workspace_id,
            user_id=user_id,
            role=_role(role),
            actor=dashboard.principal,
        )
    except NexusError as exc:
        return _refused(request, db, exc)
    return RedirectResponse("/settings#members", status_code=303)
