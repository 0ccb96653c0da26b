"""Authorization by default, proven by walking every registered route.

For each route of the app (a route added by a later domain is walked automatically):

* without credentials, or with unknown ones, it answers 401 problem+json (or, for dashboard
  pages, redirects to the sign-in page);
* with workspace B's credentials, workspace A's objects are not found (404);
* a viewer's write is refused (403), by user session and by a read-only key;
* none of it is ever a 500.

A route whose path parameters this file cannot fill fails the test: extend ``object_ids``.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import get_args

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from nexus.api.app import api_routes
from nexus.events.views import INGEST_PATHS
from nexus.evolution import service as evolution
from nexus.evolution.models import CampaignCreate
from nexus.experiments import guard
from nexus.experiments import service as experiments
from nexus.experiments.models import (
    AdaptationCreate,
    ExperimentCreate,
    FlagCreate,
    MetricIn,
    RolloutCreate,
)
from nexus.pages import service as pages
from nexus.pages.models import HostedFunnelCreate
from nexus.storage.database import Database
from nexus.workspaces.deps import PUBLIC
from tests.conftest import World, bearer, login

PROBLEM = "application/problem+json"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def _operations(client: TestClient) -> list[tuple[str, str, APIRoute]]:
    ops = []
    for path, route in api_routes(client.app):  # type: ignore[arg-type]
        for method in sorted(route.methods - {"HEAD"}):
            ops.append((method, path, route))
    return ops


def _is_public(route: APIRoute) -> bool:
    return bool((route.openapi_extra or {}).get(next(iter(PUBLIC))))


def _is_api(path: str) -> bool:
    return path.startswith(("/v1/", "/ofrep/"))


@pytest.fixture(autouse=True)
def _decision_objects(world: World, database: Database) -> None:
    """A flag with a guarded rollout, an experiment and a UI adaptation in each workspace
    (keys ending in the tenant's label), so the walks find real objects of every kind."""
    for label, tenant in (("a", world.a), ("b", world.b)):
        with database.session() as db:
            experiments.create_flag(
                db, workspace_id=tenant.id, data=FlagCreate(key=f"flag-{label}"), actor="tests"
            )
            experiments.create_experiment(
                db, workspace_id=tenant.id, data=ExperimentCreate(key=f"test-{label}")
            )
            experiments.create_adaptation(
                db, workspace_id=tenant.id, data=AdaptationCreate(key=f"calm-{label}")
            )
            pages.create(
                db,
                workspace_id=tenant.id,
                data=HostedFunnelCreate.model_validate(
                    {"slug": f"site-{label}", **SAMPLE_BODIES["HostedFunnelBody"]}
                ),
            )
            evolution.create(
                db,
                workspace_id=tenant.id,
                data=CampaignCreate.model_validate(
                    {
                        **SAMPLE_BODIES["CampaignCreate"],
                        "key": f"evo-{label}",
                        "funnel": f"site-{label}",
                        "step": "one",
                    }
                ),
                actor="tests",
            )
            tenant.rollout_id = guard.create_rollout(
                db,
                workspace_id=tenant.id,
                flag_key=f"flag-{label}",
                data=RolloutCreate(
                    variation="on",
                    guardrails=[MetricIn(key="errors", kind="count", event="Error")],
                ),
                actor="tests",
            ).id


def object_ids(world: World) -> dict[str, str]:
    """Ids of objects in workspace A, by path-parameter name."""
    return {
        "workspace_id": world.a.id,
        "key_id": world.a.secret_key_id,
        "user_id": world.a.members[next(iter(world.a.members))].user_id,
        "funnel_id": world.a.funnel_id,
        "visitor_id": "visitor-of-a",
        "flag_key": "flag-a",
        "experiment_key": "test-a",
        "adaptation_key": "calm-a",
        "rollout_id": world.a.rollout_id,
        "slug": "site-a",
        "step": "one",
        "key": "calm-a",  # dashboard pages name their objects' keys plainly
        "campaign_key": "evo-a",
        "candidate_id": "cpy_walker",
    }


_PAGE: dict[str, object] = {
    "title": "Walker",
    "blocks": [
        {"id": "h", "kind": "headline", "variants": [{"key": "a", "content": {"text": "Hi"}}]}
    ],
}
_SITE: dict[str, object] = {
    "name": "Walker",
    "steps": [{"slug": "one", "page": _PAGE}, {"slug": "two", "page": _PAGE}],
}
# A valid body for each request model, so a refusal can only come from authorization.
SAMPLE_BODIES: dict[str, dict[str, object]] = {
    "WorkspaceCreate": {"name": "Walker"},
    "WorkspaceUpdate": {"name": "Walker"},
    "MemberCreate": {"email": "owner@b.test", "role": "viewer"},
    "MemberUpdate": {"role": "viewer"},
    "ApiKeyCreate": {"name": "walker"},
    "FunnelCreate": {"name": "Walker", "steps": [{"event": "A"}, {"event": "B"}]},
    "FunnelUpdate": {"name": "Walker"},
    "FunnelQuery": {"steps": [{"event": "A"}, {"event": "B"}]},
    "AnalyzeRequest": {"text": "hello", "mode": "edge"},
    "EmotionSettingsUpdate": {"text_properties": ["message"]},
    "FlagCreate": {"key": "walker"},
    "FlagUpdate": {"name": "Walker"},
    "KillSwitch": {"comment": "walk"},
    "RolloutCreate": {
        "variation": "on",
        "guardrails": [{"key": "errors", "kind": "count", "event": "Error"}],
    },
    "ExperimentCreate": {"key": "walker"},
    "ExperimentUpdate": {"name": "Walker"},
    "AdaptationCreate": {"key": "walker"},
    "AdaptationBody": {"tone": "calm"},
    "DecisionSettingsBody": {"holdout_percent": 5},
    "DecideRequest": {"visitor_id": "walker"},
    "OfrepRequest": {"context": {"targetingKey": "walker"}},
    "ConsentUpdate": {"visitor_id": "walker", "purposes": {"analytics": True}},
    "PrivacySettingsUpdate": {"retention_days": 30},
    "SubjectRequestCreate": {"visitor_id": "walker"},
    "HostedFunnelCreate": {"slug": "walker", **_SITE},
    "HostedFunnelBody": _SITE,
    "StepPut": {"page": _PAGE},
    "CampaignCreate": {
        "key": "walker",
        "funnel": "site-a",
        "step": "two",
        "genes": [
            {
                "name": "headline",
                "target": {"kind": "copy", "block": "h", "field": "text"},
                "values": ["Hi", "Hello"],
            }
        ],
    },
    "ActionRequest": {},
    "PromoteRequest": {},
    "PinRequest": {"gene": "headline", "value": "Hi"},
    "CandidatesRequest": {"gene": "headline", "texts": ["Hey"]},
    "MonitoringSettings": {"automatic_rollback": True},
}
# POSTs that only read (a query in a body): a viewer may use them.
READ_ONLY_POSTS = {"/v1/funnels/query"}
# Besides ingestion, what a public write key may call from a web page.
WRITE_KEY_POSTS = {
    "/v1/consent",
    "/v1/emotion/analyze",
    "/v1/decide",
    "/v1/flags/definitions",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/{flag_key}",
}
# OFREP answers an unknown flag in its own shape (errorCode FLAG_NOT_FOUND), not problem+json.
OFREP_PREFIX = "/ofrep/"


def _body(method: str, path: str, route: APIRoute) -> dict[str, object] | None:
    if method not in WRITE_METHODS or not _is_api(path):
        return None
    field = route.body_field
    if field is None:
        return {}
    annotation = field.field_info.annotation
    members = get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    name = " | ".join(getattr(m, "__name__", str(m)) for m in members)
    if name not in SAMPLE_BODIES:
        pytest.fail(f"{method} {route.path}: add a valid sample of {name} to SAMPLE_BODIES")
    return SAMPLE_BODIES[name]


def _fill(path: str, ids: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ids:
            pytest.fail(f"{path}: no object id for path parameter {name!r}; extend object_ids()")
        return ids[name]

    return PARAM.sub(sub, path)


def _assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://nexus.dev/problems/")
    assert body["detail"]


def test_every_route_needs_credentials(client: TestClient, world: World) -> None:
    checked = 0
    for method, path, route in _operations(client):
        if _is_public(route):
            continue
        url = _fill(path, object_ids(world))
        body = _body(method, path, route)
        anonymous = client.request(method, url, json=body, follow_redirects=False)
        if _is_api(path):
            _assert_problem(anonymous, 401)
            assert "bearer" in anonymous.headers["www-authenticate"].lower()
            for token in ("nx_sec_" + "0" * 43, "not-a-key", "nx_pub_" + "0" * 32):
                unknown = client.request(method, url, json=body, headers=bearer(token))
                _assert_problem(unknown, 401)
        else:
            assert anonymous.status_code == 303, (method, path)
            assert anonymous.headers["location"].startswith("/login")
        checked += 1
    assert checked >= 15  # the walk really walked


def test_another_workspaces_objects_are_not_found(client: TestClient, world: World) -> None:
    ids = object_ids(world)
    checked = 0
    for method, path, route in _operations(client):
        if _is_public(route) or not _is_api(path) or not PARAM.search(path):
            continue
        url = _fill(path, ids)
        body = _body(method, path, route)
        # B's admin key holds every scope: only the workspace boundary can stop it.
        response = client.request(method, url, json=body, headers=bearer(world.b.secret_key))
        if path.startswith(OFREP_PREFIX):
            assert response.status_code == 404
            assert response.json()["errorCode"] == "FLAG_NOT_FOUND"
            continue
        _assert_problem(response, 404)
        checked += 1
    assert checked >= 7


def test_another_workspaces_objects_are_not_found_for_a_signed_in_user(
    client: TestClient, world: World
) -> None:
    """B's owner, signed in to the dashboard, asks for A's objects (also naming A outright)."""
    from nexus.workspaces.models import Role

    csrf = login(client, world.b.members[Role.OWNER].email)
    ids = object_ids(world)
    for method, path, route in _operations(client):
        if _is_public(route) or not _is_api(path) or not PARAM.search(path):
            continue
        url = _fill(path, ids)
        body = _body(method, path, route)
        response = client.request(method, url, json=body, headers={"X-CSRF-Token": csrf})
        if path.startswith(OFREP_PREFIX):
            assert response.status_code == 404
            continue
        _assert_problem(response, 404)
    # Choosing workspace A explicitly does not help either.
    response = client.get("/v1/keys", headers={"Nexus-Workspace": world.a.id})
    _assert_problem(response, 404)


def test_a_viewer_cannot_change_anything(client: TestClient, world: World) -> None:
    from nexus.workspaces.models import Role

    csrf = login(client, world.a.members[Role.VIEWER].email)
    ids = object_ids(world)
    checked = 0
    for method, path, route in _operations(client):
        if method not in WRITE_METHODS or _is_public(route) or not _is_api(path):
            continue
        if path in READ_ONLY_POSTS:
            body = _body(method, path, route)
            answer = client.request(method, path, json=body, headers={"X-CSRF-Token": csrf})
            assert answer.status_code == 200, answer.text
            continue
        url = _fill(path, ids)
        body = _body(method, path, route)
        as_viewer = client.request(method, url, json=body, headers={"X-CSRF-Token": csrf})
        as_read_key = client.request(
            method,
            url,
            json=body,
            headers=bearer(world.a.read_only_key),
        )
        _assert_problem(as_viewer, 403)
        _assert_problem(as_read_key, 403)
        checked += 1
    assert checked >= 7
    # And the viewer can still read.
    assert client.get("/v1/keys").status_code == 200


def test_a_public_write_key_cannot_administer(client: TestClient, world: World) -> None:
    """A write key sits in web pages: it may say who it is and send events, nothing more."""
    for method, path, route in _operations(client):
        if _is_public(route) or not _is_api(path) or path == "/v1/me":
            continue
        if path in INGEST_PATHS:
            # Let in, and then refused only for the empty body.
            response = client.request(method, path, json={}, headers=bearer(world.a.write_key))
            assert response.status_code == 400, (path, response.text)
            continue
        url = _fill(path, object_ids(world))
        body = _body(method, path, route)
        response = client.request(method, url, json=body, headers=bearer(world.a.write_key))
        if path in WRITE_KEY_POSTS:
            assert response.status_code == 200, (path, response.text)
            continue
        assert response.status_code in (403, 404), (method, path, response.text)
        assert response.status_code != 200


def test_cookie_writes_need_the_csrf_token(client: TestClient, world: World) -> None:
    from nexus.workspaces.models import Role

    login(client, world.a.members[Role.OWNER].email)
    response = client.post("/v1/keys", json={"name": "x"})
    _assert_problem(response, 403)
    assert "CSRF" in response.json()["detail"]
    response = client.post("/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": "wrong"})
    _assert_problem(response, 403)


def test_revoked_key_is_refused_at_once(client: TestClient, world: World) -> None:
    assert client.get("/v1/me", headers=bearer(world.a.secret_key)).status_code == 200
    revoked = client.delete(f"/v1/keys/{world.a.secret_key_id}", headers=bearer(world.a.secret_key))
    assert revoked.status_code == 204
    _assert_problem(client.get("/v1/me", headers=bearer(world.a.secret_key)), 401)


def test_segment_style_basic_auth_is_accepted(client: TestClient, world: World) -> None:
    import base64

    basic = base64.b64encode(f"{world.a.write_key}:".encode()).decode()
    response = client.get("/v1/me", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200
    assert response.json()["kind"] == "public_key"
    assert sorted(response.json()["permissions"]) == ["decide", "ingest"]
    _assert_problem(client.get("/v1/me", headers={"Authorization": "Basic %%%"}), 401)
    _assert_problem(client.get("/v1/me", headers={"Authorization": "Digest abc"}), 401)
