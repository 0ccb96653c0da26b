"""Pages API (``/v1/hosted-funnels``: hosted funnels and their step pages) and the hosted pages
themselves (``GET /f/{workspace}/{funnel}/{step}``, public HTML)."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from nexus.core.ids import new_id
from nexus.events.bots import BotMarker
from nexus.experiments.decisions import DecisionRuntime
from nexus.experiments.models import DecideRequest
from nexus.experiments.views import background_reload
from nexus.pages import render, service
from nexus.pages.models import (
    HostedFunnelBody,
    HostedFunnelCreate,
    HostedFunnelRead,
    StepPut,
)
from nexus.pages.runtime import Designer, PagesRuntime, Site
from nexus.privacy.runtime import PrivacyRuntime
from nexus.storage.pagination import Paginated
from nexus.workspaces.deps import PUBLIC, Authorize, DbSession, PageQuery
from nexus.workspaces.models import Permission, Principal
from nexus.workspaces.service import actor_name

router = APIRouter(tags=["pages"])
hosted_router = APIRouter(include_in_schema=False)
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
WritePrincipal = Annotated[Principal, Authorize(Permission.WRITE)]
SlugPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]

VISITOR_COOKIE = "nexus_aid"
VISITOR_MAX_AGE = 365 * 86_400
_VISITOR = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_WORKSPACE = re.compile(r"^ws_[0-9A-Za-z]{1,40}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def pages_of(request: Request) -> PagesRuntime:
    pages: PagesRuntime = request.app.state.pages
    return pages


def _workspace(principal: Principal) -> str:
    assert principal.workspace_id is not None
    return principal.workspace_id


# --- API ------------------------------------------------------------------------------------


@router.get("/hosted-funnels", summary="Hosted funnels")
def list_hosted(
    principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[HostedFunnelRead]:
    result = service.list_all(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(items=[service.read(f) for f in result.items], next_cursor=result.next_cursor)


@router.post(
    "/hosted-funnels",
    status_code=status.HTTP_201_CREATED,
    summary="Create a hosted funnel with its step pages",
)
def create_hosted(
    body: HostedFunnelCreate, principal: WritePrincipal, db: DbSession, request: Request
) -> HostedFunnelRead:
    funnel = service.create(
        db, workspace_id=_workspace(principal), data=body, actor=actor_name(principal)
    )
    pages_of(request).invalidate(funnel.workspace_id, funnel.slug)
    return service.read(funnel)


@router.get("/hosted-funnels/{slug}", summary="One hosted funnel")
def get_hosted(slug: SlugPath, principal: ReadPrincipal, db: DbSession) -> HostedFunnelRead:
    return service.read(service.get(db, workspace_id=_workspace(principal), slug=slug))


@router.put("/hosted-funnels/{slug}", summary="Replace a hosted funnel's name, steps and goal")
def replace_hosted(
    slug: SlugPath,
    body: HostedFunnelBody,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> HostedFunnelRead:
    funnel = service.replace(
        db, workspace_id=_workspace(principal), slug=slug, data=body, actor=actor_name(principal)
    )
    pages_of(request).invalidate(funnel.workspace_id, slug)
    return service.read(funnel)


@router.delete(
    "/hosted-funnels/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a hosted funnel (its analytics funnel and events stay)",
)
def delete_hosted(
    slug: SlugPath, principal: WritePrincipal, db: DbSession, request: Request
) -> Response:
    workspace_id = _workspace(principal)
    service.delete(db, workspace_id=workspace_id, slug=slug, actor=actor_name(principal))
    pages_of(request).invalidate(workspace_id, slug)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/hosted-funnels/{slug}/steps/{step}",
    summary="Create or replace one step's page",
    responses={201: {"description": "A new step", "model": HostedFunnelRead}},
)
def put_step(
    slug: SlugPath,
    step: SlugPath,
    body: StepPut,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
    response: Response,
) -> HostedFunnelRead:
    funnel, created = service.put_step(
        db,
        workspace_id=_workspace(principal),
        slug=slug,
        step=step,
        page=body.page,
        position=body.position,
        actor=actor_name(principal),
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    pages_of(request).invalidate(funnel.workspace_id, slug)
    return service.read(funnel)


@router.delete("/hosted-funnels/{slug}/steps/{step}", summary="Remove one step")
def delete_step(
    slug: SlugPath, step: SlugPath, principal: WritePrincipal, db: DbSession, request: Request
) -> HostedFunnelRead:
    funnel = service.delete_step(
        db, workspace_id=_workspace(principal), slug=slug, step=step, actor=actor_name(principal)
    )
    pages_of(request).invalidate(funnel.workspace_id, slug)
    return service.read(funnel)


# --- hosted pages ---------------------------------------------------------------------------


def csp(nonce: str) -> str:
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; img-src 'self' https: data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'; object-src 'none'"
    )


def _not_found(what: str) -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not found</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/hosted.css"></head><body><main class="page">'
        f"<h1>Page not found</h1><p>{what}</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=404, headers={"Cache-Control": "no-store"})


async def _site(request: Request, workspace_id: str, funnel: str) -> Site | None:
    return await pages_of(request).site(workspace_id, funnel)


@hosted_router.get("/f/{workspace_id}/{funnel}", openapi_extra=PUBLIC)
async def hosted_funnel(workspace_id: str, funnel: str, request: Request) -> Response:
    """A funnel's address leads to its first step."""
    if not (_WORKSPACE.match(workspace_id) and _SLUG.match(funnel)):
        return _not_found("There is no such page.")
    site = await _site(request, workspace_id, funnel)
    if site is None:
        return _not_found("There is no such page.")
    return RedirectResponse(service.page_url(workspace_id, funnel, site.order[0]), status_code=307)


@hosted_router.get("/f/{workspace_id}/{funnel}/{step}", openapi_extra=PUBLIC)
async def hosted_page(workspace_id: str, funnel: str, step: str, request: Request) -> Response:
    """One step of a hosted funnel, rendered for this visitor: the experiment variant and the
    UI adaptation are decided here, before the first byte."""
    if not (_WORKSPACE.match(workspace_id) and _SLUG.match(funnel) and _SLUG.match(step)):
        return _not_found("There is no such page.")
    site = await _site(request, workspace_id, funnel)
    found = site.steps.get(step) if site is not None else None
    if site is None or found is None:
        return _not_found("There is no such page.")
    cookie = request.cookies.get(VISITOR_COOKIE, "")
    visitor = cookie if _VISITOR.match(cookie) else new_id("anon")
    page = found.page

    privacy: PrivacyRuntime = request.app.state.privacy
    permitted = privacy.cached_permissions(workspace_id, visitor)
    if permitted is None:
        permitted = await run_in_threadpool(privacy.load_permissions, workspace_id, visitor)
    runtime: DecisionRuntime = request.app.state.decisions
    if runtime.needs_load(workspace_id):
        await run_in_threadpool(runtime.reload, workspace_id)
    elif runtime.refresh_due(workspace_id):
        background_reload(runtime, workspace_id)
    bots: BotMarker | None = request.app.state.events.bots
    bot = bots is not None and bots.is_bot(workspace_id, visitor)
    designer: Designer | None = getattr(request.app.state, "designer", None)
    plan = await designer.plan(workspace_id, funnel, step) if designer is not None else None
    decision = runtime.decide(
        workspace_id,
        DecideRequest(
            visitor_id=visitor,
            attributes={"funnel": funnel, "step": step},
            flags=list(plan.flags) if plan is not None else [],
            experiments=[page.experiment] if page.experiment else [],
        ),
        permitted=permitted,
        bot=bot,
    )
    designed = plan.design(visitor, decision, page) if plan is not None else None
    if designed is not None:
        page = designed.page
    experiment = decision["experiments"].get(page.experiment) if page.experiment else None
    variant = experiment["variant"] if experiment else None
    adaptation = decision["adaptation"]
    policy = privacy.cached_policy(workspace_id)
    properties: dict[str, Any] = {"funnel": funnel, "step": step, "step_index": found.index}
    if experiment is not None:
        properties.update(experiment=page.experiment, variant=variant)
    if adaptation is not None:
        properties["adaptation"] = adaptation["key"]
    if designed is not None:
        properties.update(designed.properties)
    bootstrap = {
        "writeKey": site.write_key,
        "visitorId": visitor,
        "workspace": workspace_id,
        "funnel": funnel,
        "step": step,
        "next": designed.next_step
        if designed is not None and designed.next_step
        else found.next_slug,
        "decisionId": decision["decision_id"],
        "adaptation": adaptation,
        "experiment": {"key": page.experiment, "variant": variant} if experiment else None,
        "consent": {
            "mode": policy.mode if policy is not None else "opt_out",
            "permitted": {
                "analytics": permitted.analytics,
                "emotion_analysis": permitted.emotion_analysis,
                "personalisation": permitted.personalisation,
                "marketing": permitted.marketing,
            },
        },
        "page": {"name": page.title, "properties": properties},
    }
    nonce = secrets.token_urlsafe(16)
    html = render.render(
        page=page,
        title_suffix=site.name,
        variant=variant,
        adaptation=adaptation,
        bootstrap=bootstrap,
        nonce=nonce,
        base_path=f"/f/{workspace_id}/{funnel}/",
        step_index=found.index,
        step_count=len(site.order),
        base_tokens=designed.tokens if designed is not None else None,
        default_tone=designed.tone if designed is not None else None,
    )
    response = HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": csp(nonce),
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "private, no-store",
            "Vary": "Cookie",
        },
    )
    if cookie != visitor:
        response.set_cookie(
            VISITOR_COOKIE,
            visitor,
            max_age=VISITOR_MAX_AGE,
            path="/",
            samesite="lax",
            secure=request.app.state.settings.secure_cookies,
            httponly=False,  # the SDK reads it: it is the visitor's anonymous id, no secret
        )
    return response
