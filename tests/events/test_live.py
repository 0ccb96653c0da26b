"""The live feed: the store writer's thread publishes, subscribers on the event loop receive,
each workspace sees only its own events, and a slow reader is told what it missed instead of
growing a queue without bound. Then the SSE endpoint end to end."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest
from fastapi.testclient import TestClient

from nexus.events.live import RECENT_PER_WORKSPACE, SUBSCRIBER_QUEUE, LiveFeed
from nexus.events.normalize import EventRow, format_time, normalize
from nexus.events.store import WorkspaceBatch
from tests.conftest import World, bearer
from tests.events.conftest import T0, basic, track, wait_for_ids

Item = tuple[str, dict[str, Any]]
T = TypeVar("T")


def row(message_id: str, **fields: Any) -> EventRow:
    message = {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": message_id}
    return normalize({**message, **fields}, received_at=T0)


def rows(prefix: str, n: int, start: int = 0) -> list[EventRow]:
    return [row(f"{prefix}{i}") for i in range(start, start + n)]


def run(scenario: Callable[[LiveFeed], Awaitable[T]]) -> T:
    """Run ``scenario`` on a fresh event loop with a feed bound to it."""

    async def main() -> T:
        feed = LiveFeed()
        feed.bind(asyncio.get_running_loop())
        return await asyncio.wait_for(scenario(feed), timeout=10)

    return asyncio.run(main())


async def subscribed(
    feed: LiveFeed, workspace: str, heartbeat: float = 15.0
) -> AsyncIterator[Item]:
    """A subscription that is registered when this returns (the generator has started)."""
    stream = feed.subscribe(workspace, heartbeat=heartbeat)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # let the generator register and wait

    async def rest() -> AsyncIterator[Item]:
        yield await first
        async for item in stream:
            yield item

    return rest()


def publish_from_thread(feed: LiveFeed, *batches: list[WorkspaceBatch]) -> None:
    """Publish as the store writer does: from another thread, one stored batch at a time."""

    def writer() -> None:
        for batch in batches:
            feed.publish(batch)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()


async def take(items: AsyncIterator[Item], n: int) -> list[Item]:
    out = []
    async for item in items:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_an_event_published_from_a_thread_reaches_a_subscriber() -> None:
    async def scenario(feed: LiveFeed) -> list[Item]:
        items = await subscribed(feed, "w1")
        publish_from_thread(feed, [WorkspaceBatch("w1", [row("m1", userId="u1")])])
        return await take(items, 1)

    [(kind, summary)] = run(scenario)
    assert kind == "event"
    assert summary == {
        "messageId": "m1",
        "type": "track",
        "event": "Viewed",
        "userId": "u1",
        "anonymousId": "a1",
        "timestamp": format_time(T0),
    }


def test_summaries_carry_no_properties_traits_or_context() -> None:
    async def scenario(feed: LiveFeed) -> list[Item]:
        items = await subscribed(feed, "w1")
        secret = row("m1", properties={"email": "x@example.com"}, context={"ip": "10.0.0.1"})
        publish_from_thread(feed, [WorkspaceBatch("w1", [secret])])
        return await take(items, 1)

    [(_, summary)] = run(scenario)
    text = orjson.dumps(summary).decode()
    assert "example.com" not in text
    assert "10.0.0.1" not in text


def test_each_workspace_sees_only_its_own_events() -> None:
    async def scenario(feed: LiveFeed) -> tuple[list[Item], list[Item]]:
        mine = await subscribed(feed, "w1")
        theirs = await subscribed(feed, "w2", heartbeat=0.2)
        publish_from_thread(
            feed,
            [WorkspaceBatch("w1", rows("a", 2)), WorkspaceBatch("w3", rows("c", 2))],
        )
        return await take(mine, 2), await take(theirs, 1)

    mine, theirs = run(scenario)
    assert [s["messageId"] for _, s in mine] == ["a0", "a1"]
    assert theirs == [("ping", {})]


def test_events_arrive_in_the_order_they_were_stored() -> None:
    async def scenario(feed: LiveFeed) -> list[Item]:
        items = await subscribed(feed, "w1")
        publish_from_thread(
            feed,
            [WorkspaceBatch("w1", rows("m", 3)), WorkspaceBatch("w1", rows("m", 2, start=3))],
            [WorkspaceBatch("w1", rows("m", 4, start=5))],
        )
        return await take(items, 9)

    assert [s["messageId"] for _, s in run(scenario)] == [f"m{i}" for i in range(9)]


def test_a_big_batch_publishes_its_newest_events_and_counts_the_rest_as_dropped() -> None:
    total = RECENT_PER_WORKSPACE + 70

    async def scenario(feed: LiveFeed) -> list[Item]:
        items = await subscribed(feed, "w1")
        publish_from_thread(feed, [WorkspaceBatch("w1", rows("m", total))])
        return await take(items, 1 + RECENT_PER_WORKSPACE)

    first, *events = run(scenario)
    assert first == ("dropped", {"count": 70})
    assert [s["messageId"] for _, s in events] == [f"m{i}" for i in range(70, total)]


def test_a_slow_subscriber_keeps_a_bounded_queue_of_the_newest_events() -> None:
    batches = 10
    published = batches * RECENT_PER_WORKSPACE
    assert published > SUBSCRIBER_QUEUE

    size = RECENT_PER_WORKSPACE
    stored = [[WorkspaceBatch("w1", rows("m", size, start=b * size))] for b in range(batches)]

    async def scenario(feed: LiveFeed) -> list[Item]:
        items = await subscribed(feed, "w1")
        # The subscriber does not run while the writer publishes all of it.
        publish_from_thread(feed, *stored)
        return await take(items, 1 + SUBSCRIBER_QUEUE)

    first, *events = run(scenario)
    assert first == ("dropped", {"count": published - SUBSCRIBER_QUEUE})
    expected = [f"m{i}" for i in range(published - SUBSCRIBER_QUEUE, published)]
    assert [s["messageId"] for _, s in events] == expected


def test_recent_keeps_the_newest_events_of_each_workspace() -> None:
    feed = LiveFeed()  # no loop bound: nobody listens, recent() still fills
    feed.publish([WorkspaceBatch("w1", rows("m", 30)), WorkspaceBatch("w2", rows("x", 1))])
    feed.publish([WorkspaceBatch("w1", rows("m", 40, start=30))])
    recent = feed.recent("w1")
    assert [s["messageId"] for s in recent] == [f"m{i}" for i in range(20, 70)]
    assert [s["messageId"] for s in feed.recent("w2")] == ["x0"]
    assert feed.recent("nobody") == []


def test_an_idle_subscription_sends_heartbeats() -> None:
    async def scenario(feed: LiveFeed) -> list[Item]:
        return await take(await subscribed(feed, "w1", heartbeat=0.05), 2)

    assert run(scenario) == [("ping", {}), ("ping", {})]


def test_closing_a_subscription_leaves_the_others_working() -> None:
    async def scenario(feed: LiveFeed) -> list[Item]:
        gone = feed.subscribe("w1", heartbeat=0.05)
        await gone.__anext__()  # registered, one ping
        await gone.aclose()
        stays = await subscribed(feed, "w1")
        publish_from_thread(feed, [WorkspaceBatch("w1", rows("m", 1))])
        return await take(stays, 1)

    assert [s["messageId"] for _, s in run(scenario)] == ["m0"]


# --- the SSE endpoint -----------------------------------------------------------------------


def read_sse(client: TestClient, key: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """GET /v1/events/live?limit= and parse its ``event:``/``data:`` lines until it closes."""
    out: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    with client.stream("GET", "/v1/events/live", params={"limit": limit}, headers=bearer(key)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:") and kind:
                out.append((kind, orjson.loads(line.partition(":")[2])))
                kind = ""
    return out


def test_the_stream_starts_with_recent_events(client: TestClient, world: World) -> None:
    batch = [track(f"m{i}") for i in range(3)]
    client.post("/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key))
    wait_for_ids(client, world.a.secret_key, {"m0", "m1", "m2"})
    live = client.app.state.events.live  # type: ignore[attr-defined]
    deadline = time.monotonic() + 2
    while len(live.recent(world.a.id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    events = read_sse(client, world.a.secret_key, limit=3)
    assert [(k, d["messageId"]) for k, d in events] == [("event", f"m{i}") for i in range(3)]
    assert {d["event"] for _, d in events} == {"Signed Up"}


def test_the_stream_delivers_events_ingested_while_it_is_open(
    client: TestClient, world: World
) -> None:
    stop = threading.Event()
    posted: list[str] = []

    def ingest_until_stopped() -> None:
        # Events posted before the subscription is registered only reach recent(); keep
        # posting until the reader has what it waits for.
        i = 0
        while not stop.is_set() and i < 100:
            message_id = f"live-{i}"
            response = client.post(
                "/v1/track", json=track(message_id), headers=basic(world.a.write_key)
            )
            assert response.status_code == 200
            posted.append(message_id)
            i += 1
            stop.wait(0.05)

    poster = threading.Thread(target=ingest_until_stopped)
    poster.start()
    try:
        events = read_sse(client, world.a.secret_key, limit=3)
    finally:
        stop.set()
        poster.join()
    got = [d["messageId"] for k, d in events if k == "event"]
    assert len(got) == 3
    assert set(got) <= set(posted)
    assert got == sorted(got, key=posted.index)


def test_the_stream_needs_a_key_that_may_read(client: TestClient, world: World) -> None:
    assert client.get("/v1/events/live").status_code == 401
    assert client.get("/v1/events/live", headers=bearer(world.a.write_key)).status_code == 403


@pytest.mark.parametrize("limit", [0, -1])
def test_the_stream_limit_must_be_positive(client: TestClient, world: World, limit: int) -> None:
    response = client.get(
        "/v1/events/live", params={"limit": limit}, headers=bearer(world.a.secret_key)
    )
    assert response.status_code == 422
