"""The workspaces API over HTTP, as a dashboard user and with keys."""

from __future__ import annotations

from fastapi.testclient import TestClient

from nexus.workspaces.models import Role
from tests.conftest import PASSWORD, World, bearer, login


def test_me_describes_each_kind_of_caller(client: TestClient, world: World) -> None:
    me = client.get("/v1/me", headers=bearer(world.a.secret_key)).json()
    assert me["kind"] == "secret_key"
    assert me["workspace_id"] == world.a.id
    assert me["user"] is None
    login(client, world.a.members[Role.ANALYST].email)
    me = client.get("/v1/me").json()
    assert me["kind"] == "user"
    assert me["role"] == "analyst"
    assert me["user"]["email"] == "analyst@a.test"
    assert "admin" not in me["permissions"]


def test_key_lifecycle_secret_shown_once(client: TestClient, world: World) -> None:
    auth = bearer(world.a.secret_key)
    created = client.post("/v1/keys", json={"name": "server", "scopes": ["read"]}, headers=auth)
    assert created.status_code == 201
    body = created.json()
    token = body["token"]
    assert token.startswith("nx_sec_")
    assert body["scopes"] == ["read"]
    shown = client.get(f"/v1/keys/{body['id']}", headers=auth).json()
    assert "token" not in shown
    assert shown["public_token"] is None
    assert token not in client.get("/v1/keys", headers=auth).text
    # The new key reads but cannot write.
    assert client.get("/v1/keys", headers=bearer(token)).status_code == 200
    assert client.post("/v1/keys", json={"name": "x"}, headers=bearer(token)).status_code == 403
    assert client.delete(f"/v1/keys/{body['id']}", headers=auth).status_code == 204
    assert client.get("/v1/me", headers=bearer(token)).status_code == 401
    listed = client.get("/v1/keys?include_revoked=true", headers=auth).json()["items"]
    assert any(k["id"] == body["id"] and k["revoked_at"] for k in listed)


def test_members_can_be_added_changed_and_removed(client: TestClient, world: World) -> None:
    csrf = login(client, world.a.members[Role.ADMIN].email)
    headers = {"X-CSRF-Token": csrf}
    outsider = world.b.members[Role.VIEWER]
    added = client.post(
        "/v1/members", json={"email": outsider.email, "role": "analyst"}, headers=headers
    )
    assert added.status_code == 201, added.text
    assert added.json()["role"] == "analyst"
    again = client.post(
        "/v1/members", json={"email": outsider.email, "role": "analyst"}, headers=headers
    )
    assert again.status_code == 409
    unknown = client.post(
        "/v1/members", json={"email": "ghost@nowhere.test", "role": "viewer"}, headers=headers
    )
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["loc"] == ["body", "email"]
    changed = client.patch(
        f"/v1/members/{outsider.user_id}", json={"role": "viewer"}, headers=headers
    )
    assert changed.json()["role"] == "viewer"
    owner_grant = client.patch(
        f"/v1/members/{outsider.user_id}", json={"role": "owner"}, headers=headers
    )
    assert owner_grant.status_code == 403
    assert client.delete(f"/v1/members/{outsider.user_id}", headers=headers).status_code == 204
    assert client.get(f"/v1/members/{outsider.user_id}").status_code == 404


def test_a_user_with_several_workspaces_chooses_one(client: TestClient, world: World) -> None:
    owner_a = world.a.members[Role.OWNER]
    csrf = login(client, owner_a.email)
    created = client.post("/v1/workspaces", json={"name": "Second"}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201
    second = created.json()
    assert second["role"] == "owner"
    names = {w["name"] for w in client.get("/v1/workspaces").json()["items"]}
    assert names == {"Workspace a", "Second"}
    # The session's workspace is A; the header picks the other one.
    assert client.get("/v1/me").json()["workspace_id"] == world.a.id
    chosen = client.get("/v1/me", headers={"Nexus-Workspace": second["id"]}).json()
    assert chosen["workspace_id"] == second["id"]
    keys = client.get("/v1/keys", headers={"Nexus-Workspace": second["id"]}).json()["items"]
    assert [k["kind"] for k in keys] == ["public"]


def test_keys_cannot_create_workspaces(client: TestClient, world: World) -> None:
    response = client.post("/v1/workspaces", json={"name": "x"}, headers=bearer(world.a.secret_key))
    assert response.status_code == 403
    assert "signed-in user" in response.json()["detail"]


def test_rename_workspace(client: TestClient, world: World) -> None:
    response = client.patch(
        f"/v1/workspaces/{world.a.id}",
        json={"name": "  Renamed  "},
        headers=bearer(world.a.secret_key),
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    assert (
        client.get(f"/v1/workspaces/{world.a.id}", headers=bearer(world.a.secret_key)).json()[
            "name"
        ]
        == "Renamed"
    )
    _ = PASSWORD
