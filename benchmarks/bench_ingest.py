"""Event ingestion over HTTP: acknowledged (journal fsync'd) events per second, and proof that
every acknowledged event reaches the store.

A real ``nexus serve`` receives Segment ``/v1/batch`` requests of :data:`BATCH` messages from an
asyncio ``httpx`` client holding :data:`CONNECTIONS` keep-alive connections, authenticated with
the workspace's public write key as analytics.js does. Request bodies are encoded before the
clock starts, so the client's cost is HTTP only. A 200 means the events are in the fsync'd
journal; the store is filled from it by the server's writer thread. After the last
acknowledgement the server is stopped (it drains its journal into the store as it stops) and
the store is counted: it must hold exactly the events sent. Events still in the journal (a drain
cut short) are replayed into the store the way the next start would, and reported.

The baseline, measured in the same run, is DuckDB alone: the same events, already normalized,
inserted as one pyarrow table into a fresh file with the same table and deduplication hash.
It is the floor under any embedded ingestion path (no HTTP, no JSON, no journal), so the ratio
says how much of DuckDB's raw speed the whole path keeps.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import orjson
import pyarrow as pa

from benchmarks.report import LatencyStats, Section, fmt, table
from benchmarks.server import NexusServer, kib_to_mib
from benchmarks.traffic import messages
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.journal import Journal
from nexus.events.normalize import ROW_FIELDS, normalize
from nexus.events.pipeline import IngestPipeline

TITLE = "Event ingestion"

EVENTS = int(os.environ.get("NEXUS_BENCH_INGEST_EVENTS", "300000"))
BATCH = 100  # messages per request, as analytics.js and the server SDKs batch
CONNECTIONS = int(os.environ.get("NEXUS_BENCH_INGEST_CONNECTIONS", "8"))
WARMUP_REQUESTS = 50  # with their own messages, before the clock starts
BAR_EVENTS_PER_S = 20_000
TIME_FIELDS = ("timestamp", "original_timestamp", "sent_at", "received_at")


class IngestFailed(RuntimeError):
    """A request was refused for another reason than back-pressure."""


@dataclass(frozen=True, slots=True)
class Sent:
    events: int
    stats: LatencyStats
    retries: int  # 429/503 answers, retried after Retry-After
    client_cpu_s: float
    server_cpu_s: float


@dataclass(frozen=True, slots=True)
class Stored:
    expected: int
    at_stop: int
    after_replay: int
    stop_seconds: float
    exit_code: int
    peak_rss_mib: float


@dataclass(frozen=True, slots=True)
class Baseline:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan


def _bodies(start: int, count: int) -> list[bytes]:
    """``/v1/batch`` bodies for messages ``start`` to ``start + count``, encoded now."""
    batch: list[object] = []
    bodies = []
    for message in messages(count, start=start):
        batch.append(message)
        if len(batch) == BATCH:
            bodies.append(orjson.dumps({"batch": batch}))
            batch = []
    if batch:
        bodies.append(orjson.dumps({"batch": batch}))
    return bodies


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


async def _post_all(client: httpx.AsyncClient, bodies: list[bytes]) -> tuple[list[int], int]:
    """Send every body over the client's connections; latencies (ns) and retries."""
    latencies: list[int] = []
    retries = 0
    queue = iter(bodies)
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal retries
        for body in queue:  # one shared iterator: each body goes out once
            while True:
                started = clock()
                response = await client.post("/v1/batch", content=body)
                if response.status_code == 200:
                    latencies.append(clock() - started)
                    accepted = orjson.loads(response.content)["accepted"]
                    if accepted != BATCH:
                        raise IngestFailed(f"{accepted} of {BATCH} messages accepted")
                    break
                if response.status_code in (429, 503):
                    retries += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                raise IngestFailed(f"POST /v1/batch: {response.status_code} {response.text}")

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return latencies, retries


async def _drive(server: NexusServer, warmup: list[bytes], bodies: list[bytes]) -> Sent:
    token = base64.b64encode(f"{server.workspace['write_key']}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, limits=limits, timeout=60.0
    ) as client:
        await _post_all(client, warmup)  # opens the connections, warms the key cache
        server_before = _cpu_seconds(server.pid)
        client_before = time.process_time()
        started = time.perf_counter()
        latencies, retries = await _post_all(client, bodies)
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        server_cpu = _cpu_seconds(server.pid) - server_before
    return Sent(
        events=len(bodies) * BATCH,
        stats=LatencyStats.from_ns(latencies, seconds),
        retries=retries,
        client_cpu_s=client_cpu,
        server_cpu_s=server_cpu,
    )


def _count_stored(server: NexusServer, expected: int) -> Stored:
    """Stop the server, count what it stored, and replay what it left in the journal."""
    status = server.proc_status()
    started = time.perf_counter()
    exit_code = server.stop()
    stop_seconds = time.perf_counter() - started
    workspace_id = str(server.workspace["id"])
    store = DuckDBEventStore(server.data_dir / "events.duckdb")
    try:
        at_stop = store.count(workspace_id)
        pipeline = IngestPipeline(Journal(server.data_dir / "journal"), store)
        while pipeline.flush_once():
            pass
        pipeline.journal.close()
        after_replay = store.count(workspace_id)
    finally:
        store.close()
    return Stored(
        expected=expected,
        at_stop=at_stop,
        after_replay=after_replay,
        stop_seconds=stop_seconds,
        exit_code=exit_code,
        peak_rss_mib=kib_to_mib(status.get("VmHWM")),
    )


def _baseline(count: int) -> Baseline:
    """DuckDB alone: the same events, normalized beforehand, bulk-inserted from pyarrow."""
    now = time.time_ns() // 1000
    rows = [normalize(m, received_at=now) for m in messages(count)]
    columns = list(zip(*rows, strict=True))
    distinct = [r[3] or r[4] for r in rows]  # user_id or anonymous_id
    arrays = [pa.array(["ws_baseline"] * count), pa.array(distinct), pa.array(distinct)]
    time_type = pa.timestamp("us", tz="UTC")
    arrays += [
        pa.array(values, time_type if name in TIME_FIELDS else pa.string())
        for name, values in zip(ROW_FIELDS, columns, strict=True)
    ]
    names = ["workspace_id", "distinct_id", "person_id", *ROW_FIELDS]
    staged = pa.Table.from_arrays(arrays, names=names)
    del rows, columns
    with tempfile.TemporaryDirectory(prefix="nexus-bench-duckdb-") as tmp:
        path = Path(tmp) / "events.duckdb"
        DuckDBEventStore(path).close()  # the store's own schema, then raw DuckDB
        con = duckdb.connect(str(path), config={"memory_limit": "1GB"})
        try:
            con.execute("SET enable_progress_bar = false")
            con.register("staged", staged)
            column_list = ", ".join(names)
            started = time.perf_counter()
            con.execute(
                f"INSERT INTO events (message_hash, {column_list}) "
                "SELECT md5_number_upper(workspace_id || chr(0) || message_id), "
                f"{column_list} FROM staged"
            )
            seconds = time.perf_counter() - started
            stored = con.execute("SELECT count(*) FROM events").fetchone()
        finally:
            con.close()
    if stored is None or stored[0] != count:
        raise IngestFailed(f"the baseline stored {stored} events instead of {count}")
    return Baseline(count, seconds)


def run() -> Section:
    load = os.getloadavg()
    warmup = _bodies(EVENTS, WARMUP_REQUESTS * BATCH)
    bodies = _bodies(0, EVENTS)
    body_bytes = sum(map(len, bodies))
    with NexusServer() as server:
        sent = asyncio.run(_drive(server, warmup, bodies))
        stored = _count_stored(server, EVENTS + WARMUP_REQUESTS * BATCH)
    del bodies, warmup
    baseline = _baseline(EVENTS)
    return _section(sent, stored, baseline, body_bytes, load)


def _section(
    sent: Sent, stored: Stored, baseline: Baseline, body_bytes: int, load: tuple[float, ...]
) -> Section:
    rate = sent.events / sent.stats.seconds  # stats count requests, not events
    durable = stored.after_replay == stored.expected
    met = rate >= BAR_EVENTS_PER_S and durable
    verdict = "met" if met else "NOT met"
    per_event_us = (sent.server_cpu_s + sent.client_cpu_s) / sent.events * 1e6
    rows = [
        ["Events sent (measured)", f"{sent.events:,} in {sent.events // BATCH:,} requests"],
        ["Request body", f"{body_bytes / (sent.events // BATCH) / 1024:.1f} KiB average"],
        ["Wall time", f"{fmt(sent.stats.seconds, 2)} s"],
        ["**Acknowledged events/s**", f"**{fmt(rate, 0)}**"],
        ["Requests/s", fmt(sent.stats.per_second, 0)],
        [
            "Request latency p50 / p99",
            f"{fmt(sent.stats.p50_ms, 1)} / {fmt(sent.stats.p99_ms, 1)} ms",
        ],
        ["Back-pressure answers (429/503, retried)", str(sent.retries)],
        ["Server CPU (user + system)", f"{fmt(sent.server_cpu_s, 2)} s"],
        ["Client CPU (user + system)", f"{fmt(sent.client_cpu_s, 2)} s"],
        ["CPU per event, server + client", f"{fmt(per_event_us, 1)} µs"],
        ["Server peak RSS (VmHWM)", f"{fmt(stored.peak_rss_mib, 1)} MiB"],
        [
            "Stored when the server stopped",
            f"{stored.at_stop:,} of {stored.expected:,} (stop took "
            f"{fmt(stored.stop_seconds, 2)} s, exit code {stored.exit_code})",
        ],
        ["Stored after replaying its journal", f"{stored.after_replay:,} of {stored.expected:,}"],
        ["Baseline: DuckDB bulk insert events/s", fmt(baseline.per_second, 0)],
        ["NEXUS / baseline", f"{fmt(rate / baseline.per_second, 3)}x"],
        ["Load average before the run (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in load)],
        [
            f"Bar: >= {BAR_EVENTS_PER_S:,} events/s acknowledged and durable",
            f"**{verdict}**",
        ],
    ]
    markdown = "\n\n".join(
        [
            _setup_text(sent.events),
            table(["Measure", "Value"], rows, "lr"),
        ]
    )
    summary = [
        f"acknowledged {fmt(rate, 0)} events/s ({sent.events:,} events, {CONNECTIONS} "
        f"connections, p99 {fmt(sent.stats.p99_ms, 1)} ms, {sent.retries} retries)",
        f"stored {stored.after_replay:,} of {stored.expected:,} ({stored.at_stop:,} at stop)",
        f"baseline DuckDB insert {fmt(baseline.per_second, 0)} events/s; "
        f"ratio {fmt(rate / baseline.per_second, 3)}x",
        f"bar >= {BAR_EVENTS_PER_S:,} events/s acknowledged and durable: {verdict}",
    ]
    return Section(TITLE, markdown, summary)


def _setup_text(events: int) -> str:
    return (
        "Segment `/v1/batch` requests to a real `nexus serve` (subprocess, fresh data "
        "directory, development defaults: access log at level info to a file), "
        f"{BATCH} messages each (page views, product events and 0.5 % identify calls, "
        "about 240 bytes of JSON each, with messageId, anonymousId, timestamp, properties "
        f"and context), from an asyncio `httpx` client with {CONNECTIONS} keep-alive "
        "connections in the benchmark process, authenticated with the public write key. "
        f"{WARMUP_REQUESTS} warm-up requests with other messages come first; bodies are "
        "encoded before the clock starts. A 200 means journal fsync'd; the table counts "
        f"{events:,} acknowledged events over the wall time from the first request to the "
        "last answer. The client shares the machine's cores with the server, so the CPU "
        "figures say what each side spent in that window; what the server's writer thread "
        "had not stored by then is drained while it stops (the stop's duration is shown). "
        "Durability: the server is stopped with SIGINT and "
        "the store is counted (warm-up events included); a replay of its journal would add "
        "what the stop did not drain. Baseline: the same events, normalized beforehand, "
        "inserted by DuckDB alone from one pyarrow table into a fresh file with the store's "
        "table and hash (no HTTP, no JSON, no journal), timed in the same run. "
        "`NEXUS_BENCH_INGEST_EVENTS` and `NEXUS_BENCH_INGEST_CONNECTIONS` change the size."
    )
