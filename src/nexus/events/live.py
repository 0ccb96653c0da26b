"""Per-workspace live feed of stored events, for the dashboard's server-sent-events stream.

The store writer publishes each stored batch from its thread: the newest
:data:`RECENT_PER_WORKSPACE` events of each workspace in it, plus a count of the ones it
skipped (a live view cannot show more under load, and summarizing every event would slow the
writer). Every subscriber has a small bounded queue on the event loop; one that cannot keep up
loses its oldest entries, is told how many it missed (``dropped``), and never slows ingestion
or grows without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nexus.events.normalize import SYNTHETIC_EVENT_NAMES, format_time
from nexus.events.store import WorkspaceBatch

SUBSCRIBER_QUEUE = 200
RECENT_PER_WORKSPACE = 50
_TYPE, _EVENT, _USER, _ANON, _TS = 1, 2, 3, 4, 8
_SYNTHETIC = set(SYNTHETIC_EVENT_NAMES.values())


def summarize_row(row: list[Any]) -> dict[str, Any]:
    """What the live view shows of an event (no properties: they may carry personal data)."""
    return {
        "messageId": row[0],
        "type": row[_TYPE],
        "event": row[_EVENT],
        "userId": row[_USER],
        "anonymousId": row[_ANON],
        "timestamp": format_time(row[_TS]),
    }


@dataclass(eq=False)  # compared and hashed by identity: subscribers live in a set
class _Subscriber:
    queue: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SUBSCRIBER_QUEUE))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0


class LiveFeed:
    """Fan-out of stored events to the subscribers of each workspace."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def recent(self, workspace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent.get(workspace_id, ()))

    def forget(self, workspace_id: str, ids: set[str]) -> int:
        """Drop the recent events of ``ids`` (erasure); returns how many went."""
        with self._lock:
            recent = self._recent.get(workspace_id)
            if not recent:
                return 0
            kept = [e for e in recent if e["userId"] not in ids and e["anonymousId"] not in ids]
            removed = len(recent) - len(kept)
            recent.clear()
            recent.extend(kept)
        return removed

    def publish(self, batches: list[WorkspaceBatch]) -> None:
        """Called from the writer thread after each stored batch."""
        # Only the newest RECENT_PER_WORKSPACE of each workspace: a reader can show no more,
        # and summarizing every row would cost the writer thread time under load.
        newest: dict[str, list[list[Any]]] = {}
        for batch in reversed(batches):
            rows = newest.setdefault(batch.workspace_id, [])
            room = RECENT_PER_WORKSPACE - len(rows)
            if room > 0:
                rows.extend(reversed(batch.rows[-room:]))
        by_workspace = {
            workspace_id: [summarize_row(r) for r in reversed(rows)]
            for workspace_id, rows in newest.items()
        }
        skipped: dict[str, int] = {}
        for batch in batches:
            skipped[batch.workspace_id] = skipped.get(batch.workspace_id, 0) + len(batch.rows)
        for workspace_id, items in by_workspace.items():
            skipped[workspace_id] -= len(items)
        with self._lock:
            for workspace_id, items in by_workspace.items():
                recent = self._recent.setdefault(workspace_id, deque(maxlen=RECENT_PER_WORKSPACE))
                recent.extend(items)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, by_workspace, skipped)

    def _deliver(
        self, by_workspace: dict[str, list[dict[str, Any]]], skipped: dict[str, int]
    ) -> None:
        for workspace_id, items in by_workspace.items():
            for subscriber in self._subscribers.get(workspace_id, ()):
                overflow = len(subscriber.queue) + len(items) - SUBSCRIBER_QUEUE
                subscriber.dropped += max(0, overflow) + skipped.get(workspace_id, 0)
                subscriber.queue.extend(items)
                subscriber.wake.set()

    async def subscribe(
        self, workspace_id: str, *, heartbeat: float = 15.0, with_recent: bool = False
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``("event", summary)``, ``("dropped", {...})`` and ``("ping", {})`` items.

        With ``with_recent`` the workspace's most recent events come first. The subscription is
        registered before they are read, so nothing published in between is missed; an event
        in both is sent once.
        """
        subscriber = _Subscriber()
        self._subscribers.setdefault(workspace_id, set()).add(subscriber)
        try:
            if with_recent:
                snapshot = self.recent(workspace_id)
                sent = {item["messageId"] for item in snapshot}
                for item in snapshot:
                    yield "event", item
                while subscriber.queue and subscriber.queue[0]["messageId"] in sent:
                    subscriber.queue.popleft()
            while True:
                try:
                    await asyncio.wait_for(subscriber.wake.wait(), timeout=heartbeat)
                except TimeoutError:
                    yield "ping", {}
                    continue
                subscriber.wake.clear()
                if subscriber.dropped:
                    yield "dropped", {"count": subscriber.dropped}
                    subscriber.dropped = 0
                while subscriber.queue:
                    yield "event", subscriber.queue.popleft()
        finally:
            subscribers = self._subscribers.get(workspace_id)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[workspace_id]
