"""``nexus simulate``: a contract test of the driver.

The server here is a minimal Starlette app written for this test: it implements the
documented ``POST /v1/decide`` contract (docs/decisions.md) and
``POST /v1/batch``, checks the write key, and records what it receives. It is not NEXUS: the
end-to-end run against the real API belongs with the decide endpoint's own tests.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from nexus.cli import simulate as simulate_cli
from nexus.cli.main import run
from nexus.cli.simulate import (
    NO_DECISION,
    SimulationAborted,
    SimulationReport,
    TokenBucket,
    run_simulation,
)
from nexus.experiments.simulation import CHAT_EVENT, GOAL_EVENT, Simulation

WRITE_KEY = "wk_test_simulate"


@dataclass
class FakeNexus:
    """What the contract server received, and how it should misbehave."""

    events: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    # visitor id -> number of its events ingested when decide was asked
    seen_at_decide: dict[str, list[str]] = field(default_factory=dict)
    decide_status: int = 200
    decide_failures_first: int = 0  # answer 429 to this many decide calls first
    key: str = WRITE_KEY
    with_decide: bool = True
    reject_event: str | None = None  # refuse messages of this event (as invalid ones are)

    def authorized(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        return request.headers.get("authorization") == expected

    def app(self) -> Starlette:
        def problem(status: int, detail: str, **headers: str) -> Response:
            return JSONResponse(
                {"type": "about:blank", "title": "error", "status": status, "detail": detail},
                status_code=status,
                media_type="application/problem+json",
                headers=headers,
            )

        async def batch(request: Request) -> Response:
            if not self.authorized(request):
                return problem(401, "Unknown or revoked write key.")
            body = await request.json()
            good = [e for e in body["batch"] if e["event"] != self.reject_event]
            self.events.extend(good)
            rejected = [
                {"index": i, "detail": "refused for the test", "field": "event"}
                for i, e in enumerate(body["batch"])
                if e["event"] == self.reject_event
            ]
            return JSONResponse({"accepted": len(good), "rejected": rejected})

        async def decide(request: Request) -> Response:
            if not self.authorized(request):
                return problem(401, "Unknown or revoked write key.")
            if self.decide_failures_first > 0:
                self.decide_failures_first -= 1
                return problem(429, "slow down", **{"Retry-After": "0"})
            if self.decide_status != 200:
                return problem(self.decide_status, "boom")
            body = await request.json()
            self.decisions.append(body)
            visitor = body["visitor_id"]
            self.seen_at_decide[visitor] = [
                e["event"] for e in self.events if e["anonymousId"] == visitor
            ]
            # A rule a real policy might learn: calm for angry words, urgent for happy ones.
            text = body.get("text", "").lower()
            key = "calm" if any(w in text for w in ("annoy", "fail", "broken")) else "urgent"
            return JSONResponse(
                {
                    "decision_id": f"dec_{len(self.decisions)}",
                    "visitor_id": visitor,
                    "holdout": False,
                    "emotion": None,
                    "flags": {},
                    "experiments": {"pricing-test": {"variant": "b", "propensity": 0.5}},
                    "adaptation": {"key": key, "tokens": {}, "tone": key, "propensity": 0.6},
                }
            )

        routes = [Route("/v1/batch", batch, methods=["POST"])]
        if self.with_decide:
            routes.append(Route("/v1/decide", decide, methods=["POST"]))
        return Starlette(routes=routes)


@pytest.fixture
def fake() -> FakeNexus:
    return FakeNexus()


@pytest.fixture
def client(fake: FakeNexus) -> Iterator[TestClient]:
    with TestClient(fake.app(), base_url="http://nexus.test") as test_client:
        yield test_client


def expected_requests(fake: FakeNexus) -> int:
    """Per visitor: the opening batch, decide, and the journey batch unless the visitor
    left at once (a journey without events sends nothing)."""
    visitors = {e["anonymousId"] for e in fake.events}
    walked_on = {e["anonymousId"] for e in fake.events if int(e["messageId"].rsplit("-")[-1]) > 1}
    return 2 * len(visitors) + len(walked_on)


def simulate(client: Any, **options: Any) -> SimulationReport:
    """``run_simulation`` with this module's defaults. (Starlette's TestClient is built on
    httpx2, whose client has the same interface as httpx's but not its type.)"""
    defaults: dict[str, Any] = {"write_key": WRITE_KEY, "visitors": 40, "rate": 0, "seed": 3}
    return run_simulation(client, **{**defaults, **options})


def test_each_visitor_chats_then_decides_then_walks_the_funnel(
    fake: FakeNexus, client: TestClient
) -> None:
    report = simulate(client, concurrency=1, run_id="t1")
    assert report.visitors == report.decisions == len(fake.decisions) == 40
    assert report.events_sent == len(fake.events)
    assert report.requests == expected_requests(fake)
    assert report.error_count == 0
    # The chat text was ingested before decide was asked, and decide got that text.
    for decision in fake.decisions:
        visitor = decision["visitor_id"]
        assert visitor.startswith("t1-")
        assert fake.seen_at_decide[visitor] == ["Landing Viewed", CHAT_EVENT]
        chat = next(
            e for e in fake.events if e["anonymousId"] == visitor and e["event"] == CHAT_EVENT
        )
        assert decision["text"] == chat["properties"]["text"]
        assert set(decision["attributes"]) == {"country", "device", "plan", "returning"}
    orders = [e for e in fake.events if e["event"] == GOAL_EVENT]
    assert len(orders) == report.conversions
    # Served adaptation and variant reach the truth and the events.
    assert set(report.by_adaptation) <= {"calm", "urgent"}
    assert sum(t.visitors for t in report.by_adaptation.values()) == 40
    assert report.by_variant["pricing-test"]["b"].visitors == 40
    assert all(e["properties"]["adaptation"] in ("calm", "urgent") for e in orders)
    # The truth: what the same world says of the same visitors and choices.
    world = Simulation(3, id_prefix="t1")
    expected = 0.0
    for decision in fake.decisions:
        visitor = world.visitor(int(decision["visitor_id"].rsplit("-", 1)[1]))
        text = world.opening(visitor).text.lower()
        key = "calm" if any(w in text for w in ("annoy", "fail", "broken")) else "urgent"
        expected += world.journey(visitor, key, {"pricing-test": "b"}).probability
    assert report.total.expected == pytest.approx(expected)
    assert report.regret >= 0.0


def test_the_same_seed_replays_the_same_visitors(fake: FakeNexus, client: TestClient) -> None:
    first = simulate(client, concurrency=1, run_id="a")
    texts_first = [d["text"] for d in fake.decisions]
    second = simulate(client, concurrency=1, run_id="b")
    texts_second = [d["text"] for d in fake.decisions[40:]]
    assert texts_first == texts_second
    assert first.conversions == second.conversions
    assert first.total.expected == pytest.approx(second.total.expected)
    # Run ids keep message ids apart, so a server would not deduplicate the replay.
    assert len({e["messageId"] for e in fake.events}) == len(fake.events)


def test_concurrent_visitors_are_all_counted(fake: FakeNexus, client: TestClient) -> None:
    report = simulate(client, visitors=60, concurrency=4)
    assert report.visitors == report.decisions == 60
    assert report.events_sent == len(fake.events)
    assert report.requests == expected_requests(fake)


class FakeClock:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_the_token_bucket_paces_starts_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        bucket.acquire()
    assert clock.now == pytest.approx(2.0)  # the first at once, then one every 0.2 s
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)


def test_rate_and_duration_bound_the_run(client: TestClient) -> None:
    clock = FakeClock()
    report = simulate(client, visitors=10, rate=20.0, concurrency=1, clock=clock, sleep=clock.sleep)
    assert report.visitors == 10
    assert report.seconds == pytest.approx(0.45)
    assert report.visitors_per_second == pytest.approx(10 / 0.45)
    clock = FakeClock()
    report = simulate(
        client,
        visitors=1000,
        rate=10.0,
        duration=0.25,
        concurrency=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert report.visitors == 3  # started at 0, 0.1 and 0.2 s


def test_overload_is_retried_and_failures_are_counted(fake: FakeNexus, client: TestClient) -> None:
    fake.decide_failures_first = 2
    report = simulate(client, visitors=5, concurrency=1)
    assert report.decisions == 5
    assert report.error_count == 0
    assert report.requests == expected_requests(fake) + 2
    fake.decide_status = 500
    report = simulate(client, visitors=5, concurrency=1)
    assert report.decisions == 0
    assert report.visitors == 5
    assert report.errors == {"decide: HTTP 500": 5}
    assert report.first_error == "/v1/decide: HTTP 500: boom"
    assert report.by_adaptation[NO_DECISION].visitors == 5  # served the default experience


def test_rejected_messages_are_counted_as_errors(fake: FakeNexus, client: TestClient) -> None:
    fake.reject_event = CHAT_EVENT
    report = simulate(client, visitors=6, concurrency=1)
    assert report.events_sent == len(fake.events)
    assert list(report.errors) == ["batch: message rejected"]
    assert report.errors["batch: message rejected"] >= 6  # every opening chat, and later ones
    assert report.first_error == "/v1/batch rejected a message: refused for the test"
    assert report.decisions == 6


def test_a_refused_key_or_a_missing_decide_stops_the_run(fake: FakeNexus) -> None:
    fake.key = "another"
    with (
        TestClient(fake.app(), base_url="http://nexus.test") as client,
        pytest.raises(SimulationAborted, match=r"refused the write key \(HTTP 401"),
    ):
        simulate(client, concurrency=2)
    fake.key, fake.with_decide = WRITE_KEY, False
    with (
        TestClient(fake.app(), base_url="http://nexus.test") as client,
        pytest.raises(SimulationAborted, match="has no /v1/decide"),
    ):
        simulate(client)


def test_bad_arguments_are_refused(client: TestClient) -> None:
    with pytest.raises(ValueError, match="visitors"):
        simulate(client, visitors=0)


# --- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def one_line_error(self, code: int) -> str:
        assert self.code == code, (self.out, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: "), self.err
        return lines[0]


@pytest.fixture
def nexus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``nexus("simulate", ...)`` through the CLI's entry point, in process."""
    monkeypatch.delenv("NEXUS_WRITE_KEY", raising=False)

    def invoke(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def served_by_fake(fake: FakeNexus, monkeypatch: pytest.MonkeyPatch) -> FakeNexus:
    """The command's HTTP client talks to the contract server."""
    monkeypatch.setattr(
        simulate_cli,
        "open_client",
        lambda base_url, timeout: TestClient(fake.app(), base_url=base_url),
    )
    return fake


def test_the_command_prints_json_and_a_summary(nexus: Any, served_by_fake: FakeNexus) -> None:
    result = nexus(
        "simulate",
        "--write-key",
        WRITE_KEY,
        "--visitors",
        "12",
        "--rate",
        "0",
        "--seed",
        "4",
        "--run-id",
        "cli",
        "--json",
    )
    assert result.code == 0, result.err
    report = orjson.loads(result.out)
    assert report["visitors"] == report["decisions"] == 12
    assert report["run_id"] == "cli"
    assert report["url"] == "http://127.0.0.1:8000"
    assert set(report) >= {"conversion_rate", "visitors_per_second", "regret", "by_adaptation"}
    result = nexus("simulate", "--write-key", WRITE_KEY, "--visitors", "12", "--rate", "0")
    assert result.code == 0, result.err
    assert "simulated 12 visitors" in result.out
    assert "By adaptation served" in result.out


def test_the_write_key_may_come_from_the_environment(
    nexus: Any, served_by_fake: FakeNexus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXUS_WRITE_KEY", WRITE_KEY)
    assert nexus("simulate", "--visitors", "2", "--rate", "0", "--json").code == 0


def test_errors_are_one_line_and_non_zero(nexus: Any, served_by_fake: FakeNexus) -> None:
    assert "write key is needed" in nexus("simulate").one_line_error(2)
    assert "--url must be" in nexus("simulate", "--write-key", "k", "--url", "x").one_line_error(2)
    assert "--visitors" in nexus("simulate", "--write-key", "k", "--visitors", "0").one_line_error(
        2
    )
    assert "--run-id" in nexus("simulate", "--write-key", "k", "--run-id", "a b").one_line_error(2)
    refused = nexus("simulate", "--write-key", "wrong", "--visitors", "3", "--rate", "0")
    assert "refused the write key (HTTP 401" in refused.one_line_error(1)
    served_by_fake.decide_status = 500
    failed = nexus("simulate", "--write-key", WRITE_KEY, "--visitors", "3", "--rate", "0")
    assert "no decide request succeeded" in failed.one_line_error(1)


def test_an_unreachable_server_is_one_line(nexus: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = nexus("simulate", "--write-key", "k", "--url", f"http://127.0.0.1:{port}")
    assert "cannot reach NEXUS" in result.one_line_error(1)
    assert "connection refused" in result.err
