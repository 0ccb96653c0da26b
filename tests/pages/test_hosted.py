"""Hosted funnels through the HTTP API, and their pages as a visitor's browser gets them."""

from __future__ import annotations

import copy
import html
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.pages import samples
from nexus.pages.render import contrast_ratio, css_tokens
from nexus.security import service as audit_service
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic

BOOTSTRAP = re.compile(
    r'<script type="application/json" id="nexus-bootstrap">(?P<json>.*?)</script>', re.S
)


@pytest.fixture
def secret(world: World) -> dict[str, str]:
    return bearer(world.a.secret_key)


def create_demo(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/hosted-funnels", json=samples.demo_funnel(), headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def bootstrap_of(page: str) -> dict[str, Any]:
    found = BOOTSTRAP.search(page)
    assert found is not None
    document: dict[str, Any] = json.loads(found["json"])
    return document


def test_create_read_and_the_analytics_funnel_that_measures_it(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    created = create_demo(client, secret)
    ws = world.a.id
    assert created["urls"] == [
        f"/f/{ws}/spring-sale/landing",
        f"/f/{ws}/spring-sale/offer",
        f"/f/{ws}/spring-sale/checkout",
    ]
    listed = client.get("/v1/hosted-funnels", headers=secret).json()["items"]
    assert [f["slug"] for f in listed] == ["spring-sale"]
    funnel = client.get(f"/v1/funnels/{created['analytics_funnel_id']}", headers=secret).json()
    assert [s["event"] for s in funnel["steps"]] == ["$page", "$page", "$page", "Order Completed"]
    assert funnel["steps"][1]["filters"] == [
        {"property": "properties.funnel", "op": "eq", "value": "spring-sale"},
        {"property": "properties.step", "op": "eq", "value": "offer"},
    ]
    # Another workspace sees nothing of it.
    other = client.get("/v1/hosted-funnels/spring-sale", headers=bearer(world.b.secret_key))
    assert other.status_code == 404
    assert other.headers["content-type"].startswith("application/problem+json")


def test_steps_are_added_replaced_moved_and_removed_with_audit(
    client: TestClient, secret: dict[str, str], database: Database, world: World
) -> None:
    create_demo(client, secret)
    page = {
        "title": "Thanks",
        "blocks": [
            {
                "id": "h",
                "kind": "headline",
                "variants": [{"key": "a", "content": {"text": "Thank you"}}],
            }
        ],
    }
    added = client.put(
        "/v1/hosted-funnels/spring-sale/steps/thanks", json={"page": page}, headers=secret
    )
    assert added.status_code == 201, added.text
    assert [s["slug"] for s in added.json()["steps"]] == ["landing", "offer", "checkout", "thanks"]
    moved = client.put(
        "/v1/hosted-funnels/spring-sale/steps/thanks",
        json={"page": {**page, "title": "Thank you"}, "position": 0},
        headers=secret,
    )
    assert moved.status_code == 200, moved.text
    steps = moved.json()["steps"]
    assert [s["slug"] for s in steps] == ["thanks", "landing", "offer", "checkout"]
    assert steps[0]["page"]["title"] == "Thank you"
    removed = client.delete("/v1/hosted-funnels/spring-sale/steps/thanks", headers=secret)
    assert [s["slug"] for s in removed.json()["steps"]] == ["landing", "offer", "checkout"]
    funnel_id = removed.json()["analytics_funnel_id"]
    funnel = client.get(f"/v1/funnels/{funnel_id}", headers=secret).json()
    assert len(funnel["steps"]) == 4
    with database.session() as db:
        audit = audit_service.list_entries(db, workspace_id=world.a.id, limit=1000)
    actions = [e.action for e in audit if e.action.startswith("page_funnel.")]
    assert all(e.actor != "system" for e in audit if e.action.startswith("page_funnel."))
    assert sorted(actions) == sorted(
        [
            "page_funnel.created",
            "page_funnel.step_created",
            "page_funnel.step_replaced",
            "page_funnel.step_deleted",
        ]
    )


def test_bad_documents_are_refused_whole_and_nothing_changes(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_demo(client, secret)
    before = client.get("/v1/hosted-funnels/spring-sale", headers=secret).json()
    evil = copy.deepcopy(samples.demo_funnel())
    evil["steps"][0]["page"]["blocks"][-1]["variants"][0]["content"]["href"] = "javascript:alert(1)"
    for body, fragment in (
        (evil, "https://"),
        ({**samples.demo_funnel(), "slug": "Bad Slug"}, "slug"),
        ({**samples.demo_funnel(), "steps": []}, "steps"),
    ):
        slug = body["slug"] if body["slug"] != "spring-sale" else "other"
        response = client.post("/v1/hosted-funnels", json={**body, "slug": slug}, headers=secret)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert fragment in response.text
    dup = client.post("/v1/hosted-funnels", json=samples.demo_funnel(), headers=secret)
    assert dup.status_code == 409
    two = samples.demo_funnel()
    two["steps"][1]["slug"] = "landing"
    replaced = client.put(
        "/v1/hosted-funnels/spring-sale",
        json={k: v for k, v in two.items() if k != "slug"},
        headers=secret,
    )
    assert replaced.status_code == 422
    assert "unique" in replaced.text
    last = client.delete("/v1/hosted-funnels/spring-sale/steps/nope", headers=secret)
    assert last.status_code == 404
    after = client.get("/v1/hosted-funnels/spring-sale", headers=secret).json()
    assert after == before
    viewer = client.post(
        "/v1/hosted-funnels",
        json={**samples.demo_funnel(), "slug": "x"},
        headers=bearer(world.a.read_only_key),
    )
    assert viewer.status_code == 403


def _setup_decisions(client: TestClient, secret: dict[str, str]) -> None:
    client.put("/v1/decision-settings", json={"burn_in": 0}, headers=secret)
    for adaptation in samples.demo_adaptations():
        response = client.post("/v1/adaptations", json=adaptation, headers=secret)
        assert response.status_code == 201, response.text
    experiment = client.post("/v1/experiments", json=samples.demo_experiment(), headers=secret)
    assert experiment.status_code == 201, experiment.text
    started = client.post(f"/v1/experiments/{samples.HEADLINE_EXPERIMENT}/start", headers=secret)
    assert started.status_code == 200, started.text


def test_a_visitor_gets_a_sticky_id_variant_and_a_safe_page(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_demo(client, secret)
    _setup_decisions(client, secret)
    url = f"/f/{world.a.id}/spring-sale/landing"
    first = client.get(url)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    visitor = first.cookies["nexus_aid"]
    assert visitor.startswith("anon_")
    boot = bootstrap_of(first.text)
    assert boot["visitorId"] == visitor
    assert boot["writeKey"] == world.a.write_key
    assert boot["page"]["properties"]["funnel"] == "spring-sale"
    assert boot["page"]["properties"]["step"] == "landing"
    variant = boot["experiment"]["variant"]
    assert variant in ("control", "urgency")
    headline = {"control": "Everything for your garden", "urgency": "48 hours only"}[variant]
    assert headline in first.text
    # CSP: scripts and styles only from this site or with this response's nonce.
    policy = first.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<script src="/sdk/nexus.js" nonce="{nonce[1]}" defer>' in first.text
    assert "unsafe-inline" not in policy
    # The same visitor, the same variant; the cookie is not set again.
    for _ in range(3):
        again = client.get(url)
        assert bootstrap_of(again.text)["experiment"]["variant"] == variant
        assert "set-cookie" not in again.headers
    # Not adapted to a struggling mood: the help block is in the page, hidden.
    assert boot["adaptation"]["key"] in ("neutral", "urgent")
    help_block = re.search(r'<section [^>]*data-nexus-block="help"[^>]*>', first.text)
    assert help_block is not None
    assert " hidden" in help_block[0]
    assert 'data-nexus-only-tones="calm reassuring"' in help_block[0]
    # Tone copy for the browser to switch in place.
    assert boot["tones"]["headline"]["calm"]["text"].startswith("Take your time")


def test_a_struggling_visitor_gets_the_calm_page_before_the_first_byte(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_demo(client, secret)
    _setup_decisions(client, secret)
    url = f"/f/{world.a.id}/spring-sale/offer"
    client.cookies.set("nexus_aid", "anon_struggling_visitor_1")
    confused = {"surprise": 0.5, "valence": -0.11, "dominant": "confusion"}
    decided = client.post(
        "/v1/decide",
        json={"visitor_id": "anon_struggling_visitor_1", "emotion": confused},
        headers=basic(world.a.write_key),
    )
    assert decided.json()["adaptation"]["key"] in ("calm", "reassuring")
    page = client.get(url)
    boot = bootstrap_of(page.text)
    key = boot["adaptation"]["key"]
    assert key in ("calm", "reassuring")
    assert f'<html lang="en" data-nexus-tone="{key}" data-nexus-adaptation="{key}">' in page.text
    tokens = samples.CALM_TOKENS if key == "calm" else samples.WARM_TOKENS
    style = re.search(r"<style nonce=\"[^\"]+\">(.*?)</style>", page.text)
    assert style is not None
    for name, value in tokens.items():
        assert f"{name}:{value};" in style[1]
    help_block = re.search(r'<section [^>]*data-nexus-block="help"[^>]*>', page.text)
    assert help_block is not None
    assert " hidden" not in help_block[0]
    if key == "calm":
        assert "Continue when you are ready" in page.text


def test_author_text_is_escaped_and_unsafe_tokens_never_reach_the_style(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    funnel = samples.demo_funnel()
    funnel["steps"][0]["page"]["blocks"][0]["variants"][0]["content"]["text"] = (
        "</script><script>alert(1)</script>"
    )
    funnel["steps"][0]["page"]["title"] = "A </script> title"
    assert client.post("/v1/hosted-funnels", json=funnel, headers=secret).status_code == 201
    client.post(
        "/v1/adaptations",
        json={
            "key": "evil",
            "tokens": {"--nexus-bg": "red;}</style><script>x()</script>", "--ok": "#fff"},
        },
        headers=secret,
    )
    page = client.get(f"/f/{world.a.id}/spring-sale/landing").text
    assert "<script>alert(1)</script>" not in page
    assert html.escape("</script><script>alert(1)</script>") in page
    assert "x()" not in page.split('id="nexus-bootstrap">')[0]
    assert "--ok:#fff;" in page
    boot = bootstrap_of(page)  # the JSON block still parses: nothing closed it early
    assert boot["page"]["name"] == "A </script> title"


def test_unknown_pages_are_404_pages_and_the_funnel_address_leads_to_step_one(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_demo(client, secret)
    ws = world.a.id
    for path in (
        f"/f/{ws}/spring-sale/nope",
        f"/f/{ws}/nope/landing",
        f"/f/{world.b.id}/spring-sale/landing",
        f"/f/{ws}/spring-sale/BAD%20STEP",
        "/f/not-a-workspace/spring-sale/landing",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Page not found" in response.text
    start = client.get(f"/f/{ws}/spring-sale", follow_redirects=False)
    assert start.status_code == 307
    assert start.headers["location"] == f"/f/{ws}/spring-sale/landing"


def test_a_change_through_the_api_shows_on_the_next_view(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_demo(client, secret)
    url = f"/f/{world.a.id}/spring-sale/checkout"
    assert "Almost done" in client.get(url).text
    page = samples.demo_funnel()["steps"][2]["page"]
    page["blocks"][0]["variants"][0]["content"]["text"] = "Nearly there"
    client.put("/v1/hosted-funnels/spring-sale/steps/checkout", json={"page": page}, headers=secret)
    assert "Nearly there" in client.get(url).text
    client.delete("/v1/hosted-funnels/spring-sale", headers=secret)
    assert client.get(url).status_code == 404


def test_the_palettes_meet_wcag_aa_and_tokens_are_filtered() -> None:
    css = (
        __import__("pathlib").Path(__file__).parents[2] / "src/nexus/web/static/hosted.css"
    ).read_text()
    defaults = dict(re.findall(r"(--nexus-[a-z-]+):\s*(#[0-9a-fA-F]{3,6})", css))
    for tokens in ({}, samples.CALM_TOKENS, samples.WARM_TOKENS):
        palette = {**defaults, **{k: v for k, v in tokens.items() if v.startswith("#")}}
        assert contrast_ratio(palette["--nexus-fg"], palette["--nexus-bg"]) >= 4.5
        assert contrast_ratio(palette["--nexus-fg"], palette["--nexus-surface"]) >= 4.5
        assert contrast_ratio(palette["--nexus-muted"], palette["--nexus-bg"]) >= 4.5
        assert contrast_ratio(palette["--nexus-accent-fg"], palette["--nexus-accent"]) >= 4.5
    assert contrast_ratio("#777777", "#ffffff") < 4.5  # the check has teeth
    assert css_tokens(
        {"accent": "#123456", "--x": "1px", "--y": "url(http://e)", "--z": "a;b"}
    ) == {
        "--nexus-accent": "#123456",
        "--x": "1px",
    }
