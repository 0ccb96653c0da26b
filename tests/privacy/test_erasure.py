"""Data-subject requests: erasure leaves no identifier in any store, export returns everything,
retention deletes what expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from nexus.events.pipeline import decode_record
from nexus.schema import metadata
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import wait_for_ids

ANON = "anon-erase-7f3a"
USER = "user-erase-91c2"
EMAIL = "erase.me.91c2@example.org"
IDENTIFIERS = (ANON, USER, EMAIL)
OTHER = "anon-keep-55b1"


def _person_journey(client: TestClient, world: World) -> None:
    # The workspace keeps the e-mail hint, encrypted (a CRM use): it must still go on erasure.
    rules = {"pii": {"properties": {"traits.email_hint": "encrypt"}}}
    assert (
        client.put(
            "/v1/privacy/settings", json=rules, headers=bearer(world.a.secret_key)
        ).status_code
        == 200
    )
    key = world.a.write_key
    consent = {"visitor_id": ANON, "purposes": {"analytics": True, "personalisation": True}}
    assert client.post("/v1/consent", json=consent, headers=bearer(key)).status_code == 200
    batch = {
        "batch": [
            {"type": "page", "messageId": "e-1", "anonymousId": ANON, "name": "Pricing"},
            {
                "type": "track",
                "event": "Chat Message",
                "messageId": "e-2",
                "anonymousId": ANON,
                "properties": {"message": "I am thrilled with the demo!"},
            },
            {
                "type": "identify",
                "messageId": "e-3",
                "anonymousId": ANON,
                "userId": USER,
                "traits": {"plan": "pro", "email_hint": EMAIL},
            },
            {"type": "track", "event": "Order Completed", "messageId": "e-4", "userId": USER},
            {"type": "track", "event": "Order Completed", "messageId": "k-1", "anonymousId": OTHER},
        ]
    }
    assert client.post("/v1/batch", json=batch, headers=bearer(key)).json()["accepted"] == 5
    decided = client.post(
        "/v1/decide", json={"visitor_id": ANON, "text": "so happy with this"}, headers=bearer(key)
    )
    assert decided.status_code == 200
    wait_for_ids(client, world.a.secret_key, {"e-1", "e-2", "e-3", "e-4", "k-1"})


def _mentions(value: Any) -> set[str]:
    text = repr(value)
    return {i for i in IDENTIFIERS if i in text}


def _search_every_store(
    client: TestClient, database: Database, workspace_id: str
) -> dict[str, set[str]]:
    """Every identifier of the person found anywhere, by store."""
    state: Any = client.app.state  # type: ignore[attr-defined]
    found: dict[str, set[str]] = {}
    # The event store: every row of every table, as text.
    store = state.events.store
    for table in ("events", "identities", "persons"):
        rows = store._con.cursor().execute(f"SELECT COLUMNS(*)::VARCHAR FROM {table}").fetchall()
        found[f"duckdb.{table}"] = _mentions(rows)
    # The journal: every record still kept, and the segment files' raw bytes.
    journal = state.events.pipeline.journal
    records = [decode_record(r.payload) for r in journal.read(journal.start, max_bytes=1 << 62)]
    found["journal.records"] = _mentions(records)
    raw = b"".join(p.read_bytes() for p in journal.directory.glob("*.log"))
    found["journal.files"] = {i for i in IDENTIFIERS if i.encode() in raw}
    # The metadata database: every table (consent, audit log, subject requests …).
    with database.session() as db:
        for table in metadata.sorted_tables:
            found[f"sql.{table.name}"] = _mentions(db.execute(select(table)).all())
    # In-process state: decisions, live feed, consent cache, field keys.
    decisions = state.decisions
    found["decisions"] = _mentions(
        (dict(decisions._readings), decisions._pending, list(decisions._outbox))
    )
    found["live"] = _mentions(state.events.live.recent(workspace_id))
    found["consent_cache"] = _mentions(list(state.privacy._consent))
    found["keystore"] = _mentions(
        [k.subject_id for k in state.privacy.keystore.wrapped_keys(workspace_id)]
    )
    found["data_key_cache"] = _mentions(list(state.privacy._data_keys))
    return {name: hits for name, hits in found.items() if hits}


def test_erasure_leaves_no_identifier_in_any_store(
    client: TestClient, world: World, database: Database
) -> None:
    _person_journey(client, world)
    before = _search_every_store(client, database, world.a.id)
    # The journey really reached the stores the search looks at.
    assert {"duckdb.events", "duckdb.identities", "sql.consent_states", "decisions"} <= set(before)
    state: Any = client.app.state  # type: ignore[attr-defined]
    assert state.privacy.keystore.wrapped_keys(world.a.id)  # the hint's data key

    response = client.post(
        "/v1/privacy/erasures", json={"visitor_id": ANON}, headers=bearer(world.a.secret_key)
    )
    assert response.status_code == 201, response.text
    report = response.json()["report"]
    assert report["complete"] is True
    assert report["ids"] >= 2
    assert report["stores"]["events"]["removed"] >= 4 + 1 + 1  # events, identity, person
    assert report["stores"]["consent"]["removed"] == 2  # the state and its one record
    assert report["keys_shredded"] == 1
    assert all(s["remaining"] == 0 for s in report["stores"].values())

    assert _search_every_store(client, database, world.a.id) == {}
    assert not state.privacy.keystore.wrapped_keys(world.a.id)
    # Someone else's events stay.
    events = client.get("/v1/events", headers=bearer(world.a.secret_key)).json()["items"]
    assert [e["messageId"] for e in events] == ["k-1"]
    # The request is on record (counts only) and audited.
    listed = client.get("/v1/privacy/requests", headers=bearer(world.a.secret_key)).json()
    assert [r["kind"] for r in listed] == ["erasure"]


def test_export_returns_everything_about_the_person(client: TestClient, world: World) -> None:
    _person_journey(client, world)
    response = client.post(
        "/v1/privacy/exports", json={"visitor_id": USER}, headers=bearer(world.a.secret_key)
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert set(document["visitor_ids"]) >= {ANON, USER}
    events = document["stores"]["events"]
    assert {e["message_id"] for e in events} == {"e-1", "e-2", "e-3", "e-4"}
    identify = next(e for e in events if e["message_id"] == "e-3")
    assert identify["traits"] == {"plan": "pro", "email_hint": EMAIL}
    assert document["stores"]["consent"]["current"][ANON] == {
        "analytics": True,
        "personalisation": True,
    }
    # Only admins export personal data.
    for key in (world.a.write_key, world.a.read_only_key):
        refused = client.post("/v1/privacy/exports", json={"visitor_id": USER}, headers=bearer(key))
        assert refused.status_code == 403


def test_retention_deletes_expired_events(client: TestClient, world: World) -> None:
    key = world.a.write_key
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Old",
                "messageId": "r-old",
                "anonymousId": "v-r",
                "timestamp": old,
            },
            {"type": "track", "event": "New", "messageId": "r-new", "anonymousId": "v-r"},
        ]
    }
    assert client.post("/v1/batch", json=batch, headers=bearer(key)).json()["accepted"] == 2
    wait_for_ids(client, world.a.secret_key, {"r-old", "r-new"})
    settings = client.put(
        "/v1/privacy/settings", json={"retention_days": 30}, headers=bearer(world.a.secret_key)
    )
    assert settings.json()["retention_days"] == 30
    ran = client.post("/v1/privacy/retention/run", headers=bearer(world.a.secret_key))
    assert ran.status_code == 200, ran.text
    [report] = ran.json()
    assert report["kind"] == "retention"
    assert report["report"]["stores"]["events"]["removed"] == 1
    events = client.get("/v1/events", headers=bearer(world.a.secret_key)).json()["items"]
    assert [e["messageId"] for e in events] == ["r-new"]
    # Workspace B keeps everything: its own retention is unset.
    assert (
        client.get("/v1/privacy/settings", headers=bearer(world.b.secret_key)).json()[
            "retention_days"
        ]
        is None
    )


def test_a_key_used_for_the_first_time_can_erase(client: TestClient, world: World) -> None:
    """Recording the key's first use must not hold the database's write lock while erasure
    writes through its own sessions (SQLite would wait out its busy timeout, then fail)."""
    created = client.post(
        "/v1/keys",
        json={"name": "dpo", "scopes": ["read", "admin"]},
        headers=bearer(world.a.secret_key),
    )
    assert created.status_code == 201, created.text
    fresh = created.json()["token"]
    for path in ("/v1/privacy/exports", "/v1/privacy/erasures"):
        response = client.post(path, json={"visitor_id": "nobody"}, headers=bearer(fresh))
        assert response.status_code in (200, 201), (path, response.text)
