"""Consent: the pure rules, the API (browser and server), and enforcement in ingest, emotion
analysis and decide."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nexus.privacy.consent import ConsentState, Permissions, Purpose, merge
from nexus.sdk.client import ConsentNotRecorded, NexusClient
from nexus.security.models import AuditLogEntry
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import list_all, wait_for_ids

# --- the pure rules -------------------------------------------------------------------------


def test_silence_follows_the_mode_and_answers_win() -> None:
    state = ConsentState().updated({Purpose.ANALYTICS: True, Purpose.MARKETING: False})
    assert state.permits(Purpose.ANALYTICS, "opt_in")
    assert not state.permits(Purpose.EMOTION_ANALYSIS, "opt_in")
    assert state.permits(Purpose.EMOTION_ANALYSIS, "opt_out")
    assert not state.permits(Purpose.MARKETING, "opt_out")
    later = state.updated({Purpose.ANALYTICS: False})
    assert not later.permits(Purpose.ANALYTICS, "opt_out")
    assert later.as_answers() == {"analytics": False, "marketing": False}


def test_a_denial_under_any_id_wins() -> None:
    device = ConsentState().updated({Purpose.PERSONALISATION: True})
    account = ConsentState().updated({Purpose.PERSONALISATION: False})
    assert not Permissions.of(merge([device, account]), "opt_out").personalisation
    assert Permissions.of(merge([device]), "opt_in").personalisation


# --- the API --------------------------------------------------------------------------------


def _opt_in(client: TestClient, world: World) -> None:
    response = client.put(
        "/v1/privacy/settings",
        json={"consent_mode": "opt_in"},
        headers=bearer(world.a.secret_key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["consent_mode"] == "opt_in"


def _consent(client: TestClient, key: str, visitor: str, **purposes: bool) -> dict[str, Any]:
    response = client.post(
        "/v1/consent", json={"visitor_id": visitor, "purposes": purposes}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_consent_is_recorded_with_time_source_and_history(
    client: TestClient, world: World, database: Database
) -> None:
    first = _consent(client, world.a.write_key, "v-1", analytics=True, emotion_analysis=False)
    assert first["answers"] == {"analytics": True, "emotion_analysis": False}
    assert first["source"] == "sdk"
    assert first["permitted"]["personalisation"] is True  # opt_out: silence permits
    response = client.post(
        "/v1/consent",
        json={"visitor_id": "v-1", "purposes": {"emotion_analysis": True}, "source": "banner"},
        headers=bearer(world.a.secret_key),
    )
    assert response.status_code == 200
    read = client.get("/v1/consent/v-1", headers=bearer(world.a.secret_key)).json()
    assert read["answers"] == {"analytics": True, "emotion_analysis": True}
    assert [h["source"] for h in read["history"]] == ["sdk", "banner"]
    assert [h["purposes"] for h in read["history"]] == [
        {"analytics": True, "emotion_analysis": False},
        {"emotion_analysis": True},
    ]
    # Another workspace sees nothing of it.
    assert client.get("/v1/consent/v-1", headers=bearer(world.b.secret_key)).status_code == 404
    # Every change is audited, by record id: the visitor's id is not in the chain.
    with database.session() as db:
        entries = db.scalars(
            select(AuditLogEntry).where(AuditLogEntry.action == "consent.updated")
        ).all()
    assert [e.target for e in entries] == [h["id"] for h in read["history"]]
    assert all("v-1" not in repr((e.target, e.details, e.actor)) for e in entries)


@pytest.mark.parametrize(
    "body",
    [
        {"visitor_id": "v", "purposes": {}},
        {"visitor_id": "v", "purposes": {"telepathy": True}},
        {"visitor_id": "", "purposes": {"analytics": True}},
        {"visitor_id": "v", "purposes": {"analytics": "yes please"}},
    ],
)
def test_bad_consent_is_a_422(client: TestClient, world: World, body: dict[str, Any]) -> None:
    response = client.post("/v1/consent", json=body, headers=bearer(world.a.write_key))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


# --- enforcement ----------------------------------------------------------------------------


def _track(message_id: str, visitor: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Chat Message",
        "messageId": message_id,
        "anonymousId": visitor,
        "properties": properties,
    }


def test_ingest_drops_events_without_analytics_consent(client: TestClient, world: World) -> None:
    _opt_in(client, world)
    key = world.a.write_key
    silent = client.post("/v1/track", json=_track("m-1", "v-silent"), headers=bearer(key))
    assert silent.status_code == 200
    assert (silent.json()["accepted"], silent.json()["withheld"]) == (0, 1)
    _consent(client, key, "v-yes", analytics=True)
    _consent(client, key, "v-no", analytics=False)
    batch = {"batch": [_track("m-2", "v-yes"), _track("m-3", "v-no"), _track("m-4", "v-x")]}
    answer = client.post("/v1/batch", json=batch, headers=bearer(key)).json()
    assert (answer["accepted"], answer["withheld"]) == (1, 2)
    wait_for_ids(client, world.a.secret_key, {"m-2"})
    stored = {e["messageId"] for e in list_all(client, world.a.secret_key)}
    assert stored == {"m-2"}
    counters = client.get("/v1/privacy/counters", headers=bearer(world.a.secret_key)).json()
    assert counters["events_dropped"] == 3


def test_text_is_stripped_and_not_read_without_emotion_consent(
    client: TestClient, world: World
) -> None:
    key = world.a.write_key
    _consent(client, key, "v-private", emotion_analysis=False)
    batch = {
        "batch": [
            _track("t-1", "v-private", message="I love this, take my money", plan="pro"),
            _track("t-2", "v-open", message="I love this, take my money", plan="pro"),
        ]
    }
    assert client.post("/v1/batch", json=batch, headers=bearer(key)).json()["accepted"] == 2
    events = {e["messageId"]: e for e in wait_for_ids(client, world.a.secret_key, {"t-1", "t-2"})}
    assert events["t-1"]["properties"] == {"plan": "pro"}
    assert "emotion" not in (events["t-1"].get("context") or {})
    assert events["t-2"]["properties"]["message"] == "I love this, take my money"
    assert "emotion" in events["t-2"]["context"]
    counters = client.get("/v1/privacy/counters", headers=bearer(world.a.secret_key)).json()
    assert counters["events_stripped"] == 1


def test_decide_is_not_personalised_without_consent(client: TestClient, world: World) -> None:
    _opt_in(client, world)
    key = world.a.write_key
    body = {"visitor_id": "v-d", "text": "This is wonderful, I am so happy!"}
    first = client.post("/v1/decide", json=body, headers=bearer(key)).json()
    assert first["personalised"] is False
    assert first["emotion"] is None
    assert first["adaptation"] is None
    _consent(client, key, "v-d", personalisation=True, emotion_analysis=True)
    second = client.post("/v1/decide", json=body, headers=bearer(key)).json()
    assert second["personalised"] is True
    assert second["emotion"] is not None
    # Consent withdrawn: the next decision is generic again, and forgets the reading.
    _consent(client, key, "v-d", personalisation=False)
    third = client.post("/v1/decide", json={"visitor_id": "v-d"}, headers=bearer(key)).json()
    assert third["personalised"] is False
    assert third["emotion"] is None


def test_emotion_analysis_from_the_browser_needs_consent(client: TestClient, world: World) -> None:
    _opt_in(client, world)
    key = world.a.write_key
    text = {"text": "so frustrated with checkout", "mode": "edge"}
    anonymous = client.post("/v1/emotion/analyze", json=text, headers=bearer(key))
    assert anonymous.status_code == 403
    assert anonymous.json()["type"].endswith("consent-required")
    unknown = client.post(
        "/v1/emotion/analyze", json={**text, "visitor_id": "v-e"}, headers=bearer(key)
    )
    assert unknown.status_code == 403
    _consent(client, key, "v-e", emotion_analysis=True)
    allowed = client.post(
        "/v1/emotion/analyze", json={**text, "visitor_id": "v-e"}, headers=bearer(key)
    )
    assert allowed.status_code == 200, allowed.text
    # A server reading its own texts (secret key) is not a visitor's browser.
    server = client.post("/v1/emotion/analyze", json=text, headers=bearer(world.a.secret_key))
    assert server.status_code == 200


def test_consent_takes_effect_on_the_next_event(client: TestClient, world: World) -> None:
    _opt_in(client, world)
    key = world.a.write_key
    assert (
        client.post("/v1/track", json=_track("n-1", "v-n"), headers=bearer(key)).json()["withheld"]
        == 1
    )
    _consent(client, key, "v-n", analytics=True)
    assert (
        client.post("/v1/track", json=_track("n-2", "v-n"), headers=bearer(key)).json()["accepted"]
        == 1
    )
    _consent(client, key, "v-n", analytics=False)
    assert (
        client.post("/v1/track", json=_track("n-3", "v-n"), headers=bearer(key)).json()["withheld"]
        == 1
    )
    wait_for_ids(client, world.a.secret_key, {"n-2"})
    assert {e["messageId"] for e in list_all(client, world.a.secret_key)} == {"n-2"}


def test_the_sdk_records_consent_and_raises_when_it_is_not_recorded(
    client: TestClient, world: World
) -> None:
    sdk = NexusClient(
        "http://testserver", world.a.write_key, refresh_interval=None, http_client=client
    )
    answer = sdk.consent("v-sdk", {"analytics": True, "marketing": False}, source="banner")
    assert answer["answers"] == {"analytics": True, "marketing": False}
    assert answer["source"] == "banner"
    with pytest.raises(ConsentNotRecorded, match="422"):
        sdk.consent("v-sdk", {"telepathy": True})
    revoked = NexusClient(
        "http://testserver", "nx_pub_unknown", refresh_interval=None, http_client=client
    )
    with pytest.raises(ConsentNotRecorded, match="401"):
        revoked.consent("v-sdk", {"analytics": False})
