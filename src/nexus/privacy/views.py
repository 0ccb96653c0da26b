"""Privacy API: consent (browser and server), settings, counters, data-subject requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from nexus.core.errors import NotFound
from nexus.privacy import service
from nexus.privacy.consent import ConsentMode
from nexus.privacy.models import (
    SUBJECT_LENGTH,
    ConsentRead,
    ConsentUpdate,
    PrivacyCounters,
    PrivacySettingsRead,
    PrivacySettingsUpdate,
    SubjectRequestCreate,
    SubjectRequestRead,
)
from nexus.privacy.runtime import PrivacyRuntime
from nexus.security.service import append_entry
from nexus.workspaces.deps import Authorize, DbSession
from nexus.workspaces.models import Permission, Principal, PrincipalKind
from nexus.workspaces.service import actor_name

router = APIRouter(tags=["privacy"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
AdminPrincipal = Annotated[Principal, Authorize(Permission.ADMIN)]
# Consent banners run in the browser: the public write key (ingest permission) records answers.
ConsentPrincipal = Annotated[Principal, Authorize(Permission.INGEST)]
VisitorPath = Annotated[
    str, Path(min_length=1, max_length=SUBJECT_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")
]
CONSENT_PATH = "/v1/consent"


def runtime_of(request: Request) -> PrivacyRuntime:
    privacy: PrivacyRuntime = request.app.state.privacy
    return privacy


def _workspace(principal: Principal) -> str:
    assert principal.workspace_id is not None
    return principal.workspace_id


def _mode(request: Request, db: DbSession, workspace_id: str) -> ConsentMode:
    privacy = runtime_of(request)
    return service.get_settings(
        db, workspace_id=workspace_id, default_mode=privacy.default_mode
    ).consent_mode


@router.post(
    "/consent",
    summary="Record a visitor's consent per purpose (browser SDK or server)",
    response_model=ConsentRead,
)
def record_consent(
    body: ConsentUpdate, request: Request, principal: ConsentPrincipal, db: DbSession
) -> ConsentRead:
    workspace_id = _workspace(principal)
    default_source = "sdk" if principal.kind is PrincipalKind.PUBLIC_KEY else "api"
    if principal.kind is PrincipalKind.USER:
        default_source = "dashboard"
    _record, state = service.record_consent(
        db,
        workspace_id=workspace_id,
        subject_id=body.visitor_id,
        answers=body.purposes,
        source=body.source or default_source,
        actor=actor_name(principal),
    )
    runtime_of(request).note_consent(workspace_id, body.visitor_id, state)
    return service.consent_read(
        db,
        workspace_id=workspace_id,
        subject_id=body.visitor_id,
        mode=_mode(request, db, workspace_id),
    )


@router.get(
    "/consent/{visitor_id}",
    summary="A visitor's consent: answers, what is permitted, and the history of changes",
)
def read_consent(
    visitor_id: VisitorPath,
    request: Request,
    principal: ReadPrincipal,
    db: DbSession,
    history: Annotated[bool, Query(description="Include every recorded change.")] = True,
) -> ConsentRead:
    workspace_id = _workspace(principal)
    found = service.consent_read(
        db,
        workspace_id=workspace_id,
        subject_id=visitor_id,
        mode=_mode(request, db, workspace_id),
        history=history,
    )
    if found.updated_at is None:
        raise NotFound(
            f"No consent is recorded for visitor {visitor_id!r} "
            f"(the workspace's mode, {found.mode}, applies to them)."
        )
    return found


@router.get("/privacy/settings", summary="Consent mode, PII rules and retention")
def read_settings(request: Request, principal: ReadPrincipal, db: DbSession) -> PrivacySettingsRead:
    return service.get_settings(
        db, workspace_id=_workspace(principal), default_mode=runtime_of(request).default_mode
    )


@router.put("/privacy/settings", summary="Change the consent mode, PII rules or retention")
def write_settings(
    body: PrivacySettingsUpdate, request: Request, principal: AdminPrincipal, db: DbSession
) -> PrivacySettingsRead:
    workspace_id = _workspace(principal)
    privacy = runtime_of(request)
    privacy.validate_pii(body.pii)
    result = service.update_settings(
        db,
        workspace_id=workspace_id,
        update=body,
        actor=actor_name(principal),
        default_mode=privacy.default_mode,
    )
    privacy.invalidate(workspace_id)
    return result


@router.get(
    "/privacy/counters",
    summary="Events dropped or stripped for consent and PII values redacted (since start)",
)
def counters(request: Request, principal: ReadPrincipal) -> PrivacyCounters:
    found = runtime_of(request).counters_of(_workspace(principal))
    return PrivacyCounters(
        events_dropped=found.events_dropped,
        events_stripped=found.events_stripped,
        values_redacted=found.values_redacted,
        by_entity=dict(found.by_entity),
    )


@router.post(
    "/privacy/erasures",
    status_code=status.HTTP_201_CREATED,
    summary="Erase a person everywhere (right to be forgotten); answers the report",
)
async def erase(
    body: SubjectRequestCreate, request: Request, principal: AdminPrincipal
) -> SubjectRequestRead:
    privacy = runtime_of(request)
    return await run_in_threadpool(
        privacy.erase, _workspace(principal), body.visitor_id, actor=actor_name(principal)
    )


@router.post(
    "/privacy/exports",
    summary="Everything stored about a person, as JSON (data portability)",
)
async def export(
    body: SubjectRequestCreate, request: Request, principal: AdminPrincipal
) -> dict[str, Any]:
    privacy = runtime_of(request)
    return await run_in_threadpool(
        privacy.export_request, _workspace(principal), body.visitor_id, actor=actor_name(principal)
    )


@router.get("/privacy/requests", summary="Erasures, exports and retention runs, newest first")
def requests(principal: ReadPrincipal, db: DbSession) -> list[SubjectRequestRead]:
    return service.list_requests(db, workspace_id=_workspace(principal))


@router.post(
    "/privacy/retention/run",
    summary="Apply every workspace's retention now (it also runs on a schedule)",
)
def run_retention(
    request: Request, principal: AdminPrincipal, db: DbSession
) -> list[SubjectRequestRead]:
    workspace_id = _workspace(principal)
    reports = runtime_of(request).apply_retention(workspace_id=workspace_id)
    append_entry(
        db,
        workspace_id=workspace_id,
        actor=actor_name(principal),
        action="retention.run",
        target=workspace_id,
        details={"requests": [r.id for r in reports]},
    )
    return reports


class KeyRotation(BaseModel):
    version: int = Field(description="The workspace key version now current.")
    rewrapped: int = Field(description="Data keys re-wrapped under it.")


@router.post(
    "/privacy/keys/rotate",
    summary="Rotate the workspace's field-encryption key: a new version, data keys re-wrapped",
)
def rotate_keys(request: Request, principal: AdminPrincipal, db: DbSession) -> KeyRotation:
    workspace_id = _workspace(principal)
    version, rewrapped = runtime_of(request).rotate_keys(workspace_id)
    append_entry(
        db,
        workspace_id=workspace_id,
        actor=actor_name(principal),
        action="key.rotated",
        target=f"{workspace_id}:fields:v{version}",
        details={"version": version, "rewrapped": rewrapped},
    )
    return KeyRotation(version=version, rewrapped=rewrapped)
