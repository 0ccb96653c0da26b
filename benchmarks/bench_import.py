"""Bulk import from a file: ``nexus import events`` on millions of Segment messages, its speed
and its peak memory against the bar (< 2 GiB), with DuckDB's own JSON loader as the baseline.

The file (:data:`EVENTS` messages from :mod:`benchmarks.traffic`, about 240 bytes each) is
written to a temporary directory before any clock starts. The import runs as the installed
command in a subprocess, as a user runs it; its peak RSS is the kernel's ``ru_maxrss`` for the
child (``wait4``), exact rather than sampled. The store is then counted, and the same command
is run a second time to show that it imports nothing again (the resume marker says the file is
done). The baseline loads the same file with DuckDB alone (``read_json`` into a table with the
same columns as the source messages, its own threads, the same 1 GB memory limit), in a
subprocess measured the same way.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Section, fmt, table
from benchmarks.server import NEXUS
from benchmarks.traffic import write_jsonl
from nexus.events.duckdb_store import DuckDBEventStore

TITLE = "Event import"

EVENTS = int(os.environ.get("NEXUS_BENCH_IMPORT_EVENTS", "10000000"))
BAR_RSS_MIB = 2048
COMMAND_TIMEOUT_S = 3 * 3600

# DuckDB alone loading the same file: the floor for any import of it into DuckDB.
_BASELINE = """
import sys, time, duckdb
source, target = sys.argv[1], sys.argv[2]
con = duckdb.connect(target, config={"memory_limit": "1GB"})
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
con.execute(
    "CREATE TABLE events AS SELECT * FROM read_json(?, format='newline_delimited', columns={"
    "'messageId': 'VARCHAR', 'anonymousId': 'VARCHAR', 'userId': 'VARCHAR', "
    "'type': 'VARCHAR', 'event': 'VARCHAR', 'name': 'VARCHAR', 'timestamp': 'TIMESTAMPTZ', "
    "'properties': 'JSON', 'traits': 'JSON', 'context': 'JSON'})",
    [source],
)
seconds = time.perf_counter() - started
count = con.execute("SELECT count(*) FROM events").fetchone()[0]
con.close()
print(count, seconds)
"""


class ImportFailed(RuntimeError):
    """A command failed or stored another number of events than the file holds."""


@dataclass(frozen=True, slots=True)
class Measured:
    """A finished subprocess: exit code, output, wall time, peak RSS and CPU."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mib: float
    cpu_s: float


def measure(command: list[str], *, env: dict[str, str], cwd: Path) -> Measured:
    """Run ``command`` to its end; its peak RSS and CPU come from ``wait4`` (exact, and the
    child's own: this process's memory is not mixed in)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            seconds=seconds,
            peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
            cpu_s=usage.ru_utime + usage.ru_stime,
        )


def _checked(measured: Measured, what: str) -> Measured:
    if measured.returncode != 0:
        raise ImportFailed(f"{what} exited with {measured.returncode}: {measured.stderr[-2000:]}")
    return measured


@dataclass(frozen=True, slots=True)
class Result:
    events: int
    file_bytes: int
    write_seconds: float
    first: Measured
    summary: dict[str, Any]
    stored: int
    store_bytes: int
    again: Measured
    again_summary: dict[str, Any]
    baseline: Measured
    baseline_seconds: float  # DuckDB's own load time, without interpreter start-up
    load: tuple[float, ...]


def run() -> Section:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="nexus-bench-import-") as tmp:
        root = Path(tmp)
        source = root / "events.jsonl"
        started = time.perf_counter()
        file_bytes = write_jsonl(source, EVENTS)
        write_seconds = time.perf_counter() - started
        data_dir = root / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        env["NEXUS_DATA_DIR"] = str(data_dir)
        created = _checked(
            measure([str(NEXUS), "workspace", "create", "Import", "--json"], env=env, cwd=root),
            "nexus workspace create",
        )
        workspace_id = json.loads(created.stdout)["id"]
        command = [str(NEXUS), "import", "events", str(source), "--json"]
        first = _checked(measure(command, env=env, cwd=root), "nexus import events")
        summary = json.loads(first.stdout)
        store_path = data_dir / "events.duckdb"
        store = DuckDBEventStore(store_path)
        try:
            stored = store.count(workspace_id)
        finally:
            store.close()
        if stored != EVENTS or summary["imported"] != EVENTS:
            raise ImportFailed(
                f"{EVENTS:,} events in the file, {summary['imported']:,} imported, "
                f"{stored:,} stored"
            )
        store_bytes = store_path.stat().st_size
        again = _checked(measure(command, env=env, cwd=root), "nexus import events (again)")
        again_summary = json.loads(again.stdout)
        baseline = _checked(
            measure(
                [sys.executable, "-c", _BASELINE, str(source), str(root / "baseline.duckdb")],
                env=env,
                cwd=root,
            ),
            "the DuckDB baseline",
        )
        count, seconds = baseline.stdout.strip().splitlines()[-1].split()
        if int(count) != EVENTS:
            raise ImportFailed(f"the baseline loaded {count} events instead of {EVENTS}")
    return _section(
        Result(
            events=EVENTS,
            file_bytes=file_bytes,
            write_seconds=write_seconds,
            first=first,
            summary=summary,
            stored=stored,
            store_bytes=store_bytes,
            again=again,
            again_summary=again_summary,
            baseline=baseline,
            baseline_seconds=float(seconds),
            load=load,
        )
    )


def _rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else math.nan


def _section(r: Result) -> Section:
    rate = _rate(r.events, r.first.seconds)
    baseline_rate = _rate(r.events, r.baseline_seconds)
    met = r.first.peak_rss_mib < BAR_RSS_MIB and r.stored == r.events
    verdict = "met" if met else "NOT met"
    again_imported = r.again_summary["imported"]
    rows = [
        ["Events in the file", f"{r.events:,}"],
        [
            "File size",
            f"{r.file_bytes / 1024**2:,.0f} MiB ({r.file_bytes / r.events:.0f} bytes per event)",
        ],
        ["`nexus import events` wall time (process start to exit)", f"{fmt(r.first.seconds, 1)} s"],
        ["**Events/s**", f"**{fmt(rate, 0)}**"],
        ["CPU (user + system)", f"{fmt(r.first.cpu_s, 1)} s"],
        ["**Peak RSS (ru_maxrss)**", f"**{fmt(r.first.peak_rss_mib, 0)} MiB**"],
        ["Stored afterwards (counted in the store)", f"{r.stored:,}"],
        ["Store file size", f"{r.store_bytes / 1024**2:,.0f} MiB"],
        [
            "Second run of the same command",
            f"{again_imported:,} imported in {fmt(r.again.seconds, 1)} s "
            f"(resumed at line {r.again_summary['resumed_from_line'] or 1:,})",
        ],
        [
            "Baseline: DuckDB `read_json` of the same file",
            f"{fmt(r.baseline_seconds, 1)} s, {fmt(baseline_rate, 0)} events/s, "
            f"peak RSS {fmt(r.baseline.peak_rss_mib, 0)} MiB",
        ],
        ["NEXUS / baseline (events/s)", f"{fmt(rate / baseline_rate, 3)}x"],
        ["Load average before the run (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in r.load)],
        [f"Bar: peak RSS < {BAR_RSS_MIB / 1024:.0f} GiB, every event stored", f"**{verdict}**"],
    ]
    markdown = "\n\n".join([_setup_text(r), table(["Measure", "Value"], rows, "lr")])
    summary = [
        f"imported {r.events:,} events in {fmt(r.first.seconds, 1)} s: {fmt(rate, 0)} events/s, "
        f"peak RSS {fmt(r.first.peak_rss_mib, 0)} MiB",
        f"second run imported {again_imported:,} in {fmt(r.again.seconds, 1)} s",
        f"baseline DuckDB read_json {fmt(baseline_rate, 0)} events/s; "
        f"ratio {fmt(rate / baseline_rate, 3)}x",
        f"bar peak RSS < {BAR_RSS_MIB / 1024:.0f} GiB: {verdict}",
    ]
    return Section(TITLE, markdown, summary)


def _setup_text(r: Result) -> str:
    return (
        f"`nexus import events FILE --json` on a fresh data directory with one workspace; "
        f"FILE holds {r.events:,} Segment messages as JSON lines (page views, product events and "
        "0.5 % identify calls, each with messageId, anonymousId, timestamp, properties and "
        f"context), written in {fmt(r.write_seconds, 0)} s before any clock starts. Defaults: "
        "batches of 50,000 lines, the store's 1 GB DuckDB memory limit. Wall time and events/s "
        "include the process's start-up; peak RSS and CPU are the child's `ru_maxrss` and "
        "rusage from `wait4`. The second run of the same command checks resumability: the "
        "file's completed marker means it reads nothing. Baseline: DuckDB alone loading the "
        "same file with `read_json` (typed columns: ids, type, event, name, timestamp, and "
        "properties/traits/context as JSON) into a fresh file, in a subprocess; its time is "
        "DuckDB's own, without interpreter start-up. `NEXUS_BENCH_IMPORT_EVENTS` changes the "
        "size (default 10,000,000)."
    )
