"""The app factory: one FastAPI application composed of every domain's router and the web UI.

``uvicorn --factory nexus.api.app:create_app`` works as well as ``nexus serve``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.concurrency import run_in_threadpool

from nexus import __version__
from nexus.api import health
from nexus.api.hotpaths import DECIDE_PATH, DecideFastPath
from nexus.api.middleware import (
    ApiRateLimits,
    BodySizeLimitMiddleware,
    IngestCorsMiddleware,
    Metrics,
    RateLimitMiddleware,
    RequestComplexityMiddleware,
    RequestContextMiddleware,
    TrustedProxyMiddleware,
    parse_networks,
)
from nexus.api.problems import ERROR_RESPONSES, install_problem_handlers
from nexus.core.logging import configure_logging, get_logger
from nexus.core.ratelimit import RateLimit
from nexus.core.settings import Settings
from nexus.emotion import service as emotion_service
from nexus.emotion import views as emotion_views
from nexus.emotion.analyzer import Mode
from nexus.emotion.models.vector import EmotionVector
from nexus.events import service as events_service
from nexus.events import views as events_views
from nexus.events.bots import BotMarker
from nexus.events.store import WorkspaceBatch
from nexus.events.subjects import EventSubjects, JournalSubjects
from nexus.evolution import health_views as evolution_health_views
from nexus.evolution import views as evolution_views
from nexus.evolution.health import HealthWorker
from nexus.evolution.runtime import EvolutionRuntime, EvolutionWorker
from nexus.experiments import service as experiments_service
from nexus.experiments import views as experiments_views
from nexus.experiments.background import DecisionWorker, post_webhook
from nexus.experiments.decisions import DecisionRuntime, Snapshot
from nexus.funnels import views as funnels_views
from nexus.pages import views as pages_views
from nexus.pages.runtime import PagesRuntime
from nexus.privacy import views as privacy_views
from nexus.privacy.runtime import PrivacyRuntime
from nexus.security.webhooks import keys_directory
from nexus.storage import migrate
from nexus.storage.database import Database
from nexus.web import routes as web_routes
from nexus.workspaces import views as workspaces_views
from nexus.workspaces.deps import PUBLIC, is_authorizing

API_PREFIX = "/v1"
log = get_logger("nexus.api")

# What web pages call with the public write key, from any site: ingestion, decide, flag
# definitions and OFREP.
BROWSER_PATHS = frozenset(
    {
        *events_views.INGEST_PATHS,
        DECIDE_PATH,
        "/v1/flags/definitions",
        privacy_views.CONSENT_PATH,
        # The SDK on another site loads the edge emotion model to read text in the browser.
        emotion_views.EDGE_MODEL_PATH,
    }
)
BROWSER_PREFIXES = ("/ofrep/v1/",)

DOMAIN_ROUTERS = [
    workspaces_views.router,
    events_views.router,
    funnels_views.router,
    emotion_views.router,
    experiments_views.router,
    privacy_views.router,
    pages_views.router,
    evolution_views.router,
    evolution_health_views.router,
]


class UnguardedRouteError(RuntimeError):
    """A route with neither an authorization dependency nor the PUBLIC marker."""


def create_app(  # noqa: PLR0915 - the lifespan wires every runtime, in order
    settings: Settings | None = None, *, configure_logs: bool = True, freeze_gc: bool = False
) -> FastAPI:
    """The app. ``freeze_gc`` (for a serving process, not tests that build many apps) moves
    everything alive after start-up -- modules, models, compiled configuration -- out of
    the garbage collector's reach: a full collection then scans only what requests
    created, and stops the process for a few milliseconds instead of ~150 ms."""
    settings = settings or Settings()
    if configure_logs:
        configure_logging(level=settings.log_level, fmt=settings.resolved_log_format)
    database = Database(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.is_embedded_database:
            # The embedded database is ours alone: bring it to the current schema on start.
            await run_in_threadpool(migrate.upgrade, database.url)
        events = await run_in_threadpool(events_service.EventsRuntime.open, settings)
        app.state.events = events
        emotion = await run_in_threadpool(
            emotion_service.EmotionRuntime,
            settings,
            text_properties_of=emotion_service.settings_reader(database.session),
        )
        app.state.emotion = emotion
        events.pipeline.enrich = emotion.enrich
        worker = _decision_engine(app, database, events, emotion, settings)
        evolution, health_worker = _evolution_engine(app, database, events, settings)
        privacy = _privacy_engine(app, database, events, settings)
        await run_in_threadpool(privacy.warm_up)
        events.start()
        worker.start()
        evolution.start()
        health_worker.start()
        retention = asyncio.create_task(_retention_schedule(privacy, settings))
        if freeze_gc:
            gc.collect()
            gc.freeze()
        log.info("nexus started", version=__version__, database=database.dialect)
        try:
            yield
        finally:
            retention.cancel()
            await health_worker.stop()
            await evolution.stop()
            await worker.stop()
            # Store what was acknowledged before the process goes (a kill -9 skips this; the
            # journal then replays on the next start).
            await run_in_threadpool(events.close)
            database.dispose()

    app = FastAPI(
        title="NEXUS",
        version=__version__,
        summary="Emotion-aware, self-optimising sales funnels.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN; NEXUS makes no
        # network calls at run time, so it serves the OpenAPI document alone.
        docs_url=None,
        redoc_url=None,
        # No telemetry leaves the process: FastAPI's native OpenTelemetry stays off (it also
        # looked providers up in the environment on every request). Metrics are /metrics'.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.database = database
    app.state.metrics = Metrics()
    app.state.ingest_keys = {}
    app.state.login_limit = RateLimit(
        settings.login_rate_limit,
        storage_uri=settings.rate_limit_storage,
        message="Too many sign-in attempts for this account.",
    )
    app.state.login_ip_limit = RateLimit(
        settings.login_ip_rate_limit,
        storage_uri=settings.rate_limit_storage,
        message="Too many sign-in attempts from this address.",
    )
    app.state.login_guard = web_routes.sign_in_guard(settings)
    app.state.pages = PagesRuntime(database.session)

    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(
        experiments_views.decide_router, prefix=API_PREFIX, responses=ERROR_RESPONSES
    )
    app.include_router(experiments_views.ofrep_router, responses=ERROR_RESPONSES)
    for router in DOMAIN_ROUTERS:
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(pages_views.hosted_router)
    web_routes.install(app)

    _install_middleware(app, settings)
    assert_every_route_guarded(app)
    app.state.metrics.route_templates.update({id(route): path for path, route in api_routes(app)})
    return app


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """The middleware stack, outermost last. Rate limits and proxies are built here, not
    when Starlette builds the stack on the first request, so that bad settings fail at
    start-up."""
    rate_limits = ApiRateLimits.from_settings(settings) if settings.rate_limit_enabled else None
    proxies = parse_networks(settings.trusted_proxies, setting="NEXUS_TRUSTED_PROXIES")
    app.add_middleware(DecideFastPath)
    app.add_middleware(
        RequestComplexityMiddleware,
        max_query_bytes=settings.max_query_bytes,
        max_query_params=settings.max_query_params,
        max_json_depth=settings.max_json_depth,
        max_json_items=settings.max_json_items,
        hot_paths=BROWSER_PATHS,
        hot_prefixes=BROWSER_PREFIXES,
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if rate_limits is not None:
        # Inside CORS, so that browsers can read a 429 from the ingest and decide paths.
        app.add_middleware(
            RateLimitMiddleware,
            limits=rate_limits,
            hot_paths=BROWSER_PATHS,
            hot_prefixes=BROWSER_PREFIXES,
            metrics=app.state.metrics,
        )
    app.add_middleware(IngestCorsMiddleware, paths=BROWSER_PATHS, prefixes=BROWSER_PREFIXES)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    if proxies:
        app.add_middleware(TrustedProxyMiddleware, proxies=proxies)


def _decision_engine(
    app: FastAPI,
    database: Database,
    events: events_service.EventsRuntime,
    emotion: emotion_service.EmotionRuntime,
    settings: Settings,
) -> DecisionWorker:
    """The decision runtime (decide's state), wired to stored events, and its worker."""
    decisions = _decision_runtime(database, emotion, settings)
    app.state.decisions = decisions
    events.pipeline.listeners.append(decisions.observe)
    worker = DecisionWorker(
        runtime=decisions, events_runtime=events, database=database, settings=settings
    )
    app.state.decision_worker = worker
    app.state.rollout_notify = worker.notify
    return worker


def _evolution_engine(
    app: FastAPI,
    database: Database,
    events: events_service.EventsRuntime,
    settings: Settings,
) -> tuple[EvolutionWorker, HealthWorker]:
    """Evolved designs for the hosted pages, the worker that steps campaigns, and the one
    that watches every hosted funnel's health."""
    runtime = EvolutionRuntime(database.session, app.state.decisions)
    app.state.designer = runtime
    events.pipeline.listeners.append(runtime.flows.observe)
    decisions_worker: DecisionWorker = app.state.decision_worker

    async def before_pass() -> None:
        # Count on everything served so far: journal the exposures, let the writer store them.
        await decisions_worker.journal_decisions()
        pipeline = events.pipeline
        await run_in_threadpool(pipeline.wait_until_stored, pipeline.journal.end, 5.0)

    post = functools.partial(
        post_webhook,
        keys_dir=keys_directory(settings),
        allow_private=settings.webhook_allow_private,
    )
    worker = EvolutionWorker(
        runtime=runtime,
        session=database.session,
        store=lambda: events.store,
        interval=settings.evolution_interval,
        post=post,
        before_pass=before_pass,
    )
    app.state.evolution_worker = worker

    def invalidate(workspace_id: str, funnel: str) -> None:
        # A rollback changed a flag and a campaign: serve the page as it was at once.
        runtime.invalidate(workspace_id, funnel)
        app.state.decisions.invalidate(workspace_id)

    health_worker = HealthWorker(
        session=database.session,
        store=lambda: events.store,
        interval=settings.health_interval,
        post=post,
        invalidate=invalidate,
        before_pass=before_pass,
    )
    app.state.health_worker = health_worker
    return worker, health_worker


def _privacy_engine(
    app: FastAPI,
    database: Database,
    events: events_service.EventsRuntime,
    settings: Settings,
) -> PrivacyRuntime:
    """Consent and PII screening on ingest, and data-subject requests across every store."""
    privacy = PrivacyRuntime(
        database,
        settings,
        text_properties_of=emotion_service.settings_reader(database.session),
    )
    app.state.privacy = privacy
    events.privacy = privacy
    privacy.stores.extend([EventSubjects(events), JournalSubjects(events)])
    loop = asyncio.get_running_loop()
    decisions: DecisionRuntime = app.state.decisions
    designer: EvolutionRuntime = app.state.designer

    def forget_decisions(workspace_id: str, ids: set[str]) -> int:
        # Decision state lives on the loop's thread; erasure runs on a worker thread.
        async def on_loop() -> int:
            return decisions.forget(workspace_id, ids) + designer.flows.forget(workspace_id, ids)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=30)

    events.bots = BotMarker()
    enrich_emotion = events.pipeline.enrich
    bots = events.bots

    def enrich(batches: list[WorkspaceBatch]) -> list[WorkspaceBatch]:
        # Bots first; either enricher failing leaves the events as they were for it.
        try:
            batches = bots.enrich(batches)
        except Exception:
            log.exception("bot scoring failed; storing the events unmarked")
        return enrich_emotion(batches) if enrich_emotion is not None else batches

    events.pipeline.enrich = enrich
    privacy.forgetters.extend([forget_decisions, events.live.forget, events.bots.forget])
    return privacy


async def _retention_schedule(privacy: PrivacyRuntime, settings: Settings) -> None:
    """Apply every workspace's retention period now and then (``retention_interval``)."""
    while True:
        await asyncio.sleep(settings.retention_interval)
        try:
            await run_in_threadpool(privacy.apply_retention)
        except Exception:
            log.exception("retention run failed; retrying at the next interval")


def _decision_runtime(
    database: Database, emotion: emotion_service.EmotionRuntime, settings: Settings
) -> DecisionRuntime:
    def load(workspace_id: str) -> Snapshot:
        with database.session() as session:
            return experiments_service.load_snapshot(session, workspace_id=workspace_id)

    def analyze(text: str, mode: Mode) -> EmotionVector:
        return emotion.analyzer.analyze([text], mode=mode).vectors[0]

    return DecisionRuntime(load=load, analyze=analyze, emotion_mode=settings.decide_emotion_mode)


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every API route with its full path template (``/v1/keys/{key_id}``)."""
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            out.append((context.path_format or route.path_format, route))
    return out


def assert_every_route_guarded(app: FastAPI) -> None:
    """Refuse to build an app with a route that is neither authorized nor marked public."""
    for path, route in api_routes(app):
        extra: dict[str, Any] = route.openapi_extra or {}
        if extra.get(PUBLIC_KEY) or _authorizes(route.dependant):
            continue
        raise UnguardedRouteError(
            f"{sorted(route.methods or ())} {path} has no Authorize dependency "
            "and is not marked PUBLIC"
        )


PUBLIC_KEY = next(iter(PUBLIC))


def _authorizes(dependant: Dependant) -> bool:
    return any(is_authorizing(d.call) or _authorizes(d) for d in dependant.dependencies)
