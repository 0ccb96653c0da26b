"""The emotion API through the ASGI app: analysis, the edge artifact, settings, enrichment."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import World, bearer
from tests.events.conftest import basic, wait_for_ids

ANALYZE = "/v1/emotion/analyze"


def test_one_text_gives_one_vector_with_every_reading(client: TestClient, world: World) -> None:
    response = client.post(
        ANALYZE,
        json={"text": "Thank you so much, this is wonderful!", "mode": "edge"},
        headers=bearer(world.a.secret_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    (vector,) = body["results"]
    assert set(vector["plutchik"]) == {
        "joy", "trust", "fear", "surprise", "sadness", "disgust", "anger", "anticipation",
    }  # fmt: skip
    assert len(vector["labels"]) == 28
    assert len(vector["ekman"]) == 7
    assert vector["dominant"] == "gratitude"
    assert vector["ekman_predicted"][0] == "joy"
    assert vector["valence"] > 0
    assert vector["tier"] == "edge"
    assert body["edge_share"] == 1.0
    assert body["models"]["edge"]


def test_a_batch_keeps_its_order(client: TestClient, world: World) -> None:
    texts = ["I love this!", "This is disgusting and I am furious.", "ok"]
    response = client.post(
        ANALYZE, json={"texts": texts, "mode": "edge"}, headers=bearer(world.a.secret_key)
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["dominant"] == "love"
    assert results[1]["ekman_predicted"][0] in {"anger", "disgust"}
    assert results[0]["valence"] > results[1]["valence"]


def test_the_public_write_key_may_analyze(client: TestClient, world: World) -> None:
    response = client.post(
        ANALYZE, json={"text": "so happy", "mode": "edge"}, headers=basic(world.a.write_key)
    )
    assert response.status_code == 200


def test_anonymous_callers_are_refused(client: TestClient) -> None:
    response = client.post(ANALYZE, json={"text": "hi"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "a", "texts": ["b"]},
        {"texts": []},
        {"texts": ["x"] * 257},
        {"text": "x" * 10_001},
        {"text": "hi", "mode": "quantum"},
        {"text": 5},
    ],
)
def test_bad_requests_get_a_problem(client: TestClient, world: World, body: dict[str, Any]) -> None:
    response = client.post(ANALYZE, json=body, headers=bearer(world.a.secret_key))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_the_edge_model_is_public_and_cacheable(client: TestClient) -> None:
    first = client.get("/v1/emotion/edge-model")
    assert first.status_code == 200
    artifact = first.json()
    assert artifact["format"] == "nexus-edge-emotion"
    assert len(first.content) <= 512 * 1024
    etag = first.headers["etag"]
    again = client.get("/v1/emotion/edge-model", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_settings_default_and_change(client: TestClient, world: World) -> None:
    url = "/v1/emotion/settings"
    default = client.get(url, headers=bearer(world.a.secret_key))
    assert default.json() == {"text_properties": ["message", "text", "comment", "review"]}
    changed = client.put(
        url, json={"text_properties": ["feedback", "feedback"]}, headers=bearer(world.a.secret_key)
    )
    assert changed.status_code == 200
    assert client.get(url, headers=bearer(world.a.secret_key)).json() == {
        "text_properties": ["feedback"]
    }
    # Another workspace keeps its own.
    assert client.get(url, headers=bearer(world.b.secret_key)).json()["text_properties"][0] == (
        "message"
    )
    refused = client.put(
        url, json={"text_properties": ["x"]}, headers=bearer(world.a.read_only_key)
    )
    assert refused.status_code == 403
    bad = client.put(url, json={"text_properties": ["a.b"]}, headers=bearer(world.a.secret_key))
    assert bad.status_code == 422


def test_ingested_text_is_read_and_stored_with_the_event(client: TestClient, world: World) -> None:
    batch = [
        {"type": "track", "event": "Chat", "anonymousId": "v1", "messageId": "m-happy",
         "properties": {"message": "Thank you, this is perfect!"}},
        {"type": "track", "event": "Chat", "anonymousId": "v1", "messageId": "m-angry",
         "properties": {"review": "Terrible. I want a refund, this is a scam."}},
        {"type": "track", "event": "Viewed", "anonymousId": "v1", "messageId": "m-plain",
         "properties": {"message": 42}},
    ]  # fmt: skip
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key))
    assert response.status_code == 200
    items = wait_for_ids(client, world.a.secret_key, {"m-happy", "m-angry", "m-plain"})
    by_id = {e["messageId"]: e for e in items}
    happy = by_id["m-happy"]["context"]["emotion"]
    angry = by_id["m-angry"]["context"]["emotion"]
    assert happy["source"] == "message"
    assert angry["source"] == "review"
    assert happy["ekman"] == "joy"
    assert happy["valence"] > angry["valence"]
    assert "emotion" not in by_id["m-plain"].get("context", {})


def test_funnels_break_down_by_the_stored_emotion(client: TestClient, world: World) -> None:
    batch = []
    for visitor, text in [("p1", "I love it, thanks!"), ("p2", "This is awful, I hate it")]:
        batch += [
            {"type": "track", "event": "Chat", "anonymousId": visitor,
             "messageId": f"{visitor}-chat", "timestamp": "2026-11-20T10:00:00Z",
             "properties": {"message": text}},
            {"type": "track", "event": "Bought", "anonymousId": visitor,
             "messageId": f"{visitor}-buy", "timestamp": "2026-11-20T10:05:00Z"},
        ]  # fmt: skip
    assert client.post(
        "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
    ).is_success
    ids = {f"{v}-{k}" for v in ("p1", "p2") for k in ("chat", "buy")}
    wait_for_ids(client, world.a.secret_key, ids)
    query = {
        "steps": [{"event": "Chat"}, {"event": "Bought"}],
        "breakdown": "context.emotion.ekman",
        "start": "2026-11-19T00:00:00Z",
        "end": "2026-11-21T00:00:00Z",
    }
    report = client.post("/v1/funnels/query", json=query, headers=bearer(world.a.secret_key))
    assert report.status_code == 200, report.text
    groups = {g["value"]: g["steps"][0]["count"] for g in report.json()["breakdown"]}
    assert groups.get("joy") == 1
    assert sum(groups.values()) == 2
    negative = {
        **query,
        "breakdown": None,
        "steps": [
            {
                "event": "Chat",
                "filters": [{"property": "context.emotion.valence", "op": "lt", "value": 0}],
            },
            {"event": "Bought"},
        ],
    }
    filtered = client.post("/v1/funnels/query", json=negative, headers=bearer(world.a.secret_key))
    assert filtered.status_code == 200, filtered.text
    assert filtered.json()["steps"][0]["count"] == 1


def _chat(visitor: str, index: int, text: str, minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Chat",
        "anonymousId": visitor,
        "messageId": f"{visitor}-{index}",
        "timestamp": f"2026-11-20T10:{minute:02d}:00Z",
        "properties": {"message": text, **extra.pop("properties", {})},
        **extra,
    }


def test_a_visitors_trajectory_has_history_state_and_bands(
    client: TestClient, world: World
) -> None:
    texts = ["I love this", "hmm not sure", "this is annoying", "I hate this, so angry", "ugh"]
    batch = [_chat("traj", i, text, 2 * i) for i, text in enumerate(texts)]
    assert client.post(
        "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
    ).is_success
    wait_for_ids(client, world.a.secret_key, {m["messageId"] for m in batch})
    response = client.get("/v1/visitors/traj/emotion?k=4", headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["observations"] == 5
    assert [p["message_id"] for p in body["history"]] == [m["messageId"] for m in batch]
    assert body["history"][0]["observed"]["valence"] > body["history"][3]["observed"]["valence"]
    assert len(body["forecast"]) == 4
    horizons = [f["horizon_seconds"] for f in body["forecast"]]
    assert horizons == sorted(horizons)
    assert horizons[0] > 0
    for step in (body["current"], *body["forecast"]):
        for dimension in ("valence", "arousal", "dominance"):
            band = step[dimension]
            assert band["lower"] <= band["mean"] <= band["upper"]
        assert sum(step["ekman"].values()) == pytest.approx(1.0, abs=1e-4)
    # Uncertainty grows with the horizon.
    widths = [f["valence"]["upper"] - f["valence"]["lower"] for f in body["forecast"]]
    assert widths[-1] >= widths[0]


def test_an_unknown_visitor_is_404_and_other_workspaces_see_nothing(
    client: TestClient, world: World
) -> None:
    batch = [_chat("private", 0, "so happy", 1)]
    assert client.post(
        "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
    ).is_success
    wait_for_ids(client, world.a.secret_key, {"private-0"})
    assert (
        client.get("/v1/visitors/nobody/emotion", headers=bearer(world.a.secret_key)).status_code
        == 404
    )
    assert (
        client.get("/v1/visitors/private/emotion", headers=bearer(world.b.secret_key)).status_code
        == 404
    )
    assert (
        client.get("/v1/visitors/private/emotion", headers=basic(world.a.write_key)).status_code
        == 403
    )


def test_cohorts_by_variant_campaign_time_and_step(client: TestClient, world: World) -> None:
    batch = []
    for i in range(6):
        happy = i % 2 == 0
        batch.append(
            _chat(
                f"c{i}",
                0,
                "I love it, thank you!" if happy else "This is terrible and I am angry",
                1,
                properties={"variant": "A" if happy else "B"},
                context={"campaign": {"name": "spring"}},
            )
        )
        batch.append(
            {"type": "track", "event": "Viewed", "anonymousId": f"c{i}", "messageId": f"c{i}-view",
             "timestamp": "2026-11-20T10:00:00Z"}
        )  # fmt: skip
    assert client.post(
        "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
    ).is_success
    wait_for_ids(client, world.a.secret_key, {m["messageId"] for m in batch})
    period = "&start=2026-11-19T00:00:00Z&end=2026-11-21T00:00:00Z&resamples=200"
    auth = bearer(world.a.secret_key)
    variant = client.get(f"/v1/emotion/cohorts?by=variant{period}", headers=auth)
    assert variant.status_code == 200, variant.text
    groups = {g["group"]: g for g in variant.json()["groups"]}
    assert set(groups) == {"A", "B"}
    assert groups["A"]["count"] == 3
    assert groups["A"]["valence"]["mean"] > groups["B"]["valence"]["mean"]
    a = groups["A"]["valence"]
    assert a["lower"] <= a["mean"] <= a["upper"]
    assert groups["A"]["ekman_share"]["joy"]["mean"] == 1.0
    campaign = client.get(f"/v1/emotion/cohorts?by=campaign{period}", headers=auth).json()
    assert [(g["group"], g["count"]) for g in campaign["groups"]] == [("spring", 6)]
    by_time = client.get(f"/v1/emotion/cohorts?by=time&interval=hour{period}", headers=auth).json()
    assert [(g["group"], g["count"]) for g in by_time["groups"]] == [
        ("2026-11-20T10:00:00+00:00", 6)
    ]
    funnel = client.post(
        "/v1/funnels",
        json={"name": "Chat funnel", "steps": [{"event": "Viewed"}, {"event": "Chat"}]},
        headers=auth,
    ).json()
    steps = client.get(
        f"/v1/emotion/cohorts?by=step&funnel_id={funnel['id']}{period}", headers=auth
    )
    assert steps.status_code == 200, steps.text
    # Each chat happens after its visitor's view and is itself step 2.
    assert [(g["group"], g["count"]) for g in steps.json()["groups"]] == [("2. Chat", 6)]
    missing = client.get(f"/v1/emotion/cohorts?by=step{period}", headers=auth)
    assert missing.status_code == 422


def test_readings_a_client_sends_are_kept_apart_and_cannot_break_trajectories(
    client: TestClient, world: World
) -> None:
    spoof = {"valence": 1e300, "arousal": "inf", "dominance": None, "ekman": "rage"}
    batch = [
        {"type": "track", "event": "Viewed", "anonymousId": "spoof", "messageId": "s-0",
         "context": {"emotion": spoof}},
        _chat("spoof", 1, "I love this so much", 1),
    ]  # fmt: skip
    assert client.post(
        "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
    ).is_success
    items = wait_for_ids(client, world.a.secret_key, {"s-0", "spoof-1"})
    stored = {e["messageId"]: e for e in items}["s-0"]
    assert "emotion" not in stored["context"]
    assert stored["context"]["client_emotion"]["ekman"] == "rage"
    response = client.get("/v1/visitors/spoof/emotion", headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    assert [p["message_id"] for p in response.json()["history"]] == ["spoof-1"]
