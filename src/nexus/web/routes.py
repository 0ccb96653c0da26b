"""Dashboard login, sign-out and the dashboard frame that later domains fill.

Plain HTML forms, no JavaScript required, no CDN. Every form carries a CSRF token: the
sign-in form a signed double-submit token (there is no session yet), every other form the
session's own token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.responses import Response

from nexus import __version__
from nexus.core.errors import NexusError, PermissionDenied, RateLimited
from nexus.core.logging import get_logger
from nexus.core.ratelimit import RateLimit
from nexus.core.settings import Settings
from nexus.events import service as events_service
from nexus.events.live import summarize_row
from nexus.security.audit import MAX_TARGET
from nexus.security.login_guard import GuardEvent, GuardPolicy, LoginGuard, Reason
from nexus.security.service import append_entry
from nexus.web import sdk
from nexus.workspaces import service
from nexus.workspaces.deps import (
    AUTH_MARKER,
    PUBLIC,
    SESSION_COOKIE,
    DbSession,
    check_csrf,
    get_settings,
    session_from_cookie,
)
from nexus.workspaces.models import DashboardSession, Permission, Principal, Role, User, Workspace

HERE = Path(__file__).parent
LOGIN_CSRF_COOKIE = "nexus_login_csrf"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
log = get_logger("nexus.web")


class LoginRequired(Exception):
    """No valid dashboard session: the browser is sent to the sign-in page."""


@dataclass
class Dashboard:
    """What every dashboard page knows about the signed-in user."""

    session: DashboardSession
    user: User
    workspaces: list[tuple[Workspace, Role]]
    current: Workspace | None
    principal: Principal
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    def can(self, permission: str) -> bool:
        return self.principal.can(Permission(permission))


def current_dashboard(request: Request, db: DbSession) -> Dashboard:
    dashboard_session = session_from_cookie(request, db)
    if dashboard_session is None:
        raise LoginRequired
    user = service.get_user(db, user_id=dashboard_session.user_id)
    roles = service.roles_of(db, user_id=user.id)
    workspaces = [
        (service.get_workspace(db, workspace_id=ws_id), role)
        for ws_id, role in sorted(roles.items())
    ]
    current_id = dashboard_session.current_workspace_id
    if current_id not in roles:
        current_id = workspaces[0][0].id if workspaces else None
    principal = service.principal_for_user(
        db, user_id=user.id, workspace_id=current_id, session_id=dashboard_session.id
    )
    current = next((w for w, _ in workspaces if w.id == current_id), None)
    return Dashboard(dashboard_session, user, workspaces, current, principal)


setattr(current_dashboard, AUTH_MARKER, True)
CurrentDashboard = Annotated[Dashboard, Depends(current_dashboard)]
WebSettings = Annotated[Settings, Depends(get_settings)]


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("version", __version__)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# --- sign in / sign out ---------------------------------------------------------------------


def _login_token(settings: Settings, nonce: str) -> str:
    return hmac.new(
        settings.signing_key, b"login-csrf:" + nonce.encode(), hashlib.sha256
    ).hexdigest()


def _safe_next(target: str | None) -> str:
    """Only same-site paths: ``/x`` yes, ``//evil.example`` or ``https://…`` no."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _login_page(
    request: Request,
    settings: Settings,
    *,
    error: str | None = None,
    status_code: int = 200,
    email: str = "",
    next_path: str = "/",
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = _render(
        request,
        "login.html",
        status_code=status_code,
        csrf_token=_login_token(settings, nonce),
        error=error,
        email=email,
        next_path=_safe_next(next_path),
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        nonce,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
        max_age=3600,
        path="/login",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@router.get("/login", openapi_extra=PUBLIC)
def login_form(request: Request, settings: WebSettings, next: str = "/") -> HTMLResponse:  # noqa: A002
    return _login_page(request, settings, next_path=next)


@router.post("/login", openapi_extra=PUBLIC)
def login(
    request: Request,
    db: DbSession,
    settings: WebSettings,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",  # noqa: A002
) -> Response:
    nonce = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf_token, _login_token(settings, nonce)):
        return _login_page(
            request,
            settings,
            status_code=403,
            email=email,
            next_path=next,
            error="The sign-in form expired. Please try again.",
        )
    client = request.client.host if request.client else "unknown"
    account = email.strip().lower()
    guard: LoginGuard = request.app.state.login_guard
    now = time.monotonic()
    retry_after = _sign_in_wait(request, guard, account=account, client=client, now=now)
    if retry_after:
        # One answer whatever the reason, and the same for accounts that do not exist.
        return _login_page(
            request,
            settings,
            status_code=429,
            email=email,
            next_path=next,
            error=f"Too many sign-in attempts. Please try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
    user = service.authenticate(db, email=account, password=password)
    if user is None:
        log.info("sign-in failed", client=client)
        for event in guard.record_failure(account=account, address=client, now=now):
            _audit_guard_event(db, event, client=client)
        return _login_page(
            request,
            settings,
            status_code=401,
            email=email,
            next_path=next,
            error="Wrong e-mail or password.",
        )
    guard.record_success(account=account, address=client, now=now)
    per_account: RateLimit = request.app.state.login_limit
    per_account.reset("login", client, account)
    ttl = timedelta(hours=settings.session_ttl_hours)
    _dashboard_session, token = service.create_session(db, user_id=user.id, ttl=ttl)
    log.info("signed in", user_id=user.id)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
        max_age=int(ttl.total_seconds()),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def sign_in_guard(settings: Settings) -> LoginGuard:
    """The sign-in lockout and credential-stuffing guard, as the settings configure it."""
    return LoginGuard(
        GuardPolicy(
            lockout_threshold=settings.login_lockout_threshold,
            lockout_base_seconds=settings.login_lockout_seconds,
            lockout_max_seconds=settings.login_lockout_max_seconds,
            stuffing_window_seconds=settings.login_stuffing_window_seconds,
            stuffing_accounts_per_address=settings.login_stuffing_accounts,
            stuffing_accounts_per_network=settings.login_stuffing_network_accounts,
            stuffing_block_seconds=settings.login_stuffing_block_seconds,
            spike_min_accounts=settings.login_spike_accounts,
            spike_failure_ratio=settings.login_spike_failure_ratio,
        )
    )


def _sign_in_wait(
    request: Request, guard: LoginGuard, *, account: str, client: str, now: float
) -> int:
    """Seconds this attempt must wait (0: go ahead): the guard's lockouts and blocks first,
    then the per-address and per-account rates."""
    decision = guard.check(account=account, address=client, now=now)
    if not decision.allowed:
        log.warning("sign-in refused", client=client, reason=str(decision.reason))
        return decision.retry_after
    per_account: RateLimit = request.app.state.login_limit
    per_address: RateLimit = request.app.state.login_ip_limit
    try:
        per_address.hit("login-ip", client)
        per_account.hit("login", client, account)
    except RateLimited as exc:
        log.warning("sign-in rate limited", client=client)
        return int(exc.headers.get("Retry-After", "1"))
    return 0


def _audit_guard_event(db: Session, event: GuardEvent, *, client: str) -> None:
    """A lockout or block the guard started goes to the global audit chain, as sign-ins do."""
    if event.reason is Reason.ACCOUNT_LOCKED:
        log.warning("sign-in account locked", client=client, seconds=event.retry_after)
        append_entry(
            db,
            workspace_id=None,
            actor="system",
            action="auth.lockout",
            target=event.subject[:MAX_TARGET],
            details={
                "email": event.subject[:320],
                "failures": event.count,
                "locked_seconds": event.retry_after,
                "client": client,
            },
        )
        return
    log.warning("sign-in source blocked", source=event.subject, reason=str(event.reason))
    append_entry(
        db,
        workspace_id=None,
        actor="system",
        action="auth.stuffing_blocked",
        target=event.subject[:MAX_TARGET],
        details={
            "reason": str(event.reason),
            "accounts": event.count,
            "blocked_seconds": event.retry_after,
            "client": client,
        },
    )


def _error_page(request: Request, exc: NexusError) -> HTMLResponse:
    """Forms posted from the dashboard answer a page, not a JSON problem document."""
    return _render(request, "error.html", status_code=exc.status, error=exc)


@router.post("/logout")
def logout(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    try:
        check_csrf(dashboard.session, csrf_token)
    except NexusError as exc:
        return _error_page(request, exc)
    service.end_session(db, session_id=dashboard.session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- dashboard ------------------------------------------------------------------------------


@router.get("/members")
def members_page(request: Request, dashboard: CurrentDashboard, db: DbSession) -> HTMLResponse:
    members = (
        service.list_members(db, workspace_id=dashboard.current.id, limit=200).items
        if dashboard.current
        else []
    )
    return _render(request, "members.html", d=dashboard, page="members", members=members)


@router.get("/keys")
def keys_page(request: Request, dashboard: CurrentDashboard, db: DbSession) -> HTMLResponse:
    keys = (
        service.list_api_keys(db, workspace_id=dashboard.current.id, limit=200).items
        if dashboard.current
        else []
    )
    return _render(request, "keys.html", d=dashboard, page="keys", keys=keys)


@router.get("/events")
def events_page(request: Request, dashboard: CurrentDashboard) -> HTMLResponse:
    """Recent events, kept current by the live stream (static/live.js)."""
    recent = []
    if dashboard.current:
        store = request.app.state.events.store
        rows, _ = events_service.recent_events(
            store, workspace_id=dashboard.current.id, limit=50, cursor=None
        )
        recent = [summarize_row(r) for r in rows]
    return _render(request, "events.html", d=dashboard, page="events", recent=recent)


@router.post("/workspaces/switch")
def switch_workspace(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    workspace_id: Annotated[str, Form(max_length=64)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    try:
        check_csrf(dashboard.session, csrf_token)
        service.switch_workspace(db, dashboard_session=dashboard.session, workspace_id=workspace_id)
    except NexusError as exc:
        return _error_page(request, exc)
    return RedirectResponse("/", status_code=303)


@router.post("/workspaces/new")
def new_workspace(
    request: Request,
    dashboard: CurrentDashboard,
    db: DbSession,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    try:
        check_csrf(dashboard.session, csrf_token)
        if not dashboard.can("admin"):
            raise PermissionDenied("Only an admin of the current workspace can create one.")
    except NexusError as exc:
        return _error_page(request, exc)
    workspace = service.create_workspace(
        db, name=name.strip() or "Workspace", owner_id=dashboard.user.id
    )
    service.switch_workspace(db, dashboard_session=dashboard.session, workspace_id=workspace.id)
    return RedirectResponse("/", status_code=303)


def install(app: FastAPI) -> None:
    """Mount the dashboard routes and static files on ``app``."""

    async def to_login(request: Request, exc: Exception) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        if request.method != "GET":
            target = "/"
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
    # Imported here: the pages' module builds on this one's frame (CurrentDashboard, _render).
    from nexus.web import dashboard, dashboard_ops, editor, evolution_page  # noqa: PLC0415

    app.include_router(dashboard.router)
    app.include_router(dashboard_ops.router)
    app.include_router(editor.router)
    app.include_router(evolution_page.router)
    app.include_router(router)
    app.include_router(sdk.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
