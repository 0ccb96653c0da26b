"""Bot scores end to end: ingest marks a crawler's events, funnels leave them out by default
(and show them alone on request), decide serves a bot no experiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import World, bearer
from tests.events.conftest import wait_for_ids

CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36"
)


def _journey(visitor: str, agent: str, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": event,
            "messageId": f"{prefix}-{event}",
            "anonymousId": visitor,
            "context": {"userAgent": agent},
            "timestamp": (datetime.now(UTC) - timedelta(minutes=10 - step)).isoformat(),
        }
        for step, event in enumerate(("Viewed", "Signed Up"))
    ]


def _funnel(client: TestClient, world: World, bots: str | None) -> list[int]:
    body: dict[str, Any] = {"steps": [{"event": "Viewed"}, {"event": "Signed Up"}]}
    if bots is not None:
        body["bots"] = bots
    response = client.post("/v1/funnels/query", json=body, headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    return [step["count"] for step in response.json()["steps"]]


def test_crawler_events_are_marked_and_left_out_of_funnels(
    client: TestClient, world: World
) -> None:
    batch = {"batch": [*_journey("human-1", BROWSER, "h"), *_journey("crawler-1", CRAWLER, "c")]}
    answer = client.post("/v1/batch", json=batch, headers=bearer(world.a.write_key)).json()
    assert answer["accepted"] == 4
    wanted = {"h-Viewed", "h-Signed Up", "c-Viewed", "c-Signed Up"}
    events = {e["messageId"]: e for e in wait_for_ids(client, world.a.secret_key, wanted)}
    assert events["c-Viewed"]["context"]["bot"]["reasons"] == ["user-agent:Googlebot"]
    assert "bot" not in events["h-Viewed"]["context"]
    assert _funnel(client, world, None) == [1, 1]
    assert _funnel(client, world, "only") == [1, 1]
    assert _funnel(client, world, "include") == [2, 2]


def test_decide_serves_a_bot_no_experiment(client: TestClient, world: World) -> None:
    created = client.post(
        "/v1/experiments",
        json={"key": "hero", "variants": [{"key": "a"}, {"key": "b"}]},
        headers=bearer(world.a.secret_key),
    )
    assert created.status_code == 201, created.text
    started = client.post("/v1/experiments/hero/start", headers=bearer(world.a.secret_key))
    assert started.status_code == 200, started.text
    batch = {"batch": _journey("crawler-2", CRAWLER, "d")}
    client.post("/v1/batch", json=batch, headers=bearer(world.a.write_key))
    # Scored on the store writer's thread: stored means scored.
    wait_for_ids(client, world.a.secret_key, {"d-Viewed", "d-Signed Up"})
    bot = client.post(
        "/v1/decide", json={"visitor_id": "crawler-2"}, headers=bearer(world.a.write_key)
    ).json()
    human = client.post(
        "/v1/decide", json={"visitor_id": "human-2"}, headers=bearer(world.a.write_key)
    ).json()
    assert bot["bot"] is True
    assert bot["experiments"] == {}
    assert bot["personalised"] is False
    assert human["bot"] is False
    assert set(human["experiments"]) == {"hero"}
