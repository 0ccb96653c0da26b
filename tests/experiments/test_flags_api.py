"""Flags over HTTP: CRUD with an audit trail, kill switch, prerequisites, SDK definitions."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import World, bearer
from tests.experiments.conftest import create_flag

CHECKOUT = {
    "kind": "multivariate",
    "variations": [
        {"key": "classic", "value": "classic"},
        {"key": "one-page", "value": "one-page"},
    ],
    "off_variation": "classic",
    "rules": [
        {
            "id": "angry",
            "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
            "serve": {"variation": "classic"},
        }
    ],
    "fallthrough": {
        "rollout": [{"variation": "one-page", "weight": 50}, {"variation": "classic", "weight": 50}]
    },
}


def test_create_read_list_and_defaults(client: TestClient, secret: dict[str, str]) -> None:
    created = create_flag(client, secret, "new-checkout", comment="launch")
    assert created["kind"] == "boolean"
    assert [v["key"] for v in created["variations"]] == ["on", "off"]
    assert created["salt"] == "new-checkout"
    assert created["version"] == 1
    read = client.get("/v1/flags/new-checkout", headers=secret).json()
    assert read == created
    listed = client.get("/v1/flags", headers=secret).json()
    assert [f["key"] for f in listed["items"]] == ["new-checkout"]


def test_every_change_lands_in_the_audit_trail(client: TestClient, secret: dict[str, str]) -> None:
    create_flag(client, secret, "checkout", **CHECKOUT, comment="first")
    patched = client.patch(
        "/v1/flags/checkout", json={"name": "Checkout", "comment": "rename"}, headers=secret
    )
    assert patched.status_code == 200
    assert patched.json()["version"] == 2
    killed = client.post("/v1/flags/checkout/kill", json={"comment": "incident 42"}, headers=secret)
    assert killed.json()["enabled"] is False
    changes = client.get("/v1/flags/checkout/changes", headers=secret).json()["items"]
    assert [c["action"] for c in changes] == ["created", "updated", "killed"]
    assert [c["comment"] for c in changes] == ["first", "rename", "incident 42"]
    assert changes[1]["before"]["name"] == "checkout"
    assert changes[1]["after"]["name"] == "Checkout"
    assert changes[2]["after"]["enabled"] is False
    assert all(c["actor"] for c in changes)
    assert client.delete("/v1/flags/checkout", headers=secret).status_code == 204
    after = client.get("/v1/flags/checkout/changes", headers=secret).json()["items"]
    assert after[-1]["action"] == "deleted"  # the trail outlives the flag
    assert client.get("/v1/flags/checkout", headers=secret).status_code == 404


def test_invalid_flags_are_refused_with_the_field(
    client: TestClient, secret: dict[str, str]
) -> None:
    unknown = {**CHECKOUT, "fallthrough": {"variation": "nope"}}
    response = client.post("/v1/flags", json={"key": "x", **unknown}, headers=secret)
    assert response.status_code == 422
    assert "nope" in response.json()["detail"]
    weights = {
        **CHECKOUT,
        "fallthrough": {"rollout": [{"variation": "classic", "weight": 30}]},
    }
    response = client.post("/v1/flags", json={"key": "y", **weights}, headers=secret)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    duplicate = client.post("/v1/flags", json={"key": "z"}, headers=secret)
    assert duplicate.status_code == 201
    again = client.post("/v1/flags", json={"key": "z"}, headers=secret)
    assert again.status_code == 409
    bad_patch = client.patch("/v1/flags/z", json={"off_variation": "missing"}, headers=secret)
    assert bad_patch.status_code == 422
    # A refused change leaves the flag as it was.
    assert client.get("/v1/flags/z", headers=secret).json()["version"] == 1


def test_prerequisites_must_exist_and_never_cycle(
    client: TestClient, secret: dict[str, str]
) -> None:
    missing = client.post(
        "/v1/flags",
        json={"key": "b", "prerequisites": [{"flag": "a", "variations": ["on"]}]},
        headers=secret,
    )
    assert missing.status_code == 422
    create_flag(client, secret, "a")
    create_flag(client, secret, "b", prerequisites=[{"flag": "a", "variations": ["on"]}])
    cycle = client.patch(
        "/v1/flags/a", json={"prerequisites": [{"flag": "b", "variations": ["on"]}]}, headers=secret
    )
    assert cycle.status_code == 422
    assert "cycle" in cycle.json()["detail"].lower()
    in_use = client.delete("/v1/flags/a", headers=secret)
    assert in_use.status_code == 409


def test_definitions_for_sdks_carry_an_etag(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_flag(client, secret, "checkout", **CHECKOUT)
    first = client.get("/v1/flags/definitions", headers=bearer(world.a.write_key))
    assert first.status_code == 200
    body = first.json()
    assert [f["key"] for f in body["flags"]] == ["checkout"]
    assert body["flags"][0]["rules"][0]["clauses"][0]["attribute"] == "emotion.dominant"
    etag = first.headers["etag"]
    same = client.get(
        "/v1/flags/definitions", headers={**bearer(world.a.write_key), "If-None-Match": etag}
    )
    assert same.status_code == 304
    client.post("/v1/flags/checkout/kill", json={}, headers=secret)
    changed = client.get(
        "/v1/flags/definitions", headers={**bearer(world.a.write_key), "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["flags"][0]["enabled"] is False


def test_public_keys_cannot_change_flags(client: TestClient, world: World) -> None:
    response = client.post("/v1/flags", json={"key": "x"}, headers=bearer(world.a.write_key))
    assert response.status_code == 403


def test_workspaces_do_not_see_each_others_flags(
    client: TestClient, secret: dict[str, str], world: World
) -> None:
    create_flag(client, secret, "private")
    other = bearer(world.b.secret_key)
    assert client.get("/v1/flags/private", headers=other).status_code == 404
    assert client.get("/v1/flags", headers=other).json()["items"] == []


def test_the_api_schema_and_the_evaluator_know_the_same_ops_and_kinds() -> None:
    """The request models spell the clause ops and flag kinds as literals for the OpenAPI
    document; the evaluator has its own list. They must not drift apart."""
    from typing import get_args

    from nexus.experiments import flags
    from nexus.experiments.models import ClauseOp, FlagKind

    assert set(get_args(ClauseOp)) == set(flags.OPS)
    assert set(get_args(FlagKind)) == set(flags.KINDS)
