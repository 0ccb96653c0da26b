"""Funnels API: saved funnels (CRUD), their reports and drop-off lists, ad-hoc queries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from nexus.events.service import EventsRuntime
from nexus.events.store import EventStore
from nexus.funnels import service
from nexus.funnels.models import (
    Funnel,
    FunnelCreate,
    FunnelPeople,
    FunnelQuery,
    FunnelRead,
    FunnelReport,
    FunnelUpdate,
    Interval,
)
from nexus.storage.pagination import MAX_PAGE_SIZE, Paginated
from nexus.workspaces.deps import AppSettings, Authorize, DbSession, PageQuery
from nexus.workspaces.models import Permission, Principal
from nexus.workspaces.service import actor_name

router = APIRouter(tags=["funnels"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
WritePrincipal = Annotated[Principal, Authorize(Permission.WRITE)]
Start = Annotated[
    datetime | None, Query(description="Period start (RFC 3339); default 30 days before end.")
]
End = Annotated[datetime | None, Query(description="Period end, exclusive; default now.")]
Breakdown = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Property to break down by (overrides the funnel's).",
    ),
]


def _store(request: Request) -> EventStore:
    runtime: EventsRuntime = request.app.state.events
    return runtime.store


def _read(funnel: Funnel) -> FunnelRead:
    return FunnelRead.model_validate(
        {
            **funnel.definition,
            "id": funnel.id,
            "name": funnel.name,
            "created_at": funnel.created_at,
            "updated_at": funnel.updated_at,
        }
    )


@router.get("/funnels", summary="Saved funnels")
def list_funnels(principal: ReadPrincipal, db: DbSession, page: PageQuery) -> Paginated[FunnelRead]:
    assert principal.workspace_id is not None
    result = service.list_funnels(
        db, workspace_id=principal.workspace_id, cursor=page.cursor, limit=page.limit
    )
    return Paginated(items=[_read(f) for f in result.items], next_cursor=result.next_cursor)


@router.post("/funnels", status_code=status.HTTP_201_CREATED, summary="Save a funnel")
def create_funnel(body: FunnelCreate, principal: WritePrincipal, db: DbSession) -> FunnelRead:
    assert principal.workspace_id is not None
    return _read(
        service.create_funnel(
            db, workspace_id=principal.workspace_id, data=body, actor=actor_name(principal)
        )
    )


@router.get("/funnels/{funnel_id}", summary="One saved funnel")
def read_funnel(funnel_id: str, principal: ReadPrincipal, db: DbSession) -> FunnelRead:
    assert principal.workspace_id is not None
    return _read(service.get_funnel(db, workspace_id=principal.workspace_id, funnel_id=funnel_id))


@router.patch("/funnels/{funnel_id}", summary="Change a saved funnel")
def update_funnel(
    funnel_id: str, body: FunnelUpdate, principal: WritePrincipal, db: DbSession
) -> FunnelRead:
    assert principal.workspace_id is not None
    return _read(
        service.update_funnel(
            db,
            workspace_id=principal.workspace_id,
            funnel_id=funnel_id,
            data=body,
            actor=actor_name(principal),
        )
    )


@router.delete(
    "/funnels/{funnel_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a funnel"
)
def delete_funnel(funnel_id: str, principal: WritePrincipal, db: DbSession) -> Response:
    assert principal.workspace_id is not None
    service.delete_funnel(
        db, workspace_id=principal.workspace_id, funnel_id=funnel_id, actor=actor_name(principal)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/funnels/{funnel_id}/report", summary="A saved funnel's report over a period")
def funnel_report(
    funnel_id: str,
    request: Request,
    principal: ReadPrincipal,
    db: DbSession,
    settings: AppSettings,
    start: Start = None,
    end: End = None,
    breakdown: Breakdown = None,
    interval: Annotated[Interval | None, Query(description="Conversion trend points.")] = None,
    bins: Annotated[int, Query(ge=1, le=100, description="Time-to-convert bins.")] = 10,
) -> FunnelReport:
    assert principal.workspace_id is not None
    funnel = service.get_funnel(db, workspace_id=principal.workspace_id, funnel_id=funnel_id)
    return service.report(
        _store(request),
        workspace_id=principal.workspace_id,
        definition=service.definition_of(funnel),
        span=service.period(start, end, interval=interval),
        breakdown=breakdown,
        interval=interval,
        bins=bins,
        identity=settings.identity_merge,
    )


@router.get(
    "/funnels/{funnel_id}/people",
    summary="Persons who dropped at a step (reached the previous one, not this one)",
)
def funnel_people(
    funnel_id: str,
    request: Request,
    principal: ReadPrincipal,
    db: DbSession,
    settings: AppSettings,
    start: Start = None,
    end: End = None,
    step: Annotated[int, Query(ge=1, le=19, description="0-based index of the missed step.")] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048, pattern=r"^[A-Za-z0-9_-]*$")] = None,
) -> FunnelPeople:
    assert principal.workspace_id is not None
    funnel = service.get_funnel(db, workspace_id=principal.workspace_id, funnel_id=funnel_id)
    return service.dropped_people(
        _store(request),
        workspace_id=principal.workspace_id,
        definition=service.definition_of(funnel),
        span=service.period(start, end),
        step=step,
        limit=limit,
        cursor=cursor,
        identity=settings.identity_merge,
    )


@router.post(
    "/funnels/query",
    summary="Report on an unsaved funnel (read-only: needs only the read permission)",
)
def query_funnel(
    body: FunnelQuery,
    request: Request,
    principal: ReadPrincipal,
    settings: AppSettings,
    breakdown: Breakdown = None,
    bins: Annotated[int, Query(ge=1, le=100, description="Time-to-convert bins.")] = 10,
) -> FunnelReport:
    assert principal.workspace_id is not None
    return service.report(
        _store(request),
        workspace_id=principal.workspace_id,
        definition=body,
        span=service.period(body.start, body.end, interval=body.interval),
        breakdown=breakdown,
        interval=body.interval,
        bins=bins,
        identity=settings.identity_merge,
    )
