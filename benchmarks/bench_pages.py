"""Hosted page render latency (``GET /f/{workspace}/{funnel}/{step}``) under a steady 200
requests per second, over real HTTP.

A real ``nexus serve`` holds the demo's hosted funnel (three steps, a headline experiment,
tone copy, a help block) with its four UI adaptations, two of them triggered by emotion.
Each request is a visitor's page view: the server reads the visitor's consent, decides the
experiment variant and the adaptation (the bandit, with the emotion remembered from an
earlier chat message for a third of the visitors) and renders the page -- everything that
happens before the first byte. One view in ten is a new visitor (no cookie). Every
decision is logged (``$exposure``, ``$decision``) and journalled while the load runs.

The load is open-loop (latency counts from when each request was due), on the same client
as ``bench_decide``; the GET /healthz row at the same rate is the floor any request gets.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.bench_api import UnexpectedResponse, _server_cpu
from benchmarks.bench_decide import LoadResult, _read_response, _run
from benchmarks.report import Section, fmt, table
from benchmarks.server import NexusServer
from nexus.pages import samples

TITLE = "Hosted pages under load"
RATE = float(os.environ.get("NEXUS_BENCH_PAGES_RATE", "200"))
SECONDS = float(os.environ.get("NEXUS_BENCH_PAGES_SECONDS", "20"))
WARMUP_SECONDS = 4.0
CONNECTIONS = 16
VISITORS = 3000
BAR_P99_MS = 20.0
STEPS = ("landing", "offer", "checkout")
UPSET = {"anger": 0.6, "valence": -0.5, "arousal": 0.5, "dominant": "annoyance"}


def run() -> Section:
    with NexusServer(extra_env={"NEXUS_LOG_FORMAT": "json"}) as server:
        secret = {"Authorization": f"Bearer {server.workspace['secret_key']}"}
        workspace_id = str(server.workspace["id"])
        write_key = str(server.workspace["write_key"])
        _configure(server.base_url, secret, write_key)
        health = _run(_load(server, "GET /healthz", None, SECONDS / 2))
        pages = _run(_load(server, "GET /f/…/{step}", workspace_id, SECONDS))
        size = len(
            httpx.get(
                f"{server.base_url}/f/{workspace_id}/{samples.DEMO_SLUG}/landing",
                cookies={"nexus_aid": "anon_bench_size_check"},
            ).content
        )
        server.stop()
    return _section(health, pages, size)


def _configure(base_url: str, headers: dict[str, str], write_key: str) -> None:
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:

        def post(path: str, body: dict[str, Any], expect: int = 201) -> None:
            response = client.post(path, json=body)
            if response.status_code != expect:
                raise UnexpectedResponse(f"POST {path}: {response.status_code} {response.text}")

        client.put("/v1/decision-settings", json={"goal_window_seconds": 60, "burn_in": 10})
        post("/v1/hosted-funnels", samples.demo_funnel())
        for adaptation in samples.demo_adaptations():
            post("/v1/adaptations", adaptation)
        post("/v1/experiments", samples.demo_experiment())
        post(f"/v1/experiments/{samples.HEADLINE_EXPERIMENT}/start", {}, expect=200)
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    with httpx.Client(base_url=base_url, headers={"Authorization": auth}, timeout=30.0) as client:
        # A third of the visitors wrote something upset earlier: the page adapts to them.
        for i in range(0, VISITORS, 3):
            response = client.post("/v1/decide", json={"visitor_id": _visitor(i), "emotion": UPSET})
            if response.status_code != 200:
                raise UnexpectedResponse(f"decide: {response.status_code} {response.text}")


def _visitor(i: int) -> str:
    return f"anon_bench_{i:06d}"


@dataclass
class _Plan:
    port: int
    workspace_id: str | None
    start: int
    step: int
    warm: int
    queue: asyncio.Queue[int]
    latencies: list[int]
    errors: int = 0
    answered: int = 0

    def request(self, i: int) -> bytes:
        if self.workspace_id is None:
            return b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
        path = f"/f/{self.workspace_id}/{samples.DEMO_SLUG}/{STEPS[i % len(STEPS)]}"
        cookie = "" if i % 10 == 0 else f"Cookie: nexus_aid={_visitor(i % VISITORS)}\r\n"
        return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{cookie}\r\n".encode()


async def _connection(plan: _Plan) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
    try:
        while True:
            i = await plan.queue.get()
            if i < 0:
                return
            writer.write(plan.request(i))
            status = await _read_response(reader)
            done = time.perf_counter_ns()
            if status != 200:
                plan.errors += 1
            elif i >= plan.warm:
                plan.answered += 1
                plan.latencies.append(done - (plan.start + i * plan.step))
    finally:
        writer.close()


async def _load(
    server: NexusServer, label: str, workspace_id: str | None, seconds: float
) -> LoadResult:
    total = int(RATE * (WARMUP_SECONDS + seconds))
    warm = int(RATE * WARMUP_SECONDS)
    plan = _Plan(
        port=server.port,
        workspace_id=workspace_id,
        start=time.perf_counter_ns() + 200_000_000,
        step=int(1e9 / RATE),
        warm=warm,
        queue=asyncio.Queue(),
        latencies=[],
    )
    workers = [asyncio.create_task(_connection(plan)) for _ in range(CONNECTIONS)]
    measured_from = time.monotonic()
    cpu_before = measured_from, _server_cpu(server.pid)
    for i in range(total):
        delay = (plan.start + i * plan.step - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if i == warm:
            measured_from = time.monotonic()
            cpu_before = measured_from, _server_cpu(server.pid)
        plan.queue.put_nowait(i)
    for _ in workers:
        plan.queue.put_nowait(-1)
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - measured_from
    cpu_share = (_server_cpu(server.pid) - cpu_before[1]) / (time.monotonic() - cpu_before[0])
    return LoadResult(label, plan.latencies, plan.answered, elapsed, plan.errors, cpu_share)


def _section(health: LoadResult, pages: LoadResult, size: int) -> Section:
    rows = [
        [
            r.label,
            fmt(r.achieved, 0),
            fmt(r.pct(50)),
            fmt(r.pct(90)),
            fmt(r.pct(99)),
            fmt(max(r.latencies_ns, default=0) / 1e6),
            str(r.errors),
            fmt(r.server_cpu_share * 100, 0) + " %",
        ]
        for r in (health, pages)
    ]
    p99 = pages.pct(99)
    passed = p99 <= BAR_P99_MS and pages.errors == 0 and pages.achieved >= 0.97 * RATE
    verdict = "met" if passed else "**missed**"
    ratio = p99 / health.pct(99) if health.pct(99) > 0 else math.nan
    markdown = "\n\n".join(
        [
            f"Open-loop load at {RATE:g} page views/s for {SECONDS:g} s after a "
            f"{WARMUP_SECONDS:g} s warm-up, {CONNECTIONS} keep-alive connections, "
            f"{VISITORS:,} returning visitors (a third adapted to an upset mood) and one new "
            "visitor in ten; each view decides the variant and adaptation and renders the "
            f"page server-side ({size:,} bytes of HTML for the landing page).",
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
            f"Bar: render p99 ≤ {BAR_P99_MS:g} ms at {RATE:g} requests/s — {verdict} "
            f"(p99 {fmt(p99)} ms, {fmt(ratio, 1)} times the /healthz p99 of the same load).",
        ]
    )
    return Section(TITLE, markdown)
