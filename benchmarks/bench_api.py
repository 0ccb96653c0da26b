"""The cost of the API shell: authentication, database session, problem handling, middleware.

Every API request pays for the same shell before any domain code runs: the request-context
middleware (request id, access log, metrics, security headers), the body-size limit, a database
session, the API-key lookup by hash, and on failure the problem+json handler. This benchmark
prices that shell over real HTTP against a real ``nexus serve``, relative to ``GET /healthz``
(no authentication, no database) measured in the same run, so that the ratios hold even though
the absolute figures include the Python HTTP client sharing the machine's cores.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.report import LatencyStats, Section, fmt, table
from benchmarks.server import NexusServer, kib_to_mib

TITLE = "API shell"

REQUESTS = 3000  # per endpoint, sequential
WARMUP = 200  # per endpoint, before any measurement
ROUNDS = 6  # the sequential requests are interleaved in this many rounds, see _sequential
CONCURRENT_THREADS = 8
CONCURRENT_SECONDS = 5.0
CONCURRENT_WARMUP = 20  # per thread, to open its connection before the clock starts
SEEDED_KEYS = 25  # keys in the workspace, so that /v1/keys returns a page and a cursor
PAGE_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Endpoint:
    label: str
    path: str
    exercises: str
    status: int
    authenticated: bool


BASELINE = Endpoint("GET /healthz", "/healthz", "baseline: middleware only", 200, False)
ME = Endpoint("GET /v1/me", "/v1/me", "key lookup by hash + session", 200, True)
ENDPOINTS = [
    BASELINE,
    ME,
    Endpoint(
        f"GET /v1/keys?limit={PAGE_LIMIT}",
        f"/v1/keys?limit={PAGE_LIMIT}",
        f"authenticated list, a page of {PAGE_LIMIT} of {SEEDED_KEYS} keys",
        200,
        True,
    ),
    Endpoint("GET /v1/me (no key)", "/v1/me", "401 problem+json", 401, False),
]


@dataclass(frozen=True, slots=True)
class Measured:
    endpoint: Endpoint
    stats: LatencyStats
    server_cpu_us: float  # server CPU time per request, user + system


@dataclass(frozen=True, slots=True)
class Concurrent:
    stats: LatencyStats
    failures: int


class UnexpectedResponse(RuntimeError):
    """A request got another status than its endpoint is meant to measure."""


def run() -> Section:
    with NexusServer() as server:
        secret = str(server.workspace["secret_key"])
        headers = {"Authorization": f"Bearer {secret}"}
        _seed_keys(server.base_url, headers)
        sequential = _sequential(server, headers)
        concurrent = _concurrent(server.base_url, headers)
        status = server.proc_status()
        exit_code = server.stop()
    return _section(sequential, concurrent, status, exit_code)


def _seed_keys(base_url: str, headers: Mapping[str, str]) -> None:
    """Create keys through the API until the workspace holds :data:`SEEDED_KEYS` of them
    (``nexus workspace create`` made two: the public write key and a secret key)."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:
        existing = client.get("/v1/keys", params={"limit": 200}).json()["items"]
        for i in range(SEEDED_KEYS - len(existing)):
            response = client.post("/v1/keys", json={"name": f"bench-{i}", "kind": "secret"})
            if response.status_code != 201:
                raise UnexpectedResponse(f"POST /v1/keys: {response.status_code} {response.text}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all its threads) so far."""
    # The command name in parentheses may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(pid: int) -> float:
    try:
        return _cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return math.nan


def _timed_batch(
    client: httpx.Client, endpoint: Endpoint, headers: Mapping[str, str], count: int
) -> tuple[list[int], int]:
    """``count`` sequential requests: their latencies and the batch's wall time, in ns."""
    latencies: list[int] = []
    get = client.get
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(count):
        before = clock()
        response = get(endpoint.path, headers=headers)
        latencies.append(clock() - before)
        if response.status_code != endpoint.status:
            raise UnexpectedResponse(
                f"{endpoint.label}: {response.status_code} instead of {endpoint.status}"
            )
    return latencies, clock() - started


def _sequential(server: NexusServer, auth: Mapping[str, str]) -> list[Measured]:
    """One keep-alive client, one request at a time.

    The endpoints take turns in :data:`ROUNDS` rounds rather than one after the other, so a
    slow phase of the machine (another tenant, frequency scaling) lands on all of them alike
    and the ratios to the baseline stay fair.
    """
    latencies: dict[str, list[int]] = {e.label: [] for e in ENDPOINTS}
    wall_ns = dict.fromkeys(latencies, 0)
    cpu = dict.fromkeys(latencies, 0.0)
    per_round = REQUESTS // ROUNDS
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        for endpoint in ENDPOINTS:
            _timed_batch(client, endpoint, auth if endpoint.authenticated else {}, WARMUP)
        for _ in range(ROUNDS):
            for endpoint in ENDPOINTS:
                headers = auth if endpoint.authenticated else {}
                cpu_before = _server_cpu(server.pid)
                batch, batch_ns = _timed_batch(client, endpoint, headers, per_round)
                cpu[endpoint.label] += _server_cpu(server.pid) - cpu_before
                latencies[endpoint.label] += batch
                wall_ns[endpoint.label] += batch_ns
    return [
        Measured(
            endpoint=e,
            stats=LatencyStats.from_ns(latencies[e.label], wall_ns[e.label] / 1e9),
            server_cpu_us=cpu[e.label] / len(latencies[e.label]) * 1e6,
        )
        for e in ENDPOINTS
    ]


def _concurrent(base_url: str, auth: Mapping[str, str]) -> Concurrent:
    """:data:`CONCURRENT_THREADS` threads, each with its own keep-alive client, on ``/v1/me``.

    Failures (another status, a transport error) are counted rather than raised: under load
    they are a finding, not a broken set-up.
    """
    barrier = threading.Barrier(CONCURRENT_THREADS)
    latencies: list[list[int]] = [[] for _ in range(CONCURRENT_THREADS)]
    spans: list[tuple[int, int]] = [(0, 0)] * CONCURRENT_THREADS
    failures = [0] * CONCURRENT_THREADS

    def hammer(index: int) -> None:
        clock = time.perf_counter_ns
        with httpx.Client(base_url=base_url, headers=auth, timeout=30.0) as client:
            for _ in range(CONCURRENT_WARMUP):
                client.get(ME.path)
            barrier.wait()
            started = clock()
            deadline = started + int(CONCURRENT_SECONDS * 1e9)
            mine = latencies[index]
            while (before := clock()) < deadline:
                try:
                    ok = client.get(ME.path).status_code == ME.status
                except httpx.HTTPError:
                    ok = False
                mine.append(clock() - before)
                failures[index] += not ok
            spans[index] = (started, clock())

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(CONCURRENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9
    merged = [latency for mine in latencies for latency in mine]
    return Concurrent(LatencyStats.from_ns(merged, seconds), sum(failures))


def _section(
    sequential: list[Measured], concurrent: Concurrent, status: Mapping[str, str], exit_code: int
) -> Section:
    base = sequential[0].stats
    me = next(m.stats for m in sequential if m.endpoint is ME)
    rows = [
        [
            f"`{m.endpoint.label}`",
            m.endpoint.exercises,
            str(m.endpoint.status),
            f"{m.stats.count:,}",
            fmt(m.stats.per_second, 0),
            fmt(m.stats.p50_ms, 3),
            fmt(m.stats.p99_ms, 3),
            fmt(m.stats.p50_ms - base.p50_ms, 3),
            f"{fmt(m.stats.p50_ms / base.p50_ms)}x",
            fmt(m.server_cpu_us, 0),
        ]
        for m in sequential
    ]
    c = concurrent.stats
    peak_mib = kib_to_mib(status.get("VmHWM"))
    end_mib = kib_to_mib(status.get("VmRSS"))
    markdown = "\n\n".join(
        [
            _setup_text(),
            "### Sequential, one keep-alive connection",
            table(
                [
                    "Request",
                    "Exercises",
                    "Status",
                    "Requests",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "p50 - baseline ms",
                    "p50 / baseline",
                    "server CPU µs/req",
                ],
                rows,
                "lllrrrrrrr",
            ),
            f"### Concurrent: {CONCURRENT_THREADS} threads, one connection each",
            table(
                [
                    "Request",
                    "Threads",
                    "Seconds",
                    "Requests",
                    "Failures",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "req/s / sequential req/s",
                ],
                [
                    [
                        f"`{ME.label}`",
                        str(CONCURRENT_THREADS),
                        fmt(c.seconds, 1),
                        f"{c.count:,}",
                        str(concurrent.failures),
                        fmt(c.per_second, 0),
                        fmt(c.p50_ms, 3),
                        fmt(c.p99_ms, 3),
                        f"{fmt(c.per_second / me.per_second)}x",
                    ]
                ],
                "lrrrrrrrr",
            ),
            "### Server process",
            table(
                ["Measure", "Value"],
                [
                    ["Peak RSS (VmHWM)", f"{fmt(peak_mib, 1)} MiB"],
                    ["RSS at the end (VmRSS)", f"{fmt(end_mib, 1)} MiB"],
                    ["Threads at the end", status.get("Threads", "n/a")],
                    ["Exit code after SIGINT", str(exit_code)],
                ],
                "lr",
            ),
        ]
    )
    summary = [
        f"{m.endpoint.label:<24} {fmt(m.stats.per_second, 0):>7} req/s  "
        f"p50 {fmt(m.stats.p50_ms, 3)} ms  p99 {fmt(m.stats.p99_ms, 3)} ms  "
        f"{fmt(m.stats.p50_ms / base.p50_ms)}x baseline"
        for m in sequential
    ]
    summary.append(
        f"{ME.label} x{CONCURRENT_THREADS} threads  {fmt(c.per_second, 0)} req/s  "
        f"p99 {fmt(c.p99_ms, 3)} ms  failures {concurrent.failures}"
    )
    summary.append(f"server peak RSS {fmt(peak_mib, 1)} MiB, exit code {exit_code}")
    return Section(TITLE, markdown, summary)


def _setup_text() -> str:
    return (
        "What every API request pays before domain code runs: middleware (request id, access "
        "log, metrics, security headers, body limit), the database session, the API-key lookup "
        "by hash, and the problem+json handler for a refused request.\n\n"
        "Set-up: `nexus serve` in a subprocess on a fresh data directory (embedded SQLite, "
        "development defaults: console log format, access log at level info written to a file), "
        "one workspace made by `nexus workspace create`, "
        f"{SEEDED_KEYS} keys in it. The client is `httpx` in the benchmark process on the same "
        "machine, so every latency includes the client's own cost and both compete for the same "
        "cores: read the difference and ratio to `GET /healthz`, which has the same client and "
        "middleware but no authentication and no database. "
        f"Sequential: {WARMUP} warm-up requests per endpoint, then {REQUESTS:,} measured per "
        f"endpoint, the endpoints interleaved in {ROUNDS} rounds. Server CPU per request is the "
        "server process's user + system time (`/proc/<pid>/stat`) over its requests. "
        f"Concurrent: {CONCURRENT_THREADS} threads, each with its own keep-alive client, "
        f"for {CONCURRENT_SECONDS:.0f} s after {CONCURRENT_WARMUP} warm-up requests each; "
        "its last column compares with the sequential `GET /v1/me` of this run."
    )
