"""The whole loop over real HTTP: ``nexus simulate``'s driver plays seeded visitors against a
running NEXUS (ingest + decide), the adaptation bandit learns from their delayed rewards,
and ``nexus experiment evaluate-policy`` scores policies on the decisions NEXUS logged."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nexus.api.app import create_app
from nexus.cli.main import app as cli_app
from nexus.cli.simulate import run_simulation
from nexus.core.settings import Settings
from nexus.experiments.simulation import ADAPTATIONS, Simulation, conversion_probability
from nexus.storage.database import Database
from tests.conftest import World, bearer
from tests.events.conftest import basic

VISITORS = 120


def _configure(url: str, secret: dict[str, str]) -> None:
    response = httpx.put(
        f"{url}/v1/decision-settings",
        json={"goal_window_seconds": 1, "burn_in": 2, "policy": "linear_thompson"},
        headers=secret,
    )
    assert response.status_code == 200, response.text
    for key in ADAPTATIONS:
        created = httpx.post(
            f"{url}/v1/adaptations", json={"key": key, "tone": key}, headers=secret
        )
        assert created.status_code == 201, created.text


def test_simulated_visitors_drive_decide_and_the_bandit_learns(
    live_server: str, world: World, settings: Settings, tmp_path: Path
) -> None:
    secret = bearer(world.a.secret_key)
    _configure(live_server, secret)
    with httpx.Client(base_url=live_server, timeout=10.0) as client:
        report = run_simulation(
            client, write_key=world.a.write_key, visitors=VISITORS, rate=0, seed=3, concurrency=4
        )
    assert report.visitors == VISITORS
    assert report.decisions == VISITORS
    assert report.errors == {}
    assert sum(t.visitors for t in report.by_adaptation.values()) == VISITORS
    # Every decision's window closes within a second; the worker then settles it.
    deadline = time.monotonic() + 15
    policy: dict[str, Any] = {}
    while time.monotonic() < deadline:
        policy = httpx.get(f"{live_server}/v1/decision-policy", headers=secret).json()
        if policy["updates"] == VISITORS:
            break
        time.sleep(0.2)
    assert policy["updates"] == VISITORS
    assert policy["pending_rewards"] == 0
    assert sum(policy["pulls"].values()) == VISITORS


def test_the_same_seed_replays_the_same_visitors() -> None:
    first, second = Simulation(seed=11), Simulation(seed=11)
    for i in range(20):
        a, b = first.visitor(i), second.visitor(i)
        assert a == b
        assert conversion_probability(a, "calm") == conversion_probability(b, "calm")


def _logs(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_policy_scores_a_fixed_arm_from_a_log_file(tmp_path: Path) -> None:
    """Logs from a uniform policy over two arms where "calm" always converts and "urgent"
    never does: always-calm is worth 1, always-urgent 0, and IPS says so."""
    rows = [
        {"context": [1.0, 0.5], "arm": arm, "reward": float(arm == "calm"), "propensity": 0.5}
        for i in range(200)
        for arm in (("calm", "urgent")[i % 2],)
    ]
    logs = _logs(tmp_path / "logs.jsonl", rows)
    runner = CliRunner()
    calm = runner.invoke(
        cli_app,
        ["experiment", "evaluate-policy", "--logs", str(logs), "--policy", "arm:calm", "--json"],
    )
    assert calm.exit_code == 0, calm.output
    estimates = {e["estimator"]: e for e in json.loads(calm.output)["estimates"]}
    assert estimates["ips"]["value"] == pytest.approx(1.0)
    assert estimates["snips"]["value"] == pytest.approx(1.0)
    urgent = runner.invoke(
        cli_app,
        ["experiment", "evaluate-policy", "--logs", str(logs), "--policy", "arm:urgent", "--json"],
    )
    values = {e["estimator"]: e["value"] for e in json.loads(urgent.output)["estimates"]}
    assert values["ips"] == pytest.approx(0.0)
    # A fresh policy learns on the first half and is scored on the second.
    learned = runner.invoke(
        cli_app,
        ["experiment", "evaluate-policy", "--logs", str(logs), "--policy", "thompson", "--json"],
    )
    assert learned.exit_code == 0, learned.output
    result = json.loads(learned.output)
    assert "trained on 100 logs, scored on 100" in result["policy"]
    assert result["estimates"][0]["value"] > 0.8


def test_evaluate_policy_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"arm": "calm"}\n', encoding="utf-8")
    result = runner.invoke(cli_app, ["experiment", "evaluate-policy", "--logs", str(broken)])
    assert result.exit_code == 2
    assert "broken.jsonl:1" in result.output
    assert "Traceback" not in result.output
    logs = _logs(
        tmp_path / "ok.jsonl",
        [{"context": None, "arm": "a", "reward": 1, "propensity": 0.5}] * 4,
    )
    unknown = runner.invoke(
        cli_app, ["experiment", "evaluate-policy", "--logs", str(logs), "--policy", "arm:zzz"]
    )
    assert unknown.exit_code == 2
    assert "never appears" in unknown.output
    nonsense = runner.invoke(
        cli_app, ["experiment", "evaluate-policy", "--logs", str(logs), "--policy", "magic"]
    )
    assert nonsense.exit_code == 2
    assert "unknown policy" in nonsense.output


def test_evaluate_policy_reads_decisions_from_the_store(
    settings: Settings,
    database: Database,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decisions logged by decide and rewarded by goal events, read back from the embedded
    store once the server has stopped (the store belongs to one process at a time)."""
    secret, public = bearer(world.a.secret_key), basic(world.a.write_key)
    app = create_app(settings, configure_logs=False)
    with TestClient(app) as client:
        client.put(
            "/v1/decision-settings",
            json={"goal_window_seconds": 1, "burn_in": 0},
            headers=secret,
        )
        for key in ("calm", "urgent"):
            client.post("/v1/adaptations", json={"key": key}, headers=secret)
        served: dict[str, str] = {}
        for i in range(30):
            result = client.post(
                "/v1/decide",
                json={"visitor_id": f"v{i}", "emotion": {"anger": 0.8}},
                headers=public,
            ).json()
            served[f"v{i}"] = result["adaptation"]["key"]
        goals = [
            {"type": "track", "event": "Order Completed", "anonymousId": v, "messageId": f"o-{v}"}
            for v, arm in served.items()
            if arm == "calm"
        ]
        assert client.post("/v1/batch", json={"batch": goals}, headers=public).status_code == 200
        worker = app.state.decision_worker
        assert client.portal is not None
        client.portal.call(worker.run_once)
        time.sleep(1.1)  # every goal window (1 s) closes
    monkeypatch.setenv("NEXUS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NEXUS_DATABASE_URL", settings.resolved_database_url)
    result = CliRunner().invoke(
        cli_app,
        ["experiment", "evaluate-policy", "-w", world.a.id, "--policy", "arm:calm", "--json"],
    )
    assert result.exit_code == 0, result.output
    estimates = {e["estimator"]: e for e in json.loads(result.output)["estimates"]}
    assert estimates["ips"]["n"] == 30
    assert estimates["snips"]["value"] == pytest.approx(1.0)
    urgent = CliRunner().invoke(
        cli_app,
        ["experiment", "evaluate-policy", "-w", world.a.id, "--policy", "arm:urgent", "--json"],
    )
    values = {e["estimator"]: e["value"] for e in json.loads(urgent.output)["estimates"]}
    assert values["snips"] == pytest.approx(0.0)
