"""Hosted funnels: create, read, change and delete them, each change audited, and keep the
analytics funnel that measures each one in step with its pages."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, FieldError, InvalidInput, NotFound
from nexus.core.ids import new_id
from nexus.funnels import service as funnels_service
from nexus.funnels.models import FunnelCreate, FunnelUpdate
from nexus.pages.blocks import Page
from nexus.pages.models import (
    MAX_STEPS,
    HostedFunnel,
    HostedFunnelBody,
    HostedFunnelCreate,
    HostedFunnelRead,
    StepPage,
)
from nexus.security.service import append_entry
from nexus.storage.pagination import Page as ResultPage
from nexus.storage.pagination import paginate

PAGE_EVENT = "$page"


def page_url(workspace_id: str, funnel_slug: str, step_slug: str) -> str:
    return f"/f/{workspace_id}/{funnel_slug}/{step_slug}"


def body_of(funnel: HostedFunnel) -> HostedFunnelBody:
    """The stored document, validated (it was on write; this gives the typed form)."""
    return HostedFunnelBody.model_validate({"name": funnel.name, **funnel.document})


def read(funnel: HostedFunnel) -> HostedFunnelRead:
    body = body_of(funnel)
    return HostedFunnelRead.model_validate(
        {
            **body.model_dump(),
            "id": funnel.id,
            "slug": funnel.slug,
            "analytics_funnel_id": funnel.analytics_funnel_id,
            "urls": [page_url(funnel.workspace_id, funnel.slug, s.slug) for s in body.steps],
            "created_at": funnel.created_at,
            "updated_at": funnel.updated_at,
        }
    )


def _document(body: HostedFunnelBody) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"name", "slug"})


def _analytics_steps(slug: str, body: HostedFunnelBody) -> list[dict[str, Any]]:
    """One ``$page`` step per page (the SDK's page events carry ``funnel`` and ``step``),
    then the goal event. With adaptive flow, the steps a visitor may not see (optional
    ones, the reassurance step) are left out, so a changed path is no drop-off."""
    adaptive = body.flow.adaptive
    shown = [
        step
        for step in body.steps
        if not adaptive or not (step.optional or step.slug == body.flow.reassurance)
    ]
    steps: list[dict[str, Any]] = [
        {
            "event": PAGE_EVENT,
            "label": step.page.title,
            "filters": [
                {"property": "properties.funnel", "op": "eq", "value": slug},
                {"property": "properties.step", "op": "eq", "value": step.slug},
            ],
        }
        for step in shown
    ]
    if body.goal_event:
        steps.append({"event": body.goal_event, "label": body.goal_event})
    return steps


def _sync_analytics(
    session: Session, funnel: HostedFunnel, body: HostedFunnelBody, actor: str
) -> None:
    steps = _analytics_steps(funnel.slug, body)
    measurable = len(steps) >= 2
    current = funnel.analytics_funnel_id
    if current is not None:
        try:
            funnels_service.get_funnel(session, workspace_id=funnel.workspace_id, funnel_id=current)
        except NotFound:
            current = None  # deleted through the funnels API: make a new one
    if not measurable:
        if current is not None:
            funnels_service.delete_funnel(
                session, workspace_id=funnel.workspace_id, funnel_id=current, actor=actor
            )
        funnel.analytics_funnel_id = None
        return
    if current is None:
        created = funnels_service.create_funnel(
            session,
            workspace_id=funnel.workspace_id,
            data=FunnelCreate.model_validate({"name": body.name, "steps": steps}),
            actor=actor,
        )
        funnel.analytics_funnel_id = created.id
    else:
        funnels_service.update_funnel(
            session,
            workspace_id=funnel.workspace_id,
            funnel_id=current,
            data=FunnelUpdate.model_validate({"name": body.name, "steps": steps}),
            actor=actor,
        )


def _audit(
    session: Session, funnel: HostedFunnel, *, actor: str, action: str, details: dict[str, Any]
) -> None:
    append_entry(
        session,
        workspace_id=funnel.workspace_id,
        actor=actor,
        action=action,
        target=funnel.slug,
        details={"id": funnel.id, **details},
    )


def _by_slug(session: Session, workspace_id: str, slug: str) -> HostedFunnel | None:
    found: HostedFunnel | None = session.scalar(
        select(HostedFunnel).where(
            HostedFunnel.workspace_id == workspace_id, HostedFunnel.slug == slug
        )
    )
    return found


def create(
    session: Session, *, workspace_id: str, data: HostedFunnelCreate, actor: str = "system"
) -> HostedFunnel:
    if _by_slug(session, workspace_id, data.slug) is not None:
        raise Conflict(f"A hosted funnel with slug {data.slug!r} already exists.")
    funnel = HostedFunnel(
        id=new_id("hfn"),
        workspace_id=workspace_id,
        slug=data.slug,
        name=data.name,
        document=_document(data),
    )
    session.add(funnel)
    session.flush()
    _sync_analytics(session, funnel, data, actor)
    session.flush()
    _audit(
        session,
        funnel,
        actor=actor,
        action="page_funnel.created",
        details={"steps": [s.slug for s in data.steps]},
    )
    return funnel


def get(session: Session, *, workspace_id: str, slug: str) -> HostedFunnel:
    funnel = _by_slug(session, workspace_id, slug)
    if funnel is None:
        raise NotFound(f"No hosted funnel {slug!r}.")
    return funnel


def list_all(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> ResultPage[HostedFunnel]:
    stmt = select(HostedFunnel).where(HostedFunnel.workspace_id == workspace_id)
    return paginate(session, stmt, key=HostedFunnel.id, cursor=cursor, limit=limit)


def replace(
    session: Session,
    *,
    workspace_id: str,
    slug: str,
    data: HostedFunnelBody,
    actor: str = "system",
) -> HostedFunnel:
    funnel = get(session, workspace_id=workspace_id, slug=slug)
    before = body_of(funnel)
    _store(session, funnel, data, actor)
    _audit(
        session,
        funnel,
        actor=actor,
        action="page_funnel.replaced",
        details={
            "steps": [s.slug for s in data.steps],
            "changed_steps": sorted(_changed_steps(before, data)),
        },
    )
    return funnel


def _changed_steps(before: HostedFunnelBody, after: HostedFunnelBody) -> set[str]:
    old = {s.slug: s.page for s in before.steps}
    new = {s.slug: s.page for s in after.steps}
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def _store(session: Session, funnel: HostedFunnel, data: HostedFunnelBody, actor: str) -> None:
    funnel.name = data.name
    funnel.document = _document(data)
    funnel.updated_at = utcnow()
    _sync_analytics(session, funnel, data, actor)
    session.flush()


def put_step(
    session: Session,
    *,
    workspace_id: str,
    slug: str,
    step: str,
    page: Page,
    position: int | None = None,
    actor: str = "system",
) -> tuple[HostedFunnel, bool]:
    """Create or replace one step's page; returns the funnel and whether the step is new."""
    funnel = get(session, workspace_id=workspace_id, slug=slug)
    body = body_of(funnel)
    steps = list(body.steps)
    index = next((i for i, s in enumerate(steps) if s.slug == step), None)
    created = index is None
    if index is None:
        if len(steps) >= MAX_STEPS:
            raise InvalidInput(
                f"A hosted funnel has at most {MAX_STEPS} steps.",
                errors=[FieldError(("path", "step"), "too many steps")],
            )
        at = len(steps) if position is None else min(position, len(steps))
        steps.insert(at, StepPage(slug=step, page=page))
    else:
        steps[index] = StepPage(slug=step, page=page)
        if position is not None and position != index:
            moved = steps.pop(index)
            steps.insert(min(position, len(steps)), moved)
    _store(session, funnel, _validated(body, steps), actor)
    _audit(
        session,
        funnel,
        actor=actor,
        action="page_funnel.step_created" if created else "page_funnel.step_replaced",
        details={"step": step},
    )
    return funnel, created


def delete_step(
    session: Session, *, workspace_id: str, slug: str, step: str, actor: str = "system"
) -> HostedFunnel:
    funnel = get(session, workspace_id=workspace_id, slug=slug)
    body = body_of(funnel)
    steps = [s for s in body.steps if s.slug != step]
    if len(steps) == len(body.steps):
        raise NotFound(f"Hosted funnel {slug!r} has no step {step!r}.")
    if not steps:
        raise Conflict("A hosted funnel keeps at least one step: delete the funnel instead.")
    _store(session, funnel, _validated(body, steps), actor)
    _audit(session, funnel, actor=actor, action="page_funnel.step_deleted", details={"step": step})
    return funnel


def _validated(body: HostedFunnelBody, steps: list[StepPage]) -> HostedFunnelBody:
    try:
        return HostedFunnelBody.model_validate(
            {**body.model_dump(), "steps": [s.model_dump() for s in steps]}
        )
    except ValidationError as exc:  # pragma: no cover - steps were validated one by one
        raise InvalidInput(str(exc)) from None


def delete(session: Session, *, workspace_id: str, slug: str, actor: str = "system") -> None:
    funnel = get(session, workspace_id=workspace_id, slug=slug)
    _audit(session, funnel, actor=actor, action="page_funnel.deleted", details={})
    session.delete(funnel)
    session.flush()


def step_page(funnel: HostedFunnel, step: str) -> tuple[int, Page] | None:
    body = body_of(funnel)
    for index, candidate in enumerate(body.steps):
        if candidate.slug == step:
            return index, candidate.page
    return None
