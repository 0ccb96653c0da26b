"""Abuse limits through the ASGI app: rate limits per address, credential and workspace, client
addresses behind trusted proxies, query and JSON complexity, and the sign-in lockout.

Every limit here is tiny and counted in a fixed window that starts with the first request, so
no test depends on the wall clock.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from nexus.api.app import create_app
from nexus.api.middleware import (
    ApiRateLimits,
    RateLimitMiddleware,
    TrustedProxyMiddleware,
    json_complexity_problem,
    parse_networks,
)
from nexus.core.errors import ConfigurationError
from nexus.core.ratelimit import BoundedMemoryStorage, RateLimit
from nexus.core.settings import Settings
from nexus.security import service as audit
from nexus.storage.database import Database
from tests.conftest import PASSWORD, World, _hidden_value, bearer, login

CLIENT = ("203.0.113.10", 40000)
OTHER_CLIENT = ("203.0.113.20", 40000)

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings, database: Database) -> Iterator[MakeClient]:
    """``make_client(rate_limit_admin_key="2/minute")``: a running app with those settings,
    seen from :data:`CLIENT` or ``client=(address, port)``."""
    with ExitStack() as stack:

        def open_client(client: tuple[str, int] = CLIENT, **overrides: Any) -> TestClient:
            app = create_app(settings.model_copy(update=overrides), configure_logs=False)
            return stack.enter_context(TestClient(app, base_url="http://testserver", client=client))

        yield open_client


def same_app(client: TestClient, address: tuple[str, int]) -> TestClient:
    """Another client of ``client``'s running app, from ``address``."""
    return TestClient(client.app, base_url="http://testserver", client=address)


def assert_rate_limited(response: httpx.Response, detail: str = "") -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://nexus.dev/problems/rate-limited"
    assert body["status"] == 429
    assert detail in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


# --- per address ----------------------------------------------------------------------------


def test_per_address_limit_refuses_the_address_not_others(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_admin_ip="2/minute")
    headers = bearer(world.a.secret_key)
    assert [client.get("/v1/me", headers=headers).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/v1/me", headers=headers), "from this address")
    # Another key from the same address is refused too; the same key elsewhere is not.
    assert_rate_limited(client.get("/v1/me", headers=bearer(world.b.secret_key)))
    assert same_app(client, OTHER_CLIENT).get("/v1/me", headers=headers).status_code == 200


def test_requests_without_credentials_have_their_own_lower_rate(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_anonymous_ip="2/minute")
    assert [client.get("/healthz").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/healthz"))
    # Requests with a key count against the (higher) authenticated rate.
    assert client.get("/v1/me", headers=bearer(world.a.secret_key)).status_code == 200


def test_failed_authentication_blocks_the_address(make_client: MakeClient, world: World) -> None:
    client = make_client(rate_limit_auth_failures="3/minute")
    for i in range(3):
        assert client.get("/v1/me", headers=bearer(f"nx_sec_guess{i}")).status_code == 401
    # Past the failure rate even a valid key is refused from that address...
    assert_rate_limited(
        client.get("/v1/me", headers=bearer(world.a.secret_key)), "failed authentication"
    )
    # ...and only from that one.
    other = same_app(client, OTHER_CLIENT)
    assert other.get("/v1/me", headers=bearer(world.a.secret_key)).status_code == 200


def test_the_rate_limit_answer_is_counted_in_the_metrics(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_admin_ip="1/minute")
    client.get("/v1/me", headers=bearer(world.a.secret_key))
    assert_rate_limited(client.get("/v1/me", headers=bearer(world.a.secret_key)))
    metrics = same_app(client, ("127.0.0.1", 1)).get("/metrics").text
    assert 'nexus_rate_limited_total{limit="address"} 1.0' in metrics


# --- per credential and workspace ------------------------------------------------------------


def test_per_key_limit_refuses_the_key_not_others(make_client: MakeClient, world: World) -> None:
    client = make_client(rate_limit_admin_key="2/minute")
    key = bearer(world.a.secret_key)
    assert [client.get("/v1/me", headers=key).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/v1/me", headers=key), "with these credentials")
    # The same key from another address: the key is what is counted.
    assert_rate_limited(same_app(client, OTHER_CLIENT).get("/v1/me", headers=key))
    assert client.get("/v1/me", headers=bearer(world.a.read_only_key)).status_code == 200


def test_bearer_and_basic_count_as_the_same_key(make_client: MakeClient, world: World) -> None:
    client = make_client(rate_limit_admin_key="2/minute")
    client.get("/v1/me", headers=bearer(world.a.write_key))
    client.get("/v1/me", auth=(world.a.write_key, ""))
    assert_rate_limited(client.get("/v1/me", headers=bearer(world.a.write_key)))


def test_a_dashboard_session_counts_as_one_credential(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_admin_key="3/minute")
    login(client, "owner@a.test")  # its dashboard page is the session's first request
    assert [client.get("/v1/me").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/v1/me"), "with these credentials")


def test_per_workspace_quota_spans_its_keys(make_client: MakeClient, world: World) -> None:
    client = make_client(rate_limit_admin_workspace="3/minute")
    statuses = [
        client.get("/v1/me", headers=bearer(key)).status_code
        for key in (world.a.secret_key, world.a.read_only_key, world.a.secret_key)
    ]
    assert statuses == [200, 200, 200]
    assert_rate_limited(
        client.get("/v1/me", headers=bearer(world.a.read_only_key)), "for this workspace"
    )
    assert client.get("/v1/me", headers=bearer(world.b.secret_key)).status_code == 200


# --- hot paths ------------------------------------------------------------------------------


def test_hot_paths_and_the_admin_api_have_separate_rates(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_admin_key="2/minute", rate_limit_hot_key="4/minute")
    key = bearer(world.a.write_key)
    assert [client.get("/v1/me", headers=key).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/v1/me", headers=key))
    hot = [client.get("/v1/flags/definitions", headers=key).status_code for _ in range(4)]
    assert hot == [200] * 4
    refused = client.get("/v1/flags/definitions", headers={**key, "Origin": "https://shop.example"})
    assert_rate_limited(refused)
    # Web pages must be able to read the refusal.
    assert refused.headers["access-control-allow-origin"] == "*"


def test_defaults_leave_room_for_the_benchmarks() -> None:
    limits = ApiRateLimits.from_settings(Settings())
    per_minute = {
        "hot address": limits.hot.address,
        "hot key": limits.hot.credential,
        "admin key": limits.admin.credential,
        "anonymous address": limits.anonymous_address,
    }
    assert {name: (r.amount, r.seconds) for name, r in per_minute.items()} == {
        "hot address": (100_000, 60),
        "hot key": (100_000, 60),
        "admin key": (1200, 60),
        "anonymous address": (600, 60),
    }
    # decide is load-tested at 1,000 requests/s from one key and one address.
    assert limits.hot.address.amount >= 1000 * 60
    assert limits.hot.credential.amount >= 1000 * 60
    # The benchmarks' clients are on the same machine, which is exempt.
    assert limits.addresses.lookup("127.0.0.1") == (True, None)
    assert limits.addresses.lookup("::1") == (True, None)


def test_loopback_is_exempt_unless_configured_otherwise(
    make_client: MakeClient, world: World
) -> None:
    local = make_client(client=("127.0.0.1", 5000), rate_limit_admin_key="1/minute")
    key = bearer(world.a.secret_key)
    assert [local.get("/v1/me", headers=key).status_code for _ in range(3)] == [200] * 3
    strict = make_client(
        client=("127.0.0.1", 5000), rate_limit_admin_key="1/minute", rate_limit_exempt=""
    )
    strict.get("/v1/me", headers=key)
    assert_rate_limited(strict.get("/v1/me", headers=key))


def test_a_peer_without_an_address_is_local(make_client: MakeClient, world: World) -> None:
    # A Unix socket's peer (or the test client's) goes with loopback...
    unix = make_client(client=("testclient", 0), rate_limit_admin_key="1/minute")
    key = bearer(world.a.secret_key)
    assert [unix.get("/v1/me", headers=key).status_code for _ in range(3)] == [200] * 3
    # ...and without that exemption has no address to count, but still its credentials.
    strict = make_client(
        client=("testclient", 0),
        rate_limit_exempt="",
        rate_limit_admin_key="2/minute",
        rate_limit_anonymous_ip="1/minute",
    )
    assert [strict.get("/healthz").status_code for _ in range(3)] == [200] * 3
    strict.get("/v1/me", headers=key)
    strict.get("/v1/me", headers=key)
    assert_rate_limited(strict.get("/v1/me", headers=key), "with these credentials")


def test_the_off_switch_removes_the_middleware(make_client: MakeClient, world: World) -> None:
    client = make_client(rate_limit_enabled=False, rate_limit_admin_key="1/minute")
    app = client.app
    assert isinstance(app, FastAPI)
    assert RateLimitMiddleware not in {m.cls for m in app.user_middleware}
    key = bearer(world.a.secret_key)
    assert [client.get("/v1/me", headers=key).status_code for _ in range(3)] == [200] * 3


# --- trusted proxies ------------------------------------------------------------------------


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_client: MakeClient, world: World
) -> None:
    proxy = ("10.0.0.5", 40000)
    client = make_client(
        client=proxy, trusted_proxies="10.0.0.0/8", rate_limit_anonymous_ip="1/minute"
    )
    assert client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    assert_rate_limited(client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.1"}))
    # Another client behind the same proxy has its own counter.
    assert client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    # A client that is no proxy cannot pick its address by writing the header.
    direct = same_app(client, CLIENT)
    assert direct.get("/healthz", headers={"X-Forwarded-For": "198.51.100.3"}).status_code == 200
    assert_rate_limited(direct.get("/healthz", headers={"X-Forwarded-For": "198.51.100.4"}))


def test_the_client_is_the_first_address_that_is_not_a_proxy() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - unused
        pass

    proxies = TrustedProxyMiddleware(
        app, proxies=parse_networks("10.0.0.0/8, fd00::/8", setting="x")
    )
    # A spoofed first hop, the real client, then our own load balancers.
    assert proxies.client_of("10.0.0.5", "6.6.6.6, 198.51.100.9, 10.1.1.1") == "198.51.100.9"
    assert proxies.client_of("10.0.0.5", "10.1.1.1, 10.2.2.2") == "10.1.1.1"
    assert proxies.client_of("10.0.0.5", "garbage, 10.1.1.1") == "10.1.1.1"
    assert proxies.client_of("203.0.113.1", "198.51.100.9") == "203.0.113.1"
    assert proxies.client_of("fd00::1", "2001:db8::5") == "2001:db8::5"


def test_ipv6_clients_are_counted_by_their_64(make_client: MakeClient, world: World) -> None:
    client = make_client(client=("2001:db8:1:2::1", 1), rate_limit_anonymous_ip="1/minute")
    client.get("/healthz")
    neighbour = same_app(client, ("2001:db8:1:2:ffff::9", 1))
    assert_rate_limited(neighbour.get("/healthz"))
    assert same_app(client, ("2001:db8:1:3::1", 1)).get("/healthz").status_code == 200


# --- storage and configuration ----------------------------------------------------------------


def test_a_storage_whose_package_is_missing_fails_at_start_with_what_to_install(
    settings: Settings,
) -> None:
    if importlib.util.find_spec("redis") is not None:
        pytest.skip("redis is installed here")
    with pytest.raises(ConfigurationError, match=r"pip install redis") as caught:
        create_app(
            settings.model_copy(update={"rate_limit_storage": "redis://:hunter2@cache:6379"}),
            configure_logs=False,
        )
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("rate_limit_admin_key", "lots"),
        ("trusted_proxies", "10.0.0.0/99"),
        ("rate_limit_exempt", "x"),
    ],
)
def test_bad_limits_fail_at_start(settings: Settings, setting: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"NEXUS_{setting.upper()}"):
        create_app(settings.model_copy(update={setting: value}), configure_logs=False)


def test_memory_counters_expire_and_stay_bounded() -> None:
    now = [1000.0]
    storage = BoundedMemoryStorage(max_keys=3, clock=lambda: now[0])
    limit = RateLimit("2/minute", message="Slow down.", storage=storage)
    assert limit.retry_after("a") == 0
    assert limit.retry_after("a") == 0
    assert limit.retry_after("a") == 60
    now[0] += 30
    assert limit.retry_after("a") == 30
    now[0] += 30
    assert limit.retry_after("a") == 0  # a new window
    for key in "bcdefg":
        limit.retry_after(key)
    assert len(storage) == 3


# --- query and JSON complexity ----------------------------------------------------------------


def nested(depth: int) -> Any:
    document: Any = 1
    for _ in range(depth - 1):
        document = [document]
    return [document]


def test_deeply_nested_json_is_refused_before_the_route(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(max_json_depth=8)
    key = bearer(world.a.secret_key)
    too_deep = client.post("/v1/keys", json={"name": "k", "x": nested(8)}, headers=key)
    assert too_deep.status_code == 413
    assert too_deep.headers["content-type"] == "application/problem+json"
    assert too_deep.json()["type"] == "https://nexus.dev/problems/payload-too-complex"
    assert "deeper than 8" in too_deep.json()["detail"]
    # Past what parsers recurse into, it is the same answer, not a crash.
    body = b"[" * 100_000 + b"]" * 100_000
    headers = {**key, "Content-Type": "application/json"}
    assert client.post("/v1/keys", content=body, headers=headers).status_code == 413
    # Within the limit the route answers as usual: here, that the field is unknown.
    fine = client.post("/v1/keys", json={"name": "k", "x": nested(6)}, headers=key)
    assert fine.status_code == 422
    assert fine.json()["type"] == "https://nexus.dev/problems/validation-error"
    assert client.post("/v1/keys", json={"name": "k"}, headers=key).status_code == 201


def test_json_with_too_many_items_is_refused(make_client: MakeClient, world: World) -> None:
    client = make_client(max_json_items=100)
    key = bearer(world.a.secret_key)
    response = client.post("/v1/keys", json={"name": "k", "x": list(range(100))}, headers=key)
    assert response.status_code == 413
    assert "more than 100 items" in response.json()["detail"]


def test_ingest_keeps_its_own_limits(make_client: MakeClient, world: World) -> None:
    client = make_client(max_json_depth=4, max_json_items=3)
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Deep",
                "messageId": f"m{i}",
                "anonymousId": "a",
                "properties": {"tree": nested(6)},
            }
            for i in range(5)
        ]
    }
    response = client.post("/v1/batch", json=batch, auth=(world.a.write_key, ""))
    assert response.status_code == 200, response.text


def test_long_query_strings_and_too_many_parameters_are_refused(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(max_query_bytes=1024, max_query_params=10)
    key = bearer(world.a.secret_key)
    long = client.get("/v1/keys", params={"limit": "20", "pad": "x" * 1100}, headers=key)
    assert long.status_code == 414
    assert long.json()["type"] == "https://nexus.dev/problems/uri-too-long"
    many = client.get("/v1/keys?" + "&".join(f"p{i}=1" for i in range(11)), headers=key)
    assert many.status_code == 414
    assert "more than 10 parameters" in many.json()["detail"]
    fine = client.get("/v1/keys?" + "&".join(f"p{i}=1" for i in range(9)), headers=key)
    assert fine.status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _items(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(map(_items, value.values()))
    if isinstance(value, list):
        return len(value) + sum(map(_items, value))
    return 0


@given(json_values, st.integers(1, 6), st.integers(0, 30))
def test_complexity_agrees_with_the_recursive_definition(
    document: Any, max_depth: int, max_items: int
) -> None:
    problem = json_complexity_problem(
        orjson.loads(orjson.dumps(document)), max_depth=max_depth, max_items=max_items
    )
    assert (problem is None) == (_depth(document) <= max_depth and _items(document) <= max_items)


# --- sign-in lockout and credential stuffing --------------------------------------------------


def sign_in(client: TestClient, email: str, password: str) -> httpx.Response:
    csrf = _hidden_value(client.get("/login").text, "csrf_token")
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf},
        follow_redirects=False,
    )


def login_error(response: httpx.Response) -> str:
    return _hidden_text(response.text, 'data-testid="login-error">')


def _hidden_text(html: str, marker: str) -> str:
    start = html.index(marker) + len(marker)
    return html[start : html.index("<", start)]


def global_entries(database: Database, action: str) -> list[Any]:
    with database.session() as db:
        return [
            e for e in audit.list_entries(db, workspace_id=None, limit=1000) if e.action == action
        ]


def test_lockout_answers_alike_for_accounts_that_exist_and_do_not(
    make_client: MakeClient, world: World, database: Database
) -> None:
    client = make_client(login_rate_limit="100/minute", login_ip_rate_limit="100/minute")
    answers = {}
    for email in ("owner@a.test", "nobody@a.test"):
        statuses = [sign_in(client, email, "wrong").status_code for _ in range(5)]
        assert statuses == [401] * 5
        answers[email] = sign_in(client, email, "wrong")
    known, unknown = answers["owner@a.test"], answers["nobody@a.test"]
    assert known.status_code == unknown.status_code == 429
    assert known.headers["retry-after"] == unknown.headers["retry-after"] == "30"
    assert login_error(known) == login_error(unknown)
    assert "Too many sign-in attempts" in login_error(known)
    # The right password waits too: the lock is checked before the password.
    assert sign_in(client, "owner@a.test", PASSWORD).status_code == 429
    locks = global_entries(database, "auth.lockout")
    assert [(e.actor, e.target, e.details["failures"]) for e in locks] == [
        ("system", "owner@a.test", 5),
        ("system", "nobody@a.test", 5),
    ]
    assert locks[0].details["client"] == CLIENT[0]


def test_a_successful_sign_in_resets_the_failures(make_client: MakeClient, world: World) -> None:
    client = make_client()
    for _ in range(4):
        assert sign_in(client, "owner@a.test", "wrong").status_code == 401
    assert sign_in(client, "owner@a.test", PASSWORD).status_code == 303
    for _ in range(4):
        assert sign_in(client, "owner@a.test", "wrong").status_code == 401


def test_credential_stuffing_from_one_address_is_blocked_and_audited(
    make_client: MakeClient, world: World, database: Database
) -> None:
    client = make_client(login_stuffing_accounts=4)
    for i in range(4):
        assert sign_in(client, f"victim{i}@a.test", "breached").status_code == 401
    # Now even a real account with its real password is refused from there...
    blocked = sign_in(client, "owner@a.test", PASSWORD)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 3000
    assert "Too many sign-in attempts" in login_error(blocked)
    # ...but not from elsewhere.
    assert sign_in(same_app(client, OTHER_CLIENT), "owner@a.test", PASSWORD).status_code == 303
    (entry,) = global_entries(database, "auth.stuffing_blocked")
    assert (entry.actor, entry.target) == ("system", CLIENT[0])
    assert entry.details["reason"] == "credential-stuffing"
    assert entry.details["accounts"] == 4


def test_the_sign_in_page_is_not_counted_as_api_key_guessing(
    make_client: MakeClient, world: World
) -> None:
    client = make_client(rate_limit_auth_failures="2/minute")
    for _ in range(3):
        assert sign_in(client, "owner@a.test", "wrong").status_code == 401
    assert client.get("/v1/me", headers=bearer(world.a.secret_key)).status_code == 200


def test_window_counts_start_with_the_first_request() -> None:
    # The fixed windows start at a key's first hit, so the tests above never straddle a
    # clock minute; this pins that down.
    storage = BoundedMemoryStorage(clock=lambda: 59.9)
    storage.incr("k", 60)
    assert storage.get_expiry("k") == pytest.approx(119.9)
