"""Fixtures of the decision engine's API tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.core.settings import Settings
from nexus.experiments.background import DecisionWorker
from nexus.storage.database import Database
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
        pipeline = app.state.events.pipeline
        assert pipeline.wait_until_stored(pipeline.journal.end)  # goal events seen
        client.portal.call(partial(worker.run_once, rollouts=rollouts))
        assert pipeline.wait_until_stored(pipeline.journal.end)  # decisions stored

    return step


@pytest.fixture
def live_server(settings: Settings, database: Database, world: World) -> Iterator[str]:
    """The real app behind uvicorn on a free port (real HTTP for SDKs and the simulator);
    its worker checks rollouts and learns every 0.2 s."""
    fast = settings.model_copy(update={"decide_learn_interval": 0.2})
    app = create_app(fast, configure_logs=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner.should_exit = True
    thread.join(timeout=15)
    sock.close()
