"""Logs carry a request id on every line and never a password, key or token."""

from __future__ import annotations

import io
import json
import logging
from typing import Literal

import pytest
import structlog
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.logging import configure_logging, get_logger, log_request, redact, request_id_var
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


def _access_line_through_the_pipeline(fmt: Literal["json", "console"]) -> str:
    """The line structlog's own pipeline writes for a request, for comparison."""
    stream = io.StringIO()
    configure_logging(level="info", fmt=fmt, stream=stream)
    get_logger("nexus.access").info(
        "request", method="GET", path="/v1/me", status=200, duration_ms=1.5
    )
    return stream.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_access_log_writes_what_the_pipeline_would(fmt: Literal["json", "console"]) -> None:
    """Access lines skip structlog for speed; they must still read like every other line:
    same fields, request id, bound context (secrets blanked), credential-shaped values in the
    path scrubbed."""
    token = request_id_var.set("req_test")
    structlog.contextvars.bind_contextvars(tenant="t1", api_key="nx_sec_abcdefghijklmnop")
    try:
        expected = _access_line_through_the_pipeline(fmt)
        stream = io.StringIO()
        configure_logging(level="info", fmt=fmt, stream=stream)
        log_request(method="GET", path="/v1/me", status=200, duration_ms=1.5)
        log_request(
            method="GET", path="/v1/keys/nx_sec_abcdefghijklmnop", status=404, duration_ms=2.0
        )
    finally:
        structlog.contextvars.clear_contextvars()
        request_id_var.reset(token)
        logging.getLogger().handlers.clear()
    first, second = stream.getvalue().splitlines()
    assert "nx_sec_" not in stream.getvalue()
    if fmt == "json":
        ours, theirs = json.loads(first), json.loads(expected)
        assert ours.pop("timestamp")
        assert theirs.pop("timestamp")
        assert ours == theirs
        assert list(ours) == list(theirs)  # the same field order
        assert ours["api_key"] == "[redacted]"
        assert ours["request_id"] == "req_test"
        assert json.loads(second)["path"] == "/v1/keys/[redacted]"
    else:
        # Everything after the timestamp is the same text.
        assert first.split(" ", 1)[1] == expected.strip().split(" ", 1)[1]
        assert "path=/v1/keys/[redacted]" in second


def test_the_access_log_honours_the_level_and_the_installed_handler() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", fmt="json", stream=stream)
    log_request(method="GET", path="/x", status=200, duration_ms=1.0)
    assert stream.getvalue() == ""  # info lines are below the level
    # A handler installed by someone else (an embedding app, a test) receives the line
    # through the standard pipeline instead of the stream configure_logging set up.
    configure_logging(level="info", fmt="json", stream=stream)
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    logging.getLogger().handlers[:] = [handler]
    try:
        log_request(method="GET", path="/x", status=200, duration_ms=1.0)
    finally:
        logging.getLogger().handlers.clear()
    assert stream.getvalue() == ""
    assert "request" in other.getvalue()
