"""A 2xx means durable: a real ``nexus serve`` is killed with SIGKILL while clients post, and
after a restart every acknowledged message is stored exactly once and nothing else is. Before
that, the store writer's side of it in process: catching up, re-reading, failing, stopping.

Clients record which message ids got a 2xx (acknowledged), and which were ever sent (an
answer lost to the kill may or may not have been stored; both are fine). Some requests replay
batches that were already acknowledged, as SDKs do after a timeout; after the restart every
acknowledged batch is replayed once more, and must still be stored once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.journal import Journal
from nexus.events.normalize import normalize
from nexus.events.pipeline import JOURNAL_MARKER, IngestPipeline, decode_record, encode_record
from nexus.events.store import EventStore, WorkspaceBatch
from tests.cli.demo_process import free_port
from tests.events.conftest import T0, basic, track

NEXUS = Path(sys.executable).with_name("nexus")
READY_TIMEOUT_S = 60.0
CLIENTS = 4
BATCH = 25
REPLAY_EVERY = 4  # every 4th request of a client replays one of its acknowledged batches
ACKED_BEFORE_KILL = 60  # acknowledged requests before the kill (at least)


class Server:
    """``nexus serve`` on a data directory that outlives it (so it can be started again)."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(NEXUS), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"the server exited\n{self.log()}"
                try:
                    if client.get("/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"not ready within {READY_TIMEOUT_S} s\n{self.log()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """Ctrl-C: the server stores what it acknowledged and exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


class Clients:
    """Threads posting batches of fresh message ids, and replays of acknowledged batches,
    until the server stops answering."""

    def __init__(self, url: str, write_key: str) -> None:
        self.url = url
        self.write_key = write_key
        self.lock = threading.Lock()
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.acked_batches: list[list[dict[str, Any]]] = []
        self.acked_requests = 0
        self.failed_requests = 0
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        """Wait for every client to see the server gone (each ends on its first failure)."""
        for thread in self.threads:
            thread.join(timeout=30)
        self.stop.set()

    def _run(self, n: int) -> None:
        mine: list[list[dict[str, Any]]] = []
        with httpx.Client(base_url=self.url, timeout=5.0, headers=basic(self.write_key)) as http:
            for request in range(10**9):
                if self.stop.is_set():
                    return
                if mine and request % REPLAY_EVERY == REPLAY_EVERY - 1:
                    batch = mine[request % len(mine)]
                else:
                    batch = [
                        track(f"c{n}-r{request}-{i}", userId=f"user-{n}") for i in range(BATCH)
                    ]
                    with self.lock:
                        self.sent.update(m["messageId"] for m in batch)
                try:
                    response = http.post("/v1/batch", json={"batch": batch})
                except httpx.TransportError:  # the server is gone: this one's fate is unknown
                    with self.lock:
                        self.failed_requests += 1
                    return
                if response.status_code == 200 and response.json()["accepted"] == BATCH:
                    mine.append(batch)
                    with self.lock:
                        self.acked.update(m["messageId"] for m in batch)
                        self.acked_batches.append(batch)
                        self.acked_requests += 1


def create_workspace(data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [str(NEXUS), "workspace", "create", "Durable", "--json"],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def listed_ids(url: str, secret_key: str) -> list[str]:
    """Every message id GET /v1/events lists, following the cursor."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": 200}
    headers = {"Authorization": f"Bearer {secret_key}"}
    with httpx.Client(base_url=url, timeout=10.0, headers=headers) as http:
        while True:
            page = http.get("/v1/events", params=params).json()
            ids.extend(item["messageId"] for item in page["items"])
            if page["next_cursor"] is None:
                return ids
            params["cursor"] = page["next_cursor"]


def wait_until_listed(url: str, secret_key: str, expected: set[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = listed_ids(url, secret_key)
        if expected <= set(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(0.1)


def stored_counts(data_dir: Path, workspace_id: str) -> Counter[str]:
    """Each stored message id and how often, read from the event store file itself."""
    store = DuckDBEventStore(data_dir / "events.duckdb", memory_limit="256MB")
    try:
        rows = store.recent(workspace_id, limit=10**7)
    finally:
        store.close()
    return Counter(row[0] for row in rows)


def replay(url: str, write_key: str, batches: list[list[dict[str, Any]]]) -> None:
    def post(share: list[list[dict[str, Any]]]) -> None:
        with httpx.Client(base_url=url, timeout=10.0, headers=basic(write_key)) as http:
            for batch in share:
                response = http.post("/v1/batch", json={"batch": batch})
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=post, args=(batches[n::CLIENTS],)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- the writer's side, in process -----------------------------------------------------------


def open_pipeline(root: Path, store: EventStore | None = None) -> IngestPipeline:
    store = store or DuckDBEventStore(root / "events.duckdb", memory_limit="256MB", threads=1)
    return IngestPipeline(Journal(root / "journal", segment_bytes=4096), store, idle_wait=0.05)


@contextmanager
def writer(
    root: Path, store: EventStore | None = None, *, start: bool = True
) -> Iterator[IngestPipeline]:
    """A process's pipeline. ``start=False`` is one that acknowledges and dies before its
    writer stores anything; leaving the block is a clean shutdown (drain, then close)."""
    pipeline = open_pipeline(root, store)
    try:
        if start:
            pipeline.start()
        yield pipeline
    finally:
        pipeline.stop(drain_timeout=10)
        pipeline.store.close()


def journal_batches(pipeline: IngestPipeline, n: int, prefix: str = "m") -> int:
    """Acknowledge ``n`` requests of 10 events each, as the API does; returns the end."""
    end = pipeline.journal.end
    for i in range(n):
        rows = [normalize(track(f"{prefix}{i}-{j}"), received_at=T0 + i) for j in range(10)]
        end = pipeline.journal.append_sync(encode_record("ws", rows))
    return end


def stored(root: Path) -> tuple[int, int | None]:
    """(events stored, journal marker), read from the store file after the process ended."""
    store = DuckDBEventStore(root / "events.duckdb", memory_limit="256MB", threads=1)
    try:
        return store.count("ws"), store.marker(JOURNAL_MARKER)
    finally:
        store.close()


def test_a_restarted_writer_stores_what_was_acknowledged_but_not_stored(tmp_path: Path) -> None:
    with writer(tmp_path, start=False) as crashed:
        end = journal_batches(crashed, 30)
    with writer(tmp_path) as restarted:
        assert restarted.wait_until_stored(end)
    assert stored(tmp_path) == (300, end)


def test_a_store_commit_without_its_marker_is_not_stored_twice(tmp_path: Path) -> None:
    # A crash between the store's commit and the marker: the events are in the store but the
    # marker is behind, so the next writer reads them again.
    with writer(tmp_path, start=False) as crashed:
        end = journal_batches(crashed, 20)
        records = list(crashed.journal.read(0, max_bytes=1 << 30))
        crashed.store.append([decode_record(r.payload) for r in records[:15]])
    with writer(tmp_path) as second:
        assert second.position == 0
        assert second.wait_until_stored(end)
    assert second.stats.duplicates == 150
    assert stored(tmp_path) == (200, end)


def test_a_restart_resumes_from_the_marker(tmp_path: Path) -> None:
    with writer(tmp_path) as first:
        end = journal_batches(first, 10)
    with writer(tmp_path) as second:
        assert second.position == end
        end = journal_batches(second, 5, prefix="later")
    assert (second.stats.stored, second.stats.duplicates) == (50, 0)
    assert stored(tmp_path) == (150, end)


def test_a_clean_shutdown_stores_everything_acknowledged(tmp_path: Path) -> None:
    with writer(tmp_path) as pipeline:
        end = journal_batches(pipeline, 40)
    assert pipeline.position == end
    assert stored(tmp_path) == (400, end)


class FlakyStore:
    """The real store, whose first ``failures`` appends fail (a full disk, say)."""

    def __init__(self, inner: EventStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def append(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("No space left on device")
        return self.inner.append(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failing_store_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    real = DuckDBEventStore(tmp_path / "events.duckdb", memory_limit="256MB", threads=1)
    with writer(tmp_path, FlakyStore(real, failures=1)) as pipeline:  # type: ignore[arg-type]
        end = journal_batches(pipeline, 10)
        assert pipeline.wait_until_stored(end, timeout=10)
    assert pipeline.stats.errors == 1
    assert stored(tmp_path) == (100, end)


# --- a real server, killed ------------------------------------------------------------------


def test_acknowledged_events_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_DATA_DIR"] = str(data_dir)
    workspace = create_workspace(data_dir, env)

    with Server(data_dir, env) as server:
        clients = Clients(server.url, workspace["write_key"])
        clients.start()
        deadline = time.monotonic() + 30
        while clients.acked_requests < ACKED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # mid-stream: the clients are still posting
        clients.join()
    assert clients.acked_requests >= ACKED_BEFORE_KILL
    assert clients.failed_requests == CLIENTS, "a client did not see the server go"
    acked, sent = set(clients.acked), set(clients.sent)

    with Server(data_dir, env) as server:
        # What the store had not taken from the journal at the kill comes back on start.
        listed = wait_until_listed(server.url, workspace["secret_key"], acked, timeout=20)
        assert acked <= set(listed), f"{len(acked - set(listed))} acknowledged events lost"
        assert len(listed) == len(set(listed)), "an event was stored twice"
        assert set(listed) <= sent, "an event nobody sent was stored"

        # SDK retries of everything acknowledged: all answered 2xx, none stored again.
        replay(server.url, workspace["write_key"], clients.acked_batches)
        assert server.stop() == 0, server.log()

    counts = stored_counts(data_dir, workspace["id"])
    assert acked <= set(counts)
    assert set(counts) <= sent
    assert max(counts.values()) == 1, [m for m, c in counts.items() if c > 1][:10]


def test_a_failing_enricher_never_holds_events_back(tmp_path: Path) -> None:
    def broken(batches: list[WorkspaceBatch]) -> list[WorkspaceBatch]:
        raise RuntimeError("model file vanished")

    with writer(tmp_path, start=False) as pipeline:
        pipeline.enrich = broken
        pipeline.start()
        end = journal_batches(pipeline, 5)
        assert pipeline.wait_until_stored(end)
    assert pipeline.stats.errors == pipeline.stats.batches >= 1
    assert stored(tmp_path) == (50, end)
