"""Funnel health in production: buckets built from stored page views, a regression in one
variant found by the monitor worker, told in the activity feed and on the webhook, and --
when the workspace allows it -- the promoted design it blames rolled back."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nexus.core.settings import Settings
from nexus.evolution import health
from nexus.evolution.samples import demo_campaign
from nexus.pages import samples
from nexus.pages.models import HostedFunnelBody
from nexus.security import service as audit_service
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic

US = 1_000_000
FUNNEL = "spring-sale"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No background pass: the tests step the monitor themselves."""
    return settings.model_copy(update={"health_interval": 0.0})


@pytest.fixture
def secret(world: World) -> dict[str, str]:
    return bearer(world.a.secret_key)


# --- buckets from views ---------------------------------------------------------------------


def _views(rows: list[tuple[int, float, int, str | None]]) -> health.Views:
    """(person, seconds, step, variant) rows, sorted as the store sorts them."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    return health.Views(
        person=np.asarray([r[0] for r in rows], dtype=np.int64),
        ts=np.asarray([round(r[1] * US) for r in rows], dtype=np.int64),
        step=np.asarray([r[2] for r in rows], dtype=np.int64),
        dims={"variant": [r[3] for r in rows], "adaptation": [None] * len(rows)},
    )


def _marks(rows: list[tuple[int, float]], scores: list[float] | None = None) -> health.Marks:
    return health.Marks(
        person=np.asarray([r[0] for r in rows], dtype=np.int64),
        ts=np.asarray([round(r[1] * US) for r in rows], dtype=np.int64),
        score=np.asarray(scores if scores is not None else [], dtype=np.float64),
    )


def test_buckets_count_entries_moves_time_and_frustration_per_variant() -> None:
    views = _views(
        [
            (1, 10.0, 0, "B"),  # enters, reloads, moves on after 50 s
            (1, 30.0, 0, "B"),
            (1, 60.0, 1, None),
            (2, 20.0, 0, None),  # the page as it is: leaves
            (3, 250.0, 0, "B"),  # moves on too late (after the 600 s window)
            (3, 900.0, 1, None),
            (4, -100.0, 0, "B"),  # entered before the range: not counted again
            (4, 40.0, 0, "B"),
            (5, 100.0, 1, None),  # the last step: moves on with the goal event
        ]
    )
    buckets = health.build_buckets(
        steps=("offer", "checkout"),
        views=views,
        goals=_marks([(5, 130.0)]),
        readings=_marks([(1, 15.0), (1, 25.0), (3, 260.0), (2, 5.0)], [0.2, 0.4, 0.9, 1.0]),
        start_us=0,
        end_us=300 * US,
        bucket_seconds=300,
        window_seconds=600,
    )
    by = {(b.step, tuple(sorted(b.dims.items()))): b for b in buckets}
    assert set(by) == {
        ("offer", (("variant", "B"),)),
        ("offer", (("variant", "original"),)),
        ("checkout", ()),
    }
    b = by[("offer", (("variant", "B"),))]
    assert (b.start, b.entered, b.advanced) == (0.0, 2, 1)
    # Who did not move on counts at the mean time of the step's visitors who did: 50 s.
    assert b.seconds == pytest.approx(100.0)
    # Visitor 1's readings during the visit (mean 0.3), visitor 3's (0.9).
    assert b.frustration_n == 2
    assert b.frustration_sum == pytest.approx(1.2)
    original = by[("offer", (("variant", "original"),))]
    assert (original.entered, original.advanced, original.seconds) == (1, 0, 50.0)
    assert original.frustration_n == 0  # its reading came before it entered
    checkout = by[("checkout", ())]
    assert (checkout.entered, checkout.advanced, checkout.seconds) == (2, 1, 60.0)


def test_frustration_is_the_stronger_of_anger_and_disgust_or_negative_valence() -> None:
    plutchik = np.asarray([[0.5, 0.7], [0.1, 0.0], [np.nan, np.nan], [np.nan, np.nan]])
    valence = np.asarray([0.2, -0.6, -0.3, np.nan])
    scores = health.frustration(plutchik, valence)
    assert scores[:3] == pytest.approx([1.0, 0.6, 0.3])
    assert math.isnan(scores[3])


def test_with_adaptive_flow_group_swaps_and_reassurance_are_moves_on() -> None:
    body = samples.demo_funnel()
    del body["slug"]
    body["steps"][1]["group"] = body["steps"][2]["group"] = "buy"
    body["steps"].append({"slug": "guarantee", "page": body["steps"][1]["page"]})
    body["flow"] = {"adaptive": True, "reassurance": "guarantee"}
    forward = health.forward_steps(HostedFunnelBody.model_validate(body))
    assert forward[0] == frozenset({1, 2, 3})
    assert forward[2] == frozenset({1, 3})  # checkout may come before the offer
    assert forward[3] == frozenset()


# --- settings -------------------------------------------------------------------------------


def test_monitoring_settings_default_change_audited_and_refuse_nonsense(
    client: TestClient, secret: dict[str, str], world: World, database: Database
) -> None:
    got = client.get("/v1/evolution/monitoring", headers=secret)
    assert got.status_code == 200
    assert got.json() == {
        "enabled": True,
        "automatic_rollback": False,
        "false_alarms_per_day": 0.2,
        "bucket_seconds": 300,
        "advance_window_seconds": 600,
        "updated_at": None,
    }
    put = client.put("/v1/evolution/monitoring", json={"automatic_rollback": True}, headers=secret)
    assert put.status_code == 200, put.text
    assert put.json()["automatic_rollback"] is True
    assert put.json()["updated_at"] is not None
    with database.session() as db:
        entries = audit_service.list_entries(db, workspace_id=world.a.id, limit=1000)
    changed = [e for e in entries if e.action == "evolution.monitoring_updated"]
    assert changed[-1].details["changed"] == {"automatic_rollback": {"from": False, "to": True}}
    bad = client.put("/v1/evolution/monitoring", json={"bucket_seconds": 5}, headers=secret)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    other = client.get("/v1/evolution/monitoring", headers=bearer(world.b.secret_key))
    assert other.json()["automatic_rollback"] is False  # another workspace's own settings
    assert client.get("/v1/evolution/alerts", headers=secret).json() == []


# --- the worker on stored events ------------------------------------------------------------


def _promote(client: TestClient, secret: dict[str, str]) -> dict[str, Any]:
    """The demo funnel, with an evolution campaign promoting one of its designs."""
    assert client.post("/v1/hosted-funnels", json=samples.demo_funnel(), headers=secret)
    campaign = demo_campaign(seed=11)
    campaign["settings"] = {"population": 4, "elite": 1, "visitors_per_generation": 12}
    created = client.post("/v1/evolution/campaigns", json=campaign, headers=secret)
    assert created.status_code == 201, created.text
    generations = client.get(
        "/v1/evolution/campaigns/offer-page/generations", headers=secret
    ).json()
    design = generations[0]["designs"][0]["key"]
    promoted = client.post(
        "/v1/evolution/campaigns/offer-page/promote", json={"design": design}, headers=secret
    )
    assert promoted.status_code == 200, promoted.text
    body: dict[str, Any] = promoted.json()
    assert body["status"] == "promoting"
    return {"design": design, "rollout_id": body["rollout_id"]}


def _traffic(design: str, start: float, buckets: int, regression_from: int) -> list[dict[str, Any]]:
    """24 visitors per 5 minutes enter the offer step, half of them served ``design``; half
    move on to checkout and 60 % of those order -- until ``regression_from``, after which
    only 10 % of the design's visitors move on."""
    rng = random.Random(5)
    events: list[dict[str, Any]] = []

    def page(visitor: str, step: str, at: float, **extra: str) -> None:
        events.append(
            {
                "type": "page",
                "name": step,
                "anonymousId": visitor,
                "messageId": f"{visitor}-{step}",
                "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
                "properties": {"funnel": FUNNEL, "step": step, **extra},
            }
        )

    for k in range(buckets):
        for i in range(24):
            visitor = f"v{k}-{i}"
            at = start + k * 300 + rng.uniform(0, 299)
            designed = i % 2 == 0
            extra = {"campaign": "offer-page", "design": design} if designed else {}
            page(visitor, "offer", at, **extra)
            rate = 0.1 if designed and k >= regression_from else 0.5
            if rng.random() < rate:
                at += rng.uniform(20, 120)
                page(visitor, "checkout", at)
                if rng.random() < 0.6:
                    events.append(
                        {
                            "type": "track",
                            "event": "Order Completed",
                            "anonymousId": visitor,
                            "messageId": f"{visitor}-order",
                            "timestamp": datetime.fromtimestamp(
                                at + rng.uniform(30, 200), UTC
                            ).isoformat(),
                        }
                    )
    return events


def _send(client: TestClient, world: World, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 400):
        response = client.post(
            "/v1/batch", json={"batch": events[i : i + 400]}, headers=basic(world.a.write_key)
        )
        assert response.status_code == 200, response.text


def _check(client: TestClient) -> int:
    app: Any = client.app
    assert client.portal is not None
    raised: int = client.portal.call(app.state.health_worker.run_once)
    return raised


def test_a_regression_in_one_variant_is_alerted_and_its_design_rolled_back(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    promoted = _promote(client, secret)
    design = promoted["design"]
    # Four hours of traffic ending an hour ago; the design's visitors stop moving on in
    # the last hour.
    start = (int(datetime.now(UTC).timestamp()) // 300) * 300 - 5 * 3600
    _send(client, world, _traffic(design, start, buckets=48, regression_from=36))

    assert _check(client) == 1
    feed = client.get("/v1/evolution/activity", headers=secret).json()["items"]
    alert = feed[0]
    assert alert["kind"] == "alert"
    assert alert["campaign"] == "offer-page"
    assert alert["message"].startswith("spring-sale: Offer conversion")
    assert f"variant {design}" in alert["message"]
    details = alert["details"]
    assert (details["funnel"], details["step"], details["status"]) == (FUNNEL, "offer", "open")
    assert details["culprit"]["dim"] == "variant"
    assert details["culprit"]["value"] == design
    since = datetime.fromisoformat(details["since"]).timestamp()
    assert start + 36 * 300 - 1800 <= since <= start + 40 * 300  # when the drop began
    app: Any = client.app
    notices = app.state.health_worker.notices
    assert notices[0]["type"] == "funnel.alert"
    assert (notices[0]["step"], notices[0]["variant"]) == ("offer", design)
    # Automatic rollback is off: the campaign goes on.
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert campaign["status"] == "promoting"

    alerts = client.get("/v1/evolution/alerts", headers=secret).json()
    assert [f["funnel"] for f in alerts] == [FUNNEL]
    assert [a["step"] for a in alerts[0]["open"]] == ["offer"]
    assert alerts[0]["open"][0]["explanation"] == alert["message"]
    assert alerts[0]["open"][0]["action"] is None

    # Turned on, the open alert rolls back the design it blames, guarded rollout included.
    client.put("/v1/evolution/monitoring", json={"automatic_rollback": True}, headers=secret)
    assert _check(client) == 0  # nothing new: the buckets were all judged
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert campaign["status"] == "rolled_back"
    rollout = client.get(f"/v1/rollouts/{promoted['rollout_id']}", headers=secret).json()
    assert rollout["status"] == "rolled_back"
    feed = client.get("/v1/evolution/activity", headers=secret).json()["items"]
    assert feed[0]["kind"] == "rolled_back"
    assert "funnel-monitor" in feed[0]["message"]
    assert notices[-1]["type"] == "funnel.rolled_back"
    assert notices[-1]["rollout_id"] == promoted["rollout_id"]
    opened = client.get("/v1/evolution/alerts", headers=secret).json()[0]["open"][0]
    assert opened["action"]["kind"] == "rolled_back"
    assert opened["action"]["design"] == design

    # A restarted monitor replays the same events and writes no alert twice.
    app.state.health_worker._watches.clear()
    assert _check(client) == 0
    kinds = [
        a["kind"] for a in client.get("/v1/evolution/activity", headers=secret).json()["items"]
    ]
    assert kinds.count("alert") == 1
