"""The OpenAPI document is served, valid, and true to the API's behaviour.

Schemathesis generates requests from the document and checks every response against it:
documented status codes, content types and schemas, and never a 5xx. It does so with every kind
of credential a caller can hold (issue #6: zero 5xx over at least 1,000 generated requests).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import CheckFunction, positive_data_acceptance
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus.workspaces.deps import CSRF_HEADER, SESSION_COOKIE
from nexus.workspaces.models import Role
from tests.conftest import World, bearer, login


def test_openapi_document_is_valid(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    validate(document)
    paths = document["paths"]
    assert "/v1/keys/{key_id}" in paths
    assert "/login" not in paths  # dashboard pages are not API
    # No page that would pull scripts from a CDN.
    assert client.get("/docs").status_code == 404
    problem = paths["/v1/keys"]["post"]["responses"]["422"]["content"]
    assert "application/problem+json" in problem


# Operations whose rules span fields in ways JSON Schema cannot state (start before end, an
# exclusion's steps within the funnel, optional steps only in ordered mode, RE2 regexes), so a
# schema-valid request may still get a 422 that names the rule. Every other check still runs.
CROSS_FIELD_RULES = {
    ("POST", "/v1/funnels"),
    ("PATCH", "/v1/funnels/{funnel_id}"),
    ("POST", "/v1/funnels/query"),
    ("GET", "/v1/funnels/{funnel_id}/report"),
    ("GET", "/v1/funnels/{funnel_id}/people"),
    ("POST", "/v1/emotion/analyze"),  # exactly one of text / texts
    ("GET", "/v1/emotion/cohorts"),  # by=step needs funnel_id
    # Flags: rules serve known variations, rollout weights add up to 100, prerequisites
    # exist and form no cycle.
    ("POST", "/v1/flags"),
    ("PATCH", "/v1/flags/{flag_key}"),
    # Rollouts: the variations exist on the flag, stages rise to 100.
    ("POST", "/v1/flags/{flag_key}/rollouts"),
    # Experiments: control among the variants, ratio metrics name other metrics.
    ("POST", "/v1/experiments"),
    ("PATCH", "/v1/experiments/{experiment_key}"),
    # Privacy: custom PII patterns must compile (RE2), and person names need an NER model
    # that the server may not load -- a property of the deployment, not of the request.
    ("PUT", "/v1/privacy/settings"),
    # Hosted pages: each block's content must fit its kind, ids and slugs be unique, links
    # be safe URLs.
    ("POST", "/v1/hosted-funnels"),
    # Decision settings: a webhook URL must name a host that is not a private address.
    ("PUT", "/v1/decision-settings"),
    # Adaptations: trigger clauses mean what flag clauses mean (an 'in' needs a list).
    ("POST", "/v1/adaptations"),
    ("PUT", "/v1/adaptations/{adaptation_key}"),
    ("PUT", "/v1/hosted-funnels/{slug}"),
    ("PUT", "/v1/hosted-funnels/{slug}/steps/{step}"),
    # Evolution: genes must fit the step's page (its blocks, fields, variants), a target
    # names a block exactly when its kind needs one, elites stay below the population.
    ("POST", "/v1/evolution/campaigns"),
    ("POST", "/v1/evolution/campaigns/{campaign_key}/pin"),
    ("POST", "/v1/evolution/campaigns/{campaign_key}/candidates"),
}

# The bar: generated requests per full run, over every kind of credential.
MIN_REQUESTS = 1000
# Examples per operation: for the admin key, whose requests get through and exercise the
# routes, and for the callers that most routes refuse (cheaper answers, so fewer are needed).
# The defaults send about 2,200 requests; fewer (for a quick local run) waive the bar.
DEFAULT_ADMIN_EXAMPLES, DEFAULT_REFUSED_EXAMPLES = 12, 5
ADMIN_EXAMPLES = int(os.environ.get("NEXUS_CONTRACT_EXAMPLES", DEFAULT_ADMIN_EXAMPLES))
REFUSED_EXAMPLES = int(os.environ.get("NEXUS_CONTRACT_REFUSED_EXAMPLES", DEFAULT_REFUSED_EXAMPLES))


@dataclass(frozen=True)
class Caller:
    """One kind of credential: the headers it sends and how hard to exercise it."""

    name: str
    headers: dict[str, str]
    examples: int
    # Only a caller allowed everything must have every valid request accepted; the others'
    # are mostly refused (401, 403, 404), which the document states and the checks verify.
    accepts_valid_data: bool = False


@dataclass
class RequestLog:
    """Wraps the app and records each request schemathesis sends (checks that re-send a
    request included) under the caller being exercised."""

    app: ASGIApp
    caller: str | None = None
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = self.caller
        if scope["type"] != "http" or caller is None:
            await self.app(scope, receive, send)
            return

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.statuses.setdefault(caller, Counter())[status] += 1
                if status >= 500:
                    query = scope.get("query_string", b"").decode("latin-1")
                    self.server_errors.append(
                        f"{caller}: {scope['method']} {scope['path']}?{query} -> {status}"
                    )
            await send(message)

        await self.app(scope, receive, record)

    def sent(self, caller: str) -> int:
        return sum(self.statuses.get(caller, Counter()).values())


def _callers(client: TestClient, world: World) -> list[Caller]:
    # A viewer signed in to the dashboard: the session cookie and its CSRF token, which every
    # unsafe call made with the cookie must carry.
    csrf = login(client, world.a.members[Role.VIEWER].email)
    session = client.cookies.get(SESSION_COOKIE)
    assert session
    dashboard = {"Cookie": f"{SESSION_COOKIE}={session}", CSRF_HEADER: csrf}
    return [
        Caller("admin secret key", bearer(world.a.secret_key), ADMIN_EXAMPLES, True),
        Caller("read-only secret key", bearer(world.a.read_only_key), REFUSED_EXAMPLES),
        Caller("public write key", bearer(world.a.write_key), REFUSED_EXAMPLES),
        Caller("viewer's dashboard session", dashboard, REFUSED_EXAMPLES),
        Caller("no credentials", {}, REFUSED_EXAMPLES),
    ]


def _exercise(operation: Any, caller: Caller, excluded_checks: list[CheckFunction]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=caller.examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def exercise(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=caller.headers, excluded_checks=excluded_checks)

    exercise()


def test_api_honours_its_contract(client: TestClient, world: World) -> None:
    """Every operation, fed generated requests with each kind of credential: workspace A's
    admin secret key, its read-only secret key, its public write key, a viewer's dashboard
    session, and none at all.

    The live event stream never ends by design; tests/events/test_live.py covers it.
    """
    log = RequestLog(client.app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", log)
    # .ok() raises if the document has an operation schemathesis cannot read.
    operations = [
        operation
        for operation in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
        if operation.path != "/v1/events/live"
    ]
    assert len(operations) >= 15
    callers = _callers(client, world)
    for caller in callers:
        log.caller = caller.name
        for operation in operations:
            cross_field = (operation.method.upper(), operation.path) in CROSS_FIELD_RULES
            excluded = (
                [] if caller.accepts_valid_data and not cross_field else [positive_data_acceptance]
            )
            _exercise(operation, caller, excluded)
    log.caller = None

    sent = {caller.name: log.sent(caller.name) for caller in callers}
    print(f"\nschemathesis requests: {sent}, total {sum(sent.values())}")
    for caller in callers:
        print(f"  {caller.name}: {dict(sorted(log.statuses.get(caller.name, Counter()).items()))}")
    # No 5xx (schemathesis' not_a_server_error says so per request; this counts them all,
    # those its own checks sent included).
    assert not log.server_errors
    if ADMIN_EXAMPLES >= DEFAULT_ADMIN_EXAMPLES and REFUSED_EXAMPLES >= DEFAULT_REFUSED_EXAMPLES:
        assert sum(sent.values()) >= MIN_REQUESTS, sent
    # Every kind of credential was really exercised, and the refused ones really refused.
    assert all(count >= len(operations) for count in sent.values()), sent
    assert log.statuses["no credentials"][401] > 0
    for name in ("read-only secret key", "viewer's dashboard session", "public write key"):
        assert log.statuses[name][403] > 0
    assert log.statuses["admin secret key"][200] > len(operations)


def test_decision_settings_that_are_accepted_do_not_break_decide(
    client: TestClient, world: World
) -> None:
    """A setting the API accepts never breaks the API afterwards: duplicate context
    attributes are refused (422) or harmless -- decide keeps answering."""
    admin = bearer(world.a.secret_key)
    stored = client.put(
        "/v1/decision-settings", json={"context_attributes": ["0", "0"]}, headers=admin
    )
    assert stored.status_code == 422
    lenient = TestClient(client.app, base_url="http://testserver", raise_server_exceptions=False)
    decided = lenient.post(
        "/v1/decide", json={"visitor_id": "v"}, headers=bearer(world.a.write_key)
    )
    assert decided.status_code == 200
    assert lenient.get("/v1/decision-policy", headers=admin).status_code == 200
