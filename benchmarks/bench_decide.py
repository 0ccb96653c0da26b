"""``POST /v1/decide`` latency under a steady 1,000 requests per second, over real HTTP.

A real ``nexus serve`` (one process, as ``make demo`` runs it) holds a workspace with 20
flags (half of them targeted on the visitor's emotion, some with rollouts and a
prerequisite), two running experiments in one layer and three UI adaptations chosen by the
linear Thompson sampling bandit. Each request is one visitor with attributes and an edge
emotion reading, as the browser SDK sends it; one in ten sends text instead, which the
server's edge model reads. Every decision is logged (``$exposure``, ``$decision``) and
journalled by the server's worker while the load runs, and goal events flow in through
ingestion so the bandit learns: the figure includes the whole loop.

The load is open-loop: request ``i`` is due at ``start + i / rate`` and its latency counts
from that moment, so a server that falls behind is charged for the queue it builds
(no coordinated omission). The client is a small asyncio HTTP/1.1 client on uvloop over
keep-alive connections, cheap enough to share the two cores with the server; it is the same
for every figure of the run. The GET /healthz row, measured the same way at the same rate, is the
floor the server and client give any request.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvloop

from benchmarks.bench_api import UnexpectedResponse, _server_cpu
from benchmarks.report import Section, fmt, percentile, table
from benchmarks.server import NexusServer

TITLE = "Decide under load"
RATE = float(os.environ.get("NEXUS_BENCH_DECIDE_RATE", "1000"))
SECONDS = float(os.environ.get("NEXUS_BENCH_DECIDE_SECONDS", "20"))
WARMUP_SECONDS = 4.0
CONNECTIONS = 48
BAR_P99_MS = 15.0
TEXTS = (
    "Why is the delivery so expensive? This is frustrating.",
    "Love it, this is exactly what I was looking for!",
    "I'm not sure this will fit, can I return it?",
    "Thanks, that was quick and easy.",
)


@dataclass(frozen=True, slots=True)
class LoadResult:
    label: str
    latencies_ns: list[int]
    answered: int
    seconds: float
    errors: int
    server_cpu_share: float

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies_ns), p) / 1e6

    @property
    def achieved(self) -> float:
        """Requests answered per second (decisions and the goal events among them)."""
        return self.answered / self.seconds


def run() -> Section:
    # Logs as a deployed server writes them (JSON lines), not the colourised console form.
    with NexusServer(extra_env={"NEXUS_LOG_FORMAT": "json"}) as server:
        secret = {"Authorization": f"Bearer {server.workspace['secret_key']}"}
        write_key = str(server.workspace["write_key"])
        _configure(server.base_url, secret)
        health = _run(_load(server, "GET /healthz", None, RATE, SECONDS / 2))
        decide = _run(_load(server, "POST /v1/decide", write_key, RATE, SECONDS))
        policy = httpx.get(f"{server.base_url}/v1/decision-policy", headers=secret).json()
        server.stop()
    return _section(health, decide, policy)


def _run(load: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run the load generator on uvloop (installed with uvicorn[standard]): the client shares
    the machine's cores with the server, so the less it spends per request the better."""
    return uvloop.run(load)


def _configure(base_url: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:

        def post(path: str, body: dict[str, Any], expect: int = 201) -> None:
            response = client.post(path, json=body)
            if response.status_code != expect:
                raise UnexpectedResponse(f"POST {path}: {response.status_code} {response.text}")

        client.put(
            "/v1/decision-settings",
            json={"goal_event": "Order Completed", "goal_window_seconds": 30, "burn_in": 10},
        )
        for i in range(20):
            body: dict[str, Any] = {"key": f"flag-{i}"}
            if i % 2 == 0:
                body["rules"] = [
                    {
                        "id": "upset",
                        "clauses": [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}],
                        "serve": {"variation": "on"},
                    },
                    {
                        "id": "angry-pro",
                        "clauses": [
                            {"attribute": "emotion.dominant", "op": "eq", "value": "anger"},
                            {"attribute": "plan", "op": "in", "value": ["pro", "team"]},
                        ],
                        "serve": {"variation": "off"},
                    },
                ]
            if i % 3 == 0:
                body["fallthrough"] = {
                    "rollout": [
                        {"variation": "on", "weight": 25},
                        {"variation": "off", "weight": 75},
                    ]
                }
            if i == 19:
                body["prerequisites"] = [{"flag": "flag-0", "variations": ["on"]}]
            post("/v1/flags", body)
        for key, traffic in (("pricing", 50), ("copy", 50)):
            post("/v1/experiments", {"key": key, "traffic": traffic, "layer": "checkout"})
            post(f"/v1/experiments/{key}/start", {}, expect=200)
        for key in ("calm", "urgent", "reassuring"):
            post("/v1/adaptations", {"key": key, "tone": key, "copy": {"cta": key}})


def _body(i: int, rng: random.Random) -> bytes:
    visitor = f"visitor-{i % 20_000}"
    body: dict[str, Any] = {
        "visitor_id": visitor,
        "attributes": {"plan": rng.choice(("free", "pro", "team")), "country": "DE"},
    }
    if i % 10 == 0:
        body["text"] = rng.choice(TEXTS)
    else:
        valence = rng.uniform(-1, 1)
        body["emotion"] = {
            "joy": max(0.0, valence),
            "anger": max(0.0, -valence) * rng.random(),
            "fear": rng.random() * 0.3,
            "valence": valence,
            "arousal": rng.uniform(-1, 1),
            "dominance": rng.uniform(-1, 1),
        }
    return orjson.dumps(body)


def _goal(i: int) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            # A visitor decided a moment ago converts.
            "anonymousId": f"visitor-{(i - 13) % 20_000}",
            "messageId": f"goal-{i}",
        }
    )


@dataclass
class _Plan:
    """What the connections of one load run share."""

    port: int
    auth: str | None
    bodies: list[bytes]
    start: int
    step: int
    warm: int
    queue: asyncio.Queue[int]
    latencies: list[int]
    errors: int = 0
    answered: int = 0  # every request of the measured period, goal events included

    def request(self, i: int) -> tuple[bytes, bool]:
        """Request ``i`` and whether its latency counts (goal events do not)."""
        if self.auth is None:
            return b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n", True
        if i % 25 == 0:
            return _request("/v1/track", _goal(i), self.auth), False
        return _request("/v1/decide", self.bodies[i], self.auth), True


async def _connection(plan: _Plan) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
    try:
        while True:
            i = await plan.queue.get()
            if i < 0:
                return
            request, counts = plan.request(i)
            writer.write(request)
            status = await _read_response(reader)
            done = time.perf_counter_ns()
            if status != 200:
                plan.errors += 1
            elif i >= plan.warm:
                plan.answered += 1
                if counts:
                    plan.latencies.append(done - (plan.start + i * plan.step))
    finally:
        writer.close()


async def _load(
    server: NexusServer, label: str, write_key: str | None, rate: float, seconds: float
) -> LoadResult:
    """Open-loop load at ``rate`` requests/s for ``seconds`` (after a warm-up)."""
    rng = random.Random(5)
    total = int(rate * (WARMUP_SECONDS + seconds))
    warm = int(rate * WARMUP_SECONDS)
    plan = _Plan(
        port=server.port,
        auth="Basic " + base64.b64encode(f"{write_key}:".encode()).decode() if write_key else None,
        bodies=[_body(i, rng) for i in range(total)] if write_key else [],
        start=time.perf_counter_ns() + 200_000_000,
        step=int(1e9 / rate),
        warm=warm,
        queue=asyncio.Queue(),
        latencies=[],
    )
    start, step, queue = plan.start, plan.step, plan.queue
    workers = [asyncio.create_task(_connection(plan)) for _ in range(CONNECTIONS)]
    cpu_before = time.monotonic(), _server_cpu(server.pid)
    measured_from = 0.0
    for i in range(total):
        due = start + i * step
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if i == warm:
            measured_from = time.monotonic()
            cpu_before = measured_from, _server_cpu(server.pid)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(-1)
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - measured_from
    cpu_share = (_server_cpu(server.pid) - cpu_before[1]) / (time.monotonic() - cpu_before[0])
    return LoadResult(label, plan.latencies, plan.answered, elapsed, plan.errors, cpu_share)


def _request(path: str, body: bytes, auth: str | None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


def _section(health: LoadResult, decide: LoadResult, policy: dict[str, Any]) -> Section:
    rows = []
    for result in (health, decide):
        rows.append(
            [
                result.label,
                fmt(result.achieved, 0),
                fmt(result.pct(50)),
                fmt(result.pct(90)),
                fmt(result.pct(99)),
                fmt(max(result.latencies_ns, default=0) / 1e6),
                str(result.errors),
                fmt(result.server_cpu_share * 100, 0) + " %",
            ]
        )
    p99 = decide.pct(99)
    passed = p99 <= BAR_P99_MS and decide.errors == 0 and decide.achieved >= 0.97 * RATE
    verdict = "met" if passed else "**missed**"
    ratio = decide.pct(99) / health.pct(99) if health.pct(99) > 0 else math.nan
    markdown = "\n\n".join(
        [
            f"Open-loop load at {RATE:g} requests/s for {SECONDS:g} s after a "
            f"{WARMUP_SECONDS:g} s warm-up, {CONNECTIONS} keep-alive connections; latency "
            "counts from when each request was due. Decide requests carry an edge emotion "
            "reading (one in ten sends text for the server's edge model); one request in 25 "
            "is a goal event sent to /v1/track, so the bandit learns as the load runs (it "
            "counts in the achieved rate, not in the latencies).",
            table(
                [
                    "requests",
                    "achieved req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                    "server CPU",
                ],
                rows,
                "lrrrrrrr",
            ),
            f"Bar: p99 ≤ {BAR_P99_MS:g} ms at {RATE:g} requests/s on this machine — {verdict} "
            f"(p99 {fmt(p99)} ms, {fmt(ratio, 1)} times the /healthz p99 of the same load). The "
            f"adaptation policy learned from {policy.get('updates', 0)} rewards during the run "
            f"(pulls {policy.get('pulls', {})}).",
        ]
    )
    return Section(TITLE, markdown)
