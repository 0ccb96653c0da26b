"""Every change an administrator makes, every sign-in and every rollback is in the audit log.

The walk is the one of ``tests/api/test_authorization.py``: every write route of the admin
API (a route added later is walked automatically) is called with workspace A's secret key on
objects made for that call alone, and must append to A's chain, in the key's name. Then
sign-in, failed sign-in and sign-out must be in the global chain, every chain must verify,
and no token or password may appear anywhere in the log.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from nexus.events.views import INGEST_PATHS
from nexus.evolution import service as evolution
from nexus.evolution.models import CampaignCreate, CandidatesRequest, PromoteRequest
from nexus.experiments import guard, rollouts
from nexus.experiments import service as experiments
from nexus.experiments.models import (
    AdaptationCreate,
    ExperimentCreate,
    FlagCreate,
    MetricIn,
    RolloutCreate,
    SegmentIn,
)
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelCreate
from nexus.pages import service as pages
from nexus.pages.models import HostedFunnelCreate
from nexus.security import service as audit
from nexus.security.audit import GLOBAL_CHAIN, AuditEntry
from nexus.storage.database import Database
from nexus.workspaces import service as workspaces
from nexus.workspaces.deps import SESSION_COOKIE
from nexus.workspaces.models import KeyKind, Role
from tests.api.test_authorization import (
    READ_ONLY_POSTS,
    SAMPLE_BODIES,
    WRITE_KEY_POSTS,
    WRITE_METHODS,
    _body,
    _fill,
    _is_public,
    _operations,
    object_ids,
)
from tests.conftest import PASSWORD, World, bearer, login

# Writes that change no workspace's settings: ingestion, decisions, read-only queries.
NOT_ADMIN = {*INGEST_PATHS, *WRITE_KEY_POSTS, *READ_ONLY_POSTS}
# Routes only a signed-in user may call (a workspace gets an owner): walked as A's owner.
USER_ONLY = {("POST", "/v1/workspaces")}
# A check asks the guard to judge now: what follows (advance, roll back) is the guard's act.
ACTED_BY_THE_GUARD = {"/v1/rollouts/{rollout_id}/check"}

_serial = itertools.count(1)


def _fresh_ids(database: Database, world: World) -> dict[str, str]:
    """New objects in workspace A for one call, so no call depends on what another did."""
    n = next(_serial)
    ids = object_ids(world)
    with database.session() as db:
        ws = world.a.id
        experiments.create_flag(db, workspace_id=ws, data=FlagCreate(key=f"walk-{n}"), actor="t")
        experiments.create_experiment(
            db, workspace_id=ws, data=ExperimentCreate(key=f"exp-{n}", layer=f"layer-{n}")
        )
        experiments.create_adaptation(db, workspace_id=ws, data=AdaptationCreate(key=f"ui-{n}"))
        ids["rollout_id"] = _rollout(db, ws, f"ramp-{n}").id
        user = workspaces.create_user(db, email=f"walker{n}@a.test", password=PASSWORD)
        workspaces.add_member(db, workspace_id=ws, email=user.email, role=Role.ANALYST, actor=None)
        key, _token = workspaces.create_api_key(
            db, workspace_id=ws, name=f"walk {n}", kind=KeyKind.SECRET
        )
        ids["funnel_id"] = funnels.create_funnel(
            db,
            workspace_id=ws,
            data=FunnelCreate(name=f"walk {n}", steps=[{"event": "A"}, {"event": "B"}]),
        ).id
        pages.create(
            db,
            workspace_id=ws,
            data=HostedFunnelCreate.model_validate(
                {"slug": f"site-{n}", **SAMPLE_BODIES["HostedFunnelBody"]}
            ),
        )
        ids.update(_campaign(db, ws, n))
    ids.update(
        slug=f"site-{n}",
        flag_key=f"walk-{n}",
        experiment_key=f"exp-{n}",
        adaptation_key=f"ui-{n}",
        user_id=user.id,
        key_id=key.id,
    )
    return ids


def _campaign(db: Any, workspace_id: str, n: int) -> dict[str, str]:
    """An evolution campaign ready for every action: one design measured (so there is a
    champion to promote), a candidate waiting for approval; ``evo-{n}-paused`` to resume and
    ``evo-{n}-promoting`` to roll back live beside it."""
    made = {}
    for suffix, step in (("", "one"), ("-paused", "two")):
        body = {**SAMPLE_BODIES["CampaignCreate"], "funnel": f"site-{n}", "step": step}
        campaign = evolution.create(
            db,
            workspace_id=workspace_id,
            data=CampaignCreate.model_validate({**body, "key": f"evo-{n}{suffix}"}),
            actor="tests",
        )
        loaded = evolution.load(db, campaign)
        loaded.evolution.record(loaded.evolution.current.designs[0], True)
        campaign.state = loaded.evolution.to_state()
        made[suffix] = campaign
    candidate = evolution.add_candidates(
        db,
        made[""],
        CandidatesRequest(gene="headline", texts=[f"Hello {n}"]),
        actor="tests",
        source="generator",
    )[0]
    evolution.pause(db, made["-paused"], actor="tests")
    return {"campaign_key": f"evo-{n}", "candidate_id": candidate.id}


def _rollout(db: Any, workspace_id: str, flag_key: str) -> Any:
    experiments.create_flag(
        db, workspace_id=workspace_id, data=FlagCreate(key=flag_key), actor="tests"
    )
    return guard.create_rollout(
        db,
        workspace_id=workspace_id,
        flag_key=flag_key,
        data=RolloutCreate(
            variation="on",
            guardrails=[MetricIn(key="errors", kind="count", event="Error")],
            segments=[
                SegmentIn.model_validate(
                    {
                        "key": "mobile",
                        "clauses": [{"attribute": "device", "op": "in", "value": ["mobile"]}],
                    }
                )
            ],
        ),
        actor="tests",
    )


def _entries(database: Database, workspace_id: str | None, after: int = 0) -> list[AuditEntry]:
    with database.session() as db:
        return audit.list_entries(db, workspace_id=workspace_id, after_seq=after, limit=100_000)


def _head(database: Database, workspace_id: str | None) -> int:
    entries = _entries(database, workspace_id)
    return entries[-1].seq if entries else 0


def _campaign_for(db: Any, workspace_id: str, path: str, key: str) -> str:
    """The campaign an evolution action can act on: a paused one to resume, one being
    promoted to roll back."""
    if path.endswith("/resume"):
        return f"{key}-paused"
    if path == "/v1/evolution/campaigns":  # a new campaign: its step must be free
        paused = evolution.get(db, workspace_id=workspace_id, key=f"{key}-paused")
        evolution.stop(db, paused, actor="tests")
    if path.endswith("/rollback"):
        campaign = evolution.get(db, workspace_id=workspace_id, key=key)
        evolution.promote(db, campaign, PromoteRequest(), actor="tests")
    return key


@pytest.fixture
def verdict(monkeypatch: pytest.MonkeyPatch) -> list[rollouts.Verdict]:
    """What the guardrail check decides, chosen by the test (no traffic needed)."""
    chosen = [rollouts.Verdict(action="advance", reason="walk", next_stage=50.0)]
    monkeypatch.setattr(rollouts, "judge", lambda *args, **kwargs: chosen[0])
    return chosen


def test_every_admin_write_is_audited_in_its_workspace_chain(
    client: TestClient, world: World, database: Database, verdict: list[rollouts.Verdict]
) -> None:
    csrf = ""
    walked: list[str] = []
    tokens: list[str] = []  # of keys the walk creates
    for method, path, route in _operations(client):
        if method not in WRITE_METHODS or _is_public(route) or not path.startswith("/v1/"):
            continue
        if path in NOT_ADMIN:
            continue
        ids = _fresh_ids(database, world)
        if path.endswith("/stop"):
            with database.session() as db:
                experiments.start_experiment(db, workspace_id=world.a.id, key=ids["experiment_key"])
        if path.startswith("/v1/evolution/campaigns"):
            with database.session() as db:
                ids["campaign_key"] = _campaign_for(db, world.a.id, path, ids["campaign_key"])
        url = _fill(path, ids)
        body = _body(method, path, route)
        if path == "/v1/evolution/campaigns":
            body = {**(body or {}), "key": f"new-{ids['campaign_key']}", "funnel": ids["slug"]}
            body["step"] = "two"
        before = _head(database, world.a.id)
        if (method, path) in USER_ONLY:
            csrf = csrf or login(client, world.a.members[Role.OWNER].email)
            response = client.request(method, url, json=body, headers={"X-CSRF-Token": csrf})
            assert response.status_code < 300, (method, path, response.text)
            created = _entries(database, response.json()["id"])
            assert {e.actor for e in created} == {world.a.members[Role.OWNER].user_id}, path
            assert {"workspace.created", "key.created"} <= {e.action for e in created}
            walked.append(f"{method} {path}")
            continue
        response = client.request(method, url, json=body, headers=bearer(world.a.secret_key))
        assert response.status_code < 300, (method, path, response.text)
        if response.content and isinstance(answer := response.json(), dict):
            tokens += [answer["token"]] if "token" in answer else []
        new = _entries(database, world.a.id, after=before)
        assert new, f"{method} {path} changed workspace A but appended no audit entry"
        actor = guard.GUARD_ACTOR if path in ACTED_BY_THE_GUARD else world.a.secret_key_id
        assert all(e.actor == actor for e in new), (path, new)
        walked.append(f"{method} {path}")
    # The walk really walked: every kind of administration is in it.
    assert len(walked) >= 25, walked
    for expected in (
        "PATCH /v1/workspaces/{workspace_id}",
        "DELETE /v1/members/{user_id}",
        "DELETE /v1/keys/{key_id}",
        "POST /v1/rollouts/{rollout_id}/rollback",
        "PUT /v1/decision-settings",
        "PUT /v1/emotion/settings",
    ):
        assert expected in walked
    assert tokens  # POST /v1/keys answered one
    _assert_intact_and_secret_free(database, world, extra=tokens)


@pytest.mark.parametrize(
    ("chosen", "action"),
    [
        (rollouts.Verdict(action="advance", reason="ok", next_stage=50.0), "rollout.advanced"),
        (rollouts.Verdict(action="complete", reason="done", next_stage=100.0), "rollout.completed"),
        (rollouts.Verdict(action="rollback", reason="errors up"), "rollout.rolled_back"),
        (
            rollouts.Verdict(action="rollback_segment", reason="bad", segment="mobile"),
            "rollout.segment_rolled_back",
        ),
    ],
)
def test_what_the_guard_does_is_audited(
    client: TestClient,
    world: World,
    database: Database,
    verdict: list[rollouts.Verdict],
    chosen: rollouts.Verdict,
    action: str,
) -> None:
    verdict[0] = chosen
    with database.session() as db:
        rollout_id = _rollout(db, world.a.id, "guarded").id
    before = _head(database, world.a.id)
    response = client.post(f"/v1/rollouts/{rollout_id}/check", headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    new = _entries(database, world.a.id, after=before)
    ours = [e for e in new if e.action == action]
    assert len(ours) == 1, new
    assert ours[0].target == rollout_id
    assert ours[0].details["flag"] == "guarded"
    # The flag's own change is in the chain too, under the same actor.
    assert {e.actor for e in new} == {guard.GUARD_ACTOR}
    assert any(e.action.startswith("flag.rollout_") and e.target == "guarded" for e in new)


def test_sign_in_failure_success_and_sign_out_are_audited(
    client: TestClient, world: World, database: Database
) -> None:
    owner = world.a.members[Role.OWNER]
    before = _head(database, None)
    for email, password in ((owner.email, "not " + PASSWORD), ("nobody@a.test", PASSWORD)):
        page = client.get("/login")  # each form carries its own token
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        refused = client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert refused.status_code == 401
    dashboard_csrf = login(client, owner.email)
    session_token = client.cookies.get(SESSION_COOKIE)
    assert session_token
    out = client.post("/logout", data={"csrf_token": dashboard_csrf}, follow_redirects=False)
    assert out.status_code == 303

    new = _entries(database, None, after=before)
    assert all(e.chain == GLOBAL_CHAIN for e in new)
    assert [(e.action, e.actor, e.details.get("email")) for e in new] == [
        ("auth.login_failed", "anonymous", owner.email),
        ("auth.login_failed", "anonymous", "nobody@a.test"),
        ("auth.login", owner.user_id, None),
        ("auth.logout", owner.user_id, None),
    ]
    _assert_intact_and_secret_free(database, world, extra=[session_token])


def test_key_and_member_changes_name_the_key_not_its_token(
    client: TestClient, world: World, database: Database
) -> None:
    created = client.post(
        "/v1/keys", json={"name": "ci"}, headers=bearer(world.a.secret_key)
    ).json()
    client.delete(f"/v1/keys/{created['id']}", headers=bearer(world.a.secret_key))
    entries = _entries(database, world.a.id)
    made = next(e for e in entries if e.action == "key.created" and e.target == created["id"])
    assert made.details["name"] == "ci"
    assert made.actor == world.a.secret_key_id
    assert any(e.action == "key.revoked" and e.target == created["id"] for e in entries)
    _assert_intact_and_secret_free(database, world, extra=[created["token"]])


def _assert_intact_and_secret_free(
    database: Database, world: World, extra: list[str] | None = None
) -> None:
    secrets = [PASSWORD, *(extra or [])]
    for tenant in (world.a, world.b):
        secrets += [tenant.secret_key, tenant.read_only_key, tenant.write_key]
    with database.session() as db:
        chains = audit.list_chains(db)
        assert world.a.id in chains
        for chain in chains:
            workspace_id = None if chain == GLOBAL_CHAIN else chain
            result = audit.verify_log(db, workspace_id=workspace_id)
            assert result.ok, (chain, result)
            for entry in audit.list_entries(db, workspace_id=workspace_id, limit=100_000):
                text = orjson.dumps(entry.details).decode() + entry.actor + entry.target
                for secret in secrets:
                    assert secret not in text, (entry, "leaks a secret")
