"""Evolution campaigns end to end: through the API, on the hosted page a visitor gets, with
fitness counted from the events visitors send, bred by the worker, promoted through a
guarded rollout, steered and explained in the activity feed and the audit chain."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from nexus.api.app import create_app
from nexus.core.settings import Settings
from nexus.evolution.samples import demo_campaign
from nexus.pages import samples
from nexus.security import service as audit_service
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic

HEADLINES = demo_campaign()["genes"][0]["values"]
DESIGN = re.compile(r'"design":"(d-[0-9-]+)"')


@pytest.fixture
def secret(world: World) -> dict[str, str]:
    return bearer(world.a.secret_key)


def small_campaign(**settings: Any) -> dict[str, Any]:
    document = demo_campaign(seed=11)
    document["settings"] = {
        "population": 4,
        "elite": 1,
        "visitors_per_generation": 12,
        "generations": 2,
        "identification_visitors": 8,
        "identification_candidates": 2,
        **settings,
    }
    return document


def start(client: TestClient, secret: dict[str, str], **settings: Any) -> dict[str, Any]:
    response = client.post("/v1/hosted-funnels", json=samples.demo_funnel(), headers=secret)
    assert response.status_code == 201, response.text
    response = client.post(
        "/v1/evolution/campaigns", json=small_campaign(**settings), headers=secret
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def visit(client: TestClient, world: World, visitor: str | None = None) -> tuple[str, str, str]:
    """One page view of the offer step: (visitor id, design key or "", html)."""
    if visitor is not None:
        client.cookies.set("nexus_aid", visitor)
    else:
        client.cookies.clear()
    page = client.get(f"/f/{world.a.id}/spring-sale/offer")
    assert page.status_code == 200
    aid = visitor or page.cookies["nexus_aid"]
    client.cookies.clear()
    found = DESIGN.search(page.text)
    return aid, found[1] if found else "", page.text


def convert(client: TestClient, world: World, visitors: list[str]) -> None:
    batch = [
        {"type": "track", "event": "Order Completed", "anonymousId": v, "messageId": f"o-{v}"}
        for v in visitors
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key))
    assert response.status_code == 200, response.text


def step(client: TestClient, world: World) -> int:
    app: Any = client.app
    assert client.portal is not None
    changed: int = client.portal.call(app.state.evolution_worker.run_once)
    app.state.designer.invalidate(world.a.id)
    return changed


def test_a_campaign_serves_designs_counts_real_conversions_and_breeds(
    client: TestClient, secret: dict[str, str], world: World, database: Database
) -> None:
    created = start(client, secret)
    assert created["status"] == "running"
    assert created["phase"] == "search"
    assert created["space_size"] == 4 * 3 * 2 * 2 * 3
    first = client.get("/v1/evolution/campaigns/offer-page/generations", headers=secret).json()
    population = {d["key"] for d in first[0]["designs"]}
    assert len(population) == 4

    served: dict[str, str] = {}
    for _ in range(12):
        aid, design, html = visit(client, world)
        assert design in population
        values = next(d["values"] for d in first[0]["designs"] if d["key"] == design)
        assert values["headline"] in html  # the design's copy is what the visitor reads
        served[aid] = design
    # A returning visitor keeps the design (sticky within the generation).
    again = next(iter(served))
    assert visit(client, world, again)[1] == served[again]

    # The visitors of one design convert; the worker counts them from stored events.
    favourite = Counter(served.values()).most_common(1)[0][0]
    buyers = [v for v, d in served.items() if d == favourite]
    convert(client, world, buyers)
    assert step(client, world) == 1
    generations = client.get(
        "/v1/evolution/campaigns/offer-page/generations", headers=secret
    ).json()
    measured = {d["key"]: d for d in generations[0]["designs"]}
    assert generations[0]["visitors"] == 12
    assert sum(d["visitors"] for d in measured.values()) == 12
    assert measured[favourite]["conversions"] == len(buyers)
    assert generations[0]["best"]["key"] == favourite
    assert len(generations) == 2  # the next generation is bred
    assert favourite in {d["key"] for d in generations[1]["designs"]}  # elitism
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    lineage = campaign["champions"][0]["lineage"]
    # The champion's genealogy, newest first, back to the generation it was drawn in.
    assert lineage[-1]["generation"] == 0
    assert lineage[-1]["parents"] == []
    assert [a["generation"] for a in lineage] == sorted(
        (a["generation"] for a in lineage), reverse=True
    )
    assert generations[1]["designs"][0]["visitors"] == 0

    feed = client.get("/v1/evolution/activity", headers=secret).json()["items"]
    assert [a["kind"] for a in feed[:2]] == ["generation", "started"]
    assert f"best {favourite} converted {len(buyers)}/" in feed[0]["message"]
    with database.session() as db:
        actions = [
            e.action for e in audit_service.list_entries(db, workspace_id=world.a.id, limit=1000)
        ]
    assert "evolution.started" in actions
    assert "evolution.generation" in actions


def test_identification_then_promotion_through_a_guarded_rollout_and_rollback(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret, generations=1, visitors_per_generation=8)
    served = {aid: design for aid, design, _ in (visit(client, world) for _ in range(8))}
    convert(client, world, [v for v, d in served.items() if d == sorted(served.values())[0]])
    step(client, world)
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert campaign["status"] == "identifying"
    assert campaign["phase"] == "identify"
    served = {aid: design for aid, design, _ in (visit(client, world) for _ in range(8))}
    assert len(set(served.values())) <= 2  # only the candidates are served now
    step(client, world)
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert campaign["status"] == "identified"
    champion = campaign["champions"][0]
    assert champion["segment"] == "*"
    assert 0 < champion["probability_best"] <= 1
    # Identified, not promoted: visitors see the page as it is, and nothing is exposed.
    _, design, html = visit(client, world)
    assert design == ""
    assert "Pick your bundle" in html

    promoted = client.post(
        "/v1/evolution/campaigns/offer-page/promote", json={"comment": "ship it"}, headers=secret
    )
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["status"] == "promoting"
    assert body["flag_key"] == "evolution-offer-page"
    rollout = client.get(f"/v1/rollouts/{body['rollout_id']}", headers=secret).json()
    assert rollout["variation"] == "champion"
    assert rollout["status"] == "running"
    seen = Counter(visit(client, world)[1] for _ in range(40))
    # The first stage serves the champion to some visitors and the page as it is to others.
    assert set(seen) == {champion["design"]["key"], ""}

    rolled = client.post(
        "/v1/evolution/campaigns/offer-page/rollback", json={"comment": "not now"}, headers=secret
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["status"] == "rolled_back"
    assert {visit(client, world)[1] for _ in range(10)} == {""}
    rollout = client.get(f"/v1/rollouts/{body['rollout_id']}", headers=secret).json()
    assert rollout["status"] == "rolled_back"
    kinds = [
        a["kind"] for a in client.get("/v1/evolution/activity", headers=secret).json()["items"]
    ]
    assert kinds[:3] == ["rolled_back", "promoting", "identified"]


def test_pause_pin_copy_approval_and_stop(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret)
    base = "/v1/evolution/campaigns/offer-page"
    paused = client.post(f"{base}/pause", json={"comment": "sale ends"}, headers=secret)
    assert paused.json()["status"] == "paused"
    _, design, html = visit(client, world)
    assert design == ""
    assert "Pick your bundle" in html
    assert client.post(f"{base}/pause", json={}, headers=secret).status_code == 409
    assert client.post(f"{base}/resume", json={}, headers=secret).json()["status"] == "running"

    pinned = client.post(f"{base}/pin", json={"gene": "theme", "value": "earth"}, headers=secret)
    assert pinned.status_code == 200, pinned.text
    generations = client.get(f"{base}/generations", headers=secret).json()
    assert {d["values"]["theme"] for d in generations[-1]["designs"]} == {"earth"}
    _, design, html = visit(client, world)
    assert "#8a4b12" in html  # the pinned theme's accent colour
    bad = client.post(f"{base}/pin", json={"gene": "theme", "value": "pink"}, headers=secret)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")

    proposed = client.post(
        f"{base}/candidates",
        json={"gene": "headline", "texts": ["Bundles that grow with you"]},
        headers=secret,
    )
    assert proposed.status_code == 201, proposed.text
    assert proposed.json()[0]["status"] == "approved"
    campaign = client.get(base, headers=secret).json()
    headline = next(g for g in campaign["genes"] if g["name"] == "headline")
    assert headline["values"][-1] == "Bundles that grow with you"
    too_long = client.post(
        f"{base}/candidates", json={"gene": "headline", "texts": ["x" * 300]}, headers=secret
    )
    assert too_long.status_code == 422

    stopped = client.post(f"{base}/stop", json={}, headers=secret)
    assert stopped.json()["status"] == "stopped"
    assert visit(client, world)[1] == ""
    assert client.post(f"{base}/promote", json={}, headers=secret).status_code == 409


def test_bad_campaigns_are_refused_with_problems(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret)
    again = client.post("/v1/evolution/campaigns", json=small_campaign(), headers=secret)
    assert again.status_code == 409
    other = small_campaign()
    other["key"] = "another"
    busy = client.post("/v1/evolution/campaigns", json=other, headers=secret)
    assert busy.status_code == 409
    assert "already evolves" in busy.json()["detail"]
    missing = copy.deepcopy(other)
    missing["funnel"] = "nope"
    assert client.post("/v1/evolution/campaigns", json=missing, headers=secret).status_code == 404
    wrong = copy.deepcopy(other)
    wrong["step"] = "checkout"
    response = client.post("/v1/evolution/campaigns", json=wrong, headers=secret)
    assert response.status_code == 422
    assert "no block" in response.json()["detail"]
    invalid = copy.deepcopy(other)
    invalid["settings"]["elite"] = 9
    response = client.post("/v1/evolution/campaigns", json=invalid, headers=secret)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/evolution/campaigns/nope", headers=secret).status_code == 404
    # Another workspace sees nothing of it.
    assert (
        client.get(
            "/v1/evolution/campaigns/offer-page", headers=bearer(world.b.secret_key)
        ).status_code
        == 404
    )


PHRASES = {
    "slots": {
        "headline.opener": [
            "Your garden",
            {"text": "Relax, your garden", "tones": ["reassuring"]},
            {"text": "Hurry, your garden", "tones": ["urgent"]},
        ],
        "headline.benefit": [
            "in one box",
            {"text": "with free returns", "tones": ["reassuring"]},
            {"text": "before the sale ends", "tones": ["urgent"]},
        ],
    },
    "templates": {"headline": ["{opener} {benefit}"]},
}


class _Copywriter(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat completions endpoint that writes two headlines."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"auth": self.headers.get("Authorization"), **body})
        answer = {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": '["A calmer spring garden", "Spring, sorted, no stress"]',
                    },
                    "finish_reason": "stop",
                }
            ]
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_copy_from_the_phrase_grammar_and_a_generator_waits_for_approval(
    settings: Settings, database: Database, world: World
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Copywriter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configured = settings.model_copy(
        update={
            "copy_generator_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
            "copy_generator_model": "writer-1",
            "copy_generator_api_key": SecretStr("sk-test-123"),
        }
    )
    secret = bearer(world.a.secret_key)
    try:
        with TestClient(create_app(configured, configure_logs=False)) as client:
            client.post("/v1/hosted-funnels", json=samples.demo_funnel(), headers=secret)
            document = {**small_campaign(), "phrases": PHRASES, "product": "garden bundles"}
            created = client.post("/v1/evolution/campaigns", json=document, headers=secret)
            assert created.status_code == 201, created.text
            base = "/v1/evolution/campaigns/offer-page"
            grammar = client.post(
                f"{base}/candidates",
                json={"gene": "headline", "source": "grammar", "segment": "anxious", "count": 3},
                headers=secret,
            )
            assert grammar.status_code == 201, grammar.text
            made = grammar.json()
            # Anxious visitors are reassured: every text carries the reassuring phrases.
            assert made
            assert {c["tone"] for c in made} == {"reassuring"}
            assert all("Relax" in c["text"] or "free returns" in c["text"] for c in made)
            assert {c["status"] for c in made} == {"approved"}

            written = client.post(
                f"{base}/candidates",
                json={"gene": "headline", "source": "generator", "tone": "empathetic", "count": 2},
                headers=secret,
            )
            assert written.status_code == 201, written.text
            pending = written.json()
            assert [c["text"] for c in pending] == [
                "A calmer spring garden",
                "Spring, sorted, no stress",
            ]
            assert {c["status"] for c in pending} == {"pending"}
            asked = _Copywriter.seen[-1]
            assert asked["auth"] == "Bearer sk-test-123"
            assert asked["model"] == "writer-1"
            campaign = client.get(base, headers=secret).json()
            headline = next(g for g in campaign["genes"] if g["name"] == "headline")
            assert "A calmer spring garden" not in headline["values"]  # not before approval
            approved = client.post(
                f"{base}/candidates/{pending[0]['id']}/approve", json={}, headers=secret
            )
            assert approved.json()["status"] == "approved"
            rejected = client.post(
                f"{base}/candidates/{pending[1]['id']}/reject", json={}, headers=secret
            )
            assert rejected.json()["status"] == "rejected"
            again = client.post(
                f"{base}/candidates/{pending[1]['id']}/approve", json={}, headers=secret
            )
            assert again.status_code == 409
            campaign = client.get(base, headers=secret).json()
            headline = next(g for g in campaign["genes"] if g["name"] == "headline")
            assert "A calmer spring garden" in headline["values"]
            assert "Spring, sorted, no stress" not in headline["values"]
            bad = client.post(
                f"{base}/candidates", json={"gene": "headline", "source": "grammar"}, headers=secret
            )
            assert bad.status_code == 422  # no tone, no segment
    finally:
        server.shutdown()


def test_without_a_generator_configured_it_is_refused(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret)
    response = client.post(
        "/v1/evolution/campaigns/offer-page/candidates",
        json={"gene": "headline", "source": "generator", "tone": "formal"},
        headers=secret,
    )
    assert response.status_code == 409
    assert "NEXUS_COPY_GENERATOR_URL" in response.json()["detail"]
    grammar = client.post(
        "/v1/evolution/campaigns/offer-page/candidates",
        json={"gene": "headline", "source": "grammar", "tone": "formal"},
        headers=secret,
    )
    assert grammar.status_code == 409  # no phrase library on this campaign


def test_segmented_fitness_counts_and_promotes_per_emotional_segment(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret, segmented=True, generations=1, visitors_per_generation=8)
    public = basic(world.a.write_key)
    angry = {"anger": 0.9, "disgust": 0.3, "valence": -0.7, "arousal": 0.8}
    happy = {"joy": 0.9, "anticipation": 0.5, "valence": 0.8, "arousal": 0.5}
    moods = {}
    for index in range(8):
        visitor = f"visitor-{index:04d}"
        mood = angry if index % 2 else happy
        decided = client.post(
            "/v1/decide", json={"visitor_id": visitor, "emotion": mood}, headers=public
        )
        assert decided.status_code == 200, decided.text
        moods[visitor] = (
            "frustrated" if index % 2 else "excited",
            visit(client, world, visitor)[1],
        )
    # Each segment's visitors of one design convert: the frustrated ones of the design the
    # first frustrated visitor saw, the excited ones of another.
    frustrated_pick = next(d for s, d in moods.values() if s == "frustrated")
    buyers = [v for v, (s, d) in moods.items() if s == "frustrated" and d == frustrated_pick]
    convert(client, world, buyers)
    step(client, world)
    generations = client.get(
        "/v1/evolution/campaigns/offer-page/generations",
        params={"segment": "frustrated"},
        headers=secret,
    ).json()
    counted = {d["key"]: d for d in generations[0]["designs"]}
    assert sum(d["visitors"] for d in counted.values()) == 4  # only the frustrated visitors
    assert counted[frustrated_pick]["conversions"] == len(buyers)
    excited = client.get(
        "/v1/evolution/campaigns/offer-page/generations",
        params={"segment": "excited"},
        headers=secret,
    ).json()
    assert sum(d["conversions"] for d in excited[0]["designs"]) == 0
    campaign = client.get("/v1/evolution/campaigns/offer-page", headers=secret).json()
    assert [c["segment"] for c in campaign["champions"]] == [
        "*",
        "frustrated",
        "anxious",
        "excited",
        "neutral",
    ]
    bad = client.get(
        "/v1/evolution/campaigns/offer-page/generations",
        params={"segment": "grumpy"},
        headers=secret,
    )
    assert bad.status_code == 422


def test_a_pin_after_generations_keeps_the_genealogy(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    start(client, secret, visitors_per_generation=8, generations=3)
    for _ in range(8):
        visit(client, world)
    step(client, world)  # generation 1 measured, generation 2 bred
    base = "/v1/evolution/campaigns/offer-page"
    pinned = client.post(f"{base}/pin", json={"gene": "faq", "value": "on"}, headers=secret)
    assert pinned.status_code == 200, pinned.text
    generations = client.get(f"{base}/generations", headers=secret).json()
    assert len(generations) == 2
    assert generations[0]["visitors"] == 8  # the measured generation is still there
    assert {d["values"]["faq"] for d in generations[-1]["designs"]} == {"on"}
    # The search goes on from the pinned generation.
    for _ in range(8):
        assert visit(client, world)[1]
    step(client, world)
    generations = client.get(f"{base}/generations", headers=secret).json()
    assert len(generations) == 3
    assert {d["values"]["faq"] for d in generations[-1]["designs"]} == {"on"}
    unpinned = client.post(f"{base}/pin", json={"gene": "faq", "value": None}, headers=secret)
    assert unpinned.status_code == 200, unpinned.text
