"""Helpers of the events tests: message builders, an app with its own ingest settings, and
reading the event list back until the store writer has caught up."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.settings import Settings
from nexus.storage.database import Database
from tests.conftest import bearer

T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z in microseconds
SECOND = 1_000_000
QUERYABLE_WITHIN_S = 2.0  # the promise: an acknowledged event is listed within 2 s


def basic(key: str) -> dict[str, str]:
    """Segment's HTTP API authentication: the write key as username, no password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str, event: str = "Signed Up", **fields: Any) -> dict[str, Any]:
    """A valid track message (anonymous unless ``userId`` is given)."""
    message: dict[str, Any] = {"type": "track", "event": event, "messageId": message_id}
    if "userId" not in fields:
        message["anonymousId"] = "anon-1"
    message.update(fields)
    return message


def list_all(client: TestClient, key: str, **params: str) -> list[dict[str, Any]]:
    """Every event of the key's workspace through GET /v1/events, following the cursor."""
    items: list[dict[str, Any]] = []
    query: dict[str, str | int] = {"limit": 200, **params}
    while True:
        response = client.get("/v1/events", params=query, headers=bearer(key))
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


def wait_for_ids(
    client: TestClient, key: str, ids: set[str], timeout: float = QUERYABLE_WITHIN_S
) -> list[dict[str, Any]]:
    """Poll the event list until every id in ``ids`` is there; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        items = list_all(client, key)
        missing = ids - {item["messageId"] for item in items}
        if not missing:
            return items
        if time.monotonic() > deadline:
            pytest.fail(f"not queryable within {timeout} s: {sorted(missing)[:10]}")
        time.sleep(0.02)


@pytest.fixture
def make_client(settings: Settings, database: Database) -> Iterator[Callable[..., TestClient]]:
    """``make_client(ingest_rate_limit="5/minute")``: a running app with those settings
    changed (use it instead of ``client``, not beside it: both would own the same files)."""
    with ExitStack() as stack:

        def open_client(**overrides: Any) -> TestClient:
            app = create_app(settings.model_copy(update=overrides), configure_logs=False)
            return stack.enter_context(TestClient(app, base_url="http://testserver"))

        yield open_client
