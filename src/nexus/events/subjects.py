"""The events domain's part in data-subject requests: the event store and the journal.

Both wait for the ingest pipeline to store what was acknowledged before they look, so an
event of the person that is on its way (journaled, not yet stored) is erased too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from nexus.events.normalize import ROW_FIELDS, format_time
from nexus.events.pipeline import decode_record
from nexus.events.service import EventsRuntime
from nexus.privacy.runtime import SubjectData

DRAIN_TIMEOUT = 30.0
_ID_COLUMNS = tuple(ROW_FIELDS.index(c) for c in ("user_id", "anonymous_id", "previous_id"))
_JSON_COLUMNS = frozenset({"properties", "traits", "context", "extra"})
_TIME_COLUMNS = frozenset({"timestamp", "original_timestamp", "sent_at", "received_at"})


def _drain(runtime: EventsRuntime) -> None:
    pipeline = runtime.pipeline
    pipeline.wait_until_stored(pipeline.journal.end, timeout=DRAIN_TIMEOUT)


def row_document(row: list[Any]) -> dict[str, Any]:
    """A stored row as readable JSON (times as RFC 3339, JSON sections parsed)."""
    out: dict[str, Any] = {}
    for name, value in zip(ROW_FIELDS, row, strict=True):
        if value is None:
            continue
        if name in _JSON_COLUMNS and isinstance(value, str):
            out[name] = orjson.loads(value)
        elif name in _TIME_COLUMNS and isinstance(value, int):
            out[name] = format_time(value)
        else:
            out[name] = value
    return out


class EventSubjects(SubjectData):
    """Events, identity links and person records in the event store."""

    name = "events"

    def __init__(self, runtime: EventsRuntime) -> None:
        self.runtime = runtime

    def link(self, workspace_id: str, ids: set[str]) -> set[str]:
        _drain(self.runtime)
        return self.runtime.store.linked_ids(workspace_id, ids)

    def export(self, workspace_id: str, ids: set[str]) -> Any:
        rows = self.runtime.store.subject_rows(workspace_id, ids)
        documents = [row_document(r) for r in rows]
        privacy = self.runtime.privacy
        if privacy is None:
            return documents
        # Values a rule kept encrypted are the person's data too: opened for the export.
        return [privacy.decrypt_fields(workspace_id, d, d["message_id"]) for d in documents]

    def erase(self, workspace_id: str, ids: set[str]) -> int:
        _drain(self.runtime)
        return sum(self.runtime.store.erase_subjects(workspace_id, ids).values())

    def remaining(self, workspace_id: str, ids: set[str]) -> int:
        return self.runtime.store.count_subjects(workspace_id, ids)

    def expire(self, workspace_id: str, before: datetime) -> int:
        before_us = int(before.timestamp() * 1_000_000)
        return sum(self.runtime.store.delete_before(workspace_id, before_us).values())


class JournalSubjects(SubjectData):
    """The ingest journal: records are kept until their segment is released, so erasure seals
    the current segment and releases everything already stored."""

    name = "journal"

    def __init__(self, runtime: EventsRuntime) -> None:
        self.runtime = runtime

    def _mentions(self, workspace_id: str, ids: set[str]) -> int:
        journal = self.runtime.pipeline.journal
        found = 0
        for record in journal.read(journal.start, max_bytes=1 << 62):
            batch = decode_record(record.payload)
            if batch.workspace_id != workspace_id:
                continue
            found += sum(1 for row in batch.rows if any(row[i] in ids for i in _ID_COLUMNS))
        return found

    def export(self, workspace_id: str, ids: set[str]) -> Any:
        return None  # the journal holds copies of what the event store exports

    def erase(self, workspace_id: str, ids: set[str]) -> int:
        mentioned = self._mentions(workspace_id, ids)
        pipeline = self.runtime.pipeline
        base = pipeline.journal.seal()
        pipeline.wait_until_stored(base, timeout=DRAIN_TIMEOUT)
        pipeline.journal.release(min(base, pipeline.position))
        return mentioned

    def remaining(self, workspace_id: str, ids: set[str]) -> int:
        return self._mentions(workspace_id, ids)
