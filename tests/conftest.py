"""Shared fixtures: every storage and API test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``NEXUS_TEST_POSTGRES_URL`` (``scripts/with-postgres`` starts a throwaway
server and sets it; ``make test`` does that). Without it the PostgreSQL half is skipped locally
and fails under ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from nexus.api.app import create_app
from nexus.core.settings import Environment, Settings
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelCreate
from nexus.schema import metadata
from nexus.storage import migrate
from nexus.storage.database import Database
from nexus.workspaces import service
from nexus.workspaces.models import KeyKind, Permission, Role

TEST_SECRET = "test-secret-key-" + "x" * 40
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """argon2 with its smallest cost: the same algorithm and code path, without spending
    ~50 ms of CPU per hash across hundreds of tests (production keeps the defaults)."""
    original = service._hasher
    service._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    yield
    service._hasher = original


def _postgres_url() -> str:
    url = os.environ.get("NEXUS_TEST_POSTGRES_URL")
    if url:
        return Settings(database_url=url).resolved_database_url
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the PostgreSQL tests: NEXUS_TEST_POSTGRES_URL is not set")
    pytest.skip("PostgreSQL not available (run through scripts/with-postgres or make test)")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of each backend, shared by the tests of one session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'nexus.db'}"
    else:
        url = _postgres_url()
    migrate.upgrade(url)
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The backend's database, emptied before each test."""
    db = Database(database_url)
    with db.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f'DELETE FROM "{table.name}"'))
    yield db
    db.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env=Environment.TEST,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        log_level="warning",
    )


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, configure_logs=False)
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@dataclass
class Member:
    user_id: str
    email: str
    role: Role


@dataclass
class Tenant:
    """One workspace with a user of every role, a secret key, a viewer-scoped key and its
    public write key."""

    id: str
    members: dict[Role, Member] = field(default_factory=dict)
    secret_key: str = ""
    read_only_key: str = ""
    write_key: str = ""
    secret_key_id: str = ""
    funnel_id: str = ""
    rollout_id: str = ""


@dataclass
class World:
    a: Tenant
    b: Tenant


def make_tenant(database: Database, label: str) -> Tenant:
    with database.session() as db:
        owner = service.create_user(db, email=f"owner@{label}.test", password=PASSWORD)
        workspace = service.create_workspace(db, name=f"Workspace {label}", owner_id=owner.id)
        tenant = Tenant(id=workspace.id)
        tenant.members[Role.OWNER] = Member(owner.id, owner.email, Role.OWNER)
        for role in (Role.ADMIN, Role.ANALYST, Role.VIEWER):
            user = service.create_user(db, email=f"{role.value}@{label}.test", password=PASSWORD)
            service.add_member(
                db, workspace_id=workspace.id, email=user.email, role=role, actor=None
            )
            tenant.members[role] = Member(user.id, user.email, role)
        key, tenant.secret_key = service.create_api_key(
            db, workspace_id=workspace.id, name="tests", kind=KeyKind.SECRET
        )
        tenant.secret_key_id = key.id
        _, tenant.read_only_key = service.create_api_key(
            db,
            workspace_id=workspace.id,
            name="read only",
            kind=KeyKind.SECRET,
            scopes=[Permission.READ],
        )
        tenant.write_key = service.public_write_key(db, workspace_id=workspace.id) or ""
        tenant.funnel_id = funnels.create_funnel(
            db,
            workspace_id=workspace.id,
            data=FunnelCreate(name="Signup", steps=[{"event": "Viewed"}, {"event": "Signed Up"}]),
        ).id
    return tenant


@pytest.fixture
def world(database: Database) -> World:
    return World(a=make_tenant(database, "a"), b=make_tenant(database, "b"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the real form; returns the session's CSRF token."""
    page = client.get("/login")
    assert page.status_code == 200
    csrf = _hidden_value(page.text, "csrf_token")
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    return _hidden_value(dashboard.text, "csrf_token")


def _hidden_value(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]
