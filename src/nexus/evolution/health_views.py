"""Funnel-health API: the workspace's monitoring settings (``/v1/evolution/monitoring``) and
what the monitor found (``/v1/evolution/alerts``). See :mod:`nexus.evolution.health`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from nexus.evolution import health
from nexus.evolution.health import FunnelAlerts, MonitoringSettings, MonitoringSettingsRead
from nexus.workspaces.deps import Authorize, DbSession
from nexus.workspaces.models import Permission, Principal
from nexus.workspaces.service import actor_name

router = APIRouter(prefix="/evolution", tags=["evolution"])
ReadPrincipal = Annotated[Principal, Authorize(Permission.READ)]
WritePrincipal = Annotated[Principal, Authorize(Permission.WRITE)]


def _workspace(principal: Principal) -> str:
    assert principal.workspace_id is not None
    return principal.workspace_id


@router.get("/monitoring", summary="How the workspace's hosted funnels are watched")
def get_monitoring(principal: ReadPrincipal, db: DbSession) -> MonitoringSettingsRead:
    return health.get_settings(db, workspace_id=_workspace(principal))


@router.put("/monitoring", summary="Change how the hosted funnels are watched")
def put_monitoring(
    body: MonitoringSettings, principal: WritePrincipal, db: DbSession
) -> MonitoringSettingsRead:
    return health.put_settings(
        db, workspace_id=_workspace(principal), data=body, actor=actor_name(principal)
    )


@router.get("/alerts", summary="Per hosted funnel: regressions going on now, and recent alerts")
def list_alerts(
    principal: ReadPrincipal,
    db: DbSession,
    funnel: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z0-9][a-z0-9_-]*$",
            description="A funnel slug.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Recent alerts per funnel.")] = 20,
) -> list[FunnelAlerts]:
    return health.list_alerts(db, workspace_id=_workspace(principal), funnel=funnel, limit=limit)
