"""Fixtures of the decision engine's API tests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.experiments.background import DecisionWorker
from tests.conftest import World, bearer
from tests.events.conftest import basic


@pytest.fixture
def secret(world: World) -> dict[str, str]:
    return bearer(world.a.secret_key)


@pytest.fixture
def public(world: World) -> dict[str, str]:
    return basic(world.a.write_key)


def create_flag(
    client: TestClient, headers: dict[str, str], key: str, **document: Any
) -> dict[str, Any]:
    response = client.post("/v1/flags", json={"key": key, **document}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
def step_worker(client: TestClient) -> Callable[..., None]:
    """Run one pass of the decision worker now (journal decisions, close reward windows,
    save policies; with ``rollouts=True`` also check rollouts) and wait until the journal is
    in the store -- what the background loop does every second, on demand."""
    app: Any = client.app
    worker: DecisionWorker = app.state.decision_worker

    def step(*, rollouts: bool = False) -> None:
        assert client.portal is not None
        client.portal.call(partial(worker.run_once, rollouts=rollouts))
        pipeline = app.state.events.pipeline
        assert pipeline.wait_until_stored(pipeline.journal.end)

    return step
