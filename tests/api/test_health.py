"""Liveness, readiness and metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.settings import Environment, Settings
from tests.conftest import TEST_SECRET, World, bearer


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["revision"] is not None


def test_readyz_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    # PostgreSQL-style: a server database is never migrated by the app itself.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    settings = Settings(env=Environment.TEST, database_url=url, secret_key=TEST_SECRET)
    app = create_app(settings, configure_logs=False)
    client = TestClient(app)  # no lifespan: the embedded auto-migration does not run
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"].endswith("/database-not-migrated")


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    settings = Settings(env=Environment.TEST, database_url=url, secret_key=TEST_SECRET)
    client = TestClient(create_app(settings, configure_logs=False))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"].endswith("/database-unavailable")


def test_metrics_count_requests_by_route_template(client: TestClient, world: World) -> None:
    client.get(f"/v1/keys/{world.a.secret_key_id}", headers=bearer(world.a.secret_key))
    client.get("/v1/keys/key_doesnotexist", headers=bearer(world.a.secret_key))
    text = client.get("/metrics").text
    assert 'route="/v1/keys/{key_id}",status="200"' in text
    assert 'route="/v1/keys/{key_id}",status="404"' in text
    # Raw ids never become label values.
    assert world.a.secret_key_id not in text
    assert "nexus_http_request_duration_seconds_bucket" in text
