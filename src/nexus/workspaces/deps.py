"""Request dependencies every domain's views use: the database session and who is calling.

Every route either declares :func:`Authorize` (directly or through :data:`CurrentPrincipal`)
or is registered with ``openapi_extra=PUBLIC``; the app factory refuses to start otherwise, so a
new route cannot be forgotten open.

Credentials, in the order they are looked for:

* ``Authorization: Bearer <key>`` — a secret key (admin API) or public write key;
* ``Authorization: Basic <key>:`` — a write key as the username, as Segment's SDKs send it;
* the ``nexus_session`` cookie of a dashboard login; unsafe methods then also need the
  session's CSRF token in ``X-CSRF-Token``.

Whether the caller may do what the route does is decided by the Cedar policies of
``nexus.security.policy`` (one engine per process, memoised), never by a table here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexus.core.errors import NexusError, NotFound, PermissionDenied, Unauthenticated
from nexus.core.settings import Settings
from nexus.security.policy import Resource, default_engine
from nexus.storage.database import Database
from nexus.storage.pagination import CURSOR_PATTERN, MAX_PAGE_SIZE
from nexus.workspaces import service
from nexus.workspaces.models import DashboardSession, Permission, Principal, PrincipalKind

SESSION_COOKIE = "nexus_session"
CSRF_HEADER = "X-CSRF-Token"
WORKSPACE_HEADER = "Nexus-Workspace"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Marks a route as deliberately open to anonymous callers:
# ``@router.get(..., openapi_extra=PUBLIC)``.
PUBLIC: dict[str, Any] = {"x-nexus-public": True}
AUTH_MARKER = "__nexus_authorizes__"


class WorkspaceRequired(NexusError):
    status = 400
    code = "workspace-required"
    title = "No workspace selected"


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """One session per request, committed after the endpoint returns and before the response
    is sent (``scope="function"``), so a 2xx always means the change is stored."""
    with get_database(request).session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]


def _bearer_or_basic(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            username, _, _password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthenticated("The Basic credentials are not valid base64.") from None
        return username or None
    raise _unauthenticated("Use 'Authorization: Bearer <key>'.")


def _unauthenticated(detail: str) -> Unauthenticated:
    return Unauthenticated(detail, headers={"WWW-Authenticate": 'Bearer realm="nexus"'})


def session_from_cookie(request: Request, db: Session) -> DashboardSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    return service.resolve_session(db, token=token) if token else None


def check_csrf(dashboard_session: DashboardSession, presented: str | None) -> None:
    if not presented or not hmac.compare_digest(presented, dashboard_session.csrf_token):
        raise PermissionDenied(
            f"Missing or wrong CSRF token: send the session's token in {CSRF_HEADER}."
        )


def identify(request: Request, db: Session, workspace_id: str | None) -> Principal:
    """Who sent ``request``: a key's principal, or a dashboard user's in their workspace."""
    token = _bearer_or_basic(request)
    if token is not None:
        principal = service.principal_for_key(db, token=token)
        if principal is None:
            raise _unauthenticated("Unknown or revoked API key.")
        if workspace_id is not None and workspace_id != principal.workspace_id:
            raise NotFound(f"No workspace {workspace_id}.")
        return principal
    dashboard_session = session_from_cookie(request, db)
    if dashboard_session is None:
        raise _unauthenticated("Authentication required: send an API key or log in.")
    if request.method not in SAFE_METHODS:
        check_csrf(dashboard_session, request.headers.get(CSRF_HEADER))
    chosen = (
        workspace_id
        or request.headers.get(WORKSPACE_HEADER)
        or dashboard_session.current_workspace_id
    )
    return service.principal_for_user(
        db, user_id=dashboard_session.user_id, workspace_id=chosen, session_id=dashboard_session.id
    )


def enforce(
    principal: Principal,
    action: Permission | str,
    *,
    resource: str = "Workspace",
    workspace_id: str | None = None,
) -> None:
    """Ask the policies whether ``principal`` may do ``action`` on a ``resource`` of
    ``workspace_id`` (default: its own workspace): 404 for another workspace's, 403 if refused.
    """
    if principal.workspace_id is None:
        raise WorkspaceRequired(
            f"Choose a workspace: send its id in the {WORKSPACE_HEADER} header."
        )
    target = workspace_id or principal.workspace_id
    name = action.value if isinstance(action, Permission) else action
    decision = default_engine().decide(principal.as_actor(), name, Resource(resource, target))
    if decision.allowed:
        return
    if decision.cross_workspace:
        raise NotFound(f"No workspace {target}.")
    raise PermissionDenied(f"This needs the '{name}' permission, which the caller lacks here.")


def Authorize(  # noqa: N802 - reads as a type annotation: Annotated[Principal, Authorize(...)]
    permission: Permission | str | None = None,
    *,
    workspace_param: str | None = None,
    resource: str = "Workspace",
) -> Any:
    """Dependency: the caller's :class:`Principal`, allowed ``permission`` by the policies.

    ``permission`` is a coarse permission or any action the policy schema declares (e.g.
    ``"read_audit"``), asked about a ``resource`` kind (default ``Workspace``). The workspace
    is the one named by the path parameter ``workspace_param`` if given, else the key's own,
    else the one chosen by a dashboard user (``Nexus-Workspace`` header or the session's
    current workspace). A workspace the caller cannot see is 404, a permission the caller lacks
    there is 403. With ``permission=None`` any authenticated caller passes, with or without a
    workspace.
    """

    def authorize(request: Request, db: DbSession) -> Principal:
        workspace_id = request.path_params.get(workspace_param) if workspace_param else None
        principal = identify(request, db, workspace_id)
        # Identifying may write (a key's last use, a session's expiry): commit it now, so the
        # request does not hold the database's write lock while the endpoint runs (SQLite
        # has one; work an endpoint hands to other sessions would wait on it).
        db.commit()
        if permission is None:
            return principal
        enforce(principal, permission, resource=resource, workspace_id=workspace_id)
        return principal

    setattr(authorize, AUTH_MARKER, True)
    return Depends(authorize)


CurrentPrincipal = Annotated[Principal, Authorize()]
KEY_CACHE_SECONDS = 10.0


async def cached_key_principal(request: Request, token: str) -> Principal | None:
    """The principal of a key, looked up at most every :data:`KEY_CACHE_SECONDS` per process.

    For the hot paths (ingest, decide): a revoked key stops working within that time.
    """
    cache: dict[str, tuple[float, Principal | None]] = request.app.state.ingest_keys
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and hit[0] > now:
        return hit[1]

    def lookup() -> Principal | None:
        with get_database(request).session() as db:
            return service.principal_for_key(db, token=token)

    principal = await run_in_threadpool(lookup)
    if len(cache) > 10_000:
        cache.clear()
    cache[token] = (now + KEY_CACHE_SECONDS, principal)
    return principal


def FastAuthorize(  # noqa: N802 - reads as a type annotation
    permission: Permission | str, *, resource: str = "Workspace"
) -> Any:
    """:func:`Authorize` for hot paths: keys come from a short-lived in-process cache, no
    database session is held for the request (dashboard sessions still work), and the policy
    decision is memoised by the engine (a dict lookup once warm)."""

    async def authorize(request: Request) -> Principal:
        token = _bearer_or_basic(request)
        if token is None:

            def by_session() -> Principal:
                with get_database(request).session() as db:
                    return identify(request, db, None)

            principal = await run_in_threadpool(by_session)
        else:
            found = await cached_key_principal(request, token)
            if found is None:
                raise _unauthenticated("Unknown or revoked API key.")
            principal = found
        enforce(principal, permission, resource=resource)
        return principal

    setattr(authorize, AUTH_MARKER, True)
    return Depends(authorize)


def require_user(principal: Principal) -> str:
    """The user id behind ``principal``; keys may not do what only a person may (the policies'
    ``act_in_person``)."""
    if principal.workspace_id is None:
        person = principal.kind is PrincipalKind.USER  # only users are ever without a workspace
    else:
        person = (
            default_engine()
            .decide(
                principal.as_actor(), "act_in_person", Resource("Workspace", principal.workspace_id)
            )
            .allowed
        )
    if not person or principal.user_id is None:
        raise PermissionDenied("Only a signed-in user can do this, not an API key.")
    return principal.user_id


def is_authorizing(call: Callable[..., Any] | None) -> bool:
    return call is not None and getattr(call, AUTH_MARKER, False)


class PageParams:
    """``?cursor=&limit=`` of every list endpoint."""

    def __init__(
        self,
        cursor: Annotated[
            str | None,
            Query(max_length=512, pattern=CURSOR_PATTERN, description="next_cursor of a page."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    ) -> None:
        self.cursor = cursor
        self.limit = limit


PageQuery = Annotated[PageParams, Depends()]
