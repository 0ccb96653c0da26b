"""The dashboard's evolution page: campaigns, each campaign's fitness per generation with
intervals, its champions and genealogy, the controls a person steers it with (pause,
resume, stop, promote, roll back, pin a gene, approve copy), and the activity feed where
evolution and the funnel monitor explain what they did.

Forms are checked as every dashboard form is (CSRF, workspace, permission) and call the
same service functions as ``/v1/evolution``, so the activity feed and the audit chain see
a dashboard change exactly as an API one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from nexus.core.errors import InvalidInput, NexusError, NotFound
from nexus.evolution import service
from nexus.evolution.models import CampaignRead, GenerationRead, PinRequest, PromoteRequest
from nexus.evolution.runtime import EvolutionRuntime
from nexus.evolution.search import ALL
from nexus.experiments import service as experiments
from nexus.web import charts
from nexus.web.dashboard_ops import _authorize_form, _refused, _too_long, _when
from nexus.web.routes import CurrentDashboard, _error_page, _render
from nexus.workspaces.deps import DbSession

router = APIRouter(include_in_schema=False)
ACTIONS = ("pause", "resume", "stop", "promote", "rollback")
FEED_SHOWN = 50


def fitness_figure(generations: list[GenerationRead]) -> dict[str, Any]:
    """Each generation's best design: posterior conversion with its 95 % interval."""
    measured = [g for g in generations if g.best is not None]
    xs = [f"Gen {g.number + 1}" for g in measured]
    ys = [g.best.conversion * 100 for g in measured if g.best is not None]
    plus = [(g.best.interval.high - g.best.conversion) * 100 for g in measured if g.best]
    minus = [(g.best.conversion - g.best.interval.low) * 100 for g in measured if g.best]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Best design",
                "x": xs,
                "y": ys,
                "error_y": {"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                "marker": {"color": "#3538cd"},
            }
        ],
        "layout": {
            "height": 260,
            "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
            "yaxis": {"title": {"text": "Conversion (%)"}, "rangemode": "tozero"},
            "showlegend": False,
        },
    }


def _fitness_table(generations: list[GenerationRead]) -> tuple[list[str], list[list[Any]]]:
    headers = ["Generation", "Visitors", "Best design", "Conversion", "95 % interval"]
    rows = [
        [
            g.number + 1,
            g.visitors,
            g.best.key,
            f"{g.best.conversion:.2%}",
            f"{g.best.interval.low:.2%} to {g.best.interval.high:.2%}",
        ]
        for g in generations
        if g.best is not None
    ]
    return headers, rows


def _invalidate(request: Request, workspace_id: str, funnel: str) -> None:
    designer: EvolutionRuntime | None = getattr(request.app.state, "designer", None)
    if designer is not None:
        designer.invalidate(workspace_id, funnel)


@router.get("/evolution")
def evolution_page(
    request: Request, dashboard: CurrentDashboard, db: DbSession, campaign: str | None = None
) -> HTMLResponse:
    """Campaigns, the chosen one's generations and controls, and the activity feed."""
    if dashboard.current is None:
        return _render(request, "evolution.html", d=dashboard, page="evolution")
    workspace_id = dashboard.current.id
    listed = service.list_all(db, workspace_id=workspace_id, limit=200)
    reads: list[CampaignRead] = []
    for item in listed.items:
        try:
            reads.append(service.read(service.load(db, item)))
        except NexusError:
            continue  # its page changed under it: listed by the API with the reason
    chosen = next((r for r in reads if r.key == campaign), reads[0] if reads else None)
    if campaign is not None and chosen is not None and chosen.key != campaign:
        return _error_page(request, NotFound(f"No evolution campaign {campaign!r}."))
    context: dict[str, Any] = {}
    if chosen is not None:
        loaded = service.load(db, service.get(db, workspace_id=workspace_id, key=chosen.key))
        generations = service.generations(loaded, ALL)
        headers, rows = _fitness_table(generations)
        context = {
            "generations": generations,
            "current": generations[-1],
            "fitness_figure": fitness_figure(generations),
            "fitness_headers": headers,
            "fitness_rows": rows,
            "pending": [c for c in chosen.candidates if c.status == "pending"],
        }
    feed = service.list_activity(
        db,
        workspace_id=workspace_id,
        campaign=chosen.key if chosen is not None and campaign is not None else None,
        limit=FEED_SHOWN,
    )
    response = _render(
        request,
        "evolution.html",
        d=dashboard,
        page="evolution",
        campaigns=reads,
        chosen=chosen,
        feed=[service.activity_read(a) for a in feed.items],
        when=_when,
        **context,
    )
    charts.allow_chart_styles(response)
    return response


@router.post("/evolution/{key}/action")
def campaign_action(
    request: Request,
    key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    action: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Pause, resume, stop, promote or roll back a campaign."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Steering evolution")
        if action not in ACTIONS:
            raise InvalidInput(f"Unknown action {action!r}; one of {', '.join(ACTIONS)}.")
        _too_long(comment, "The comment", 500)
        found = service.get(db, workspace_id=workspace_id, key=key)
        actor = experiments.actor_of(dashboard.principal)
        if action == "pause":
            service.pause(db, found, actor=actor, comment=comment)
        elif action == "resume":
            service.resume(db, found, actor=actor, comment=comment)
        elif action == "stop":
            service.stop(db, found, actor=actor, comment=comment)
        elif action == "promote":
            service.promote(db, found, PromoteRequest(comment=comment), actor=actor)
            request.app.state.decisions.invalidate(workspace_id)
        else:
            service.rollback(db, found, actor=actor, comment=comment)
            request.app.state.decisions.invalidate(workspace_id)
        funnel = found.funnel
    except NexusError as exc:
        return _refused(request, db, exc)
    _invalidate(request, workspace_id, funnel)
    return RedirectResponse(f"/evolution?campaign={key}", status_code=303)


@router.post("/evolution/{key}/pin")
def campaign_pin(
    request: Request,
    key: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    gene: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Pin a gene to a value (empty value: unpin)."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Pinning a gene")
        _too_long(gene, "The gene", 64)
        _too_long(value, "The value", 5000)
        found = service.get(db, workspace_id=workspace_id, key=key)
        try:
            request_body = PinRequest(gene=gene, value=value or None)
        except ValueError:
            raise InvalidInput(f"{gene!r} is not a gene name.") from None
        service.pin(db, found, request_body, actor=experiments.actor_of(dashboard.principal))
        funnel = found.funnel
    except NexusError as exc:
        return _refused(request, db, exc)
    _invalidate(request, workspace_id, funnel)
    return RedirectResponse(f"/evolution?campaign={key}", status_code=303)


@router.post("/evolution/{key}/candidates/{candidate_id}")
def campaign_candidate(
    request: Request,
    key: str,
    candidate_id: str,
    dashboard: CurrentDashboard,
    db: DbSession,
    decision: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject a copy candidate."""
    try:
        workspace_id = _authorize_form(dashboard, csrf_token, "write", "Approving copy")
        if decision not in ("approve", "reject"):
            raise InvalidInput("Say approve or reject.")
        found = service.get(db, workspace_id=workspace_id, key=key)
        service.decide_candidate(
            db,
            found,
            candidate_id,
            approve=decision == "approve",
            actor=experiments.actor_of(dashboard.principal),
        )
        funnel = found.funnel
    except NexusError as exc:
        return _refused(request, db, exc)
    _invalidate(request, workspace_id, funnel)
    return RedirectResponse(f"/evolution?campaign={key}", status_code=303)
