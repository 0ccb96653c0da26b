"""``POST /v1/decide``: flags targeted on the live emotion, sticky experiment assignment with
layers and holdouts, exposure and decision logging, and the adaptation bandit learning from
delayed rewards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import World, bearer
from tests.events.conftest import basic, list_all
from tests.experiments.conftest import create_flag

ANGRY = {"anger": 0.9, "disgust": 0.4, "valence": -0.7, "arousal": 0.6}
HAPPY = {"joy": 0.9, "trust": 0.5, "valence": 0.8, "arousal": 0.4}


def decide(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/decide", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def start_experiment(
    client: TestClient, headers: dict[str, str], key: str, **document: Any
) -> dict[str, Any]:
    created = client.post("/v1/experiments", json={"key": key, **document}, headers=headers)
    assert created.status_code == 201, created.text
    started = client.post(f"/v1/experiments/{key}/start", headers=headers)
    assert started.status_code == 200, started.text
    result: dict[str, Any] = started.json()
    return result


def test_flags_target_the_live_emotion(
    client: TestClient, secret: dict[str, str], public: dict[str, str]
) -> None:
    create_flag(
        client,
        secret,
        "calm-checkout",
        rules=[
            {
                "id": "upset",
                "clauses": [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}],
                "serve": {"variation": "on"},
            }
        ],
        fallthrough={"variation": "off"},
    )
    create_flag(
        client,
        secret,
        "anger-help",
        rules=[
            {
                "id": "angry",
                "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
                "serve": {"variation": "on"},
            }
        ],
        fallthrough={"variation": "off"},
    )
    angry = decide(client, public, visitor_id="v1", emotion=ANGRY)
    assert angry["emotion"]["dominant"] == "anger"
    assert angry["flags"]["calm-checkout"] == {
        "value": True,
        "variation": "on",
        "reason": "TARGETING_MATCH",
        "rule_id": "upset",
        "error_code": None,
    }
    assert angry["flags"]["anger-help"]["value"] is True
    happy = decide(client, public, visitor_id="v2", emotion=HAPPY)
    assert happy["flags"]["calm-checkout"]["value"] is False
    assert happy["flags"]["anger-help"]["value"] is False
    # Text is read by the edge model on the way in.
    written = decide(
        client,
        public,
        visitor_id="v3",
        text="This is outrageous, I am furious, your checkout keeps failing and I hate it!",
    )
    cheerful = decide(
        client, public, visitor_id="v4", text="I love this, thank you so much, wonderful!"
    )
    assert written["emotion"]["source"] == "edge"
    assert written["emotion"]["valence"] < 0 < cheerful["emotion"]["valence"]
    for result in (written, cheerful):
        upset = result["emotion"]["valence"] < -0.3
        assert result["flags"]["calm-checkout"]["value"] is upset
    # Without text or a reading, the visitor's last reading is reused.
    again = decide(client, public, visitor_id="v3")
    assert again["emotion"]["valence"] == written["emotion"]["valence"]
    # Only the flags asked for.
    subset = decide(client, public, visitor_id="v1", emotion=ANGRY, flags=["anger-help"])
    assert list(subset["flags"]) == ["anger-help"]


def test_assignment_is_sticky_and_layers_are_exclusive(
    client: TestClient, secret: dict[str, str], public: dict[str, str]
) -> None:
    first = start_experiment(client, secret, "price", traffic=50, layer="checkout")
    second = start_experiment(
        client,
        secret,
        "copy",
        traffic=50,
        layer="checkout",
        variants=[{"key": "a"}, {"key": "b"}, {"key": "c", "weight": 2}],
    )
    assert first["layer_range"] == [0.0, 0.5]
    assert second["layer_range"] == [0.5, 1.0]
    full = client.post(
        "/v1/experiments", json={"key": "third", "layer": "checkout"}, headers=secret
    )
    assert full.status_code == 201
    refused = client.post("/v1/experiments/third/start", headers=secret)
    assert refused.status_code == 409
    assert "free" in refused.json()["detail"]

    seen: dict[str, dict[str, Any]] = {}
    for i in range(600):
        result = decide(client, public, visitor_id=f"visitor-{i}", adaptation=False)
        assert len(result["experiments"]) == 1  # mutually exclusive, and the layer is full
        seen[f"visitor-{i}"] = result["experiments"]
    for i in range(0, 600, 7):  # same visitor, same answer
        again = decide(client, public, visitor_id=f"visitor-{i}", adaptation=False)
        assert again["experiments"] == seen[f"visitor-{i}"]
    per_experiment = Counter(next(iter(e)) for e in seen.values())
    assert 240 < per_experiment["price"] < 360
    copy_variants = Counter(e["copy"]["variant"] for e in seen.values() if "copy" in e)
    assert copy_variants["c"] > copy_variants["a"]
    propensities = {
        e["copy"]["variant"]: e["copy"]["propensity"] for e in seen.values() if "copy" in e
    }
    assert propensities == {"a": 0.25, "b": 0.25, "c": 0.5}


def test_holdout_visitors_get_no_experiment_or_adaptation(
    client: TestClient, secret: dict[str, str], public: dict[str, str]
) -> None:
    client.put("/v1/decision-settings", json={"holdout_percent": 20}, headers=secret)
    start_experiment(client, secret, "price")
    client.post("/v1/adaptations", json={"key": "calm", "tone": "calm"}, headers=secret)
    held = 0
    for i in range(400):
        result = decide(client, public, visitor_id=f"h-{i}")
        if result["holdout"]:
            held += 1
            assert result["experiments"] == {}
            assert result["adaptation"] is None
        else:
            assert "price" in result["experiments"]
            assert result["adaptation"]["key"] == "calm"
    assert 50 < held < 110


def test_exposures_are_logged_once_per_visitor(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    start_experiment(client, secret, "price")
    for _ in range(3):
        for visitor in ("x1", "x2"):
            decide(client, public, visitor_id=visitor, adaptation=False)
    step_worker()
    exposures = list_all(client, world.a.secret_key, event="$exposure")
    assert sorted(e["anonymousId"] for e in exposures) == ["x1", "x2"]
    assert {e["properties"]["experiment"] for e in exposures} == {"price"}
    assert all(e["properties"]["propensity"] == 0.5 for e in exposures)


def test_adaptation_bandit_learns_from_delayed_rewards(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    client.put(
        "/v1/decision-settings",
        json={"goal_event": "Order Completed", "goal_window_seconds": 600, "burn_in": 0},
        headers=secret,
    )
    for key, tone in (("calm", "calm"), ("urgent", "urgent")):
        response = client.post(
            "/v1/adaptations",
            json={
                "key": key,
                "tone": tone,
                "tokens": {"--accent": "#2a6" if key == "calm" else "#d22"},
                "copy": {"cta": "Take your time" if key == "calm" else "Only 3 left!"},
            },
            headers=secret,
        )
        assert response.status_code == 201, response.text
    first = decide(client, public, visitor_id="buyer", emotion=ANGRY)
    adaptation = first["adaptation"]
    assert adaptation["key"] in ("calm", "urgent")
    assert 0 < adaptation["propensity"] <= 1
    assert adaptation["copy"]["cta"] in ("Take your time", "Only 3 left!")
    decide(client, public, visitor_id="browser", emotion=HAPPY)
    policy = client.get("/v1/decision-policy", headers=secret).json()
    assert policy["pending_rewards"] == 2
    assert policy["updates"] == 0
    # The buyer converts: the reward arrives with the event, long before the window closes.
    sent = client.post(
        "/v1/track",
        json={"event": "Order Completed", "anonymousId": "buyer", "messageId": "order-1"},
        headers=basic(world.a.write_key),
    )
    assert sent.status_code == 200
    step_worker()
    policy = client.get("/v1/decision-policy", headers=secret).json()
    assert policy["updates"] == 1
    assert policy["pulls"][adaptation["key"]] == 1
    assert policy["pending_rewards"] == 1
    decisions = list_all(client, world.a.secret_key, event="$decision")
    assert {d["properties"]["decision_id"] for d in decisions} == {
        first["decision_id"],
        *(d["properties"]["decision_id"] for d in decisions),
    }
    logged = next(d for d in decisions if d["anonymousId"] == "buyer")["properties"]
    assert logged["arm"] == adaptation["key"]
    assert logged["propensity"] == adaptation["propensity"]
    assert len(logged["context"]) > 11  # bias + 11 emotion dimensions + missing flag


CONFUSED = {"surprise": 0.5, "trust": 0.2, "valence": -0.11, "dominant": "confusion"}
STRUGGLING = ["confusion", "annoyance", "anger", "disappointment", "nervousness"]


def test_emotion_triggers_choose_the_pool_and_the_reading_is_remembered(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    """Triggered adaptations serve the visitors whose emotion meets their trigger, the others
    draw from the untargeted ones; the browser's reading carries over to the next decision."""
    client.put("/v1/decision-settings", json={"burn_in": 0}, headers=secret)
    when = [{"attribute": "emotion.dominant", "op": "in", "value": STRUGGLING}]
    for body in (
        {"key": "calm", "tone": "calm", "when": when, "tokens": {"--nexus-accent": "#2f6f5e"}},
        {"key": "reassure", "tone": "reassuring", "when": when},
        {"key": "standard", "tone": "neutral"},
    ):
        response = client.post("/v1/adaptations", json=body, headers=secret)
        assert response.status_code == 201, response.text
    for i in range(40):
        calm = decide(client, public, visitor_id=f"fine-{i}")["adaptation"]
        assert (calm["key"], calm["propensity"]) == ("standard", 1.0)
    picked = set()
    for i in range(40):
        adaptation = decide(client, public, visitor_id=f"lost-{i}", emotion=CONFUSED)["adaptation"]
        assert adaptation["key"] in ("calm", "reassure")
        assert 0 < adaptation["propensity"] < 1
        picked.add(adaptation["key"])
        # No reading in this request: the remembered one still triggers.
        again = decide(client, public, visitor_id=f"lost-{i}")["adaptation"]
        assert again["key"] in ("calm", "reassure")
    assert picked == {"calm", "reassure"}
    step_worker()
    logged = [
        d["properties"]
        for d in list_all(client, world.a.secret_key, event="$decision")
        if d["anonymousId"] == "lost-0"
    ]
    assert logged
    assert all(p["pool"] == ["calm", "reassure"] for p in logged)
    assert all(p["probabilities"]["standard"] == 0.0 for p in logged)


def test_only_triggered_adaptations_leave_calm_visitors_unadapted(
    client: TestClient, secret: dict[str, str], public: dict[str, str]
) -> None:
    when = [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}]
    created = client.post(
        "/v1/adaptations", json={"key": "calm", "tone": "calm", "when": when}, headers=secret
    )
    assert created.status_code == 201, created.text
    assert created.json()["when"] == when
    assert decide(client, public, visitor_id="v1", emotion=HAPPY)["adaptation"] is None
    assert decide(client, public, visitor_id="v2", emotion=ANGRY)["adaptation"]["key"] == "calm"
    bad = client.post(
        "/v1/adaptations",
        json={"key": "x", "when": [{"attribute": "emotion.dominant", "op": "regex", "value": "("}]},
        headers=secret,
    )
    assert bad.status_code == 422, bad.text
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_decide_permissions_and_bad_input(
    client: TestClient, world: World, public: dict[str, str]
) -> None:
    assert client.post("/v1/decide", json={"visitor_id": "v"}, headers=public).status_code == 200
    read_only = client.post(
        "/v1/decide", json={"visitor_id": "v"}, headers=bearer(world.a.read_only_key)
    )
    assert read_only.status_code == 403
    anonymous = client.post("/v1/decide", json={"visitor_id": "v"})
    assert anonymous.status_code == 401
    bad = client.post(
        "/v1/decide", json={"visitor_id": "v", "emotion": {"anger": 7}}, headers=public
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_policy_settings_apply_at_once_and_bad_attributes_are_422(
    client: TestClient, secret: dict[str, str], public: dict[str, str]
) -> None:
    for key in ("calm", "urgent", "reassuring"):
        client.post("/v1/adaptations", json={"key": key}, headers=secret)
    client.put(
        "/v1/decision-settings",
        json={"burn_in": 0, "min_share": 0.05, "context_attributes": ["returning"]},
        headers=secret,
    )
    decide(client, public, visitor_id="warm", attributes={"returning": 1})
    # A floor above an equal share is capped at it (uniform), not an error for every visitor.
    client.put(
        "/v1/decision-settings",
        json={"burn_in": 0, "min_share": 0.5, "context_attributes": ["returning"]},
        headers=secret,
    )
    shares = decide(client, public, visitor_id="v", attributes={"returning": 1})["adaptation"]
    assert shares["propensity"] == pytest.approx(1 / 3)
    # A non-numeric value for a numeric context attribute is the caller's error.
    bad = client.post(
        "/v1/decide",
        json={"visitor_id": "v", "attributes": {"returning": "yes"}},
        headers=public,
    )
    assert bad.status_code == 422
    assert "returning" in bad.json()["detail"]


def test_holdout_membership_is_logged_for_everyone(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    client.put("/v1/decision-settings", json={"holdout_percent": 30}, headers=secret)
    held = {f"p-{i}": decide(client, public, visitor_id=f"p-{i}")["holdout"] for i in range(60)}
    step_worker()
    logged = {
        e["anonymousId"]: e["properties"]["variant"]
        for e in list_all(client, world.a.secret_key, event="$exposure")
        if e["properties"]["experiment"] == "$holdout"
    }
    assert logged == {v: "held_out" if h else "included" for v, h in held.items()}


def test_browsers_may_call_decide_and_ofrep_from_any_origin(
    client: TestClient, public: dict[str, str]
) -> None:
    for path in ("/v1/decide", "/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/x"):
        preflight = client.options(
            path,
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204, path
        assert preflight.headers["access-control-allow-origin"] == "*"
    answer = client.post("/v1/decide", json={"visitor_id": "v"}, headers=public)
    assert answer.headers["access-control-allow-origin"] == "*"


def test_a_periodic_reload_recompiles_only_when_the_configuration_changed(
    client: TestClient, secret: dict[str, str], public: dict[str, str], world: World
) -> None:
    """Decisions reload their configuration every few seconds (other processes may have
    changed it); a reload that reads what is already compiled keeps it, and one that reads a
    change serves the change."""
    create_flag(client, secret, "banner", fallthrough={"variation": "off"})
    assert decide(client, public, visitor_id="v1")["flags"]["banner"]["variation"] == "off"
    app: Any = client.app
    runtime = app.state.decisions
    compiled = runtime.compiled(world.a.id)
    runtime.invalidate(world.a.id)  # stale, as a periodic refresh finds it
    kept = runtime.reload(world.a.id)
    assert kept is compiled
    assert kept.loaded_at > float("-inf")
    assert not runtime.needs_load(world.a.id)

    patched = client.patch(
        "/v1/flags/banner", json={"fallthrough": {"variation": "on"}}, headers=secret
    )
    assert patched.status_code == 200, patched.text
    changed = runtime.reload(world.a.id)
    assert changed is not compiled
    assert changed.fingerprint != compiled.fingerprint
    assert decide(client, public, visitor_id="v1")["flags"]["banner"]["variation"] == "on"
