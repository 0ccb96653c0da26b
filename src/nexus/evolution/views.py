"""Evolution API (``/v1/evolution/...``): campaigns that evolve a hosted step page, their
genealogy, steering (pause, resume, stop, pin, promote, roll back), copy approval, and the
activity feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from nexus.core.settings import Settings
from nexus.evolution import service
from nexus.evolution.generator import Generator, GeneratorConfig, OpenAICompatibleGenerator
from nexus.evolution.models import (
    ActionRequest,
    ActivityRead,
    CampaignCreate,
    CampaignRead,
    CandidatesRequest,
    CopyCandidate,
    GenerationRead,
    PinRequest,
    PromoteRequest,
)
from nexus.evolution.runtime import EvolutionRuntime
from nexus.evolution.search import ALL
from nexus.storage.pagination import Paginated
from nexus.workspaces.deps import Authorize, DbSession, PageQuery
from nexus.workspaces.models import Permission, Principal
from nexus.workspaces.service import actor_name

router = APIRouter(prefix="/evolution", tags=["evolution"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
WritePrincipal = Annotated[Principal, Authorize(Permission.WRITE)]
KeyPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
IdPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")]
SegmentQuery = Annotated[
    str,
    Query(
        pattern=r"^(\*|frustrated|anxious|excited|neutral)$",
        description="Fitness of one emotional segment (``*``: every visitor).",
    ),
]


def _workspace(principal: Principal) -> str:
    assert principal.workspace_id is not None
    return principal.workspace_id


def _invalidate(request: Request, workspace_id: str, funnel: str) -> None:
    designer: EvolutionRuntime | None = getattr(request.app.state, "designer", None)
    if designer is not None:
        designer.invalidate(workspace_id, funnel)


@router.get("/campaigns", summary="Evolution campaigns")
def list_campaigns(
    principal: ReadPrincipal, db: DbSession, page: PageQuery
) -> Paginated[CampaignRead]:
    result = service.list_all(
        db, workspace_id=_workspace(principal), cursor=page.cursor, limit=page.limit
    )
    return Paginated(
        items=[service.read(service.load(db, c)) for c in result.items],
        next_cursor=result.next_cursor,
    )


@router.post(
    "/campaigns",
    status_code=status.HTTP_201_CREATED,
    summary="Start evolving a hosted step page",
)
def create_campaign(
    body: CampaignCreate, principal: WritePrincipal, db: DbSession, request: Request
) -> CampaignRead:
    campaign = service.create(
        db, workspace_id=_workspace(principal), data=body, actor=actor_name(principal)
    )
    _invalidate(request, campaign.workspace_id, campaign.funnel)
    return service.read(service.load(db, campaign))


@router.get("/campaigns/{campaign_key}", summary="One campaign: status, phase and champions")
def get_campaign(campaign_key: KeyPath, principal: ReadPrincipal, db: DbSession) -> CampaignRead:
    campaign = service.get(db, workspace_id=_workspace(principal), key=campaign_key)
    return service.read(service.load(db, campaign))


@router.get(
    "/campaigns/{campaign_key}/generations",
    summary="Every generation with each design's fitness and parents (the genealogy)",
)
def get_generations(
    campaign_key: KeyPath, principal: ReadPrincipal, db: DbSession, segment: SegmentQuery = ALL
) -> list[GenerationRead]:
    campaign = service.get(db, workspace_id=_workspace(principal), key=campaign_key)
    return service.generations(service.load(db, campaign), segment)


def _act(
    campaign_key: str,
    principal: Principal,
    db: DbSession,
    request: Request,
    action: str,
    comment: str,
) -> CampaignRead:
    workspace_id = _workspace(principal)
    campaign = service.get(db, workspace_id=workspace_id, key=campaign_key)
    actor = actor_name(principal)
    if action == "pause":
        service.pause(db, campaign, actor=actor, comment=comment)
    elif action == "resume":
        service.resume(db, campaign, actor=actor, comment=comment)
    elif action == "stop":
        service.stop(db, campaign, actor=actor, comment=comment)
    else:
        service.rollback(db, campaign, actor=actor, comment=comment)
    _invalidate(request, workspace_id, campaign.funnel)
    return service.read(service.load(db, campaign))


@router.post("/campaigns/{campaign_key}/pause", summary="Pause: visitors see the page as it is")
def pause_campaign(
    campaign_key: KeyPath,
    body: ActionRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    return _act(campaign_key, principal, db, request, "pause", body.comment)


@router.post("/campaigns/{campaign_key}/resume", summary="Resume a paused campaign")
def resume_campaign(
    campaign_key: KeyPath,
    body: ActionRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    return _act(campaign_key, principal, db, request, "resume", body.comment)


@router.post("/campaigns/{campaign_key}/stop", summary="Stop a campaign for good")
def stop_campaign(
    campaign_key: KeyPath,
    body: ActionRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    return _act(campaign_key, principal, db, request, "stop", body.comment)


@router.post(
    "/campaigns/{campaign_key}/rollback",
    summary="Roll back a promoted champion: everyone sees the page as it was",
)
def rollback_campaign(
    campaign_key: KeyPath,
    body: ActionRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    return _act(campaign_key, principal, db, request, "rollback", body.comment)


@router.post(
    "/campaigns/{campaign_key}/promote",
    summary="Promote the champion (or a named design) through a guarded rollout",
)
def promote_campaign(
    campaign_key: KeyPath,
    body: PromoteRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    workspace_id = _workspace(principal)
    campaign = service.get(db, workspace_id=workspace_id, key=campaign_key)
    service.promote(db, campaign, body, actor=actor_name(principal))
    _invalidate(request, workspace_id, campaign.funnel)
    request.app.state.decisions.invalidate(workspace_id)
    return service.read(service.load(db, campaign))


@router.post("/campaigns/{campaign_key}/pin", summary="Pin a gene to one value, or unpin it")
def pin_gene(
    campaign_key: KeyPath,
    body: PinRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CampaignRead:
    workspace_id = _workspace(principal)
    campaign = service.get(db, workspace_id=workspace_id, key=campaign_key)
    loaded = service.pin(db, campaign, body, actor=actor_name(principal))
    _invalidate(request, workspace_id, campaign.funnel)
    return service.read(loaded)


def copy_generator(settings: Settings) -> Generator | None:
    """The deployment's copy generator (None: none configured, the default)."""
    if not settings.copy_generator_url:
        return None
    key = settings.copy_generator_api_key
    return OpenAICompatibleGenerator(
        GeneratorConfig(
            base_url=settings.copy_generator_url,
            model=settings.copy_generator_model,
            api_key=key.get_secret_value() if key is not None else None,
            require_approval=settings.copy_generator_require_approval,
            enabled=True,
        )
    )


@router.post(
    "/campaigns/{campaign_key}/candidates",
    status_code=status.HTTP_201_CREATED,
    summary="Propose copy for a copy gene: your texts, the phrase grammar's or a generator's",
)
def propose_copy(
    campaign_key: KeyPath,
    body: CandidatesRequest,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> list[CopyCandidate]:
    settings: Settings = request.app.state.settings
    campaign = service.get(db, workspace_id=_workspace(principal), key=campaign_key)
    added = service.propose(
        db,
        campaign,
        body,
        actor=actor_name(principal),
        generator=copy_generator(settings) if body.source == "generator" else None,
        require_approval=settings.copy_generator_require_approval,
    )
    _invalidate(request, campaign.workspace_id, campaign.funnel)
    return added


@router.post(
    "/campaigns/{campaign_key}/candidates/{candidate_id}/approve",
    summary="Approve copy: it becomes a value the search may try",
)
def approve_copy(
    campaign_key: KeyPath,
    candidate_id: IdPath,
    principal: WritePrincipal,
    db: DbSession,
    request: Request,
) -> CopyCandidate:
    workspace_id = _workspace(principal)
    campaign = service.get(db, workspace_id=workspace_id, key=campaign_key)
    out = service.decide_candidate(
        db, campaign, candidate_id, approve=True, actor=actor_name(principal)
    )
    _invalidate(request, workspace_id, campaign.funnel)
    return out


@router.post("/campaigns/{campaign_key}/candidates/{candidate_id}/reject", summary="Reject copy")
def reject_copy(
    campaign_key: KeyPath, candidate_id: IdPath, principal: WritePrincipal, db: DbSession
) -> CopyCandidate:
    campaign = service.get(db, workspace_id=_workspace(principal), key=campaign_key)
    return service.decide_candidate(
        db, campaign, candidate_id, approve=False, actor=actor_name(principal)
    )


@router.get("/activity", summary="What evolution and the funnel monitor did, newest first")
def list_activity(
    principal: ReadPrincipal,
    db: DbSession,
    page: PageQuery,
    campaign: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ] = None,
) -> Paginated[ActivityRead]:
    result = service.list_activity(
        db,
        workspace_id=_workspace(principal),
        campaign=campaign,
        cursor=page.cursor,
        limit=page.limit,
    )
    return Paginated(
        items=[service.activity_read(a) for a in result.items], next_cursor=result.next_cursor
    )
