"""From acknowledged to queryable: the journal, the store writer and their back-pressure.

The request path appends to the :class:`~nexus.events.journal.Journal` and answers once it is
fsync'd. A single writer thread reads the journal from the store's ``journal`` marker on, in
batches of whatever has accumulated (so batches grow under load), and appends them to the
event store together with the new marker in one transaction. On start it first catches up with
whatever a previous process acknowledged but did not store.

Memory stays bounded: the journal lives on disk, the writer reads at most ``batch_bytes`` at a
time, and when the store falls behind by more than ``max_lag_bytes`` new requests are refused
with 503 and ``Retry-After`` instead of queuing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from nexus.core.logging import get_logger
from nexus.events.journal import Journal
from nexus.events.normalize import EventRow
from nexus.events.store import EventStore, WorkspaceBatch

JOURNAL_MARKER = "journal"
log = get_logger("nexus.events")


def encode_record(workspace_id: str, rows: list[EventRow]) -> bytes:
    """The journal payload of one acknowledged request."""
    return orjson.dumps([workspace_id, rows])


def decode_record(payload: bytes) -> WorkspaceBatch:
    workspace_id, rows = orjson.loads(payload)
    return WorkspaceBatch(workspace_id, rows)


@dataclass
class PipelineStats:
    stored: int = 0
    duplicates: int = 0
    batches: int = 0
    errors: int = 0


class IngestPipeline:
    """Owns the journal and the writer thread that moves its records into the store."""

    def __init__(
        self,
        journal: Journal,
        store: EventStore,
        *,
        batch_bytes: int = 16 * 1024 * 1024,
        max_lag_bytes: int = 256 * 1024 * 1024,
        idle_wait: float = 0.2,
        flush_interval: float = 0.5,
        on_stored: Callable[[list[WorkspaceBatch]], None] | None = None,
        enrich: Callable[[list[WorkspaceBatch]], list[WorkspaceBatch]] | None = None,
    ) -> None:
        self.journal = journal
        self.store = store
        self.batch_bytes = batch_bytes
        self.max_lag_bytes = max_lag_bytes
        self.idle_wait = idle_wait
        self.flush_interval = flush_interval
        self.on_stored = on_stored
        # Set by the app to add readings (emotion …) to events on their way into the store,
        # off the request path. A failing enricher never holds events back.
        self.enrich = enrich
        # Other domains watching stored events (the decision engine's rewards); a failing
        # listener is logged and never holds the writer up.
        self.listeners: list[Callable[[list[WorkspaceBatch]], None]] = []
        self.stats = PipelineStats()
        self._position = store.marker(JOURNAL_MARKER) or journal.start
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def position(self) -> int:
        """Journal position up to which events are in the store."""
        return self._position

    @property
    def lag_bytes(self) -> int:
        return max(0, self.journal.end - self._position)

    @property
    def overloaded(self) -> bool:
        return self.lag_bytes > self.max_lag_bytes

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nexus-event-writer", daemon=True)
        self._thread.start()

    def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Store what is acknowledged (up to ``drain_timeout``), then stop the writer."""
        deadline = time.monotonic() + drain_timeout
        while self.lag_bytes and time.monotonic() < deadline and self._alive():
            time.sleep(0.02)
        self._stopping.set()
        self.journal.wake()
        if self._thread is not None:
            self._thread.join(timeout=drain_timeout)
        self.journal.close()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_until_stored(self, position: int, timeout: float = 10.0) -> bool:
        """Block until everything up to journal ``position`` is in the store (tests, import)."""
        deadline = time.monotonic() + timeout
        while self._position < position:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def flush_once(self) -> int:
        """Move one batch from the journal to the store; returns the events read."""
        records = list(self.journal.read(self._position, max_bytes=self.batch_bytes))
        if not records:
            return 0
        batches = [decode_record(r.payload) for r in records]
        if self.enrich is not None:
            try:
                batches = self.enrich(batches)
            except Exception:
                self.stats.errors += 1
                log.exception("event enrichment failed; storing the events as they came")
        end = records[-1].end
        result = self.store.append(batches, markers={JOURNAL_MARKER: end})
        self.journal.release(end)
        self.stats.stored += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.batches += 1
        watchers = [self.on_stored] if self.on_stored is not None else []
        for listener in [*watchers, *self.listeners]:
            try:
                listener(batches)
            except Exception:
                self.stats.errors += 1
                log.exception("a stored-events listener failed")
        # Stored, and seen by every listener: what wait_until_stored promises.
        self._position = end
        return sum(len(b.rows) for b in batches)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if self.flush_once():
                    backoff = 0.1
                    # Let the next batch accumulate: each store transaction has a fixed cost
                    # (commit, deduplication scan), so under load fewer, larger batches keep
                    # the writer's share of the interpreter small. Events stay queryable well
                    # within a second.
                    self._stopping.wait(self.flush_interval)
                    continue
            except Exception:
                # The store failed (disk full, a bug): keep the journal, retry with back-off;
                # nothing acknowledged is lost while we wait.
                self.stats.errors += 1
                log.exception("event store append failed; retrying", retry_in=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.journal.wait_for(self._position, timeout=self.idle_wait)
