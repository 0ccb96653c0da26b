"""Adaptive flow on a hosted funnel: each visitor's next step is chosen when a step is
rendered, the page's links lead there, and the goal event teaches the funnel's adapter."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.evolution.flows import POLICY_PREFIX
from nexus.experiments import service as experiments
from nexus.pages import samples
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic

BOOTSTRAP = re.compile(r'<script type="application/json" id="nexus-bootstrap">(.*?)</script>', re.S)
NEXT_LINK = re.compile(r'href="/f/[^/]+/spring-sale/([a-z]+)"')


@pytest.fixture
def secret(world: World) -> dict[str, str]:
    return bearer(world.a.secret_key)


def adaptive_funnel() -> dict[str, Any]:
    funnel = samples.demo_funnel()
    funnel["steps"][1]["optional"] = True  # the offer page may be skipped
    guarantee = copy.deepcopy(funnel["steps"][1])
    guarantee["slug"] = "guarantee"
    guarantee["optional"] = False
    guarantee["page"] = {
        "title": "Our promise",
        "blocks": [
            {
                "id": "promise",
                "kind": "body",
                "variants": [{"key": "a", "content": {"text": "Free returns for 30 days."}}],
            },
            {
                "id": "next",
                "kind": "cta",
                "variants": [{"key": "a", "content": {"label": "Go on", "href": "./checkout"}}],
            },
        ],
    }
    funnel["steps"].append(guarantee)
    funnel["flow"] = {"adaptive": True, "reassurance": "guarantee"}
    return funnel


def view(client: TestClient, world: World, step: str, visitor: str | None) -> tuple[str, str]:
    """(visitor, where the page's "next" leads) for one view of a step."""
    client.cookies.clear()
    if visitor is not None:
        client.cookies.set("nexus_aid", visitor)
    page = client.get(f"/f/{world.a.id}/spring-sale/{step}")
    assert page.status_code == 200
    aid = visitor or page.cookies["nexus_aid"]
    client.cookies.clear()
    found = BOOTSTRAP.search(page.text)
    assert found is not None
    bootstrap = json.loads(found[1])
    # The call to action leads where the bootstrap says the visitor goes next.
    if step != "checkout":
        assert bootstrap["next"] in NEXT_LINK.findall(page.text)
    return aid, bootstrap["next"]


def test_each_visitors_path_is_adapted_and_the_goal_teaches_the_adapter(
    client: TestClient, secret: dict[str, str], world: World, database: Database
) -> None:
    created = client.post("/v1/hosted-funnels", json=adaptive_funnel(), headers=secret)
    assert created.status_code == 201, created.text
    # The analytics funnel leaves out the steps a visitor may not see.
    funnel = client.get(f"/v1/funnels/{created.json()['analytics_funnel_id']}", headers=secret)
    steps = [s["filters"][1]["value"] for s in funnel.json()["steps"][:-1]]
    assert steps == ["landing", "checkout"]

    chosen: dict[str, str] = {}
    for _ in range(24):
        aid, following = view(client, world, "landing", None)
        chosen[aid] = following
    # Every action valid at the landing page is tried: the offer, skipping it, reassurance.
    assert set(chosen.values()) == {"offer", "checkout", "guarantee"}

    # Visitors follow their path to the checkout; the reassured ones go on from the promise.
    finished = []
    for aid, following in chosen.items():
        step = following
        while step != "checkout":
            _, step = view(client, world, step, aid)
        view(client, world, "checkout", aid)
        finished.append(aid)
    # A visitor who lands mid-funnel is not adapted: the page's own link.
    _, following = view(client, world, "offer", "stranger-1234")
    assert following == "checkout"

    buyers = finished[:8]
    batch = [
        {"type": "track", "event": "Order Completed", "anonymousId": v, "messageId": f"o-{v}"}
        for v in buyers
    ]
    assert (
        client.post(
            "/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key)
        ).status_code
        == 200
    )
    app: Any = client.app
    assert client.portal is not None
    client.portal.call(app.state.evolution_worker.run_once)
    flows = app.state.designer.flows
    assert flows.stats.converted == len(buyers)
    live = flows.cached(world.a.id, "spring-sale")
    assert live is not None
    assert live.learnt >= len(buyers)  # every choice of a converted journey rewarded
    with database.session() as db:
        saved = experiments.load_bandit_state(
            db, workspace_id=world.a.id, name=POLICY_PREFIX + "spring-sale"
        )
    assert saved is not None
    assert saved["spec"]["reassurance"] == "guarantee"


def test_a_flow_must_name_its_own_steps(client: TestClient, secret: dict[str, str]) -> None:
    funnel = adaptive_funnel()
    funnel["flow"]["reassurance"] = "nowhere"
    response = client.post("/v1/hosted-funnels", json=funnel, headers=secret)
    assert response.status_code == 422
    assert "names no step" in response.text
