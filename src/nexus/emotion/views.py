"""Emotion API: analyse text, fetch the edge model, settings, visitor trajectories, cohorts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from nexus.emotion import service
from nexus.emotion.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    CohortDimension,
    CohortReport,
    EmotionSettingsRead,
    EmotionSettingsUpdate,
    VisitorEmotion,
)
from nexus.events.service import EventsRuntime
from nexus.funnels import service as funnels
from nexus.privacy.runtime import PrivacyRuntime
from nexus.workspaces.deps import PUBLIC, AppSettings, Authorize, DbSession
from nexus.workspaces.models import Permission, Principal, PrincipalKind
from nexus.workspaces.service import actor_name

router = APIRouter(tags=["emotion"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
AdminPrincipal = Annotated[Principal, Authorize(Permission.ADMIN)]
# Analysis serves the browser too: a public write key (ingest permission) may call it.
AnalyzePrincipal = Annotated[Principal, Authorize(Permission.INGEST)]


def runtime(request: Request) -> service.EmotionRuntime:
    emotion: service.EmotionRuntime = request.app.state.emotion
    return emotion


@router.post(
    "/emotion/analyze",
    summary="Read the emotion in one text or a batch of up to 256",
    response_model=AnalyzeResponse,
    responses={503: {"description": "mode=server where the server model is not installed."}},
)
async def analyze(
    body: AnalyzeRequest, request: Request, principal: AnalyzePrincipal
) -> AnalyzeResponse:
    assert principal.workspace_id is not None
    privacy: PrivacyRuntime = request.app.state.privacy
    # Servers (secret keys, users) may read their own texts; from the browser the visitor's
    # consent decides.
    await run_in_threadpool(
        privacy.require,
        principal.workspace_id,
        body.visitor_id,
        "emotion_analysis",
        anonymous_ok=principal.kind is not PrincipalKind.PUBLIC_KEY,
    )
    texts = [body.text] if body.text is not None else list(body.texts or [])

    def scrubbed() -> list[str]:
        assert principal.workspace_id is not None
        return [privacy.scrub_text(principal.workspace_id, t) for t in texts]

    # The model reads the words with PII masked, as it would stored text.
    texts = await run_in_threadpool(scrubbed)
    return await run_in_threadpool(runtime(request).analyze, texts, mode=body.mode)


EDGE_MODEL_PATH = "/v1/emotion/edge-model"


@router.get(
    "/emotion/edge-model",
    openapi_extra=PUBLIC,
    summary="The edge model artifact the browser SDK loads (JSON, versioned, cacheable)",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "The artifact"},
        304: {"description": "Not modified"},
    },
)
def edge_model(request: Request) -> Response:
    emotion = runtime(request)
    body, etag = emotion.edge_artifact()
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/emotion/settings", summary="Which event properties are read on ingest")
def read_settings(principal: ReadPrincipal, db: DbSession) -> EmotionSettingsRead:
    assert principal.workspace_id is not None
    return service.get_settings(db, workspace_id=principal.workspace_id)


@router.put("/emotion/settings", summary="Choose the event properties read on ingest")
def write_settings(
    body: EmotionSettingsUpdate, principal: AdminPrincipal, db: DbSession
) -> EmotionSettingsRead:
    assert principal.workspace_id is not None
    return service.update_settings(
        db, workspace_id=principal.workspace_id, update=body, actor=actor_name(principal)
    )


_ID = r"^[^\x00-\x1f\x7f]+$"


@router.get(
    "/visitors/{visitor_id}/emotion",
    summary="A visitor's emotional trajectory: history, state now, forecast with bands",
)
async def visitor_emotion(
    request: Request,
    principal: ReadPrincipal,
    settings: AppSettings,
    visitor_id: Annotated[str, Path(min_length=1, max_length=512, pattern=_ID)],
    k: Annotated[int, Query(ge=1, le=20, description="Readings to forecast ahead.")] = 3,
) -> VisitorEmotion:
    assert principal.workspace_id is not None
    events: EventsRuntime = request.app.state.events
    return await run_in_threadpool(
        service.visitor_emotion,
        events.store,
        runtime(request).dynamics,
        workspace_id=principal.workspace_id,
        visitor_id=visitor_id,
        steps=k,
        identity=settings.identity_merge,
    )


@router.get(
    "/emotion/cohorts",
    summary="Emotion by funnel step, variant, campaign or time, with bootstrap intervals",
)
async def emotion_cohorts(
    request: Request,
    principal: ReadPrincipal,
    db: DbSession,
    by: CohortDimension,
    funnel_id: Annotated[
        str | None, Query(max_length=32, pattern=_ID, description="Needed for by=step.")
    ] = None,
    group_property: Annotated[
        str | None,
        Query(
            alias="property",
            min_length=1,
            max_length=500,
            pattern=_ID,
            description="by=variant or campaign: the property to group by instead of the "
            "default (properties.variant, context.campaign.name).",
        ),
    ] = None,
    interval: Literal["hour", "day"] = "day",
    start: datetime | None = None,
    end: datetime | None = None,
    resamples: Annotated[int, Query(ge=100, le=10_000)] = 1000,
    confidence: Annotated[float, Query(gt=0.5, lt=1.0)] = 0.95,
) -> CohortReport:
    assert principal.workspace_id is not None
    events: EventsRuntime = request.app.state.events
    span = funnels.period(start, end, interval=interval if by == "time" else None)
    return await run_in_threadpool(
        service.cohorts,
        events.store,
        db,
        workspace_id=principal.workspace_id,
        by=by,
        span=span,
        funnel_id=funnel_id,
        group_property=group_property,
        interval=interval,
        resamples=resamples,
        confidence=confidence,
    )
