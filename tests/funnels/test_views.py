"""The funnels API over HTTP through the ASGI app: CRUD, validation, reports from ingested
events."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import World, bearer

PROBLEM = "application/problem+json"
STEPS = [{"event": "Viewed"}, {"event": "Signed Up"}]


def _ingest(client: TestClient, world: World, messages: list[dict[str, Any]]) -> None:
    response = client.post("/v1/batch", json={"batch": messages}, headers=bearer(world.a.write_key))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(messages)
    pipeline = client.app.state.events.pipeline  # type: ignore[attr-defined]
    assert pipeline.wait_until_stored(pipeline.journal.end, timeout=2.0)


def test_funnel_crud(client: TestClient, world: World) -> None:
    headers = bearer(world.a.secret_key)
    created = client.post(
        "/v1/funnels", json={"name": "Trial", "steps": STEPS, "mode": "strict"}, headers=headers
    )
    assert created.status_code == 201, created.text
    funnel = created.json()
    assert funnel["mode"] == "strict"
    assert funnel["window_seconds"] == 14 * 86_400
    url = f"/v1/funnels/{funnel['id']}"
    assert client.get(url, headers=headers).json()["name"] == "Trial"
    changed = client.patch(url, json={"name": "Trial 2", "window_seconds": 3600}, headers=headers)
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["window_seconds"]) == ("Trial 2", 3600)
    listed = client.get("/v1/funnels", headers=headers).json()["items"]
    assert {f["id"] for f in listed} == {funnel["id"], world.a.funnel_id}
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404


def test_invalid_definitions_are_refused_with_the_rule(client: TestClient, world: World) -> None:
    headers = bearer(world.a.secret_key)

    def filtered(op: str, value: object) -> list[dict[str, Any]]:
        return [{"event": "A", "filters": [{"property": "p", "op": op, "value": value}]}, STEPS[1]]

    cases = [
        {"name": "x", "steps": [{"event": "A"}]},  # one step
        {"name": "x", "steps": [{"event": "A", "optional": True}, {"event": "B"}]},
        {
            "name": "x",
            "steps": [{"event": "A"}, {"event": "B", "optional": True}],
            "mode": "strict",
        },
        {"name": "x", "steps": STEPS, "exclusions": [{"event": "C", "before_step": 5}]},
        {"name": "x", "steps": filtered("gt", "not a number")},
        {"name": "x", "steps": filtered("regex", "(")},
        {"name": "x", "steps": STEPS, "window_seconds": 0},
    ]
    for body in cases:
        response = client.post("/v1/funnels", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
    # A change that would break a saved funnel is refused and leaves it as it was.
    url = f"/v1/funnels/{world.a.funnel_id}"
    bad = client.patch(url, json={"steps": [{"event": "A", "optional": True}, {"event": "B"}]},
                       headers=headers)  # fmt: skip
    assert bad.status_code == 422
    assert client.get(url, headers=headers).json()["steps"][0]["event"] == "Viewed"


def test_report_from_ingested_events(client: TestClient, world: World) -> None:
    base = "2026-11-20T10:00:0{}Z"
    _ingest(
        client,
        world,
        [
            {"type": "track", "event": "Viewed", "anonymousId": "v1", "timestamp": base.format(0),
             "context": {"campaign": {"source": "google"}}},
            {"type": "track", "event": "Signed Up", "anonymousId": "v1",
             "timestamp": base.format(5)},
            {"type": "track", "event": "Viewed", "anonymousId": "v2", "timestamp": base.format(1),
             "context": {"campaign": {"source": "newsletter"}}},
        ],
    )  # fmt: skip
    headers = bearer(world.a.read_only_key)
    response = client.get(
        f"/v1/funnels/{world.a.funnel_id}/report",
        params={
            "start": "2026-11-20T00:00:00Z",
            "end": "2026-11-21T00:00:00Z",
            "breakdown": "context.campaign.source",
            "interval": "hour",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert [s["count"] for s in report["steps"]] == [2, 1]
    assert report["steps"][1]["conversion_from_start"] == 0.5
    assert report["time_to_convert"]["median_seconds"] == 5.0
    assert {b["value"]: b["steps"][1]["count"] for b in report["breakdown"]} == {
        "google": 1,
        "newsletter": 0,
    }
    assert report["trend"] == [
        {"start": "2026-11-20T10:00:00Z", "entered": 2, "converted": 1, "conversion_rate": 0.5}
    ]
    people = client.get(
        f"/v1/funnels/{world.a.funnel_id}/people",
        params={"step": 1, "start": "2026-11-20T00:00:00Z"},
        headers=headers,
    )
    assert people.json()["items"] == ["v2"]
    # The same funnel asked ad hoc, by a read-only key.
    query = client.post(
        "/v1/funnels/query",
        json={"steps": STEPS, "start": "2026-11-20T00:00:00Z", "end": "2026-11-21T00:00:00Z"},
        headers=headers,
    )
    assert [s["count"] for s in query.json()["steps"]] == [2, 1]


def test_another_workspace_sees_none_of_the_events(client: TestClient, world: World) -> None:
    _ingest(client, world, [{"type": "track", "event": "Viewed", "anonymousId": "v1"}])
    query = client.post(
        "/v1/funnels/query", json={"steps": STEPS}, headers=bearer(world.b.secret_key)
    )
    assert query.status_code == 200
    assert query.json()["entered"] == 0


def test_report_is_quick_to_reflect_new_events(client: TestClient, world: World) -> None:
    """Acknowledged events show up in a report within 2 s."""
    headers = bearer(world.a.secret_key)
    response = client.post(
        "/v1/track",
        json={"event": "Viewed", "anonymousId": "fresh"},
        headers=bearer(world.a.write_key),
    )
    assert response.status_code == 200
    acknowledged = time.monotonic()
    while True:
        entered = client.post("/v1/funnels/query", json={"steps": STEPS}, headers=headers).json()
        if entered["entered"] == 1:
            break
        assert time.monotonic() - acknowledged < 2.0, "not queryable within 2 s"
        time.sleep(0.05)
