"""Logs carry a request id on every line and never a password, key or token."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.logging import configure_logging, get_logger, redact
from nexus.core.settings import Settings
from nexus.workspaces.models import Role
from tests.conftest import PASSWORD, World, bearer


@pytest.fixture
def log_stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def test_secrets_never_reach_the_log(
    settings: Settings, world: World, log_stream: io.StringIO
) -> None:
    app = create_app(settings.model_copy(update={"log_level": "debug"}), configure_logs=False)
    with TestClient(app) as client:
        page = client.get("/login")
        marker = 'name="csrf_token" value="'
        csrf = page.text.split(marker)[1].split('"')[0]
        client.post(
            "/login",
            data={"email": "owner@a.test", "password": PASSWORD, "csrf_token": csrf},
            follow_redirects=False,
        )
        session_cookie = client.cookies.get("nexus_session")
        created = client.post("/v1/keys", json={"name": "k"}, headers=bearer(world.a.secret_key))
        new_token = created.json()["token"]
        client.get("/v1/me", headers=bearer(world.a.write_key))
        client.get(f"/v1/me?token={world.a.secret_key}")  # a secret in a URL
        client.get("/v1/me", headers=bearer(world.a.secret_key + "tampered"))
        # Application code that carelessly logs secrets is scrubbed too.
        get_logger("test").warning(
            "careless", password=PASSWORD, detail=f"key was {new_token}", api_key="x"
        )
    output = log_stream.getvalue()
    assert session_cookie
    for secret in (PASSWORD, world.a.secret_key, world.a.write_key, new_token, session_cookie):
        assert secret not in output
    assert csrf not in output
    lines = [json.loads(line) for line in output.splitlines()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) >= 6
    assert all(line["request_id"].startswith("req_") for line in requests)
    assert len({line["request_id"] for line in requests}) == len(requests)
    careless = next(line for line in lines if line.get("event") == "careless")
    assert careless["password"] == "[redacted]"
    assert careless["detail"] == "key was [redacted]"
    _ = Role


def test_redact_blanks_nested_secret_fields() -> None:
    event = {"event": "x", "payload": {"Authorization": "Bearer abc", "items": [{"token": "t"}]}}
    out = redact(None, "info", event)
    assert out["payload"]["Authorization"] == "[redacted]"
    assert out["payload"]["items"][0]["token"] == "[redacted]"
