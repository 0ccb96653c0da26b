"""Guarded rollouts: a healthy rollout ramps to 100 %, an injected regression is rolled back
by the background worker on its own (with the reason, an event and a webhook), and a
regression confined to a segment rolls back only that segment."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.settings import Settings
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic, list_all
from tests.experiments.conftest import create_flag
from tests.experiments.test_decide import ANGRY, HAPPY, decide

GUARDRAIL = {"key": "errors", "kind": "count", "event": "Checkout Error", "direction": "decrease"}


def _traffic(
    client: TestClient,
    world: World,
    public: dict[str, str],
    prefix: str,
    visitors: int,
    *,
    broken: Callable[[dict[str, Any]], bool],
) -> dict[str, int]:
    """``visitors`` visitors (every third one angry) ask decide; those for whom ``broken``
    holds then hit one to three errors."""
    served: dict[str, int] = {}
    errors = []
    for i in range(visitors):
        visitor = f"{prefix}-{i}"
        emotion = ANGRY if i % 3 == 0 else HAPPY
        result = decide(client, public, visitor_id=visitor, emotion=emotion, adaptation=False)
        value = result["flags"]["new-checkout"]["variation"]
        served[value] = served.get(value, 0) + 1
        if broken(result):
            errors += [
                {
                    "type": "track",
                    "event": "Checkout Error",
                    "anonymousId": visitor,
                    "messageId": f"{visitor}-err-{j}",
                }
                for j in range(1 + (i // 3) % 3)
            ]
    for start in range(0, len(errors), 500):
        response = client.post(
            "/v1/batch",
            json={"batch": errors[start : start + 500]},
            headers=basic(world.a.write_key),
        )
        assert response.status_code == 200
    return served


def _rollout(client: TestClient, secret: dict[str, str], **plan: Any) -> dict[str, Any]:
    create_flag(client, secret, "new-checkout", fallthrough={"variation": "off"})
    body = {"variation": "on", "guardrails": [GUARDRAIL], **plan}
    response = client.post("/v1/flags/new-checkout/rollouts", json=body, headers=secret)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_a_healthy_rollout_ramps_to_everyone(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    rollout = _rollout(client, secret, stages=[20, 50, 100], min_visitors_per_stage=20)
    assert rollout["stage"] == 20
    served = _traffic(client, world, public, "a", 200, broken=lambda _: False)
    assert 20 <= served.get("on", 0) <= 70  # about 20 %
    step_worker(rollouts=True)
    assert client.get(f"/v1/rollouts/{rollout['id']}", headers=secret).json()["stage"] == 50
    _traffic(client, world, public, "b", 120, broken=lambda _: False)
    step_worker(rollouts=True)
    done = client.get(f"/v1/rollouts/{rollout['id']}", headers=secret).json()
    assert done["status"] == "completed"
    assert [h["action"] for h in done["history"]] == ["started", "advanced", "completed"]
    flag = client.get("/v1/flags/new-checkout", headers=secret).json()
    assert flag["fallthrough"] == {"variation": "on", "rollout": None}
    assert all(r["id"] != "rollout" for r in flag["rules"])
    assert decide(client, public, visitor_id="late")["flags"]["new-checkout"]["value"] is True
    actions = [
        c["action"]
        for c in client.get("/v1/flags/new-checkout/changes", headers=secret).json()["items"]
    ]
    assert actions == ["created", "rollout_started", "rollout_advanced", "rollout_completed"]


def test_a_segment_regression_rolls_back_only_that_segment(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    segment = {
        "key": "angry",
        "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
    }
    rollout = _rollout(
        client, secret, stages=[50, 100], min_visitors_per_stage=10_000, segments=[segment]
    )

    def broken_for_angry(result: dict[str, Any]) -> bool:
        return bool(
            result["flags"]["new-checkout"]["value"] and result["emotion"]["dominant"] == "anger"
        )

    _traffic(client, world, public, "s", 300, broken=broken_for_angry)
    step_worker(rollouts=True)
    state = client.get(f"/v1/rollouts/{rollout['id']}", headers=secret).json()
    assert state["status"] == "running"
    assert state["rolled_back_segments"] == ["angry"]
    assert "segment 'angry'" in state["history"][-1]["detail"]
    # Angry visitors now get control; everyone else still gets the rollout.
    angry = [decide(client, public, visitor_id=f"t-{i}", emotion=ANGRY) for i in range(40)]
    assert {a["flags"]["new-checkout"]["value"] for a in angry} == {False}
    calm = [decide(client, public, visitor_id=f"t-{i}", emotion=HAPPY) for i in range(40)]
    assert {c["flags"]["new-checkout"]["value"] for c in calm} == {False, True}


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/nexus", received
    server.shutdown()


def test_an_injected_regression_is_rolled_back_by_itself(
    settings: Settings,
    database: Database,
    world: World,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    """No manual step: the server's own worker checks every 0.2 s and rolls back."""
    fast = settings.model_copy(
        update={
            "rollout_check_interval": 0.2,
            "decide_learn_interval": 0.05,
            # The test's receiver listens on 127.0.0.1.
            "webhook_allow_private": True,
        }
    )
    url, received = webhook
    secret, public = bearer(world.a.secret_key), basic(world.a.write_key)
    with TestClient(create_app(fast, configure_logs=False)) as client:
        client.put("/v1/decision-settings", json={"webhook_url": url}, headers=secret)
        rollout = _rollout(client, secret, stages=[50, 100], min_visitors_per_stage=10_000)
        _traffic(
            client,
            world,
            public,
            "r",
            200,
            broken=lambda result: bool(result["flags"]["new-checkout"]["value"]),
        )
        deadline = time.monotonic() + 20
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = client.get(f"/v1/rollouts/{rollout['id']}", headers=secret).json()
            if state["status"] != "running":
                break
            time.sleep(0.1)
        assert state["status"] == "rolled_back"
        reason = state["history"][-1]["detail"]
        assert "guardrail 'errors' regressed overall" in reason
        # Everyone gets control again, and the audit trail says why.
        values = {
            decide(client, public, visitor_id=f"r-{i}")["flags"]["new-checkout"]["value"]
            for i in range(30)
        }
        assert values == {False}
        changes = client.get("/v1/flags/new-checkout/changes", headers=secret).json()["items"]
        assert changes[-1]["action"] == "rollout_rolled_back"
        assert changes[-1]["actor"] == "guarded-rollout"
        assert "errors" in changes[-1]["comment"]
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received
        assert received[0]["type"] == "rollout.rolled_back"
        assert received[0]["rollout_id"] == rollout["id"]
        deadline = time.monotonic() + 5
        events: list[dict[str, Any]] = []
        while not events and time.monotonic() < deadline:
            events = list_all(client, world.a.secret_key, event="$rollout_rolled_back")
            time.sleep(0.1)
        assert events
        assert events[0]["properties"]["reason"] == reason


def test_a_new_rollout_after_a_rollback_reaches_visitors(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    step_worker: Callable[..., None],
) -> None:
    first = _rollout(client, secret, stages=[50, 100])
    rolled = client.post(f"/v1/rollouts/{first['id']}/rollback", json={}, headers=secret)
    assert rolled.json()["status"] == "rolled_back"
    again = client.post(
        "/v1/flags/new-checkout/rollouts",
        json={"variation": "on", "stages": [50, 100], "guardrails": [GUARDRAIL]},
        headers=secret,
    )
    assert again.status_code == 201, again.text
    served = _traffic(client, world, public, "n", 60, broken=lambda _: False)
    assert served.get("on", 0) > 10
    rules = [r["id"] for r in client.get("/v1/flags/new-checkout", headers=secret).json()["rules"]]
    assert rules == ["rollout"]
