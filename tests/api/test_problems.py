"""Bad input gets a clear RFC 9457 problem, never a 500, and never changes stored data."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tests.conftest import World, bearer


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["type"] == f"https://nexus.dev/problems/{code}"
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_malformed_body_lists_field_errors(client: TestClient, world: World) -> None:
    response = client.post(
        "/v1/keys", json={"name": "", "kind": "weird"}, headers=bearer(world.a.secret_key)
    )
    body = _problem(response, 422, "validation-error")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {tuple(e["loc"]) for e in errors} == {("body", "name"), ("body", "kind")}
    assert all(e["message"] for e in errors)


def test_invalid_json_is_422_not_500(client: TestClient, world: World) -> None:
    response = client.post(
        "/v1/keys",
        content=b"{not json",
        headers={**bearer(world.a.secret_key), "content-type": "application/json"},
    )
    _problem(response, 422, "validation-error")


def test_unknown_fields_are_refused(client: TestClient, world: World) -> None:
    response = client.post(
        "/v1/keys", json={"name": "k", "admin": True}, headers=bearer(world.a.secret_key)
    )
    body = _problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "admin"]  # type: ignore[index]


def test_oversize_body_is_413_by_content_length(client: TestClient, world: World) -> None:
    big = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    response = client.post(
        "/v1/keys",
        content=big,
        headers={**bearer(world.a.secret_key), "content-type": "application/json"},
    )
    _problem(response, 413, "payload-too-large")


def test_oversize_chunked_body_is_413(client: TestClient, world: World) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65_536

    response = client.post(
        "/v1/keys",
        content=chunks(),
        headers={**bearer(world.a.secret_key), "content-type": "application/json"},
    )
    _problem(response, 413, "payload-too-large")
    # Nothing was created by the refused request.
    keys = client.get("/v1/keys", headers=bearer(world.a.secret_key)).json()["items"]
    assert len(keys) == 3


def test_unknown_route_and_method(client: TestClient) -> None:
    _problem(client.get("/v1/nothing-here"), 404, "not-found")
    _problem(client.put("/healthz"), 405, "method-not-allowed")


def test_invalid_cursor_is_a_field_error(client: TestClient, world: World) -> None:
    response = client.get("/v1/keys?cursor=%%%", headers=bearer(world.a.secret_key))
    body = _problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["query", "cursor"]  # type: ignore[index]
    response = client.get("/v1/keys?limit=0", headers=bearer(world.a.secret_key))
    _problem(response, 422, "validation-error")


def test_conflicts_are_409_and_change_nothing(client: TestClient, world: World) -> None:
    from nexus.workspaces.models import Role

    owner = world.a.members[Role.OWNER]
    response = client.patch(
        f"/v1/members/{owner.user_id}", json={"role": "admin"}, headers=bearer(world.a.secret_key)
    )
    # A key is not an owner: it cannot touch the owner role at all.
    _problem(response, 403, "forbidden")
    member = client.get(f"/v1/members/{owner.user_id}", headers=bearer(world.a.secret_key))
    assert member.json()["role"] == "owner"


def test_request_id_is_echoed_when_sane(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"x-request-id": "bad id\n"}).headers["x-request-id"]
    assert generated.startswith("req_")


def test_nul_bytes_are_refused_before_the_database(client: TestClient, world: World) -> None:
    """PostgreSQL text cannot hold NUL: the schema refuses it, so no backend sees it."""
    response = client.post("/v1/keys", json={"name": "a\x00b"}, headers=bearer(world.a.secret_key))
    body = _problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "name"]  # type: ignore[index]
