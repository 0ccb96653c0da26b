"""The Python SDK: local evaluation, the OpenFeature provider, and refreshing over real HTTP.

The HTTP tests run uvicorn in a thread on a free port, serving a small Starlette app that
implements the documented ``GET /v1/flags/definitions`` contract (ETag, 304, 401 for a key it
does not know), so the client's real httpx code talks to a real server.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.exception import ErrorCode as OpenFeatureErrorCode
from openfeature.flag_evaluation import Reason as OpenFeatureReason
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nexus.sdk import NexusClient, NexusProvider, authorization_header

SECRET_KEY = "nx_sec_test-secret"
PUBLIC_KEY = "nx_pub_test-public"


def checkout(fallthrough: str = "on", version: int = 1) -> dict[str, Any]:
    return {
        "key": "new-checkout",
        "kind": "boolean",
        "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "off_variation": "off",
        "rules": [
            {
                "id": "angry",
                "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
                "serve": {"variation": "off"},
            }
        ],
        "fallthrough": {"variation": fallthrough},
        "version": version,
    }


PRICE = {
    "key": "price",
    "kind": "multivariate",
    "variations": [{"key": "low", "value": 15}, {"key": "high", "value": 25.5}],
    "off_variation": "low",
    "fallthrough": {
        "rollout": [{"variation": "low", "weight": 50}, {"variation": "high", "weight": 50}]
    },
}
HEADLINE = {
    "key": "headline",
    "kind": "multivariate",
    "variations": [{"key": "calm", "value": "Take your time"}, {"key": "urgent", "value": "Now!"}],
    "off_variation": "calm",
    "fallthrough": {"variation": "calm"},
}
THEME = {
    "key": "theme",
    "kind": "json",
    "variations": [{"key": "warm", "value": {"accent": "#f60", "radius": 8}}],
    "off_variation": "warm",
    "fallthrough": {"variation": "warm"},
}
BROKEN = {**HEADLINE, "key": "broken", "off_variation": "missing"}
DEFINITIONS = {"version": "7", "flags": [checkout(), PRICE, HEADLINE, THEME, BROKEN]}


@pytest.fixture
def local() -> Iterator[NexusClient]:
    with NexusClient(None, None, definitions=DEFINITIONS) as client:
        yield client


# --- local evaluation -----------------------------------------------------------------------


def test_evaluates_locally_from_a_definitions_mapping(local: NexusClient) -> None:
    assert local.definitions_version == "7"
    assert local.evaluate("new-checkout", "v-1").variation == "on"
    angry = local.evaluate("new-checkout", "v-1", {"emotion": {"dominant": "anger"}})
    assert (angry.variation, angry.reason, angry.rule_id) == ("off", "TARGETING_MATCH", "angry")
    assert local.bool_value("new-checkout", False, "v-1") is True
    assert (
        local.bool_value("new-checkout", True, "v-1", {"emotion": {"dominant": "anger"}}) is False
    )
    assert local.str_value("headline", "?", "v-1") == "Take your time"
    assert local.number_value("price", 0, "v-1") in {15, 25.5}
    assert local.json_value("theme", {}, "v-1") == {"accent": "#f60", "radius": 8}
    assert set(local.evaluate_all("v-1")) == {"new-checkout", "price", "headline", "theme"}


def test_typed_helpers_return_the_default_on_errors_and_mismatches(local: NexusClient) -> None:
    assert local.bool_value("nope", True) is True  # not found
    assert local.str_value("new-checkout", "dflt", "v-1") == "dflt"  # a bool is not a string
    assert local.number_value("new-checkout", 3, "v-1") == 3  # nor a number
    assert local.bool_value("headline", False, "v-1") is False
    assert local.number_value("price", -1) == -1  # a rollout without a targeting key
    assert local.json_value("broken", ["default"], "v-1") == ["default"]


def test_an_unparseable_flag_is_a_parse_error_and_spares_the_others(local: NexusClient) -> None:
    broken = local.evaluate("broken", "v-1")
    assert (broken.reason, broken.error_code) == ("ERROR", "PARSE_ERROR")
    assert "off_variation: unknown variation 'missing'" in (broken.error_message or "")
    assert local.evaluate("nope").error_code == "FLAG_NOT_FOUND"
    assert local.evaluate("headline").error_code is None


def test_evaluation_never_raises_into_the_caller(local: NexusClient) -> None:
    class Hostile(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("boom")

    result = local.evaluate("new-checkout", "v-1", Hostile())
    assert (result.reason, result.error_code) == ("ERROR", "GENERAL")
    assert local.bool_value("new-checkout", True, "v-1", Hostile()) is True


def test_authorization_header_by_key_kind() -> None:
    assert authorization_header(SECRET_KEY) == f"Bearer {SECRET_KEY}"
    basic = authorization_header(PUBLIC_KEY)
    assert basic.startswith("Basic ")
    assert base64.b64decode(basic.removeprefix("Basic ")).decode() == f"{PUBLIC_KEY}:"


# --- OpenFeature ----------------------------------------------------------------------------


@pytest.fixture
def openfeature(local: NexusClient) -> Iterator[Any]:
    api.set_provider(NexusProvider(local))
    yield api.get_client()
    api.clear_providers()


def test_openfeature_resolves_values_with_variant_reason_and_metadata(openfeature: Any) -> None:
    context = OpenFeatureContext("v-1", {"emotion": {"dominant": "anger"}})
    assert openfeature.get_boolean_value("new-checkout", True, context) is False
    assert openfeature.get_boolean_value("new-checkout", False, OpenFeatureContext("v-1")) is True
    details = openfeature.get_boolean_details("new-checkout", True, context)
    assert (details.value, details.variant, details.reason, details.error_code) == (
        False,
        "off",
        OpenFeatureReason.TARGETING_MATCH,
        None,
    )
    assert details.flag_metadata == {"version": 1, "rule_id": "angry"}
    assert api.get_provider_metadata().name == "NEXUS"

    price = openfeature.get_float_details("price", 0.0, OpenFeatureContext("v-1"))
    assert price.reason == OpenFeatureReason.SPLIT
    assert isinstance(price.value, float)
    assert price.value in {15.0, 25.5}
    assert openfeature.get_string_value("headline", "", OpenFeatureContext("v-1")) == (
        "Take your time"
    )
    assert openfeature.get_object_value("theme", {}) == {"accent": "#f60", "radius": 8}
    static = openfeature.get_string_details("headline", "")
    assert static.reason == OpenFeatureReason.STATIC


def test_openfeature_errors_give_the_default_with_a_code(openfeature: Any) -> None:
    mismatch = openfeature.get_string_details("new-checkout", "fallback", OpenFeatureContext("v"))
    assert (mismatch.value, mismatch.error_code, mismatch.reason) == (
        "fallback",
        OpenFeatureErrorCode.TYPE_MISMATCH,
        OpenFeatureReason.ERROR,
    )
    assert "serves bool" in (mismatch.error_message or "")
    # bool is a subclass of int in Python, but a boolean flag is no integer flag
    assert openfeature.get_integer_details("new-checkout", 4).error_code == "TYPE_MISMATCH"
    missing = openfeature.get_boolean_details("nope", True)
    assert (missing.value, missing.error_code) == (True, OpenFeatureErrorCode.FLAG_NOT_FOUND)
    no_key = openfeature.get_float_details("price", 1.5)
    assert (no_key.value, no_key.error_code) == (1.5, OpenFeatureErrorCode.TARGETING_KEY_MISSING)
    broken = openfeature.get_string_details("broken", "x")
    assert (broken.value, broken.error_code) == ("x", OpenFeatureErrorCode.PARSE_ERROR)


# --- over HTTP ------------------------------------------------------------------------------


@dataclass
class DefinitionsServer:
    """A real HTTP server implementing the definitions endpoint, with controls for tests."""

    url: str = ""
    flags: list[dict[str, Any]] = field(default_factory=lambda: [checkout()])
    version: int = 1
    body_override: bytes | None = None
    seen: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    stop: Callable[[], None] = lambda: None

    def publish(self, flags: list[dict[str, Any]]) -> None:
        self.flags = flags
        self.version += 1

    async def definitions(self, request: Request) -> Response:
        authorization = request.headers.get("authorization")
        if authorization not in {
            authorization_header(SECRET_KEY),
            authorization_header(PUBLIC_KEY),
        }:
            response: Response = JSONResponse({"detail": "unknown key"}, status_code=401)
        else:
            etag = f'"{self.version}"'
            if request.headers.get("if-none-match") == etag:
                response = Response(status_code=304, headers={"ETag": etag})
            elif self.body_override is not None:
                response = Response(self.body_override, media_type="application/json")
            else:
                body = {"version": str(self.version), "flags": self.flags}
                response = JSONResponse(body, headers={"ETag": etag})
        self.seen.append(
            (authorization, request.headers.get("if-none-match"), response.status_code)
        )
        return response


@pytest.fixture
def server() -> Iterator[DefinitionsServer]:
    state = DefinitionsServer()
    app = Starlette(routes=[Route("/v1/flags/definitions", state.definitions)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)

    def stop() -> None:
        runner.should_exit = True
        thread.join(timeout=10)

    state.url = f"http://127.0.0.1:{port}"
    state.stop = stop
    yield state
    stop()
    sock.close()


def test_fetches_with_a_secret_key_and_revalidates_with_the_etag(server: DefinitionsServer) -> None:
    with NexusClient(server.url, SECRET_KEY, refresh_interval=None) as client:
        assert client.bool_value("new-checkout", False, "v-1") is True
        assert client.definitions_version == "1"
        assert server.seen == [(f"Bearer {SECRET_KEY}", None, 200)]

        assert client.refresh() is False  # unchanged: the server answers 304
        assert server.seen[-1] == (f"Bearer {SECRET_KEY}", '"1"', 304)
        assert client.bool_value("new-checkout", False, "v-1") is True

        server.publish([checkout(fallthrough="off", version=2)])
        assert client.refresh() is True
        assert server.seen[-1] == (f"Bearer {SECRET_KEY}", '"1"', 200)
        assert client.bool_value("new-checkout", True, "v-1") is False
        assert client.evaluate("new-checkout", "v-1").version == 2
        assert client.definitions_version == "2"


def test_a_public_key_is_sent_as_basic_credentials(server: DefinitionsServer) -> None:
    with NexusClient(server.url, PUBLIC_KEY, refresh_interval=None) as client:
        assert client.evaluate("new-checkout", "v-1").variation == "on"
    scheme, credentials = (server.seen[0][0] or "").split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{PUBLIC_KEY}:"


def test_a_wrong_key_warns_and_keeps_the_bootstrap(
    server: DefinitionsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus.sdk.client")
    bootstrap = {"version": "boot", "flags": [HEADLINE]}
    with NexusClient(
        server.url, "nx_sec_wrong", refresh_interval=None, definitions=bootstrap
    ) as client:
        assert server.seen[-1][2] == 401
        assert "answered 401" in caplog.text
        assert client.definitions_version == "boot"
        assert client.str_value("headline", "?") == "Take your time"
        assert client.evaluate("new-checkout", "v-1").error_code == "FLAG_NOT_FOUND"


def test_the_background_thread_picks_up_changes(server: DefinitionsServer) -> None:
    with NexusClient(server.url, SECRET_KEY, refresh_interval=0.05) as client:
        assert client.bool_value("new-checkout", False, "v-1") is True
        deadline = time.monotonic() + 10
        while not any(status == 304 for _, _, status in server.seen):  # polls revalidate
            assert time.monotonic() < deadline, "the client never polled"
            time.sleep(0.02)
        server.publish([checkout(fallthrough="off", version=2), HEADLINE])
        while client.bool_value("new-checkout", True, "v-1"):
            assert time.monotonic() < deadline, "the client never picked up the change"
            time.sleep(0.02)
        assert client.str_value("headline", "?") == "Take your time"
    assert not any(t.name == "nexus-flags-refresh" and t.is_alive() for t in threading.enumerate())


def test_server_down_keeps_serving_the_last_good_definitions(
    server: DefinitionsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus.sdk.client")
    with NexusClient(server.url, SECRET_KEY, refresh_interval=None, timeout=2) as client:
        server.publish([checkout(fallthrough="off", version=2)])
        server.stop()
        assert client.refresh() is False
        assert "could not reach" in caplog.text
        assert "serving the last good definitions (version 1)" in caplog.text
        result = client.evaluate("new-checkout", "v-1")
        assert (result.variation, result.version) == ("on", 1)


def test_an_unreadable_body_keeps_the_last_good_definitions(
    server: DefinitionsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus.sdk.client")
    with NexusClient(server.url, SECRET_KEY, refresh_interval=None) as client:
        server.publish([])
        server.body_override = b'{"flags": "not a list"}'
        assert client.refresh() is False
        assert "could not read the definitions" in caplog.text
        assert client.bool_value("new-checkout", False, "v-1") is True
        server.body_override = b"<html>"
        assert client.refresh() is False
        assert client.bool_value("new-checkout", False, "v-1") is True
