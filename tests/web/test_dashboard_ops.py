"""The experiments, flags, privacy and settings pages, over HTTP through the real app with a
signed-in session: each shows the workspace's data, every form needs the session's CSRF token
and the role the API would need, a change made in a form is the change the API sees (audit
entries included), and bad input answers a 4xx page, never a 500."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from nexus.security.models import AuditLogEntry
from nexus.security.service import list_entries
from nexus.storage.database import Database
from nexus.workspaces import service as workspaces
from nexus.workspaces.models import Role
from tests.conftest import PASSWORD, World, bearer, login
from tests.events.conftest import basic
from tests.experiments.conftest import create_flag
from tests.experiments.test_decide import ANGRY, HAPPY, decide

PAGES = ("/experiments", "/flags", "/privacy", "/settings")
HEADINGS = ("Experiments", "Feature flags", "Privacy", "Settings")


# --- helpers --------------------------------------------------------------------------------


def _sign_in(client: TestClient, world: World, role: Role) -> str:
    return login(client, world.a.members[role].email)


def _stored(client: TestClient) -> None:
    """Wait until everything ingested so far is in the event store."""
    pipeline: Any = client.app.state.events.pipeline  # type: ignore[attr-defined]
    assert pipeline.wait_until_stored(pipeline.journal.end)


def _journal_decisions(client: TestClient) -> None:
    """One pass of the decision worker (journal ``$exposure``/``$decision``), then wait."""
    app: Any = client.app
    assert client.portal is not None
    _stored(client)
    client.portal.call(partial(app.state.decision_worker.run_once, rollouts=False))
    _stored(client)


def _send(client: TestClient, world: World, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 500):
        response = client.post(
            "/v1/batch",
            json={"batch": messages[start : start + 500]},
            headers=basic(world.a.write_key),
        )
        assert response.status_code == 200, response.text
    _stored(client)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _is_page(response: Any, status: int) -> str:
    """The response is an HTML page (not a JSON problem) with ``status``; its text."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    text: str = response.text
    return text


def _cell(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', page)
    assert match is not None, f"no cell {testid}"
    return html.unescape(match.group(1)).strip()


def _audit_actions(database: Database, workspace_id: str) -> list[tuple[str, str, str]]:
    with database.session() as db:
        return [
            (e.action, e.actor, e.target)
            for e in list_entries(db, workspace_id=workspace_id, limit=10_000)
        ]


def _flag(client: TestClient, world: World, key: str) -> dict[str, Any]:
    response = client.get(f"/v1/flags/{key}", headers=bearer(world.a.secret_key))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _experiment(
    client: TestClient,
    world: World,
    key: str,
    *,
    split: dict[str, int],
    converted: dict[str, int],
) -> dict[str, Any]:
    """A started experiment (control, bold: equal weights) and ``split`` exposures per
    variant, ``converted`` of which order within the metric's window."""
    secret = bearer(world.a.secret_key)
    body = {
        "key": key,
        "name": f"Experiment {key}",
        "variants": [{"key": "control"}, {"key": "bold"}],
        "metrics": [
            {"key": "orders", "kind": "conversion", "event": "Order Completed"},
            {
                "key": "refunds",
                "kind": "count",
                "event": "Refund",
                "guardrail": True,
                "direction": "decrease",
            },
        ],
        "primary_metric": "orders",
    }
    assert client.post("/v1/experiments", json=body, headers=secret).status_code == 201
    started = client.post(f"/v1/experiments/{key}/start", headers=secret)
    assert started.status_code == 200, started.text
    at = datetime.fromisoformat(started.json()["started_at"].replace("Z", "+00:00"))
    messages: list[dict[str, Any]] = []
    for variant, n in split.items():
        for i in range(n):
            visitor = f"{key}-{variant}-{i}"
            seen = at + timedelta(microseconds=10 + 2 * i)  # all in the past by now
            messages.append(
                {
                    "type": "track",
                    "event": "$exposure",
                    "anonymousId": visitor,
                    "messageId": f"{visitor}-x",
                    "timestamp": _iso(seen),
                    "properties": {"experiment": key, "variant": variant},
                }
            )
            if i < converted[variant]:
                messages.append(
                    {
                        "type": "track",
                        "event": "Order Completed",
                        "anonymousId": visitor,
                        "messageId": f"{visitor}-o",
                        "timestamp": _iso(seen + timedelta(microseconds=1)),
                    }
                )
    _send(client, world, messages)
    results = client.get(f"/v1/experiments/{key}/results", headers=secret)
    assert results.status_code == 200, results.text
    report: dict[str, Any] = results.json()
    assert report["exposed"] == sum(split.values())
    return report


# --- every page -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.ANALYST, Role.VIEWER])
def test_every_page_renders_for_every_role(client: TestClient, world: World, role: Role) -> None:
    _sign_in(client, world, role)
    for path, heading in zip(PAGES, HEADINGS, strict=True):
        response = client.get(path)
        page = _is_page(response, 200)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy  # never inline scripts, charts or not
        if path in ("/flags", "/settings"):  # no charts: the app's strict style policy
            assert "style-src 'self';" in policy
        assert f"<h1>{heading}</h1>" in page
        assert "ops.css" in page
        assert 'style="' not in page  # the CSP allows no inline styles


def test_pages_redirect_to_sign_in_without_a_session(client: TestClient, world: World) -> None:
    for path in (*PAGES, "/flags/x", "/experiments/x"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    # Forms too; an API key is no dashboard session.
    user = world.a.members[Role.OWNER].user_id
    for path in (
        "/flags/x/toggle",
        "/flags/x",
        "/flags/x/document",
        "/privacy/requests",
        "/settings/members",
        f"/settings/members/{user}/role",
    ):
        for headers in ({}, bearer(world.a.secret_key)):
            response = client.post(path, data={}, headers=headers, follow_redirects=False)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login?next=/"


# --- experiments ----------------------------------------------------------------------------


def test_an_experiment_shows_its_intervals_and_a_skewed_split_warns(
    client: TestClient, world: World
) -> None:
    report = _experiment(
        client,
        world,
        "skewed",
        split={"control": 160, "bold": 80},
        converted={"control": 24, "bold": 20},
    )
    assert report["sample_ratio"]["mismatch"] is True
    _sign_in(client, world, Role.VIEWER)

    listing = _is_page(client.get("/experiments"), 200)
    assert 'href="/experiments/skewed"' in listing
    assert "Experiment skewed" in listing

    page = _is_page(client.get("/experiments/skewed"), 200)
    assert 'data-testid="srm-warning"' in page
    orders = next(m for m in report["metrics"] if m["metric"] == "orders")
    bold = orders["comparisons"][0]
    # The interval the API computed, in percentage points, in the results table ...
    low, high = bold["ci_low"] * 100, bold["ci_high"] * 100
    assert _cell(page, "ci") == f"[{low:+.2f} pp, {high:+.2f} pp]"
    seq_low, seq_high = bold["sequential_ci_low"] * 100, bold["sequential_ci_high"] * 100
    assert _cell(page, "sequential-ci") == f"[{seq_low:+.2f} pp, {seq_high:+.2f} pp]"
    # ... and drawn: the figure and its table view carry the same numbers.
    assert 'data-chart-for="chart-effect-orders"' in page
    assert 'data-testid="table-effect-orders"' in page
    assert f"{bold['effect'] * 100:+.4g}" in page
    # The observed split against the expected one, and a sequential verdict.
    split = page[page.index('data-testid="sample-ratio"') :]
    split = split[: split.index("</table>")]
    for figure in ("160", "80", "66.7%", "33.3%", "50.0%"):
        assert f"<td>{figure}</td>" in split
    assert _cell(page, "sequential-status").startswith(("keep running", "decided", "not enough"))
    assert 'data-testid="stopping"' in page


def test_a_balanced_split_does_not_warn(client: TestClient, world: World) -> None:
    report = _experiment(
        client,
        world,
        "even",
        split={"control": 100, "bold": 100},
        converted={"control": 10, "bold": 30},
    )
    assert report["sample_ratio"]["mismatch"] is False
    _sign_in(client, world, Role.ANALYST)
    page = _is_page(client.get("/experiments/even"), 200)
    assert 'data-testid="srm-warning"' not in page
    assert "no mismatch" in page
    orders = next(m for m in report["metrics"] if m["metric"] == "orders")["comparisons"][0]
    if orders["sequential_significant"]:
        assert "May stop" in page or "Stop" in page
    assert 'data-testid="results-refunds"' in page
    assert "guardrail" in page


def test_a_draft_experiment_says_it_has_not_started(client: TestClient, world: World) -> None:
    secret = bearer(world.a.secret_key)
    assert client.post("/v1/experiments", json={"key": "later"}, headers=secret).status_code == 201
    _sign_in(client, world, Role.VIEWER)
    page = _is_page(client.get("/experiments/later"), 200)
    assert "draft" in page
    assert "srm-warning" not in page


def test_bandit_allocations_and_policy_are_shown(client: TestClient, world: World) -> None:
    secret, public = bearer(world.a.secret_key), basic(world.a.write_key)
    for key in ("calm", "urgent"):
        assert (
            client.post(
                "/v1/adaptations", json={"key": key, "tone": key}, headers=secret
            ).status_code
            == 201
        )
    _sign_in(client, world, Role.VIEWER)
    assert 'data-testid="no-decisions"' in _is_page(client.get("/experiments"), 200)
    served: dict[str, int] = {}
    for i in range(12):
        result = decide(client, public, visitor_id=f"bandit-{i}", emotion=ANGRY if i % 2 else HAPPY)
        arm = result["adaptation"]["key"]
        served[arm] = served.get(arm, 0) + 1
    _journal_decisions(client)
    page = _is_page(client.get("/experiments?days=1"), 200)
    assert 'data-chart-for="chart-allocation"' in page
    assert "12 adaptation decisions logged" in page
    table = page[page.index('data-testid="table-allocation"') :]
    table = table[: table.index("</table>")]
    for arm, n in served.items():
        assert f'<th scope="col">{arm}</th>' in table
        assert f"{n} (" in table
    assert 'data-testid="policy-arms"' in page
    assert "LinearThompson" in page or "Thompson" in page or "LinUCB" in page
    # The daily view counts the same decisions.
    assert "12 adaptation decisions logged" in client.get("/experiments?days=30").text


def test_a_rolled_back_rollout_shows_its_history(client: TestClient, world: World) -> None:
    secret = bearer(world.a.secret_key)
    create_flag(client, secret, "new-checkout")
    started = client.post(
        "/v1/flags/new-checkout/rollouts",
        json={
            "variation": "on",
            "guardrails": [
                {
                    "key": "errors",
                    "kind": "count",
                    "event": "Checkout Error",
                    "direction": "decrease",
                }
            ],
        },
        headers=secret,
    )
    assert started.status_code == 201, started.text
    rollout_id = started.json()["id"]
    back = client.post(
        f"/v1/rollouts/{rollout_id}/rollback", json={"comment": "incident 42"}, headers=secret
    )
    assert back.status_code == 200, back.text
    _sign_in(client, world, Role.VIEWER)
    page = _is_page(client.get("/experiments"), 200)
    assert 'data-status="rolled_back"' in page
    alert = page[page.index('data-testid="rolled-back"') :]
    assert "incident 42" in alert[: alert.index("</div>")]
    history = page[page.index('data-testid="rollout-history"') :]
    history = history[: history.index("</table>")]
    assert "rolled back" in history
    assert "started" in history
    assert history.index("rolled back") < history.index("started")  # newest first
    flag_page = _is_page(client.get("/flags/new-checkout"), 200)
    assert "incident 42" in flag_page
    assert "rollout-rolled-back" in flag_page  # the rule now serving control


# --- flags ----------------------------------------------------------------------------------


def test_switching_a_flag_off_and_on_is_what_the_api_and_decide_see(
    client: TestClient, world: World, database: Database
) -> None:
    secret, public = bearer(world.a.secret_key), basic(world.a.write_key)
    create_flag(client, secret, "banner", fallthrough={"variation": "on"})
    assert decide(client, public, visitor_id="v1")["flags"]["banner"]["value"] is True
    csrf = _sign_in(client, world, Role.ANALYST)
    listing = _is_page(client.get("/flags"), 200)
    assert 'action="/flags/banner/toggle"' in listing
    assert _cell(listing, "flag-state") == "on"

    off = client.post(
        "/flags/banner/toggle",
        data={"enabled": "false", "comment": "incident 7", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert off.status_code == 303
    assert off.headers["location"] == "/flags"
    assert _flag(client, world, "banner")["enabled"] is False
    killed = decide(client, public, visitor_id="v1")["flags"]["banner"]
    assert killed["reason"] == "DISABLED"
    assert killed["value"] is False
    analyst = world.a.members[Role.ANALYST].user_id
    assert ("flag.killed", analyst, "banner") in _audit_actions(database, world.a.id)
    changes = client.get("/v1/flags/banner/changes", headers=secret).json()["items"]
    assert changes[-1]["action"] == "killed"
    assert changes[-1]["comment"] == "incident 7"
    assert _cell(client.get("/flags").text, "flag-state") == "off"

    on = client.post(
        "/flags/banner/toggle",
        data={"enabled": "true", "back": "flag", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert on.headers["location"] == "/flags/banner"
    assert _flag(client, world, "banner")["enabled"] is True
    assert decide(client, public, visitor_id="v1")["flags"]["banner"]["value"] is True
    page = client.get("/flags/banner").text
    trail = page[page.index('data-testid="flag-changes"') :]
    assert "incident 7" in trail
    assert world.a.members[Role.ANALYST].email in trail  # who, by e-mail


def test_a_viewer_sees_no_controls_and_is_refused(client: TestClient, world: World) -> None:
    create_flag(client, bearer(world.a.secret_key), "banner")
    csrf = _sign_in(client, world, Role.VIEWER)
    listing = _is_page(client.get("/flags"), 200)
    assert "/toggle" not in listing
    page = _is_page(client.get("/flags/banner"), 200)
    assert 'data-testid="flag-form"' not in page
    assert 'data-testid="document-form"' not in page
    assert "/toggle" not in page
    refused = client.post("/flags/banner/toggle", data={"enabled": "false", "csrf_token": csrf})
    assert "write" in _is_page(refused, 403)
    edit = client.post(
        "/flags/banner/document", data={"document": "{}", "version": "1", "csrf_token": csrf}
    )
    _is_page(edit, 403)
    assert _flag(client, world, "banner")["enabled"] is True
    assert _flag(client, world, "banner")["version"] == 1


def test_forms_without_the_csrf_token_are_refused(client: TestClient, world: World) -> None:
    create_flag(client, bearer(world.a.secret_key), "banner")
    _sign_in(client, world, Role.OWNER)
    analyst = world.a.members[Role.ANALYST].user_id
    posts = [
        ("/flags/banner/toggle", {"enabled": "false"}),
        ("/flags/banner", {"name": "x", "version": "1"}),
        ("/flags/banner/document", {"document": "{}", "version": "1"}),
        ("/privacy/requests", {"kind": "erasure", "visitor_id": "v", "confirm": "yes"}),
        ("/settings/members", {"email": "x@a.test", "role": "viewer"}),
        (f"/settings/members/{analyst}/role", {"role": "viewer"}),
    ]
    for path, data in posts:
        for token in (None, "forged"):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            assert "CSRF" in _is_page(client.post(path, data=body), 403), path
    assert _flag(client, world, "banner")["enabled"] is True
    members = client.get("/v1/members", headers=bearer(world.a.secret_key)).json()["items"]
    assert {m["role"] for m in members if m["user_id"] == analyst} == {"analyst"}


def test_the_edit_form_saves_a_rollout_and_keeps_bad_input_in_place(
    client: TestClient, world: World, database: Database
) -> None:
    create_flag(client, bearer(world.a.secret_key), "pricing", description="old")
    csrf = _sign_in(client, world, Role.ANALYST)
    form = {
        "csrf_token": csrf,
        "version": "1",
        "name": "Pricing page",
        "description": "the new pricing page",
        "comment": "ramp to a quarter",
        "variation_key": ["on", "off"],
        "variation_value": ["true", "false"],
        "serve": "rollout",
        "fallthrough_variation": "off",
        "weight": ["25", "65"],
    }
    # Weights that do not add up: refused beside the field, with what was typed kept.
    bad = _is_page(client.post("/flags/pricing", data=form), 422)
    assert "add up to 90" in _cell(bad, "error-weights")
    assert 'value="65"' in bad
    assert "the new pricing page" in bad
    assert _flag(client, world, "pricing")["description"] == "old"
    # A value that is not JSON, and a percentage that is not a number.
    bad = _is_page(
        client.post(
            "/flags/pricing",
            data={**form, "variation_value": ["yes", "false"], "weight": ["x", "75"]},
        ),
        422,
    )
    assert "Not a JSON value" in _cell(bad, "error-value-on")
    assert "percentage" in _cell(bad, "error-weight-on")
    assert 'value="yes"' in bad
    # A boolean flag's values must stay true and false: the evaluator's check, in place.
    bad = _is_page(
        client.post(
            "/flags/pricing",
            data={**form, "variation_value": ["1", "false"], "weight": ["25", "75"]},
        ),
        422,
    )
    assert 'data-testid="form-error"' in bad

    saved = client.post(
        "/flags/pricing", data={**form, "weight": ["25", "75"]}, follow_redirects=False
    )
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/flags/pricing?saved=1"
    flag = _flag(client, world, "pricing")
    assert flag["name"] == "Pricing page"
    assert flag["description"] == "the new pricing page"
    assert flag["fallthrough"] == {
        "variation": None,
        "rollout": [{"variation": "on", "weight": 25.0}, {"variation": "off", "weight": 75.0}],
    }
    assert flag["version"] == 2
    assert ("flag.updated", world.a.members[Role.ANALYST].user_id, "pricing") in _audit_actions(
        database, world.a.id
    )
    page = _is_page(client.get(saved.headers["location"]), 200)
    assert 'data-testid="saved"' in page
    assert _cell(page, "serving") == "on 25% / off 75%"
    # The same form, opened before that save: refused, not overwritten, input kept.
    stale = _is_page(
        client.post("/flags/pricing", data={**form, "weight": ["50", "50"], "description": "mine"}),
        409,
    )
    assert "changed since this form was opened" in stale
    assert "mine" in stale
    assert _flag(client, world, "pricing")["version"] == 2


def test_the_json_form_validates_like_the_api(client: TestClient, world: World) -> None:
    create_flag(
        client,
        bearer(world.a.secret_key),
        "colour",
        kind="multivariate",
        variations=[{"key": "red", "value": "red"}, {"key": "blue", "value": "blue"}],
        off_variation="red",
        fallthrough={"variation": "red"},
    )
    csrf = _sign_in(client, world, Role.ANALYST)
    page = _is_page(client.get("/flags/colour"), 200)
    assert (
        "&#34;off_variation&#34;: &#34;red&#34;" in page
        or '"off_variation": "red"' in html.unescape(page)
    )

    def post(document: str, version: str = "1") -> Any:
        return client.post(
            "/flags/colour/document",
            data={"document": document, "version": version, "csrf_token": csrf},
            follow_redirects=False,
        )

    not_json = _is_page(post('{"rules": ['), 422)
    assert "Not valid JSON" in not_json
    assert "{&#34;rules&#34;: [" in not_json  # what was typed stays
    unknown = _is_page(post('{"colour": "green"}'), 422)
    assert "Extra inputs are not permitted" in unknown
    not_servable = _is_page(post('{"rules": [{"id": "r1", "serve": {"variation": "green"}}]}'), 422)
    assert "green" in html.unescape(not_servable)
    assert 'data-testid="document-errors"' in not_servable
    assert _flag(client, world, "colour")["version"] == 1

    rule = {
        "id": "de",
        "clauses": [{"attribute": "country", "op": "eq", "value": "DE"}],
        "serve": {"variation": "blue"},
    }
    saved = post(json.dumps({"rules": [rule], "comment": "German blue"}))
    assert saved.status_code == 303, saved.text
    flag = _flag(client, world, "colour")
    assert flag["rules"][0]["id"] == "de"
    assert flag["version"] == 2
    assert (
        decide(client, basic(world.a.write_key), visitor_id="v", attributes={"country": "DE"})[
            "flags"
        ]["colour"]["value"]
        == "blue"
    )
    stale = _is_page(post('{"description": "late"}', version="1"), 409)
    assert "late" in stale


def test_unknown_objects_and_bad_values_answer_4xx_pages(client: TestClient, world: World) -> None:
    create_flag(client, bearer(world.a.secret_key), "banner")
    csrf = _sign_in(client, world, Role.OWNER)
    assert "No flag" in _is_page(client.get("/flags/nope"), 404)
    assert "No experiment" in _is_page(client.get("/experiments/nope"), 404)
    _is_page(client.post("/flags/nope/toggle", data={"enabled": "false", "csrf_token": csrf}), 404)
    _is_page(client.post("/flags/nope/document", data={"document": "{}", "csrf_token": csrf}), 404)
    _is_page(
        client.post("/flags/banner/toggle", data={"enabled": "maybe", "csrf_token": csrf}), 422
    )
    _is_page(
        client.post(
            "/flags/banner/toggle",
            data={"enabled": "false", "comment": "x" * 2001, "csrf_token": csrf},
        ),
        422,
    )
    _is_page(client.post("/flags/banner", data={"variation_key": ["on"], "csrf_token": csrf}), 422)
    _is_page(
        client.post(
            "/flags/banner",
            data={
                "variation_key": ["a", "b"],
                "variation_value": ["1", "2"],
                "weight": ["0", "0"],
                "csrf_token": csrf,
            },
        ),
        409,
    )
    _is_page(client.get("/experiments?days=abc"), 422)
    _is_page(client.get("/experiments?days=0"), 422)
    _is_page(client.get("/privacy?before=x"), 422)
    _is_page(client.get("/privacy?action=DROP%20TABLE"), 422)
    _is_page(
        client.post(
            "/privacy/requests", data={"kind": "delete", "visitor_id": "v", "csrf_token": csrf}
        ),
        422,
    )
    _is_page(
        client.post(
            "/privacy/requests", data={"kind": "export", "visitor_id": "", "csrf_token": csrf}
        ),
        422,
    )
    _is_page(
        client.post(
            "/privacy/requests", data={"kind": "export", "visitor_id": "a\x01b", "csrf_token": csrf}
        ),
        422,
    )
    analyst = world.a.members[Role.ANALYST].user_id
    _is_page(
        client.post(
            f"/settings/members/{analyst}/role", data={"role": "emperor", "csrf_token": csrf}
        ),
        422,
    )
    _is_page(
        client.post(
            "/settings/members/usr_nobody/role", data={"role": "viewer", "csrf_token": csrf}
        ),
        404,
    )
    assert _flag(client, world, "banner")["version"] == 1


def test_another_workspaces_flag_is_not_found(client: TestClient, world: World) -> None:
    create_flag(client, bearer(world.b.secret_key), "their-flag")
    csrf = _sign_in(client, world, Role.OWNER)
    _is_page(client.get("/flags/their-flag"), 404)
    _is_page(
        client.post("/flags/their-flag/toggle", data={"enabled": "false", "csrf_token": csrf}), 404
    )
    assert client.get("/v1/flags/their-flag", headers=bearer(world.b.secret_key)).json()["enabled"]


# --- privacy --------------------------------------------------------------------------------


def test_consent_rates_match_the_recorded_consents(client: TestClient, world: World) -> None:
    public = basic(world.a.write_key)
    _sign_in(client, world, Role.VIEWER)
    assert 'data-testid="no-consent"' in _is_page(client.get("/privacy"), 200)
    answers = {
        "c1": {"analytics": True, "emotion_analysis": False},
        "c2": {"analytics": False},
        "c3": {"marketing": True},
    }
    for visitor, purposes in answers.items():
        response = client.post(
            "/v1/consent", json={"visitor_id": visitor, "purposes": purposes}, headers=public
        )
        assert response.status_code == 200, response.text
    # A later answer replaces the earlier one: c3 now refuses marketing.
    client.post(
        "/v1/consent", json={"visitor_id": "c3", "purposes": {"marketing": False}}, headers=public
    )
    page = _is_page(client.get("/privacy"), 200)
    expected = {
        "analytics": (1, 1, 1),
        "emotion_analysis": (0, 1, 2),
        "personalisation": (0, 0, 3),
        "marketing": (0, 1, 2),
    }
    for purpose, counts in expected.items():
        for state, n in zip(("granted", "denied", "unanswered"), counts, strict=True):
            assert _cell(page, f"consent-{purpose}-{state}") == str(n), (purpose, state)
    assert 'data-chart-for="chart-consent"' in page
    assert "3 visitors with recorded consent" in page
    # Readers see the requests but neither the form nor the audit log.
    assert 'data-testid="dsr-form"' not in page
    assert 'data-testid="audit-log"' not in page


def test_an_erasure_filed_from_the_form_is_done_listed_and_audited(
    client: TestClient, world: World, database: Database
) -> None:
    now = datetime.now().astimezone()
    _send(
        client,
        world,
        [
            {
                "type": "track",
                "event": "Viewed",
                "anonymousId": "gone-1",
                "messageId": "g1",
                "timestamp": _iso(now),
            }
        ],
    )
    csrf = _sign_in(client, world, Role.ADMIN)
    page = _is_page(client.get("/privacy"), 200)
    assert 'data-testid="dsr-form"' in page
    unconfirmed = _is_page(
        client.post(
            "/privacy/requests",
            data={"kind": "erasure", "visitor_id": "gone-1", "csrf_token": csrf},
        ),
        422,
    )
    assert "cannot be undone" in unconfirmed
    assert client.get("/v1/privacy/requests", headers=bearer(world.a.secret_key)).json() == []

    filed = client.post(
        "/privacy/requests",
        data={"kind": "erasure", "visitor_id": "gone-1", "confirm": "yes", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert filed.status_code == 303, filed.text
    requests = client.get("/v1/privacy/requests", headers=bearer(world.a.secret_key)).json()
    assert [r["kind"] for r in requests] == ["erasure"]
    assert requests[0]["report"]["complete"] is True
    assert requests[0]["id"] in filed.headers["location"]
    page = _is_page(client.get("/privacy"), 200)
    row = page[page.index('data-testid="subject-request"') :]
    row = row[: row.index("</tr>")]
    for text in ("erasure", "complete", requests[0]["id"]):
        assert text in row
    assert world.a.members[Role.ADMIN].email in row
    admin = world.a.members[Role.ADMIN].user_id
    assert ("subject.erasure", admin, requests[0]["id"]) in _audit_actions(database, world.a.id)
    assert (
        client.get(
            "/v1/events", params={"anonymousId": "gone-1"}, headers=bearer(world.a.secret_key)
        ).json()["items"]
        == []
    )


def test_an_export_filed_from_the_form_downloads_json(client: TestClient, world: World) -> None:
    public = basic(world.a.write_key)
    client.post(
        "/v1/consent",
        json={"visitor_id": "keep-1", "purposes": {"analytics": True}},
        headers=public,
    )
    csrf = _sign_in(client, world, Role.OWNER)
    response = client.post(
        "/privacy/requests", data={"kind": "export", "visitor_id": "keep-1", "csrf_token": csrf}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "attachment" in response.headers["content-disposition"]
    document = response.json()
    assert document["stores"]["consent"]["current"] == {"keep-1": {"analytics": True}}
    assert document["request_id"] in _is_page(client.get("/privacy"), 200)


def test_a_viewer_cannot_file_requests(client: TestClient, world: World) -> None:
    csrf = _sign_in(client, world, Role.ANALYST)
    refused = client.post(
        "/privacy/requests", data={"kind": "export", "visitor_id": "v", "csrf_token": csrf}
    )
    assert "admin" in _is_page(refused, 403)
    assert client.get("/v1/privacy/requests", headers=bearer(world.a.secret_key)).json() == []


def test_the_audit_log_lists_filters_pages_and_verifies(
    client: TestClient, world: World, database: Database
) -> None:
    public = basic(world.a.write_key)
    for i in range(55):
        client.post(
            "/v1/consent",
            json={"visitor_id": f"a{i}", "purposes": {"analytics": True}},
            headers=public,
        )
    create_flag(client, bearer(world.a.secret_key), "audited")
    _sign_in(client, world, Role.ADMIN)
    page = _is_page(client.get("/privacy"), 200)
    assert 'data-testid="chain-status" data-ok="true"' in page
    entries = re.findall(r'data-testid="audit-entry"><td>(\d+)</td>', page)
    assert len(entries) == 50
    assert [int(s) for s in entries] == sorted((int(s) for s in entries), reverse=True)
    assert "flag.created" in page.split('data-testid="audit-entry"')[1]  # newest first
    older = re.search(r'href="(/privacy\?before=\d+)#audit"', page)
    assert older is not None
    second = _is_page(client.get(html.unescape(older.group(1))), 200)
    seqs = [int(s) for s in re.findall(r'data-testid="audit-entry"><td>(\d+)</td>', second)]
    assert seqs
    assert max(seqs) < min(int(s) for s in entries)
    assert "member.added" in second  # the oldest entries: the fixture's members

    only = _is_page(client.get("/privacy", params={"action": "flag.created"}), 200)
    rows = only.split('data-testid="audit-log"')[1].split("</table>")[0]
    assert rows.count('data-testid="audit-entry"') == 1
    family = _is_page(client.get("/privacy", params={"action": "member.*"}), 200)
    rows = family.split('data-testid="audit-log"')[1].split("</table>")[0]
    assert rows.count('data-testid="audit-entry"') == 3
    assert "consent.updated" not in rows

    # Tampering with an entry shows at once.
    with database.session() as db:
        db.execute(
            update(AuditLogEntry)
            .where(AuditLogEntry.chain == world.a.id, AuditLogEntry.seq == 2)
            .values(actor="someone-else")
        )
    broken = _is_page(client.get("/privacy"), 200)
    assert 'data-testid="chain-status" data-ok="false"' in broken
    assert "from entry 2" in broken


# --- settings -------------------------------------------------------------------------------


def test_settings_summarise_keys_members_privacy_and_decisions(
    client: TestClient, world: World
) -> None:
    client.put(
        "/v1/decision-settings",
        json={"goal_event": "Plan Upgraded", "holdout_percent": 5, "policy": "thompson"},
        headers=bearer(world.a.secret_key),
    )
    _sign_in(client, world, Role.VIEWER)
    page = _is_page(client.get("/settings"), 200)
    assert world.a.write_key in page
    assert 'href="/keys"' in page
    for text in ("Plan Upgraded", "thompson", "5%"):
        assert text in page
    for member in world.a.members.values():
        assert member.email in page
    assert "/settings/members" not in page  # a viewer gets no forms
    assert _cell(page, "my-role") == "viewer"
    # The existing pages keep working.
    assert _is_page(client.get("/keys"), 200)
    assert _is_page(client.get("/members"), 200)


def test_admins_change_roles_and_add_members_others_cannot(
    client: TestClient, world: World, database: Database
) -> None:
    analyst = world.a.members[Role.ANALYST].user_id
    owner = world.a.members[Role.OWNER].user_id
    csrf = _sign_in(client, world, Role.ADMIN)
    page = _is_page(client.get("/settings"), 200)
    assert f'action="/settings/members/{analyst}/role"' in page
    assert f'action="/settings/members/{owner}/role"' not in page  # only owners touch owners
    assert '<option value="owner"' not in page

    changed = client.post(
        f"/settings/members/{analyst}/role",
        data={"role": "viewer", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    member = client.get(f"/v1/members/{analyst}", headers=bearer(world.a.secret_key)).json()
    assert member["role"] == "viewer"
    admin = world.a.members[Role.ADMIN].user_id
    assert ("member.role_changed", admin, analyst) in _audit_actions(database, world.a.id)
    # An admin may not make anyone owner.
    refused = client.post(
        f"/settings/members/{analyst}/role", data={"role": "owner", "csrf_token": csrf}
    )
    assert "owner" in _is_page(refused, 403)

    with database.session() as db:
        workspaces.create_user(db, email="new@a.test", password=PASSWORD)
    added = client.post(
        "/settings/members",
        data={"email": "new@a.test", "role": "analyst", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert added.status_code == 303
    assert "new@a.test" in client.get("/settings").text
    missing = _is_page(
        client.post(
            "/settings/members",
            data={"email": "ghost@a.test", "role": "viewer", "csrf_token": csrf},
        ),
        404,
    )
    alert = missing[missing.index('data-testid="member-error"') :]
    assert "No user with e-mail ghost@a.test" in alert[: alert.index("</div>")]
    assert 'value="ghost@a.test"' in missing  # kept for a retry
    _is_page(
        client.post(
            "/settings/members",
            data={"email": "not an address", "role": "viewer", "csrf_token": csrf},
        ),
        422,
    )
    _is_page(
        client.post(
            "/settings/members", data={"email": "new@a.test", "role": "viewer", "csrf_token": csrf}
        ),
        409,
    )

    # An analyst (or a viewer) changes nothing.
    client.post("/logout", data={"csrf_token": csrf})
    csrf = _sign_in(client, world, Role.VIEWER)
    assert f'action="/settings/members/{analyst}/role"' not in client.get("/settings").text
    refused = client.post(
        f"/settings/members/{analyst}/role", data={"role": "admin", "csrf_token": csrf}
    )
    assert "admin" in _is_page(refused, 403)
    assert (
        client.get(f"/v1/members/{analyst}", headers=bearer(world.a.secret_key)).json()["role"]
        == "viewer"
    )


def test_the_last_owner_stays_owner(client: TestClient, world: World) -> None:
    owner = world.a.members[Role.OWNER].user_id
    csrf = _sign_in(client, world, Role.OWNER)
    page = _is_page(client.get("/settings"), 200)
    assert '<option value="owner"' in page
    kept = client.post(
        f"/settings/members/{owner}/role", data={"role": "admin", "csrf_token": csrf}
    )
    assert "at least one owner" in _is_page(kept, 409)
    assert (
        client.get(f"/v1/members/{owner}", headers=bearer(world.a.secret_key)).json()["role"]
        == "owner"
    )
