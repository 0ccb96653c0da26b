"""The workspaces service on both backends: keys, passwords, roles, sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from nexus.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from nexus.storage.database import Database
from nexus.workspaces import service
from nexus.workspaces.models import (
    ApiKey,
    DashboardSession,
    KeyKind,
    Permission,
    PrincipalKind,
    Role,
)
from tests.conftest import PASSWORD, World


def test_passwords_are_stored_as_argon2_and_verified(database: Database) -> None:
    with database.session() as db:
        user = service.create_user(db, email="Ada@Example.com", password=PASSWORD)
        assert user.email == "ada@example.com"
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash
        assert service.authenticate(db, email="ADA@example.com", password=PASSWORD) is not None
        assert service.authenticate(db, email="ada@example.com", password="wrong") is None
        assert service.authenticate(db, email="nobody@example.com", password=PASSWORD) is None
        with pytest.raises(Conflict):
            service.create_user(db, email="ada@example.com", password=PASSWORD)


def test_secret_keys_are_stored_hashed_and_resolve(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        key, token = service.create_api_key(
            db, workspace_id=workspace.id, name="k", kind=KeyKind.SECRET
        )
        stored = db.scalar(select(ApiKey).where(ApiKey.id == key.id))
        assert stored is not None
        assert stored.public_token is None
        assert token not in (stored.token_hash, stored.prefix)
        assert token.startswith(stored.prefix)
        principal = service.principal_for_key(db, token=token)
        assert principal is not None
        assert principal.kind is PrincipalKind.SECRET_KEY
        assert principal.workspace_id == workspace.id
        assert Permission.ADMIN in principal.permissions
        assert service.principal_for_key(db, token=token + "x") is None


def test_every_workspace_gets_a_public_write_key(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        write_key = service.public_write_key(db, workspace_id=workspace.id)
        assert write_key is not None
        assert write_key.startswith("nx_pub_")
        principal = service.principal_for_key(db, token=write_key)
        assert principal is not None
        assert principal.permissions == {Permission.INGEST, Permission.DECIDE}


def test_revoked_keys_stop_resolving(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        key, token = service.create_api_key(
            db, workspace_id=workspace.id, name="k", kind=KeyKind.SECRET
        )
        service.revoke_api_key(db, workspace_id=workspace.id, key_id=key.id)
        assert service.principal_for_key(db, token=token) is None
        active = service.list_api_keys(db, workspace_id=workspace.id).items
        assert key.id not in [k.id for k in active]
        everything = service.list_api_keys(db, workspace_id=workspace.id, include_revoked=True)
        assert key.id in [k.id for k in everything.items]


def test_keys_cannot_grant_more_than_their_creator_holds(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        _, token = service.create_api_key(
            db,
            workspace_id=workspace.id,
            name="limited",
            kind=KeyKind.SECRET,
            scopes=[Permission.READ, Permission.ADMIN],
        )
        actor = service.principal_for_key(db, token=token)
        assert actor is not None
        with pytest.raises(PermissionDenied, match="write"):
            service.create_api_key(
                db,
                workspace_id=workspace.id,
                name="x",
                kind=KeyKind.SECRET,
                scopes=[Permission.WRITE],
                actor=actor,
            )
        key, _ = service.create_api_key(
            db, workspace_id=workspace.id, name="x", kind=KeyKind.SECRET, actor=actor
        )
        assert sorted(key.scopes) == ["admin", "read"]
        with pytest.raises(InvalidInput):
            service.create_api_key(
                db,
                workspace_id=workspace.id,
                name="p",
                kind=KeyKind.PUBLIC,
                scopes=[Permission.ADMIN],
            )


def test_a_workspace_keeps_an_owner(database: Database, world: World) -> None:
    owner = world.a.members[Role.OWNER]
    with database.session() as db:
        as_owner = service.principal_for_user(db, user_id=owner.user_id, workspace_id=world.a.id)
        with pytest.raises(Conflict):
            service.set_member_role(
                db, workspace_id=world.a.id, user_id=owner.user_id, role=Role.ADMIN, actor=as_owner
            )
        with pytest.raises(Conflict):
            service.remove_member(
                db, workspace_id=world.a.id, user_id=owner.user_id, actor=as_owner
            )
        admin = world.a.members[Role.ADMIN]
        as_admin = service.principal_for_user(db, user_id=admin.user_id, workspace_id=world.a.id)
        with pytest.raises(PermissionDenied):
            service.set_member_role(
                db, workspace_id=world.a.id, user_id=admin.user_id, role=Role.OWNER, actor=as_admin
            )
        # An owner may hand over ownership, after which stepping down is allowed.
        service.set_member_role(
            db, workspace_id=world.a.id, user_id=admin.user_id, role=Role.OWNER, actor=as_owner
        )
        service.set_member_role(
            db, workspace_id=world.a.id, user_id=owner.user_id, role=Role.VIEWER, actor=as_owner
        )
        assert service.roles_of(db, user_id=owner.user_id)[world.a.id] is Role.VIEWER


def test_membership_is_per_workspace(database: Database, world: World) -> None:
    with database.session() as db:
        viewer = world.a.members[Role.VIEWER]
        with pytest.raises(NotFound):
            service.principal_for_user(db, user_id=viewer.user_id, workspace_id=world.b.id)
        with pytest.raises(NotFound):
            service.get_api_key(db, workspace_id=world.b.id, key_id=world.a.secret_key_id)


def test_sessions_expire_and_are_deleted(database: Database, world: World) -> None:
    owner = world.a.members[Role.OWNER]
    with database.session() as db:
        live, live_token = service.create_session(db, user_id=owner.user_id, ttl=timedelta(hours=1))
        assert live.current_workspace_id == world.a.id
        assert service.resolve_session(db, token=live_token) is not None
        assert live_token not in (live.token_hash, live.csrf_token)
        expired, expired_token = service.create_session(
            db, user_id=owner.user_id, ttl=timedelta(seconds=-1)
        )
        assert service.resolve_session(db, token=expired_token) is None
        assert db.get(DashboardSession, expired.id) is None
        service.end_session(db, session_id=live.id)
        assert service.resolve_session(db, token=live_token) is None


def test_pagination_walks_every_item_once(database: Database) -> None:
    with database.session() as db:
        workspace = service.create_workspace(db, name="W")
        created = {
            workspace_key.id
            for workspace_key in service.list_api_keys(db, workspace_id=workspace.id).items
        }
        for i in range(11):
            key, _ = service.create_api_key(
                db, workspace_id=workspace.id, name=f"k{i}", kind=KeyKind.SECRET
            )
            created.add(key.id)
        seen: list[str] = []
        cursor = None
        while True:
            page = service.list_api_keys(db, workspace_id=workspace.id, cursor=cursor, limit=5)
            assert len(page.items) <= 5
            seen.extend(k.id for k in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == sorted(created)


def test_a_new_password_ends_open_sessions(database: Database, world: World) -> None:
    owner = world.a.members[Role.OWNER]
    with database.session() as db:
        _, token = service.create_session(db, user_id=owner.user_id, ttl=timedelta(hours=1))
        service.set_password(db, user_id=owner.user_id, password="a brand new password")
        assert service.resolve_session(db, token=token) is None
        assert service.authenticate(db, email=owner.email, password=PASSWORD) is None
        assert service.authenticate(db, email=owner.email, password="a brand new password")
