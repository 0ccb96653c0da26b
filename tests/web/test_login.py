"""Dashboard sign-in: CSRF-protected form, secure cookie, brute-force limit, sign-out."""

from __future__ import annotations

from fastapi.testclient import TestClient

from nexus.workspaces.models import Role
from tests.conftest import PASSWORD, World, _hidden_value, login


def _form(client: TestClient) -> str:
    return _hidden_value(client.get("/login").text, "csrf_token")


def test_login_sets_an_httponly_samesite_session_cookie(client: TestClient, world: World) -> None:
    csrf = _form(client)
    response = client.post(
        "/login",
        data={"email": "owner@a.test", "password": PASSWORD, "csrf_token": csrf, "next": "/keys"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/keys"
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "nexus_session" in v
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie


def test_the_form_refuses_posts_without_its_token(client: TestClient, world: World) -> None:
    response = client.post(
        "/login", data={"email": "owner@a.test", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert "nexus_session" not in response.headers.get("set-cookie", "")


def test_wrong_password_is_401_without_a_session(client: TestClient, world: World) -> None:
    csrf = _form(client)
    response = client.post(
        "/login", data={"email": "owner@a.test", "password": "nope", "csrf_token": csrf}
    )
    assert response.status_code == 401
    assert "Wrong e-mail or password" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_brute_force_is_rate_limited(client: TestClient, world: World) -> None:
    statuses = []
    for _ in range(7):
        csrf = _form(client)
        statuses.append(
            client.post(
                "/login", data={"email": "owner@a.test", "password": "guess", "csrf_token": csrf}
            ).status_code
        )
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    # Even the right password waits out the window.
    csrf = _form(client)
    blocked = client.post(
        "/login", data={"email": "owner@a.test", "password": PASSWORD, "csrf_token": csrf}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    # Other accounts are not locked out by it.
    assert login(client, "viewer@a.test")


def test_open_redirects_are_refused(client: TestClient, world: World) -> None:
    csrf = _form(client)
    response = client.post(
        "/login",
        data={
            "email": "owner@a.test",
            "password": PASSWORD,
            "csrf_token": csrf,
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_dashboard_frame_switcher_and_sign_out(client: TestClient, world: World) -> None:
    csrf = login(client, world.a.members[Role.OWNER].email)
    page = client.get("/")
    assert 'data-testid="workspace-switcher"' in page.text
    assert world.a.write_key in page.text
    assert "Sign out" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # A new workspace, then switch back through the switcher form.
    created = client.post("/workspaces/new", data={"name": "Other", "csrf_token": csrf})
    assert created.status_code == 200
    assert 'data-testid="workspace-name">Other<' in created.text
    switched = client.post(
        "/workspaces/switch", data={"workspace_id": world.a.id, "csrf_token": csrf}
    )
    assert 'data-testid="workspace-name">Workspace a<' in switched.text
    # Switching to a workspace one is not a member of is refused.
    refused = client.post(
        "/workspaces/switch", data={"workspace_id": world.b.id, "csrf_token": csrf}
    )
    assert refused.status_code == 404
    assert client.get("/members").status_code == 200
    assert "viewer@a.test" in client.get("/members").text
    assert client.get("/keys").status_code == 200
    # Sign-out needs the token, then ends the session server-side.
    assert client.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    assert client.get("/v1/me").status_code == 401


def test_unauthenticated_dashboard_redirects_with_next(client: TestClient) -> None:
    response = client.get("/keys?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/keys%3Fx%3D1"
