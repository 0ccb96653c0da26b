"""Unmodified Segment and RudderStack SDKs, pointed at a real ``nexus serve``, just work.

The SDKs are the official Python ones from PyPI (``segment-analytics-python``,
``rudder-sdk-python``), used exactly as their documentation says: a write key, a host, then
``track``/``identify``/``page``/``group``/``alias`` and ``flush``. They batch to ``/v1/batch``
with Basic authentication (RudderStack gzips by default). Nothing in NEXUS knows it is being
tested.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.events.test_durability import Server, create_workspace


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("sdk")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_DATA_DIR"] = str(data_dir)
    workspace = create_workspace(data_dir, env)
    with Server(data_dir, env) as running:
        yield running, workspace


def _send_everything(client: Any, prefix: str) -> None:
    """One call of each kind, with the SDK generating ids and times."""
    user, anon = f"{prefix}-user", f"{prefix}-anon"
    client.page(anonymous_id=anon, name="Pricing", properties={"path": "/pricing"})
    client.track(anonymous_id=anon, event="Offer Viewed", properties={"variant": "b"})
    client.identify(user_id=user, anonymous_id=anon, traits={"plan": "pro"})
    client.track(user_id=user, event="Order Completed", properties={"revenue": 42.5})
    client.group(user_id=user, group_id=f"{prefix}-company", traits={"size": 12})
    client.alias(previous_id=user, user_id=f"{prefix}-user-2")
    client.flush()


def _events(server: Server, workspace: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    import httpx

    headers = {"Authorization": f"Bearer {workspace['secret_key']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        items = http.get("/v1/events", params={"limit": 200}).json()["items"]
    return [
        e for e in items if str(e.get("userId") or e.get("anonymousId") or "").startswith(prefix)
    ]


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_an_unmodified_sdk_sends_every_call(
    server: tuple[Server, dict[str, Any]], sdk: str
) -> None:
    running, workspace = server
    failures: list[Exception] = []
    if sdk == "segment":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client  # type: ignore[no-redef]
    client = Client(
        write_key=workspace["write_key"],
        host=running.url,
        on_error=lambda error, _batch: failures.append(error),
        max_retries=1,
    )
    try:
        _send_everything(client, sdk)
    finally:
        client.shutdown()
    assert failures == []
    expected_types = {"page", "track", "identify", "group", "alias"}
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 2.0  # acknowledged events are listed within 2 s
    while time.monotonic() < deadline:
        events = _events(running, workspace, sdk)
        if len(events) >= 6:
            break
        time.sleep(0.05)
    assert {e["type"] for e in events} == expected_types
    assert len(events) == 6
    by_event = {e.get("event"): e for e in events if e["type"] == "track"}
    assert by_event["Order Completed"]["properties"] == {"revenue": 42.5}
    # The SDK's own context (library name and version) arrives intact.
    assert "library" in by_event["Offer Viewed"]["context"]
    # The SDK sent sentAt with each batch: times were corrected, not left empty.
    assert all(e["timestamp"] for e in events)
