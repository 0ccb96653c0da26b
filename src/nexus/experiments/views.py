"""Decision engine API: flags (+ audit, SDK definitions, kill switch), experiments and their
results, UI adaptations, decision settings, guarded rollouts, ``/v1/decide`` and OFREP."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from nexus.core.errors import FieldError, InvalidInput
from nexus.core.logging import get_logger
from nexus.core.settings import Settings
from nexus.events.bots import BotMarker
from nexus.events.service import EventsRuntime
from nexus.events.store import EventStore
from nexus.experiments import analysis, guard, service
from nexus.experiments import flags as evaluator
from nexus.experiments.decisions import DecisionRuntime
from nexus.experiments.models import (
    AdaptationBody,
    AdaptationCreate,
    AdaptationRead,
    DecideRequest,
    DecideResponse,
    DecisionSettingsBody,
    DecisionSettingsRead,
    ExperimentCreate,
    ExperimentRead,
    ExperimentResults,
    ExperimentUpdate,
    FlagChangeRead,
    FlagCreate,
    FlagDefinitions,
    FlagRead,
    FlagUpdate,
    KillSwitch,
    RolloutCreate,
    RolloutRead,
)
from nexus.privacy.runtime import PrivacyRuntime
from nexus.security.webhooks import WebhookTargetRefused, check_webhook_url
from nexus.storage.pagination import Paginated
from nexus.workspaces.deps import Authorize, DbSession, FastAuthorize, PageQuery
from nexus.workspaces.models import Permission, Principal

log = get_logger("nexus.experiments")
router = APIRouter()
# Hot paths, included ahead of every other router: FastAPI matches routes in order, and a
# decision should not first be tried against every administration route.
decide_router = APIRouter()
ofrep_router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
WritePrincipal = Annotated[Principal, Authorize(Permission.WRITE)]
DecidePrincipal = Annotated[Principal, FastAuthorize(Permission.DECIDE)]
Start = Annotated[
    datetime | None,
    Query(description="Analysis start (RFC 3339); default when the experiment started."),
]
End = Annotated[datetime | None, Query(description="Analysis end, exclusive; default now.")]
KeyPath = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")]


def runtime_of(request: Request) -> DecisionRuntime:
    runtime: DecisionRuntime = request.app.state.decisions
    return runtime


def _store(request: Request) -> EventStore:
    events: EventsRuntime = request.app.state.events
    return events.store


def _workspace(principal: Principal) -> str:
    assert principal.workspace_id is not None
    return principal.workspace_id


# --- flags ----------------------------------------------------------------------------------


@router.get("/flags", tags=["flags"], summary="Feature flags")
def list_flags(principal: ReadPrincipal, db: DbSession, page: PageQuery) -> Paginated[FlagRead]:
    result = service.list_flags(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(
        items=[service.flag_read(f) for f in result.items], next_cursor=result.next_cursor
    )


@router.post("/flags", tags=["flags"], status_code=status.HTTP_201_CREATED, summary="Create a flag")
def create_flag(
    body: FlagCreate, principal: WritePrincipal, db: DbSession, request: Request
) -> FlagRead:
    flag = service.create_flag(
        db, workspace_id=_workspace(principal), data=body, actor=service.actor_of(principal)
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.flag_read(flag)


@router.get(
    "/flags/definitions",
    tags=["flags"],
    summary="Every flag's definition, for SDKs that evaluate locally",
    responses={304: {"description": "Unchanged since the ETag sent in If-None-Match."}},
)
def flag_definitions(
    principal: Annotated[Principal, Authorize(Permission.DECIDE)],
    db: DbSession,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    documents, version = service.flag_definitions(db, workspace_id=_workspace(principal))
    etag = f'"{version}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    body = FlagDefinitions(version=version, flags=documents)
    return Response(
        content=body.model_dump_json(),
        media_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


@router.get("/flags/{flag_key}", tags=["flags"], summary="One flag")
def read_flag(flag_key: str, principal: ReadPrincipal, db: DbSession) -> FlagRead:
    return service.flag_read(service.get_flag(db, workspace_id=_workspace(principal), key=flag_key))


@router.patch("/flags/{flag_key}", tags=["flags"], summary="Change a flag")
def update_flag(
    flag_key: str, body: FlagUpdate, principal: WritePrincipal, db: DbSession, request: Request
) -> FlagRead:
    flag = service.update_flag(
        db,
        workspace_id=_workspace(principal),
        key=flag_key,
        data=body,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.flag_read(flag)


@router.post("/flags/{flag_key}/kill", tags=["flags"], summary="Kill switch: serve off now")
def kill_flag(
    flag_key: str, body: KillSwitch, principal: WritePrincipal, db: DbSession, request: Request
) -> FlagRead:
    flag = service.update_flag(
        db,
        workspace_id=_workspace(principal),
        key=flag_key,
        data=FlagUpdate(enabled=False, comment=body.comment),
        actor=service.actor_of(principal),
        action="killed",
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.flag_read(flag)


@router.delete(
    "/flags/{flag_key}",
    tags=["flags"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a flag",
)
def delete_flag(
    flag_key: str, principal: WritePrincipal, db: DbSession, request: Request
) -> Response:
    service.delete_flag(
        db, workspace_id=_workspace(principal), key=flag_key, actor=service.actor_of(principal)
    )
    runtime_of(request).invalidate(_workspace(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/flags/{flag_key}/changes", tags=["flags"], summary="A flag's audit trail")
def flag_changes(
    flag_key: str, principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[FlagChangeRead]:
    result = service.flag_changes(
        db,
        workspace_id=_workspace(principal),
        key=flag_key,
        cursor=page.cursor,
        limit=page.limit,
    )
    return Paginated(
        items=[FlagChangeRead.model_validate(c, from_attributes=True) for c in result.items],
        next_cursor=result.next_cursor,
    )


# --- guarded rollouts -----------------------------------------------------------------------


@router.post(
    "/flags/{flag_key}/rollouts",
    tags=["rollouts"],
    status_code=status.HTTP_201_CREATED,
    summary="Start a guarded rollout of a variation",
)
def create_rollout(
    flag_key: str, body: RolloutCreate, principal: WritePrincipal, db: DbSession, request: Request
) -> RolloutRead:
    rollout = guard.create_rollout(
        db,
        workspace_id=_workspace(principal),
        flag_key=flag_key,
        data=body,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return guard.rollout_read(rollout)


@router.get("/rollouts", tags=["rollouts"], summary="Guarded rollouts")
def list_rollouts(
    principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[RolloutRead]:
    result = guard.list_rollouts(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(
        items=[guard.rollout_read(r) for r in result.items], next_cursor=result.next_cursor
    )


@router.get("/rollouts/{rollout_id}", tags=["rollouts"], summary="One guarded rollout")
def read_rollout(rollout_id: str, principal: ReadPrincipal, db: DbSession) -> RolloutRead:
    return guard.rollout_read(
        guard.get_rollout(db, workspace_id=_workspace(principal), rollout_id=rollout_id)
    )


@router.post(
    "/rollouts/{rollout_id}/check",
    tags=["rollouts"],
    summary="Check the guardrails now: hold, advance, complete or roll back",
)
def check_rollout(
    rollout_id: str, principal: WritePrincipal, db: DbSession, request: Request
) -> RolloutRead:
    rollout = guard.check_rollout(
        db,
        _store(request),
        workspace_id=_workspace(principal),
        rollout_id=rollout_id,
        notify=request.app.state.rollout_notify,
    )
    runtime_of(request).invalidate(_workspace(principal))
    return guard.rollout_read(rollout)


@router.post("/rollouts/{rollout_id}/rollback", tags=["rollouts"], summary="Roll back by hand")
def rollback_rollout(
    rollout_id: str, body: KillSwitch, principal: WritePrincipal, db: DbSession, request: Request
) -> RolloutRead:
    rollout = guard.rollback(
        db,
        workspace_id=_workspace(principal),
        rollout_id=rollout_id,
        reason=body.comment or "rolled back by hand",
        actor=service.actor_of(principal),
        notify=request.app.state.rollout_notify,
    )
    runtime_of(request).invalidate(_workspace(principal))
    return guard.rollout_read(rollout)


# --- experiments ----------------------------------------------------------------------------


@router.get("/experiments", tags=["experiments"], summary="Experiments")
def list_experiments(
    principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[ExperimentRead]:
    result = service.list_experiments(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(
        items=[service.experiment_read(e) for e in result.items], next_cursor=result.next_cursor
    )


@router.post(
    "/experiments",
    tags=["experiments"],
    status_code=status.HTTP_201_CREATED,
    summary="Create an experiment (a draft until started)",
)
def create_experiment(
    body: ExperimentCreate, principal: WritePrincipal, db: DbSession
) -> ExperimentRead:
    return service.experiment_read(
        service.create_experiment(
            db, workspace_id=_workspace(principal), data=body, actor=service.actor_of(principal)
        )
    )


@router.get("/experiments/{experiment_key}", tags=["experiments"], summary="One experiment")
def read_experiment(experiment_key: str, principal: ReadPrincipal, db: DbSession) -> ExperimentRead:
    return service.experiment_read(
        service.get_experiment(db, workspace_id=_workspace(principal), key=experiment_key)
    )


@router.patch("/experiments/{experiment_key}", tags=["experiments"], summary="Change one")
def update_experiment(
    experiment_key: str,
    body: ExperimentUpdate,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> ExperimentRead:
    experiment = service.update_experiment(
        db,
        workspace_id=_workspace(principal),
        key=experiment_key,
        data=body,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.experiment_read(experiment)


@router.post("/experiments/{experiment_key}/start", tags=["experiments"], summary="Start assigning")
def start_experiment(
    experiment_key: str, principal: WritePrincipal, db: DbSession, request: Request
) -> ExperimentRead:
    experiment = service.start_experiment(
        db,
        workspace_id=_workspace(principal),
        key=experiment_key,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.experiment_read(experiment)


@router.post("/experiments/{experiment_key}/stop", tags=["experiments"], summary="Stop it")
def stop_experiment(
    experiment_key: str, principal: WritePrincipal, db: DbSession, request: Request
) -> ExperimentRead:
    experiment = service.stop_experiment(
        db,
        workspace_id=_workspace(principal),
        key=experiment_key,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.experiment_read(experiment)


@router.delete(
    "/experiments/{experiment_key}",
    tags=["experiments"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an experiment",
)
def delete_experiment(
    experiment_key: str, principal: WritePrincipal, db: DbSession, request: Request
) -> Response:
    service.delete_experiment(
        db,
        workspace_id=_workspace(principal),
        key=experiment_key,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/experiments/{experiment_key}/results",
    tags=["experiments"],
    summary="Results: every metric for every variant against control",
)
def experiment_results(
    experiment_key: str,
    principal: ReadPrincipal,
    db: DbSession,
    request: Request,
    start: Start = None,
    end: End = None,
) -> ExperimentResults:
    experiment = service.get_experiment(db, workspace_id=_workspace(principal), key=experiment_key)
    return analysis.experiment_results(
        db, _store(request), experiment=experiment, start=start, end=end
    )


# --- adaptations and settings ---------------------------------------------------------------


@router.get("/adaptations", tags=["adaptations"], summary="UI adaptations")
def list_adaptations(
    principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[AdaptationRead]:
    result = service.list_adaptations(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(
        items=[service.adaptation_read(a) for a in result.items], next_cursor=result.next_cursor
    )


@router.post(
    "/adaptations",
    tags=["adaptations"],
    status_code=status.HTTP_201_CREATED,
    summary="Define a UI adaptation",
)
def create_adaptation(
    body: AdaptationCreate, principal: WritePrincipal, db: DbSession, request: Request
) -> AdaptationRead:
    adaptation = service.create_adaptation(
        db, workspace_id=_workspace(principal), data=body, actor=service.actor_of(principal)
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.adaptation_read(adaptation)


@router.get("/adaptations/{adaptation_key}", tags=["adaptations"], summary="One adaptation")
def read_adaptation(adaptation_key: str, principal: ReadPrincipal, db: DbSession) -> AdaptationRead:
    return service.adaptation_read(
        service.get_adaptation(db, workspace_id=_workspace(principal), key=adaptation_key)
    )


@router.put("/adaptations/{adaptation_key}", tags=["adaptations"], summary="Replace one")
def replace_adaptation(
    adaptation_key: str,
    body: AdaptationBody,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> AdaptationRead:
    adaptation = service.replace_adaptation(
        db,
        workspace_id=_workspace(principal),
        key=adaptation_key,
        data=body,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return service.adaptation_read(adaptation)


@router.delete(
    "/adaptations/{adaptation_key}",
    tags=["adaptations"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an adaptation",
)
def delete_adaptation(
    adaptation_key: str, principal: WritePrincipal, db: DbSession, request: Request
) -> Response:
    service.delete_adaptation(
        db,
        workspace_id=_workspace(principal),
        key=adaptation_key,
        actor=service.actor_of(principal),
    )
    runtime_of(request).invalidate(_workspace(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/decision-settings", tags=["decide"], summary="How decide adapts and holds out")
def read_decision_settings(principal: ReadPrincipal, db: DbSession) -> DecisionSettingsRead:
    return service.get_decision_settings(db, workspace_id=_workspace(principal))


@router.put("/decision-settings", tags=["decide"], summary="Change how decide adapts")
def put_decision_settings(
    body: DecisionSettingsBody, principal: WritePrincipal, db: DbSession, request: Request
) -> DecisionSettingsRead:
    if body.webhook_url is not None:
        settings: Settings = request.app.state.settings
        try:
            check_webhook_url(body.webhook_url, allow_private=settings.webhook_allow_private)
        except WebhookTargetRefused as exc:
            raise InvalidInput(
                f"webhook_url: {exc}.",
                errors=[FieldError(("body", "webhook_url"), str(exc), "webhook_target")],
            ) from None
    result = service.put_decision_settings(
        db, workspace_id=_workspace(principal), data=body, actor=service.actor_of(principal)
    )
    runtime_of(request).invalidate(_workspace(principal))
    return result


class PolicySummary(BaseModel):
    kind: str | None
    arms: list[str]
    pulls: dict[str, int]
    updates: int
    pending_rewards: int


@router.get("/decision-policy", tags=["decide"], summary="What the adaptation bandit learned")
async def read_policy(principal: ReadPrincipal, request: Request) -> PolicySummary:
    runtime = runtime_of(request)
    config = await run_in_threadpool(runtime.compiled, _workspace(principal))
    policy = config.policy
    if policy is None:
        return PolicySummary(
            kind=None,
            arms=[],
            pulls={},
            updates=0,
            pending_rewards=runtime.pending_count(_workspace(principal)),
        )
    return PolicySummary(
        kind=type(policy).__name__,
        arms=list(policy.arms),
        pulls=dict(policy.pulls),
        updates=policy.n_updates,
        pending_rewards=runtime.pending_count(_workspace(principal)),
    )


# --- decide ---------------------------------------------------------------------------------


@decide_router.post(
    "/decide",
    tags=["decide"],
    summary="Flags, variants and the UI adaptation for one visitor",
    response_model=DecideResponse,
)
async def decide(body: DecideRequest, principal: DecidePrincipal, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = _workspace(principal)
    # What may block (a database read, a slow emotion tier) runs on a worker thread; the
    # decision itself runs here, on the loop's thread, where all decision state lives.
    if runtime.needs_load(workspace_id):
        await run_in_threadpool(runtime.reload, workspace_id)
    elif runtime.refresh_due(workspace_id):
        background_reload(runtime, workspace_id)
    privacy: PrivacyRuntime = request.app.state.privacy
    permitted = privacy.cached_permissions(workspace_id, body.visitor_id)
    if permitted is None:
        permitted = await run_in_threadpool(privacy.load_permissions, workspace_id, body.visitor_id)
    if body.text is not None and privacy.may_hold_pii(workspace_id, body.text) is not False:
        scrubbed = await run_in_threadpool(privacy.scrub_text, workspace_id, body.text)
        body = body.model_copy(update={"text": scrubbed})
    read = None
    if (
        body.text is not None
        and body.emotion is None
        and runtime.emotion_mode != "edge"
        and permitted.emotion_analysis
        and permitted.personalisation
    ):
        read = await run_in_threadpool(runtime.read_text, body.text)
    bots: BotMarker | None = request.app.state.events.bots
    bot = bots is not None and bots.is_bot(workspace_id, body.visitor_id)
    result = runtime.decide(workspace_id, body, read=read, permitted=permitted, bot=bot)
    return Response(content=orjson.dumps(result), media_type="application/json")


_reloads: set[asyncio.Future[Any]] = set()


def background_reload(runtime: DecisionRuntime, workspace_id: str) -> None:
    """Reload a stale configuration on a worker thread; decisions keep the cached one."""
    future = asyncio.get_running_loop().run_in_executor(None, runtime.reload, workspace_id)
    _reloads.add(future)

    def done(finished: asyncio.Future[Any]) -> None:
        _reloads.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            log.error("decision configuration reload failed", error=str(finished.exception()))

    future.add_done_callback(done)


# --- OFREP ----------------------------------------------------------------------------------


class OfrepRequest(BaseModel):
    """``{"context": {"targetingKey": "visitor-1", "country": "DE", ...}}``."""

    model_config = ConfigDict(extra="allow")

    context: dict[str, Any] | None = None


class OfrepEvaluation(BaseModel):
    key: str
    value: Any = None
    reason: str
    variant: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class OfrepFailure(BaseModel):
    key: str | None = None
    errorCode: str  # noqa: N815 - OFREP's field name
    errorDetails: str | None = None  # noqa: N815


class OfrepBulk(BaseModel):
    flags: list[OfrepEvaluation | OfrepFailure]
    metadata: dict[str, Any] = Field(default_factory=dict)


def _ofrep_context(body: OfrepRequest) -> evaluator.EvaluationContext:
    context = dict(body.context or {})
    key = context.pop("targetingKey", None)
    if key is not None and not isinstance(key, str):
        raise InvalidInput(
            "targetingKey must be a string.",
            errors=[FieldError(("body", "context", "targetingKey"), "must be a string")],
        )
    return evaluator.EvaluationContext(targeting_key=key, attributes=context)


def _ofrep_item(evaluation: evaluator.Evaluation) -> OfrepEvaluation | OfrepFailure:
    if evaluation.error_code is not None:
        return OfrepFailure(
            key=evaluation.flag_key,
            errorCode=evaluation.error_code,
            errorDetails=evaluation.error_message,
        )
    return OfrepEvaluation(
        key=evaluation.flag_key,
        value=evaluation.value,
        reason=evaluation.reason,
        variant=evaluation.variation,
        metadata={"version": evaluation.version},
    )


@ofrep_router.post(
    "/evaluate/flags/{flag_key}",
    summary="OFREP: evaluate one flag",
    response_model=OfrepEvaluation,
    responses={400: {"model": OfrepFailure}, 404: {"model": OfrepFailure}},
)
async def ofrep_evaluate(
    flag_key: str, body: OfrepRequest, principal: DecidePrincipal, request: Request
) -> JSONResponse:
    runtime = runtime_of(request)
    config = await run_in_threadpool(runtime.compiled, _workspace(principal))
    evaluation = config.flag_set.evaluate(flag_key, _ofrep_context(body))
    item = _ofrep_item(evaluation)
    if isinstance(item, OfrepFailure):
        code = 404 if item.errorCode == "FLAG_NOT_FOUND" else 400
        return JSONResponse(item.model_dump(exclude_none=True), status_code=code)
    return JSONResponse(item.model_dump())


@ofrep_router.post(
    "/evaluate/flags",
    summary="OFREP: evaluate every flag (bulk)",
    response_model=OfrepBulk,
    responses={304: {"description": "Unchanged since the ETag sent in If-None-Match."}},
)
async def ofrep_bulk(
    body: OfrepRequest,
    principal: DecidePrincipal,
    request: Request,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    runtime = runtime_of(request)
    config = await run_in_threadpool(runtime.compiled, _workspace(principal))
    evaluations = config.flag_set.evaluate_all(_ofrep_context(body))
    payload = OfrepBulk(flags=[_ofrep_item(e) for e in evaluations.values()])
    content = orjson.dumps(payload.model_dump(exclude_none=True))
    etag = '"' + service.content_tag(content) + '"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return Response(content=content, media_type="application/json", headers={"ETag": etag})
