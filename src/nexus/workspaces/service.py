"""Workspaces, users, memberships, API keys and dashboard sessions.

Every function that touches a workspace's objects takes the ``workspace_id`` it acts in and
filters by it, so an object of another workspace is simply not found (404), never leaked.
Functions flush but do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, FieldError, InvalidInput, NotFound, PermissionDenied
from nexus.core.ids import new_id
from nexus.security.policy import (
    OWNER_ROLE_RULE,
    SCOPE_RULE,
    Actor,
    Decision,
    Resource,
    default_engine,
)
from nexus.security.service import append_entry
from nexus.storage.pagination import Page, paginate
from nexus.workspaces.models import (
    PUBLIC_KEY_PERMISSIONS,
    SECRET_KEY_SCOPES,
    ApiKey,
    DashboardSession,
    KeyKind,
    MemberRead,
    Membership,
    Permission,
    Principal,
    PrincipalKind,
    Role,
    User,
    Workspace,
)

PUBLIC_KEY_PREFIX = "nx_pub_"
SECRET_KEY_PREFIX = "nx_sec_"  # noqa: S105 - a label, not a secret
SESSION_TOKEN_PREFIX = "nx_ses_"  # noqa: S105 - a label, not a secret
# last_used_at is advisory; writing it on every request would put a write on the hot path.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a failed login costs the same either way
# and response times do not reveal which e-mails have accounts.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def token_hash(token: str) -> str:
    """SHA-256 of a key or session token.

    Tokens carry 192 to 256 random bits, so a fast hash is enough (no dictionary to attack) and
    keeps per-request key lookup cheap; passwords use argon2 instead.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def actor_name(principal: Principal | None) -> str:
    """Who to name in the audit log: the user, else the key; ``"system"`` for the CLI."""
    if principal is None:
        return "system"
    return principal.user_id or principal.key_id or principal.kind.value


# --- passwords and users ----------------------------------------------------------------------


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def create_user(session: Session, *, email: str, password: str, name: str = "") -> User:
    email = email.strip().lower()
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(
            f"A user with e-mail {email} already exists.",
            errors=[FieldError(("body", "email"), "already registered")],
        )
    user = User(id=new_id("usr"), email=email, name=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, user_id: str, password: str) -> User:
    """A new password; every open dashboard session of the user ends with the old one."""
    user = get_user(session, user_id=user_id)
    user.password_hash = hash_password(password)
    session.execute(delete(DashboardSession).where(DashboardSession.user_id == user_id))
    session.flush()
    return user


def get_user(session: Session, *, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user {user_id}.")
    return user


def get_user_by_email(session: Session, *, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def authenticate(session: Session, *, email: str, password: str) -> User | None:
    """The active user with these credentials, or None (in constant work either way)."""
    user = get_user_by_email(session, email=email)
    if user is None or not user.is_active:
        verify_password(_DUMMY_HASH, password)
        _audit_login_failure(session, email=email)
        return None
    if not verify_password(user.password_hash, password):
        _audit_login_failure(session, email=email)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    session.flush()
    append_entry(session, workspace_id=None, actor=user.id, action="auth.login", target=user.id)
    return user


def _audit_login_failure(session: Session, *, email: str) -> None:
    # The e-mail tried, never the password: sign-ins go to the global chain.
    append_entry(
        session,
        workspace_id=None,
        actor="anonymous",
        action="auth.login_failed",
        details={"email": email.strip().lower()[:320]},
    )


# --- workspaces -----------------------------------------------------------------------------


def create_workspace(
    session: Session, *, name: str, owner_id: str | None = None, actor: str | None = None
) -> Workspace:
    """A new workspace with its public write key, owned by ``owner_id`` if given.

    ``actor`` defaults to the owner (or ``"system"`` without one)."""
    workspace = Workspace(id=new_id("ws"), name=name)
    session.add(workspace)
    session.flush()
    append_entry(
        session,
        workspace_id=workspace.id,
        actor=actor or owner_id or "system",
        action="workspace.created",
        target=workspace.id,
        details={"name": name, "owner_id": owner_id},
    )
    if owner_id is not None:
        get_user(session, user_id=owner_id)
        session.add(Membership(workspace_id=workspace.id, user_id=owner_id, role=Role.OWNER))
    create_api_key(
        session,
        workspace_id=workspace.id,
        name="Default write key",
        kind=KeyKind.PUBLIC,
        audit_actor=actor or owner_id,
    )
    session.flush()
    return workspace


def get_workspace(session: Session, *, workspace_id: str) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"No workspace {workspace_id}.")
    return workspace


def list_workspaces(
    session: Session,
    *,
    user_id: str | None = None,
    workspace_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Workspace]:
    """Workspaces visible to a user (their memberships) or a key (its own workspace).

    With neither filter (operators on the CLI) every workspace is listed.
    """
    stmt = select(Workspace)
    if user_id is not None:
        stmt = stmt.join(Membership, Membership.workspace_id == Workspace.id).where(
            Membership.user_id == user_id
        )
    if workspace_id is not None:
        stmt = stmt.where(Workspace.id == workspace_id)
    return paginate(session, stmt, key=Workspace.id, cursor=cursor, limit=limit)


def rename_workspace(
    session: Session, *, workspace_id: str, name: str, actor: str = "system"
) -> Workspace:
    workspace = get_workspace(session, workspace_id=workspace_id)
    old = workspace.name
    workspace.name = name
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="workspace.updated",
        target=workspace_id,
        details={"changed": ["name"], "name": name, "previous_name": old},
    )
    return workspace


def roles_of(session: Session, *, user_id: str) -> dict[str, Role]:
    """Every workspace a user belongs to, with the role held there."""
    rows = session.execute(
        select(Membership.workspace_id, Membership.role).where(Membership.user_id == user_id)
    )
    return {workspace_id: Role(role) for workspace_id, role in rows}


# --- members --------------------------------------------------------------------------------


def _membership(session: Session, *, workspace_id: str, user_id: str) -> Membership:
    membership = session.get(Membership, (workspace_id, user_id))
    if membership is None:
        raise NotFound(f"No member {user_id} in this workspace.")
    return membership


def _member_read(membership: Membership, user: User) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(membership.role),
        created_at=membership.created_at,
    )


def get_member(session: Session, *, workspace_id: str, user_id: str) -> MemberRead:
    membership = _membership(session, workspace_id=workspace_id, user_id=user_id)
    return _member_read(membership, get_user(session, user_id=user_id))


def list_members(
    session: Session, *, workspace_id: str, cursor: str | None = None, limit: int = 50
) -> Page[MemberRead]:
    page = paginate(
        session,
        select(Membership).where(Membership.workspace_id == workspace_id),
        key=Membership.user_id,
        cursor=cursor,
        limit=limit,
    )
    users = {
        u.id: u
        for u in session.scalars(select(User).where(User.id.in_([m.user_id for m in page.items])))
    }
    return Page([_member_read(m, users[m.user_id]) for m in page.items], page.next_cursor)


def _check_role_change(
    actor: Principal | None,
    *,
    workspace_id: str,
    action: str,
    old: Role | None,
    new: Role | None,
) -> None:
    """Ask the policies whether ``actor`` may do ``action`` (``add_member``, ``change_role``,
    ``remove_member``) to a member holding ``old`` (None: not yet a member), giving them ``new``
    (None: removed). Only owners touch the owner role (a property-level rule of
    ``properties.cedar``). ``actor=None`` is the operator on the CLI."""
    if actor is None:
        return
    decision = default_engine().decide(
        actor.as_actor(),
        action,
        Resource.of("Member", workspace_id, role=None if old is None else Role(old).value),
        {"role": None if new is None else Role(new).value},
    )
    if decision.allowed:
        return
    _refuse(decision, workspace_id=workspace_id)
    if OWNER_ROLE_RULE in decision.reasons:
        raise PermissionDenied("Only an owner can grant or take away the owner role.")
    raise PermissionDenied("Managing members needs the 'admin' permission, which the caller lacks.")


def _refuse(decision: Decision, *, workspace_id: str) -> None:
    """Another workspace's objects are not found, never forbidden."""
    if decision.cross_workspace:
        raise NotFound(f"No workspace {workspace_id}.")


def _owner_count(session: Session, *, workspace_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.workspace_id == workspace_id, Membership.role == Role.OWNER)
        )
        or 0
    )


def add_member(
    session: Session, *, workspace_id: str, email: str, role: Role, actor: Principal | None
) -> MemberRead:
    _check_role_change(actor, workspace_id=workspace_id, action="add_member", old=None, new=role)
    user = get_user_by_email(session, email=email)
    if user is None:
        raise NotFound(
            f"No user with e-mail {email}; create the account first (nexus user create).",
            errors=[FieldError(("body", "email"), "no such user")],
        )
    if session.get(Membership, (workspace_id, user.id)) is not None:
        raise Conflict(f"{user.email} is already a member of this workspace.")
    membership = Membership(workspace_id=workspace_id, user_id=user.id, role=role)
    session.add(membership)
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor_name(actor),
        action="member.added",
        target=user.id,
        details={"role": Role(role).value},
    )
    return _member_read(membership, user)


def set_member_role(
    session: Session, *, workspace_id: str, user_id: str, role: Role, actor: Principal
) -> MemberRead:
    membership = _membership(session, workspace_id=workspace_id, user_id=user_id)
    old = Role(membership.role)
    _check_role_change(actor, workspace_id=workspace_id, action="change_role", old=old, new=role)
    if old is Role.OWNER and role is not Role.OWNER:
        _keep_an_owner(session, workspace_id=workspace_id)
    membership.role = role
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor_name(actor),
        action="member.role_changed",
        target=user_id,
        details={"role": Role(role).value, "previous_role": old.value},
    )
    return _member_read(membership, get_user(session, user_id=user_id))


def remove_member(session: Session, *, workspace_id: str, user_id: str, actor: Principal) -> None:
    membership = _membership(session, workspace_id=workspace_id, user_id=user_id)
    old = Role(membership.role)
    _check_role_change(actor, workspace_id=workspace_id, action="remove_member", old=old, new=None)
    if old is Role.OWNER:
        _keep_an_owner(session, workspace_id=workspace_id)
    session.delete(membership)
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor_name(actor),
        action="member.removed",
        target=user_id,
        details={"previous_role": old.value},
    )


def _keep_an_owner(session: Session, *, workspace_id: str) -> None:
    if _owner_count(session, workspace_id=workspace_id) <= 1:
        raise Conflict("A workspace must keep at least one owner; make someone else owner first.")


# --- API keys -------------------------------------------------------------------------------


def create_api_key(
    session: Session,
    *,
    workspace_id: str,
    name: str,
    kind: KeyKind,
    scopes: list[Permission] | None = None,
    created_by: str | None = None,
    actor: Principal | None = None,
    audit_actor: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its token. The token of a secret key is never retrievable again.

    ``actor`` (when a request creates the key) must be allowed ``create_key`` by the policies,
    which also bound the scopes: nobody hands out more than they hold, public keys' ingest and
    decide included. The audit log names ``audit_actor``, else ``actor``, else ``created_by``.
    """
    held = SECRET_KEY_SCOPES if actor is None else actor.permissions & SECRET_KEY_SCOPES
    if kind is KeyKind.PUBLIC:
        if scopes is not None and set(scopes) != PUBLIC_KEY_PERMISSIONS:
            raise InvalidInput(
                "Public write keys always have exactly the ingest and decide scopes.",
                errors=[FieldError(("body", "scopes"), "not allowed for public keys")],
            )
        granted = sorted(PUBLIC_KEY_PERMISSIONS)
        token = PUBLIC_KEY_PREFIX + secrets.token_urlsafe(24)
    else:
        wanted = set(held if scopes is None else scopes)
        if not wanted:
            raise InvalidInput(
                "A secret key needs at least one scope.",
                errors=[FieldError(("body", "scopes"), "empty")],
            )
        if extra := wanted - SECRET_KEY_SCOPES:  # owner: never delegated to a key
            raise PermissionDenied(
                "Cannot grant scopes the caller does not hold: "
                + ", ".join(sorted(p.value for p in extra))
            )
        granted = sorted(wanted)
        token = SECRET_KEY_PREFIX + secrets.token_urlsafe(32)
    if actor is not None:
        decision = default_engine().may_create_key(
            actor.as_actor(), workspace=workspace_id, scopes=[p.value for p in granted]
        )
        if not decision.allowed:
            _refuse(decision, workspace_id=workspace_id)
            if SCOPE_RULE in decision.reasons:
                raise PermissionDenied(
                    "Cannot grant scopes the caller does not hold: "
                    + ", ".join(sorted(p.value for p in set(granted) - held))
                )
            raise PermissionDenied(
                "Creating keys needs the 'admin' permission, which the caller lacks."
            )
    key = ApiKey(
        id=new_id("key"),
        workspace_id=workspace_id,
        kind=kind,
        name=name,
        prefix=token[: len(PUBLIC_KEY_PREFIX) + 4],
        token_hash=token_hash(token),
        public_token=token if kind is KeyKind.PUBLIC else None,
        scopes=[p.value for p in granted],
        created_by=created_by,
    )
    session.add(key)
    try:
        session.flush()
    except IntegrityError as exc:  # pragma: no cover - a 192-bit collision
        raise Conflict("Key collision; try again.") from exc
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=audit_actor or (actor_name(actor) if actor is not None else created_by or "system"),
        action="key.created",
        target=key.id,
        # The key's id, name, kind and scopes; never its token (nor its prefix).
        details={"name": name, "kind": KeyKind(kind).value, "scopes": key.scopes},
    )
    return key, token


def get_api_key(session: Session, *, workspace_id: str, key_id: str) -> ApiKey:
    key = session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.workspace_id == workspace_id)
    )
    if key is None:
        raise NotFound(f"No key {key_id} in this workspace.")
    return key


def list_api_keys(
    session: Session,
    *,
    workspace_id: str,
    include_revoked: bool = False,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.workspace_id == workspace_id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return paginate(session, stmt, key=ApiKey.id, cursor=cursor, limit=limit)


def revoke_api_key(
    session: Session, *, workspace_id: str, key_id: str, actor: str = "system"
) -> ApiKey:
    key = get_api_key(session, workspace_id=workspace_id, key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
        append_entry(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="key.revoked",
            target=key.id,
            details={"name": key.name, "kind": KeyKind(key.kind).value},
        )
    return key


def public_write_key(session: Session, *, workspace_id: str) -> str | None:
    """The newest active public write key of a workspace, to embed in its pages."""
    return session.scalar(
        select(ApiKey.public_token)
        .where(
            ApiKey.workspace_id == workspace_id,
            ApiKey.kind == KeyKind.PUBLIC,
            ApiKey.revoked_at.is_(None),
        )
        .order_by(ApiKey.id.desc())
        .limit(1)
    )


def principal_for_key(session: Session, *, token: str) -> Principal | None:
    """The principal a key token stands for, or None if unknown or revoked."""
    if not token.startswith((PUBLIC_KEY_PREFIX, SECRET_KEY_PREFIX)):
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == token_hash(token)))
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.flush()
    kind = PrincipalKind.PUBLIC_KEY if key.kind == KeyKind.PUBLIC else PrincipalKind.SECRET_KEY
    scopes = frozenset() if kind is PrincipalKind.PUBLIC_KEY else frozenset(key.scopes)
    return Principal(
        kind=kind,
        workspace_id=key.workspace_id,
        permissions=_granted(Actor(kind.value, key.workspace_id, scopes=scopes)),
        key_id=key.id,
        scopes=scopes,
    )


def _granted(actor: Actor) -> frozenset[Permission]:
    """The permissions the policies grant ``actor`` in its own workspace."""
    return frozenset(map(Permission, default_engine().permissions(actor)))


def principal_for_user(
    session: Session, *, user_id: str, workspace_id: str | None, session_id: str | None = None
) -> Principal:
    """A user's principal in ``workspace_id``; 404 if they are not a member there."""
    if workspace_id is None:
        return Principal(
            kind=PrincipalKind.USER,
            workspace_id=None,
            permissions=frozenset(),
            user_id=user_id,
            session_id=session_id,
        )
    membership = session.get(Membership, (workspace_id, user_id))
    if membership is None:
        raise NotFound(f"No workspace {workspace_id}.")
    role = Role(membership.role)
    return Principal(
        kind=PrincipalKind.USER,
        workspace_id=workspace_id,
        permissions=_granted(Actor(PrincipalKind.USER.value, workspace_id, role=role.value)),
        user_id=user_id,
        role=role,
        session_id=session_id,
    )


# --- dashboard sessions ---------------------------------------------------------------------


def create_session(
    session: Session, *, user_id: str, ttl: timedelta
) -> tuple[DashboardSession, str]:
    """A new dashboard session and its cookie token (stored only as a hash)."""
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    roles = roles_of(session, user_id=user_id)
    dashboard_session = DashboardSession(
        id=new_id("ses"),
        token_hash=token_hash(token),
        user_id=user_id,
        csrf_token=secrets.token_urlsafe(32),
        current_workspace_id=min(roles) if roles else None,
        expires_at=utcnow() + ttl,
    )
    session.add(dashboard_session)
    session.flush()
    return dashboard_session, token


def resolve_session(session: Session, *, token: str) -> DashboardSession | None:
    """The live session for a cookie token; expired sessions are deleted on sight."""
    if not token.startswith(SESSION_TOKEN_PREFIX):
        return None
    found = session.scalar(
        select(DashboardSession).where(DashboardSession.token_hash == token_hash(token))
    )
    if found is None:
        return None
    if found.expires_at <= utcnow():
        session.delete(found)
        session.flush()
        return None
    user = session.get(User, found.user_id)
    if user is None or not user.is_active:
        return None
    return found


def switch_workspace(
    session: Session, *, dashboard_session: DashboardSession, workspace_id: str
) -> None:
    principal_for_user(session, user_id=dashboard_session.user_id, workspace_id=workspace_id)
    dashboard_session.current_workspace_id = workspace_id
    session.flush()


def end_session(session: Session, *, session_id: str) -> None:
    """Sign out: the session ends, and the global audit chain says so."""
    found = session.get(DashboardSession, session_id)
    if found is not None:
        user_id = found.user_id
        session.delete(found)
        session.flush()
        append_entry(
            session,
            workspace_id=None,
            actor=user_id,
            action="auth.logout",
            target=user_id,
            details={"session_id": session_id},
        )
