"""Interoperability over real HTTP: NEXUS served by uvicorn, used through the OpenFeature SDK
with the community OFREP provider (remote evaluation) and with NEXUS's own Python SDK
(local evaluation), on the same flags."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from nexus.sdk import NexusClient, NexusProvider
from tests.conftest import World, bearer

CHECKOUT = {
    "key": "checkout",
    "kind": "multivariate",
    "variations": [{"key": "classic", "value": "classic"}, {"key": "calm", "value": "calm"}],
    "off_variation": "classic",
    "rules": [
        {
            "id": "upset",
            "clauses": [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}],
            "serve": {"variation": "calm"},
        }
    ],
    "fallthrough": {
        "rollout": [{"variation": "calm", "weight": 30}, {"variation": "classic", "weight": 70}]
    },
}


@pytest.fixture
def server(live_server: str, world: World) -> str:
    for body in (CHECKOUT, {"key": "banner"}):
        response = httpx.post(
            f"{live_server}/v1/flags", json=body, headers=bearer(world.a.secret_key)
        )
        assert response.status_code == 201, response.text
    return live_server


def _context(key: str, **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attributes)


def test_openfeature_sdk_through_the_ofrep_provider(server: str, world: World) -> None:
    api.set_provider(
        OFREPProvider(server, headers_factory=lambda: bearer(world.a.write_key)), "ofrep"
    )
    client = api.get_client("ofrep")
    upset = client.get_string_details(
        "checkout", "fallback", _context("v1", emotion={"valence": -0.6})
    )
    assert upset.value == "calm"
    assert upset.variant == "calm"
    assert upset.reason == "TARGETING_MATCH"
    assert (
        client.get_boolean_value("banner", default_value=True, evaluation_context=_context("v1"))
        is False
    )
    missing = client.get_boolean_details("nope", True, _context("v1"))
    assert missing.value is True
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND


def test_ofrep_bulk_and_its_etag(server: str, world: World) -> None:
    body = {"context": {"targetingKey": "v2", "emotion": {"valence": 0.5}}}
    first = httpx.post(
        f"{server}/ofrep/v1/evaluate/flags", json=body, headers=bearer(world.a.write_key)
    )
    assert first.status_code == 200
    flags = {f["key"]: f for f in first.json()["flags"]}
    assert set(flags) == {"checkout", "banner"}
    assert flags["checkout"]["reason"] == "SPLIT"
    again = httpx.post(
        f"{server}/ofrep/v1/evaluate/flags",
        json=body,
        headers={**bearer(world.a.write_key), "If-None-Match": first.headers["etag"]},
    )
    assert again.status_code == 304
    no_key = httpx.post(
        f"{server}/ofrep/v1/evaluate/flags/checkout",
        json={"context": {}},
        headers=bearer(world.a.write_key),
    )
    assert no_key.status_code == 400
    assert no_key.json()["errorCode"] == "TARGETING_KEY_MISSING"
    anonymous = httpx.post(f"{server}/ofrep/v1/evaluate/flags/checkout", json=body)
    assert anonymous.status_code == 401


def test_local_and_remote_evaluation_agree(server: str, world: World) -> None:
    """The Python SDK evaluates in process what the server evaluates over OFREP."""
    with NexusClient(server, world.a.write_key, refresh_interval=None) as local:
        api.set_provider(NexusProvider(local), "local")
        api.set_provider(
            OFREPProvider(server, headers_factory=lambda: bearer(world.a.write_key)), "remote"
        )
        local_client, remote_client = api.get_client("local"), api.get_client("remote")
        for i in range(40):
            valence = -0.8 + 0.04 * i
            context = _context(f"visitor-{i}", emotion={"valence": valence})
            ours = local_client.get_string_details("checkout", "x", context)
            theirs = remote_client.get_string_details("checkout", "x", context)
            assert (ours.value, ours.variant, ours.reason) == (
                theirs.value,
                theirs.variant,
                theirs.reason,
            )
        # A change on the server reaches the SDK at its next refresh.
        httpx.post(f"{server}/v1/flags/banner/kill", json={}, headers=bearer(world.a.secret_key))
        assert local.refresh() is True
        assert local.evaluate("banner", "v").reason == "DISABLED"
