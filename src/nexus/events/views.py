"""Events API: Segment-compatible ingestion, the event list and the live stream.

Ingestion endpoints mirror Segment's HTTP Tracking API (``/v1/batch``, ``/v1/track`` …) and
the one-letter paths analytics.js posts to (``/v1/t``, ``/v1/b`` …, hidden from the schema).
The write key is taken, in order, from ``Authorization: Basic <key>:``, ``Bearer <key>``, or
the body's ``writeKey`` (analytics.js); a dashboard session may ingest too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from nexus.core.errors import PermissionDenied, Unauthenticated, Unavailable
from nexus.events import service
from nexus.events.models import (
    BATCH_SCHEMA,
    EventPage,
    EventRead,
    IngestResult,
    RejectedMessage,
    message_schema,
)
from nexus.events.normalize import MAX_BATCH_BYTES, MAX_EVENT_BYTES, row_to_message
from nexus.workspaces import deps
from nexus.workspaces.models import Permission, Principal

router = APIRouter(tags=["events"])
# Segment's SDKs send Basic, others Bearer: offer both.
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="nexus", Bearer realm="nexus"'}

SINGLE_CALLS = {
    "track": "t",
    "page": "p",
    "screen": "s",
    "identify": "i",
    "alias": "a",
    "group": "g",
}
INGEST_PATHS = frozenset(
    {
        "/v1/batch",
        "/v1/b",
        *(f"/v1/{k}" for k in SINGLE_CALLS),
        *(f"/v1/{v}" for v in SINGLE_CALLS.values()),
    }
)


def runtime_of(request: Request) -> service.EventsRuntime:
    runtime: service.EventsRuntime = request.app.state.events
    return runtime


async def ingest_principal(request: Request) -> Principal:
    """The caller of an ingest endpoint, with the ``ingest`` permission checked."""
    token: str | None = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            token = service.basic_write_key(value.strip())
        elif scheme.lower() == "bearer":
            token = value.strip() or None
        if token is None:
            raise Unauthenticated(
                "Send the write key as Basic username or Bearer token.", headers=_CHALLENGE
            )
    if token is None and request.cookies.get(deps.SESSION_COOKIE) is None:
        document = await _document(request)
        token = service.write_key_from_body(document)
    if token is None:

        def by_session() -> Principal:
            with deps.get_database(request).session() as db:
                return deps.identify(request, db, None)

        principal = await run_in_threadpool(by_session)
    else:
        found = await deps.cached_key_principal(request, token)
        if found is None:
            raise Unauthenticated("Unknown or revoked write key.", headers=_CHALLENGE)
        principal = found
    if principal.workspace_id is None:
        raise deps.WorkspaceRequired(
            f"Choose a workspace: send its id in the {deps.WORKSPACE_HEADER} header."
        )
    if not principal.can(Permission.INGEST):
        raise PermissionDenied("This needs the 'ingest' permission, which the caller lacks here.")
    return principal


setattr(ingest_principal, deps.AUTH_MARKER, True)
IngestPrincipal = Annotated[Principal, Depends(ingest_principal)]


async def _document(request: Request) -> Any:
    cached = getattr(request.state, "ingest_document", None)
    if cached is not None:
        return cached
    limit = MAX_BATCH_BYTES if request.url.path in ("/v1/batch", "/v1/b") else MAX_EVENT_BYTES
    raw = await request.body()
    # gzip bodies are checked after decompression; plain ones can be refused unread.
    document = service.decode_body(
        raw, content_encoding=request.headers.get("content-encoding"), limit=limit
    )
    request.state.ingest_document = document
    plain = request.headers.get("content-encoding", "identity").strip().lower() == "identity"
    request.state.ingest_bytes = len(raw) if plain else None
    return document


async def _ingest(request: Request, principal: Principal, implied_type: str | None) -> Any:
    runtime = runtime_of(request)
    if runtime.in_flight >= runtime.settings.ingest_max_concurrency:
        raise Unavailable(
            "Too many ingest requests at once; retry shortly.",
            headers={"Retry-After": str(service.RETRY_AFTER_SECONDS)},
        )
    runtime.in_flight += 1
    try:
        document = await _document(request)
        prepared = service.prepare(
            document,
            implied_type=implied_type,
            received_at=service.now_us(),
            body_bytes=getattr(request.state, "ingest_bytes", None),
        )
        if prepared.rejected and not prepared.rows:
            raise service.rejection_problem(prepared.rejected, single=implied_type is not None)
        assert principal.workspace_id is not None
        accepted, withheld = await service.ingest(
            runtime, workspace_id=principal.workspace_id, prepared=prepared
        )
    finally:
        runtime.in_flight -= 1
    result = IngestResult(
        accepted=accepted,
        withheld=withheld,
        rejected=[
            RejectedMessage(index=r.index, detail=r.detail, field=r.field)
            for r in prepared.rejected
        ],
    )
    return JSONResponse(result.model_dump())


_INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": IngestResult, "description": "Stored durably (journal fsync'd)."},
    400: {"description": "Malformed body or no valid message."},
    413: {"description": "Over Segment's size limits."},
    429: {"description": "Over the workspace's ingest rate limit; see Retry-After."},
    503: {"description": "Overloaded; see Retry-After."},
}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _register_batch() -> None:
    async def batch(request: Request, principal: IngestPrincipal) -> Any:
        return await _ingest(request, principal, None)

    router.add_api_route(
        "/batch",
        batch,
        methods=["POST"],
        summary="Ingest a batch of Segment messages",
        response_model=IngestResult,
        responses=_INGEST_RESPONSES,
        openapi_extra=_body_doc(BATCH_SCHEMA),
        name="ingest_batch",
    )
    router.add_api_route(
        "/b", batch, methods=["POST"], include_in_schema=False, name="ingest_batch_short"
    )


def _single(kind: str) -> Callable[[Request, Principal], Awaitable[Any]]:
    async def endpoint(request: Request, principal: IngestPrincipal) -> Any:
        return await _ingest(request, principal, kind)

    endpoint.__name__ = f"ingest_{kind}"
    return endpoint


def _register_single_calls() -> None:
    for kind, short in SINGLE_CALLS.items():
        endpoint = _single(kind)
        schema = message_schema(kind)
        router.add_api_route(
            f"/{kind}",
            endpoint,
            methods=["POST"],
            summary=f"Ingest one {kind} message",
            response_model=IngestResult,
            responses=_INGEST_RESPONSES,
            openapi_extra=_body_doc(schema),
            name=f"ingest_{kind}",
        )
        router.add_api_route(
            f"/{short}",
            endpoint,
            methods=["POST"],
            include_in_schema=False,
            name=f"ingest_{kind}_short",
        )


_register_batch()
_register_single_calls()


@router.get("/events", response_model=EventPage, summary="Recent events, newest first")
def list_events(
    request: Request,
    principal: Annotated[Principal, deps.Authorize(Permission.READ)],
    page: deps.PageQuery,
    event: Annotated[str | None, Query(max_length=512, description="Only this event name.")] = None,
    person: Annotated[
        str | None, Query(max_length=1024, description="Only this person (user or anonymous id).")
    ] = None,
) -> EventPage:
    assert principal.workspace_id is not None
    rows, next_cursor = service.recent_events(
        runtime_of(request).store,
        workspace_id=principal.workspace_id,
        limit=page.limit,
        cursor=page.cursor,
        event=event,
        person=person,
    )
    return EventPage(
        items=[EventRead.model_validate(row_to_message(r)) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/events/live",
    summary="Live stream of stored events (server-sent events)",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An SSE stream."}},
)
async def live_events(
    request: Request,
    principal: Annotated[Principal, deps.Authorize(Permission.READ)],
    limit: Annotated[
        int | None, Query(ge=1, le=100_000, description="Close after this many events.")
    ] = None,
) -> EventSourceResponse:
    """``event: event`` lines carry event summaries (type, name, ids, time; no properties).
    The stream starts with the workspace's most recent events; ``event: dropped`` says how
    many a slow reader missed."""
    assert principal.workspace_id is not None
    feed = runtime_of(request).live
    workspace_id = principal.workspace_id

    async def stream() -> AsyncIterator[dict[str, str]]:
        sent = 0
        async for kind, item in feed.subscribe(workspace_id, with_recent=True):
            if await request.is_disconnected():
                return
            yield {"event": kind, "data": orjson.dumps(item).decode()}
            if kind == "event":
                sent += 1
                if limit is not None and sent >= limit:
                    return

    return EventSourceResponse(stream(), ping=15)
