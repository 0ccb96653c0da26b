"""Liveness, readiness and Prometheus metrics: public, for load balancers and scrapers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from nexus import __version__
from nexus.api.middleware import Metrics
from nexus.api.problems import Problem, problem_response
from nexus.storage import migrate
from nexus.workspaces.deps import PUBLIC, get_database

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    database: str
    revision: str | None


@router.get("/healthz", openapi_extra=PUBLIC, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/readyz",
    openapi_extra=PUBLIC,
    summary="Readiness: the database answers and is migrated",
    responses={503: {"model": Problem, "description": "Not ready"}},
    response_model=Readiness,
)
def readyz(request: Request) -> Response | Readiness:
    database = get_database(request)
    try:
        database.ping()
        revision = migrate.current_revision(database.engine)
    except SQLAlchemyError as exc:
        return problem_response(
            request,
            status=503,
            code="database-unavailable",
            title="Database unavailable",
            detail=f"The database does not answer: {type(exc).__name__}.",
        )
    head = migrate.head_revision()
    if revision != head:
        return problem_response(
            request,
            status=503,
            code="database-not-migrated",
            title="Database not migrated",
            detail=f"The schema is at {revision}, the code needs {head}: run `nexus migrate`.",
        )
    return Readiness(status="ready", database=database.dialect, revision=revision)


@router.get(
    "/metrics",
    openapi_extra=PUBLIC,
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics"}},
)
def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
