"""PII redaction on ingest, end to end: what reaches the journal and the event store, the
per-workspace rules (mask, hash, encrypt, drop), field encryption with export and
crypto-shredding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.settings import Settings
from nexus.events.pipeline import decode_record
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import wait_for_ids

EMAIL = "jane.doe+promo@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"


def _rules(client: TestClient, world: World, pii: dict[str, Any]) -> None:
    response = client.put(
        "/v1/privacy/settings", json={"pii": pii}, headers=bearer(world.a.secret_key)
    )
    assert response.status_code == 200, response.text


def _send(client: TestClient, world: World, *messages: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(
        "/v1/batch", json={"batch": list(messages)}, headers=bearer(world.a.write_key)
    )
    assert answer.status_code == 200, answer.text
    ids = {m["messageId"] for m in messages}
    return {e["messageId"]: e for e in wait_for_ids(client, world.a.secret_key, ids)}


def _journal_text(client: TestClient) -> str:
    journal = client.app.state.events.pipeline.journal  # type: ignore[attr-defined]
    return repr([decode_record(r.payload) for r in journal.read(journal.start, max_bytes=1 << 40)])


def test_pii_is_masked_by_default_before_the_journal(client: TestClient, world: World) -> None:
    message = f"Hi, I'm at {EMAIL} or {PHONE}; card {CARD}. Order #88231 for $1,299.00"
    events = _send(
        client,
        world,
        {
            "type": "track",
            "event": "Chat Message",
            "messageId": "p-1",
            "anonymousId": "v-p",
            "properties": {"message": message, "plan": "pro"},
            "context": {"ip": "203.0.113.9"},
        },
    )
    stored = events["p-1"]
    assert stored["properties"]["message"] == (
        "Hi, I'm at <EMAIL_ADDRESS> or <PHONE_NUMBER>; card <CREDIT_CARD>. "
        "Order #88231 for $1,299.00"
    )
    assert stored["properties"]["plan"] == "pro"
    assert stored["context"]["ip"] == "<IP_ADDRESS>"
    journal = _journal_text(client)
    for raw in (EMAIL, PHONE, CARD, "203.0.113.9"):
        assert raw not in journal
        assert raw not in repr(stored)
    counters = client.get("/v1/privacy/counters", headers=bearer(world.a.secret_key)).json()
    assert counters["by_entity"] == {
        "EMAIL_ADDRESS": 1,
        "PHONE_NUMBER": 1,
        "CREDIT_CARD": 1,
        "IP_ADDRESS": 1,
    }
    assert counters["values_redacted"] == 4


def test_an_email_as_user_id_is_stored_as_its_keyed_hash(client: TestClient, world: World) -> None:
    events = _send(
        client,
        world,
        {"type": "track", "event": "A", "messageId": "u-1", "userId": EMAIL},
        {"type": "track", "event": "B", "messageId": "u-2", "userId": EMAIL.upper()},
    )
    first, second = events["u-1"]["userId"], events["u-2"]["userId"]
    assert first.startswith("<EMAIL_ADDRESS:hmac:")
    assert first == second  # one person, however the address is written
    assert EMAIL not in _journal_text(client)


def test_rules_per_entity_and_property(client: TestClient, world: World) -> None:
    _rules(
        client,
        world,
        {
            "entities": {"PHONE_NUMBER": "hash"},
            "properties": {"properties.internal_*": "drop", "properties.support_email": "keep"},
            "custom_patterns": [
                {"name": "CUSTOMER_ID", "pattern": r"\bCUST-\d{6}\b", "action": "mask"}
            ],
        },
    )
    events = _send(
        client,
        world,
        {
            "type": "track",
            "event": "Form",
            "messageId": "r-1",
            "anonymousId": "v-r",
            "properties": {
                "message": f"call {PHONE} about CUST-123456",
                "again": f"really, {PHONE}",
                "internal_note": f"VIP, mail {EMAIL}",
                "support_email": "help@shop.example",
            },
        },
    )
    properties = events["r-1"]["properties"]
    hashed = properties["message"].split()[1]
    assert hashed.startswith("<PHONE_NUMBER:hmac:")
    assert properties["message"].endswith("about <CUSTOMER_ID>")
    assert properties["again"] == f"really, {hashed}"
    assert "internal_note" not in properties
    assert properties["support_email"] == "help@shop.example"


def test_encrypted_fields_export_in_clear_and_shred_on_erasure(
    client: TestClient, world: World
) -> None:
    _rules(client, world, {"properties": {"traits.email": "encrypt"}})
    events = _send(
        client,
        world,
        {
            "type": "identify",
            "messageId": "c-1",
            "userId": "lead-42",
            "traits": {"email": EMAIL, "plan": "trial"},
        },
    )
    sealed = events["c-1"]["traits"]["email"]
    assert sealed.startswith("<EMAIL_ADDRESS:enc:")
    assert EMAIL not in sealed
    assert EMAIL not in _journal_text(client)
    exported = client.post(
        "/v1/privacy/exports", json={"visitor_id": "lead-42"}, headers=bearer(world.a.secret_key)
    ).json()
    [event] = exported["stores"]["events"]
    assert event["traits"] == {"email": EMAIL, "plan": "trial"}
    # The ciphertext is bound to its row: moved to another row it does not open.
    privacy = client.app.state.privacy  # type: ignore[attr-defined]
    assert privacy.decrypt_fields(world.a.id, sealed, "another-row") == "[unreadable]"
    erased = client.post(
        "/v1/privacy/erasures", json={"visitor_id": "lead-42"}, headers=bearer(world.a.secret_key)
    ).json()
    assert erased["report"]["keys_shredded"] == 1
    # Any copy of the ciphertext left anywhere (a backup) is now unreadable.
    assert privacy.decrypt_fields(world.a.id, sealed, "c-1") == "[erased]"


def test_bad_rules_are_refused_and_change_nothing(client: TestClient, world: World) -> None:
    for pii in (
        {"custom_patterns": [{"name": "BAD", "pattern": "(unclosed"}]},
        {"entities": {"PERSON": "mask"}},  # needs the NER extra
        {"properties": {"properties.x": "shred"}},
    ):
        response = client.put(
            "/v1/privacy/settings", json={"pii": pii}, headers=bearer(world.a.secret_key)
        )
        assert response.status_code == 422, (pii, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    settings = client.get("/v1/privacy/settings", headers=bearer(world.a.secret_key)).json()
    assert settings["pii"]["custom_patterns"] == []


def test_redaction_can_be_turned_off(client: TestClient, world: World) -> None:
    _rules(client, world, {"enabled": False})
    events = _send(
        client,
        world,
        {
            "type": "track",
            "event": "Form",
            "messageId": "o-1",
            "anonymousId": "v-o",
            "properties": {"email": EMAIL},
        },
    )
    assert events["o-1"]["properties"]["email"] == EMAIL


def test_text_for_models_is_scrubbed(client: TestClient, world: World) -> None:
    privacy = client.app.state.privacy  # type: ignore[attr-defined]
    assert privacy.scrub_text(world.a.id, f"mail me at {EMAIL} please") == (
        "mail me at <EMAIL_ADDRESS> please"
    )
    assert privacy.scrub_text(world.a.id, "no personal data here") == "no personal data here"


def test_key_rotation_rewraps_and_old_values_still_open(client: TestClient, world: World) -> None:
    _rules(client, world, {"properties": {"traits.email": "encrypt"}})
    events = _send(
        client,
        world,
        {"type": "identify", "messageId": "k-1", "userId": "lead-7", "traits": {"email": EMAIL}},
    )
    sealed = events["k-1"]["traits"]["email"]
    rotated = client.post("/v1/privacy/keys/rotate", headers=bearer(world.a.secret_key))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json() == {"version": 2, "rewrapped": 1}
    privacy = client.app.state.privacy  # type: ignore[attr-defined]
    wrapped = privacy.keystore.wrapped_keys(world.a.id)
    assert [k.key_version for k in wrapped] == [2]
    assert privacy.decrypt_fields(world.a.id, sealed, "k-1") == EMAIL
    # New values after the rotation are sealed and open as well.
    later = _send(
        client,
        world,
        {"type": "identify", "messageId": "k-2", "userId": "lead-8", "traits": {"email": EMAIL}},
    )
    assert privacy.decrypt_fields(world.a.id, later["k-2"]["traits"]["email"], "k-2") == EMAIL
    refused = client.post("/v1/privacy/keys/rotate", headers=bearer(world.a.read_only_key))
    assert refused.status_code == 403


def test_person_names_through_a_configured_ner_model(
    settings: Settings, database: Database, tmp_path: Path, world: World
) -> None:
    """The optional NER path, with a real spaCy pipeline saved to disk (a rule-based
    EntityRuler stands in for a statistical model: the wiring is what is tested)."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "doe"}]}])
    model = tmp_path / "ner-model"
    nlp.to_disk(model)
    configured = settings.model_copy(update={"pii_ner_model": str(model)})
    with TestClient(create_app(configured, configure_logs=False)) as client:
        _rules(client, world, {"entities": {"PERSON": "mask"}})
        events = _send(
            client,
            world,
            {
                "type": "track",
                "event": "Chat Message",
                "messageId": "n-1",
                "anonymousId": "v-n",
                "properties": {"message": f"This is Jane Doe, write to {EMAIL}"},
            },
        )
    assert events["n-1"]["properties"]["message"] == "This is <PERSON>, write to <EMAIL_ADDRESS>"
