"""The dashboard's evolution page: campaigns, fitness per generation with intervals, the
genealogy, the controls (for those who may write) and the activity feed."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from nexus.workspaces.models import Role
from tests.conftest import World, bearer, login
from tests.evolution.test_campaigns import convert, start, step, visit


def test_a_campaign_is_shown_steered_and_explained(client: TestClient, world: World) -> None:
    secret = bearer(world.a.secret_key)
    start(client, secret)
    served = {aid: design for aid, design, _ in (visit(client, world) for _ in range(12))}
    convert(client, world, list(served)[:3])
    step(client, world)

    csrf = login(client, world.a.members[Role.ANALYST].email)
    page = client.get("/evolution")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="campaign-row"' in html
    assert 'data-status="running"' in html
    assert "Best design per generation, with its 95 % interval" in html  # the fitness chart
    assert 'data-testid="lineage"' in html  # the champion's genealogy
    genealogy = html[html.index('data-testid="genealogy"') :]
    assert "elite, kept" in genealogy or "child of" in genealogy  # the bred generation
    feed = html[html.index('data-testid="activity"') :]
    assert "Generation 1 of spring-sale/offer measured on 12 visitors" in feed

    paused = client.post(
        "/evolution/offer-page/action",
        data={"action": "pause", "comment": "campaign review", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert paused.status_code == 303
    assert paused.headers["location"] == "/evolution?campaign=offer-page"
    api: dict[str, Any] = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert api["status"] == "paused"
    html = client.get("/evolution?campaign=offer-page").text
    assert 'data-status="paused"' in html
    assert re.search(r"paused by [^;]+; visitors see the page as it is\. campaign review", html)

    refused = client.post(
        "/evolution/offer-page/action",
        data={"action": "explode", "csrf_token": csrf},
    )
    assert refused.status_code == 422
    unknown = client.get("/evolution?campaign=nope")
    assert unknown.status_code == 404


def test_a_viewer_sees_no_controls_and_is_refused(client: TestClient, world: World) -> None:
    start(client, bearer(world.a.secret_key))
    csrf = login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/evolution").text
    assert 'data-testid="campaign-actions"' not in html
    refused = client.post(
        "/evolution/offer-page/action", data={"action": "stop", "csrf_token": csrf}
    )
    assert refused.status_code == 403
    missing = client.post("/evolution/offer-page/action", data={"action": "stop"})
    assert missing.status_code == 403  # no CSRF token
