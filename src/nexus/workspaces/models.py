"""Tables and API schemas of the workspaces domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.errors import PermissionDenied
from nexus.security.policy import Actor
from nexus.storage.base import Base, CreatedAt


class Role(StrEnum):
    """A user's role in one workspace, from most to least powerful."""

    OWNER = "owner"
    ADMIN = "admin"
    ANALYST = "analyst"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"  # see anything in the workspace
    WRITE = "write"  # create and change funnels, experiments, pages …
    ADMIN = "admin"  # members, keys, workspace settings
    OWNER = "owner"  # grant or take the owner role
    INGEST = "ingest"  # send events
    DECIDE = "decide"  # ask for flags, variants and adaptations


# What each role, and each kind of key, holds: a summary of the Cedar policies in
# ``nexus/security/policies`` (the rules themselves; see ``nexus.security.policy``), kept for
# readers and for the documentation. Principals get their permissions from the policy engine,
# and tests/security/test_policy.py proves this table and the policies agree.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.ANALYST: frozenset(
        {Permission.READ, Permission.WRITE, Permission.INGEST, Permission.DECIDE}
    ),
    Role.ADMIN: frozenset(
        {Permission.READ, Permission.WRITE, Permission.ADMIN, Permission.INGEST, Permission.DECIDE}
    ),
    Role.OWNER: frozenset(Permission),
}


class KeyKind(StrEnum):
    PUBLIC = "public"  # write key: safe in a browser; may only ingest and decide
    SECRET = "secret"  # noqa: S105 - a label, not a secret  # admin API key: scoped, revocable, shown once, stored hashed


PUBLIC_KEY_PERMISSIONS = frozenset({Permission.INGEST, Permission.DECIDE})
SECRET_KEY_SCOPES = frozenset(Permission) - {Permission.OWNER}


class PrincipalKind(StrEnum):
    USER = "user"
    SECRET_KEY = "secret_key"  # noqa: S105 - a label, not a secret
    PUBLIC_KEY = "public_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may do in the workspace the request is about.

    ``workspace_id`` is None only for a user who has not chosen a workspace; keys always
    belong to exactly one.
    """

    kind: PrincipalKind
    workspace_id: str | None
    permissions: frozenset[Permission]
    user_id: str | None = None
    key_id: str | None = None
    role: Role | None = None
    session_id: str | None = None
    scopes: frozenset[str] = frozenset()  # a secret key's scopes, as stored

    def can(self, permission: Permission) -> bool:
        """A convenience: ``permissions`` are what the policy engine granted this principal in
        its workspace (``service.principal_for_*``), so this agrees with the policies."""
        return permission in self.permissions

    def as_actor(self) -> Actor:
        """This principal as the policy engine sees it; it needs a workspace."""
        if self.workspace_id is None:
            raise PermissionDenied("Choose a workspace first.")
        return Actor(
            kind=self.kind.value,
            workspace=self.workspace_id,
            role=None if self.role is None else self.role.value,
            scopes=self.scopes,
        )


# --- tables ---------------------------------------------------------------------------------


class Workspace(CreatedAt, Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class User(CreatedAt, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)


class Membership(CreatedAt, Base):
    __tablename__ = "memberships"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))


class ApiKey(CreatedAt, Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    # First characters of the token, shown in listings so people can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(24))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Public write keys are meant to be pasted into web pages, so they stay readable;
    # secret keys are never stored, only their hash.
    public_token: Mapped[str | None] = mapped_column(String(64), default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class DashboardSession(CreatedAt, Base):
    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    current_workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="SET NULL"), default=None
    )
    expires_at: Mapped[datetime] = mapped_column()


# --- API schemas ----------------------------------------------------------------------------

# Explicit ASCII whitespace, not ``\s``: the schema's regex dialect (ECMAScript) and Python's
# disagree about characters such as U+0085, and the schema must say exactly what is accepted.
_ASCII_SPACE = " \t\r\n\f\v"


def _trim(value: str) -> str:
    return value.strip(_ASCII_SPACE)


# At least one non-space character, trimmed of surrounding spaces; never NUL, which
# PostgreSQL text cannot hold.
Name = Annotated[
    str,
    StringConstraints(max_length=200, pattern=f"^[^\x00]*[^\x00{_ASCII_SPACE}][^\x00]*$"),
    AfterValidator(_trim),
]
# Deliberately lenient: self-hosted teams sign in with addresses on internal domains
# (``ops@shop.local``) that strict validators reject as special-use.
Email = Annotated[
    str,
    StringConstraints(
        max_length=320,
        pattern=f"^[^@\x00{_ASCII_SPACE}]+@[^@\x00{_ASCII_SPACE}]+$",
        to_lower=True,
    ),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class _Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class WorkspaceCreate(_Schema):
    name: Name


class WorkspaceUpdate(_Schema):
    name: Name


class WorkspaceRead(_Schema):
    id: str
    name: str
    created_at: datetime
    role: Role | None = Field(default=None, description="The caller's role here, for users.")


class UserCreate(_Schema):
    email: Email
    password: Password
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class UserRead(_Schema):
    id: str
    email: str
    name: str
    created_at: datetime


class MemberCreate(_Schema):
    email: Email
    role: Role


class MemberUpdate(_Schema):
    role: Role


class MemberRead(_Schema):
    user_id: str
    email: str
    name: str
    role: Role
    created_at: datetime


class KeyScope(StrEnum):
    """What a secret key may be allowed; the owner role is never delegated to a key."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    INGEST = "ingest"
    DECIDE = "decide"


class ApiKeyCreate(_Schema):
    # The rule below, stated in the schema too, so generated clients and contract tests know it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "public"}}, "required": ["kind"]},
            "then": {"properties": {"scopes": {"type": "null"}}},
        },
    )

    name: Name
    kind: KeyKind = KeyKind.SECRET
    scopes: list[KeyScope] | None = Field(
        default=None,
        min_length=1,
        description="Secret keys only; defaults to every scope the caller holds. "
        "Public write keys always have exactly ingest and decide.",
    )

    @model_validator(mode="after")
    def _public_keys_take_no_scopes(self) -> ApiKeyCreate:
        if self.kind is KeyKind.PUBLIC and self.scopes is not None:
            raise ValueError("public write keys take no scopes: they may only ingest and decide")
        return self


class ApiKeyRead(_Schema):
    id: str
    name: str
    kind: KeyKind
    prefix: str
    scopes: list[Permission]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    public_token: str | None = Field(
        default=None, description="The full key, for public write keys only."
    )


class ApiKeyCreated(ApiKeyRead):
    token: str = Field(description="The full key. Secret keys are shown this once only.")


class MeRead(_Schema):
    kind: PrincipalKind
    workspace_id: str | None
    permissions: list[Permission]
    role: Role | None
    user: UserRead | None
    key_id: str | None
