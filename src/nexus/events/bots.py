"""Bot scores on ingest: each event feeds its visitor's behaviour into the detector
(:mod:`nexus.security.bots`), and an event of a visitor judged a bot carries the verdict as
``context.bot`` (``{"score", "reasons"}``). Funnels leave such events out by default and can
show them alone; decide serves bots no experiment and no adaptation.

Marking runs in the ingest pipeline's enrich step, on the store writer's thread, off the
request path; decide reads verdicts from the event loop and erasure forgets visitors from a
worker thread, so the detector is behind a lock. The behavioural verdict is recomputed every
:data:`REJUDGE_EVERY` events of a visitor (a crawler's user agent is flagged at once).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from nexus.events.normalize import ROW_FIELDS, EventRow
from nexus.events.store import WorkspaceBatch
from nexus.security.bots import BotDetector, BotVerdict

_USER = ROW_FIELDS.index("user_id")
_ANON = ROW_FIELDS.index("anonymous_id")
_TYPE = ROW_FIELDS.index("type")
_EVENT = ROW_FIELDS.index("event")
_NAME = ROW_FIELDS.index("name")
_TS = ROW_FIELDS.index("timestamp")
_PROPERTIES = ROW_FIELDS.index("properties")
_CONTEXT = ROW_FIELDS.index("context")
REJUDGE_EVERY = 8
SYSTEM_EVENTS = frozenset({"$decision", "$exposure"})
_NO_CONTEXT: dict[str, Any] = {}


def _visitor(workspace_id: str, row: EventRow) -> str | None:
    visitor = row[_ANON] or row[_USER]
    return f"{workspace_id}\x1f{visitor}" if visitor else None


def _page(row: EventRow, context: dict[str, Any]) -> str | None:
    """The page of a page/screen call: properties.path, context.page.path, or its name."""
    if row[_TYPE] not in ("page", "screen"):
        return None
    raw = row[_PROPERTIES]
    if raw and '"path"' in raw:
        properties = orjson.loads(raw)
        if isinstance(properties, dict) and isinstance(properties.get("path"), str):
            return str(properties["path"])
    page = context.get("page")
    if isinstance(page, dict) and isinstance(page.get("path"), str):
        return str(page["path"])
    return str(row[_NAME] or "/")


class BotMarker:
    """See the module docstring."""

    def __init__(self, detector: BotDetector | None = None) -> None:
        self.detector = detector or BotDetector(rejudge_every=REJUDGE_EVERY)
        self.marked: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enrich(self, batches: list[WorkspaceBatch]) -> list[WorkspaceBatch]:
        """The pipeline's enrich step: the batches with bots' events marked."""
        return [WorkspaceBatch(b.workspace_id, self.mark(b.workspace_id, b.rows)) for b in batches]

    def mark(self, workspace_id: str, rows: Sequence[EventRow]) -> list[EventRow]:
        out: list[EventRow] = []
        observe = self.detector.observe
        lock = self._lock
        verdicts: list[BotVerdict | None] = []
        for row in rows:
            # What NEXUS itself records about a visitor (decisions, exposures) is not the
            # visitor's behaviour: it would make anyone who is decided for often look scripted.
            key = None if row[_EVENT] in SYSTEM_EVENTS else _visitor(workspace_id, row)
            if key is None:
                verdicts.append(None)
                continue
            raw = row[_CONTEXT]
            # Parsed only when it holds what the score reads (most contexts do not).
            context = _NO_CONTEXT
            if raw and ('"userAgent"' in raw or '"page"' in raw):
                parsed = orjson.loads(raw)
                context = parsed if isinstance(parsed, dict) else _NO_CONTEXT
            agent = context.get("userAgent")
            # One event at a time under the lock: decide reads verdicts on the event loop
            # and must never wait for a whole batch.
            with lock:
                verdict = observe(
                    key,
                    at=row[_TS] / 1_000_000,
                    path=_page(row, context),
                    user_agent=agent if isinstance(agent, str) else None,
                )
            verdicts.append(verdict)
        for row, judged in zip(rows, verdicts, strict=True):
            if judged is None or not judged.is_bot:
                out.append(row)
                continue
            context = orjson.loads(row[_CONTEXT]) if row[_CONTEXT] else {}
            if not isinstance(context, dict):
                context = {}
            context["bot"] = {"score": round(judged.score, 3), "reasons": list(judged.reasons)}
            marked = list(row)
            marked[_CONTEXT] = orjson.dumps(context).decode()
            self.marked[workspace_id] += 1
            out.append(marked)
        return out

    def verdict(self, workspace_id: str, visitor: str) -> BotVerdict | None:
        with self._lock:
            return self.detector.verdict(f"{workspace_id}\x1f{visitor}")

    def is_bot(self, workspace_id: str, visitor: str) -> bool:
        found = self.verdict(workspace_id, visitor)
        return found is not None and found.is_bot

    def forget(self, workspace_id: str, ids: set[str]) -> int:
        """Erasure: drop the detector's state of ``ids``."""
        with self._lock:
            return sum(self.detector.forget(f"{workspace_id}\x1f{i}") for i in ids)
