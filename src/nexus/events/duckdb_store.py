"""The embedded event store: one DuckDB file in the data directory.

One process owns the file (DuckDB allows a single writer process). Inside it, the ingest
writer thread appends through the main connection and every query runs on a cursor of its own,
so analytics read a consistent snapshot while ingestion goes on (DuckDB's MVCC).

Deduplication: each event carries a 64-bit hash of (workspace, message id); an append inserts
only the rows whose hash is not in the table yet (an anti-join, which scans one integer
column). A collision (probability about n^2 / 2^65 for n events of a workspace) would drop one
event, which we accept.

Identity: ``identities`` maps a user or anonymous id to the person it belongs to; ``persons``
holds each identified person's merged traits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from numpy.typing import NDArray

from nexus.events.normalize import ROW_FIELDS, EventRow, row_to_message
from nexus.events.store import (
    BOT_MARK,
    AppendResult,
    EmotionRows,
    EmotionScan,
    EventStore,
    ExportFormat,
    PropertyFilter,
    PropertyPath,
    PropertyRows,
    PropertyScan,
    StepRows,
    StepScan,
    StoreBusy,
    WorkspaceBatch,
    bots_marker,
)

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    workspace_id VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    message_hash UBIGINT NOT NULL,
    type VARCHAR NOT NULL,
    event VARCHAR NOT NULL,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    distinct_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    distinct_code BIGINT,
    person_code BIGINT,
    group_id VARCHAR,
    previous_id VARCHAR,
    name VARCHAR,
    timestamp TIMESTAMPTZ NOT NULL,
    original_timestamp TIMESTAMPTZ,
    sent_at TIMESTAMPTZ,
    received_at TIMESTAMPTZ NOT NULL,
    properties JSON,
    traits JSON,
    context JSON,
    extra JSON
);
CREATE TABLE IF NOT EXISTS identities (
    workspace_id VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    person_code BIGINT,
    PRIMARY KEY (workspace_id, distinct_id)
);
CREATE TABLE IF NOT EXISTS persons (
    workspace_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    traits JSON,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, person_id)
);
"""
_TIME = pa.timestamp("us", tz="UTC")
# A server and its CLI print their own progress; DuckDB's bar would land in their output.
_QUIET = "SET enable_progress_bar = false"
_ROW_TYPES = {
    "timestamp": _TIME,
    "original_timestamp": _TIME,
    "sent_at": _TIME,
    "received_at": _TIME,
}
_STAGING_COLUMNS = ("workspace_id", "distinct_id", "person_id", *ROW_FIELDS)
_EVENT_COLUMNS = ", ".join(("message_hash", "distinct_code", "person_code", *_STAGING_COLUMNS))
# The deduplication key: 64 bits of MD5 of (workspace, message id), computed by DuckDB.
_HASH_SQL = "md5_number_upper(workspace_id || chr(0) || message_id)"


def _code(column: str) -> str:
    """SQL for a person's 63-bit code, stored with each event so that funnel scans need not
    hash ids (MD5: the same in every DuckDB version and in ClickHouse)."""
    return f"(md5_number_upper({column}) >> 1)::BIGINT"


_RECENT_COLUMNS = ", ".join(f"epoch_us({c})" if c in _ROW_TYPES else c for c in ROW_FIELDS)
_IDENTITY_TYPES = ("identify", "alias")
_I_TYPE = ROW_FIELDS.index("type")
_I_USER = ROW_FIELDS.index("user_id")
_I_ANON = ROW_FIELDS.index("anonymous_id")
_I_PREVIOUS = ROW_FIELDS.index("previous_id")
_I_TRAITS = ROW_FIELDS.index("traits")
_I_TS = ROW_FIELDS.index("timestamp")
_I_MESSAGE = ROW_FIELDS.index("message_id")
_I_CONTEXT = ROW_FIELDS.index("context")


def _json_path(keys: tuple[str, ...]) -> str:
    quoted = (k.replace("\\", "\\\\").replace('"', '\\"') for k in keys)
    return "$." + ".".join(f'"{k}"' for k in quoted)


class DuckDBEventStore(EventStore):
    """See the module docstring. ``memory_limit`` bounds DuckDB's own buffers (e.g. "1GB")."""

    def __init__(
        self, path: Path | str, *, memory_limit: str = "1GB", threads: int | None = None
    ) -> None:
        self.path = str(path)
        config: dict[str, Any] = {"memory_limit": memory_limit}
        if threads is not None:
            config["threads"] = threads
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreBusy(
                    f"the event store {self.path} is in use by another NEXUS process "
                    "(a running server); stop it first"
                ) from None
            raise
        self._con.execute(_QUIET)
        self._write_lock = threading.Lock()
        self._identified: set[str] = set()
        self._with_bots: set[str] = set()
        self._con.execute(_SCHEMA)
        self._upgrade()
        # DuckDB imports pandas the first time an Arrow table is registered: pay for it here,
        # at start, not in the middle of serving the first append.
        self._con.register("nexus_warmup", pa.table({"x": [0]}))
        self._con.unregister("nexus_warmup")

    def _upgrade(self) -> None:
        """Bring a store file written by an earlier NEXUS to :data:`SCHEMA_VERSION`."""
        found = self._con.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
        version = SCHEMA_VERSION if found is None else int(found[0])
        if version < 2:  # person codes stored with events and identities
            self._con.execute(
                "ALTER TABLE events ADD COLUMN IF NOT EXISTS distinct_code BIGINT; "
                "ALTER TABLE events ADD COLUMN IF NOT EXISTS person_code BIGINT; "
                "ALTER TABLE identities ADD COLUMN IF NOT EXISTS person_code BIGINT; "
                f"UPDATE events SET distinct_code = {_code('distinct_id')}, "
                f"person_code = {_code('person_id')}; "
                f"UPDATE identities SET person_code = {_code('person_id')};"
            )
        self._con.execute(
            "INSERT OR REPLACE INTO store_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION]
        )

    # -- writing ------------------------------------------------------------------------------

    def append(
        self, batches: Sequence[WorkspaceBatch], *, markers: dict[str, int] | None = None
    ) -> AppendResult:
        with self._write_lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                result = self._append(con, batches)
                for name, value in (markers or {}).items():
                    con.execute(
                        "INSERT OR REPLACE INTO store_meta VALUES (?, ?)", ["marker:" + name, value]
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return result

    def _append(
        self, con: duckdb.DuckDBPyConnection, batches: Sequence[WorkspaceBatch]
    ) -> AppendResult:
        total = sum(len(b.rows) for b in batches)
        by_workspace: dict[str, list[EventRow]] = {}
        for batch in batches:
            by_workspace.setdefault(batch.workspace_id, []).extend(batch.rows)
        parts: list[pa.Table] = []
        for workspace_id, all_rows in by_workspace.items():
            rows = self._fresh_rows(con, workspace_id, all_rows)
            if not rows:
                continue
            distinct, persons = self._resolve_identities(con, workspace_id, rows)
            if workspace_id not in self._with_bots and any(
                r[_I_CONTEXT] and BOT_MARK in r[_I_CONTEXT] for r in rows
            ):
                # Remembered with the events: funnels filter bots out only where there are.
                con.execute(
                    "INSERT OR REPLACE INTO store_meta VALUES (?, 1)",
                    ["marker:" + bots_marker(workspace_id)],
                )
                self._with_bots.add(workspace_id)
            columns = list(zip(*rows, strict=True))  # one tuple per field, at C speed
            arrays = [
                pa.array([workspace_id] * len(rows), pa.string()),
                pa.array(distinct, pa.string()),
                pa.array(persons, pa.string()),
            ]
            arrays.extend(
                pa.array(values, _ROW_TYPES.get(name, pa.string()))
                for name, values in zip(ROW_FIELDS, columns, strict=True)
            )
            parts.append(pa.Table.from_arrays(arrays, names=list(_STAGING_COLUMNS)))
        if not parts:
            return AppendResult(inserted=0, duplicates=total)
        con.register("staging_events", pa.concat_tables(parts))
        try:
            fetched = con.execute(
                f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM ("
                f"SELECT *, {_HASH_SQL} AS message_hash, {_code('distinct_id')} AS distinct_code, "
                f"{_code('person_id')} AS person_code FROM staging_events) s "
                "ANTI JOIN events e ON e.message_hash = s.message_hash"
            ).fetchone()
        finally:
            con.unregister("staging_events")
        inserted = int(fetched[0]) if fetched else 0
        return AppendResult(inserted=inserted, duplicates=total - inserted)

    @staticmethod
    def _fresh_rows(
        con: duckdb.DuckDBPyConnection, workspace_id: str, batch_rows: list[EventRow]
    ) -> list[EventRow]:
        """The rows without repeated message ids (first wins). Repeats of stored events are
        dropped by the insert's anti-join; identify and alias repeats are dropped here too, so
        that a replayed identify cannot move an identity a later call changed."""
        seen: set[str] = set()
        rows = []
        for row in batch_rows:
            if row[_I_MESSAGE] not in seen:
                seen.add(row[_I_MESSAGE])
                rows.append(row)
        identity_ids = [r[_I_MESSAGE] for r in rows if r[_I_TYPE] in _IDENTITY_TYPES]
        if identity_ids:
            stored = {
                m
                for (m,) in con.execute(
                    "SELECT message_id FROM events WHERE workspace_id = ? AND message_hash IN "
                    "(SELECT md5_number_upper(? || chr(0) || unnest(?)))",
                    [workspace_id, workspace_id, identity_ids],
                ).fetchall()
            }
            if stored:
                rows = [
                    r
                    for r in rows
                    if r[_I_TYPE] not in _IDENTITY_TYPES or r[_I_MESSAGE] not in stored
                ]
        return rows

    def _resolve_identities(
        self, con: duckdb.DuckDBPyConnection, workspace_id: str, rows: list[EventRow]
    ) -> tuple[list[str], list[str]]:
        """(distinct ids, person ids) of the rows, applying identify/alias in order.

        An anonymous id joins the first user it is identified as and stays there (a shared
        device does not merge two people); ``alias`` merges explicitly, moving everything that
        pointed at the previous id.
        """
        distinct = [r[_I_USER] or r[_I_ANON] for r in rows]
        has_calls = any(r[_I_TYPE] in _IDENTITY_TYPES for r in rows)
        if not has_calls and not self._has_identities(con, workspace_id):
            return distinct, distinct
        mapping: dict[str, str] = {}
        if self._has_identities(con, workspace_id):
            ids = set(distinct)
            for row in rows:
                if row[_I_TYPE] in _IDENTITY_TYPES:
                    ids.update(x for x in (row[_I_USER], row[_I_ANON], row[_I_PREVIOUS]) if x)
            mapping = dict(
                con.execute(
                    "SELECT distinct_id, person_id FROM identities "
                    "WHERE workspace_id = ? AND distinct_id IN (SELECT unnest(?))",
                    [workspace_id, list(ids)],
                ).fetchall()
            )
        persons: list[str] = []
        for row, key in zip(rows, distinct, strict=True):
            kind = row[_I_TYPE]
            if kind == "identify":
                self._identify(con, workspace_id, row, mapping)
            elif kind == "alias":
                self._alias(con, workspace_id, row, mapping)
            persons.append(mapping.get(key, key))
        return distinct, persons

    def _identify(
        self,
        con: duckdb.DuckDBPyConnection,
        workspace_id: str,
        row: EventRow,
        mapping: dict[str, str],
    ) -> None:
        user: str | None = row[_I_USER]
        anon: str | None = row[_I_ANON]
        if user and anon and anon != user and anon not in mapping:
            mapping[anon] = mapping.get(user, user)
            self._identified.add(workspace_id)
            con.execute(
                f"INSERT OR REPLACE INTO identities VALUES (?, ?, ?, {_code('?')})",
                [workspace_id, anon, mapping[anon], mapping[anon]],
            )
        key = user or anon
        if row[_I_TRAITS] and key:
            person = mapping.get(key, key)
            con.execute(
                "INSERT INTO persons VALUES (?, ?, ?, make_timestamptz(?), make_timestamptz(?)) "
                "ON CONFLICT DO UPDATE SET "
                "traits = json_merge_patch(coalesce(persons.traits, '{}'), excluded.traits), "
                "first_seen = least(persons.first_seen, excluded.first_seen), "
                "last_seen = greatest(persons.last_seen, excluded.last_seen)",
                [workspace_id, person, row[_I_TRAITS], row[_I_TS], row[_I_TS]],
            )

    def _alias(
        self,
        con: duckdb.DuckDBPyConnection,
        workspace_id: str,
        row: EventRow,
        mapping: dict[str, str],
    ) -> None:
        user: str | None = row[_I_USER]
        previous: str | None = row[_I_PREVIOUS]
        if not user or not previous or previous == user:
            return
        person = mapping.get(user, user)
        old = mapping.get(previous, previous)
        if old == person:
            return
        mapping[previous] = person
        self._identified.add(workspace_id)
        con.execute(
            f"INSERT OR REPLACE INTO identities VALUES (?, ?, ?, {_code('?')})",
            [workspace_id, previous, person, person],
        )
        con.execute(
            f"UPDATE identities SET person_id = ?, person_code = {_code('?')} "
            "WHERE workspace_id = ? AND person_id = ?",
            [person, person, workspace_id, old],
        )
        # The merged person keeps the traits of both; the surviving person's win on conflict.
        con.execute(
            "INSERT INTO persons SELECT workspace_id, ?, traits, first_seen, last_seen "
            "FROM persons WHERE workspace_id = ? AND person_id = ? "
            "ON CONFLICT DO UPDATE SET "
            "traits = json_merge_patch(coalesce(excluded.traits, '{}'), "
            "coalesce(persons.traits, '{}')), "
            "first_seen = least(persons.first_seen, excluded.first_seen), "
            "last_seen = greatest(persons.last_seen, excluded.last_seen)",
            [person, workspace_id, old],
        )
        con.execute(
            "DELETE FROM persons WHERE workspace_id = ? AND person_id = ?", [workspace_id, old]
        )
        for key, value in list(mapping.items()):
            if value == old:
                mapping[key] = person

    def _has_identities(self, con: duckdb.DuckDBPyConnection, workspace_id: str) -> bool:
        """Whether any id of the workspace is mapped yet (exact: this store is the only
        writer), so that anonymous-only traffic skips the identity lookup."""
        if workspace_id in self._identified:
            return True
        found = con.execute(
            "SELECT 1 FROM identities WHERE workspace_id = ? LIMIT 1", [workspace_id]
        ).fetchone()
        if found:
            self._identified.add(workspace_id)
        return found is not None

    def marker(self, name: str) -> int | None:
        with self._cursor() as cur:
            found = cur.execute(
                "SELECT value FROM store_meta WHERE key = ?", ["marker:" + name]
            ).fetchone()
        return None if found is None else int(found[0])

    # -- reading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._con.cursor()
        cur.execute(_QUIET)
        try:
            yield cur
        finally:
            cur.close()

    # -- data-subject requests ----------------------------------------------------------------

    _NAMES_ANY = (
        "(list_contains($ids, user_id) OR list_contains($ids, anonymous_id) "
        "OR list_contains($ids, previous_id) OR list_contains($ids, distinct_id) "
        "OR list_contains($ids, person_id))"
    )

    def linked_ids(self, workspace_id: str, ids: set[str]) -> set[str]:
        params = {"ws": workspace_id, "ids": sorted(ids)}
        with self._cursor() as cur:
            found = cur.execute(
                "SELECT DISTINCT unnest([user_id, anonymous_id, previous_id, distinct_id, "
                f"person_id]) FROM events WHERE workspace_id = $ws AND {self._NAMES_ANY} "
                "UNION SELECT DISTINCT unnest([distinct_id, person_id]) FROM identities "
                "WHERE workspace_id = $ws AND (list_contains($ids, distinct_id) "
                "OR list_contains($ids, person_id))",
                params,
            ).fetchall()
        return {r[0] for r in found if r[0] is not None}

    def subject_rows(self, workspace_id: str, ids: set[str]) -> list[EventRow]:
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT {_RECENT_COLUMNS} FROM events WHERE workspace_id = $ws AND "
                f"{self._NAMES_ANY} ORDER BY timestamp, message_id",
                {"ws": workspace_id, "ids": sorted(ids)},
            ).fetchall()
        return [list(r) for r in rows]

    def _subject_where(self) -> dict[str, str]:
        """Per table, what names any of ``$ids`` in workspace ``$ws``."""
        return {
            "events": f"workspace_id = $ws AND {self._NAMES_ANY}",
            "identities": "workspace_id = $ws AND "
            "(list_contains($ids, distinct_id) OR list_contains($ids, person_id))",
            "persons": "workspace_id = $ws AND list_contains($ids, person_id)",
        }

    def erase_subjects(self, workspace_id: str, ids: set[str]) -> dict[str, int]:
        params = {"ws": workspace_id, "ids": sorted(ids)}
        where = self._subject_where()
        counts = self._delete(
            {table: f"DELETE FROM {table} WHERE {clause}" for table, clause in where.items()},
            params,
        )
        with self._write_lock:
            # Fold the deletions into the file now rather than at some later checkpoint.
            self._con.execute("CHECKPOINT")
        return counts

    def count_subjects(self, workspace_id: str, ids: set[str]) -> int:
        params = {"ws": workspace_id, "ids": sorted(ids)}
        counts = " + ".join(
            f"(SELECT count(*) FROM {table} WHERE {clause})"
            for table, clause in self._subject_where().items()
        )
        with self._cursor() as cur:
            found = cur.execute(f"SELECT {counts}", params).fetchone()
        return int(found[0]) if found else 0

    def delete_before(self, workspace_id: str, before_us: int) -> dict[str, int]:
        cutoff = "make_timestamptz($before::BIGINT)"
        return self._delete(
            {
                "events": f"DELETE FROM events WHERE workspace_id = $ws AND timestamp < {cutoff}",
                "identities": "DELETE FROM identities WHERE workspace_id = $ws AND person_id IN "
                "(SELECT person_id FROM persons WHERE workspace_id = $ws AND "
                f"last_seen < {cutoff})",
                "persons": f"DELETE FROM persons WHERE workspace_id = $ws AND last_seen < {cutoff}",
            },
            {"ws": workspace_id, "before": before_us},
        )

    def _delete(self, statements: dict[str, str], params: dict[str, Any]) -> dict[str, int]:
        """Run the DELETE of each table in one transaction; rows deleted per table."""
        counts: dict[str, int] = {}
        with self._write_lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                for table, sql in statements.items():
                    found = con.execute(sql, params).fetchone()
                    counts[table] = int(found[0]) if found else 0
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return counts

    def count(self, workspace_id: str) -> int:
        with self._cursor() as cur:
            found = cur.execute(
                "SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]
            ).fetchone()
        return int(found[0]) if found else 0

    def recent(
        self,
        workspace_id: str,
        *,
        limit: int,
        before: tuple[int, str] | None = None,
        event: str | None = None,
        person: str | None = None,
    ) -> list[EventRow]:
        where = ["workspace_id = ?"]
        params: list[Any] = [workspace_id]
        if event is not None:
            where.append("event = ?")
            params.append(event)
        if person is not None:
            # Everything the person's ids sent, before identification too (person_id is the
            # person when the event was stored, which an identify or alias later changes).
            resolved = self.resolve_person(workspace_id, person)
            where.append(
                "(distinct_id = ? OR distinct_id IN (SELECT distinct_id FROM identities "
                "WHERE workspace_id = ? AND person_id = ?))"
            )
            params.extend([resolved, workspace_id, resolved])
        if before is not None:
            where.append("(received_at, message_id) < (make_timestamptz(?), ?)")
            params.extend(before)
        params.append(limit)
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT {_RECENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                "ORDER BY received_at DESC, message_id DESC LIMIT ?",
                params,
            ).fetchall()
        return [list(r) for r in rows]

    def resolve_person(self, workspace_id: str, distinct_id: str) -> str:
        with self._cursor() as cur:
            found = cur.execute(
                "SELECT person_id FROM identities WHERE workspace_id = ? AND distinct_id = ?",
                [workspace_id, distinct_id],
            ).fetchone()
        return str(found[0]) if found else distinct_id

    def scan(self, query: StepScan) -> StepRows:
        params: list[Any] = []
        person, code, joins = _identity_sql(query.identity)
        needs_person = any(
            f.property.source == "person" for c in query.conditions for f in c.filters
        ) or (query.breakdown is not None and query.breakdown.source == "person")
        if needs_person:
            joins += (
                " LEFT JOIN persons p ON p.workspace_id = e.workspace_id "
                f"AND p.person_id = {person}"
            )
        bits = []
        # The narrowest integer that holds every condition's bit: less for the sort to move.
        mask_type = "INTEGER" if len(query.conditions) < 32 else "BIGINT"
        for index, condition in enumerate(query.conditions):
            parts = ["e.event = ?"]
            params.append(condition.event)
            for flt in condition.filters:
                sql, values = _filter_sql(flt)
                parts.append(sql)
                params.extend(values)
            bits.append(f"(coalesce({' AND '.join(parts)}, false)::{mask_type} << {index})")
        mask = " | ".join(bits) if bits else f"0::{mask_type}"
        select = [f"{code} AS code", "epoch_us(e.timestamp) AS ts", f"({mask}) AS mask"]
        if query.with_person_ids:
            select.append(f"({person}) AS person")
        if query.breakdown is not None:
            expr, values = _value_sql(query.breakdown)
            select.append(f"{expr} AS breakdown")
            params.extend(values)
        where = ["e.workspace_id = ?", "e.timestamp >= make_timestamptz(?)"]
        where.append("e.timestamp < make_timestamptz(?)")
        params.extend([query.workspace_id, query.start_us, query.end_us])
        if not query.all_events:
            names = sorted({c.event for c in query.conditions})
            # A literal list, not a subquery: DuckDB then filters inside the scan.
            where.append(f"e.event IN ({', '.join('?' * len(names))})")
            params.extend(names)
        sql = (
            f"SELECT {', '.join(select)} FROM events e{joins} WHERE {' AND '.join(where)} "
            "ORDER BY code, ts"
        )
        with self._cursor() as cur:
            try:
                table = cur.sql(sql, params=params).to_arrow_table()
            except duckdb.InvalidInputException as exc:
                raise ValueError(f"the query could not run: {exc}") from None
        code = table.column("code").to_numpy().astype(np.int64, copy=False)
        breakdown = None
        labels: tuple[str | None, ...] = ()
        if query.breakdown is not None:
            encoded = table.column("breakdown").combine_chunks().dictionary_encode()
            values = cast(list[str | None], encoded.dictionary.to_pylist())
            # Events without the property form their own group, labelled None.
            breakdown = encoded.indices.fill_null(len(values)).to_numpy().astype(np.int32)
            labels = (*values, None)
        person_ids: dict[int, str] = {}
        if query.with_person_ids and len(code):
            _, first = np.unique(code, return_index=True)
            names = table.column("person").take(pa.array(first)).to_pylist()
            person_ids = dict(zip(code[first].tolist(), names, strict=True))
        return StepRows(
            person=code,
            ts=table.column("ts").to_numpy().astype(np.int64, copy=False),
            mask=table.column("mask").to_numpy().astype(np.int64, copy=False),
            breakdown=breakdown,
            breakdown_labels=labels,
            person_ids=person_ids,
        )

    def emotion_rows(self, query: EmotionScan) -> EmotionRows:
        person, code, joins = _identity_sql(query.identity)
        params: list[Any] = []
        group = "NULL"
        if query.group is not None:
            if query.group.source == "person":
                joins += (
                    " LEFT JOIN persons p ON p.workspace_id = e.workspace_id "
                    f"AND p.person_id = {person}"
                )
            group, params = _value_sql(query.group)
        where = [
            "e.workspace_id = ?",
            "e.timestamp >= make_timestamptz(?)",
            "e.timestamp < make_timestamptz(?)",
            "json_exists(e.context, '$.emotion')",
        ]
        params.extend([query.workspace_id, query.start_us, query.end_us])
        if query.person is not None:
            resolved = self.resolve_person(query.workspace_id, query.person)
            where.append(
                "(e.distinct_id = ? OR e.distinct_id IN (SELECT distinct_id FROM identities "
                "WHERE workspace_id = ? AND person_id = ?))"
            )
            params.extend([resolved, query.workspace_id, resolved])
        emotion = "json_extract(e.context, '$.emotion')"
        scores = "".join(
            f"TRY_CAST(json_extract_string({emotion}, ?) AS DOUBLE) AS p{i}, "
            for i in range(len(query.plutchik))
        )
        # Placed before the group's and the filters' parameters, as in the SQL text.
        params[:0] = [_json_path(("plutchik", name)) for name in query.plutchik]
        sql = (
            f"SELECT {code} AS code, epoch_us(e.timestamp) AS ts, {scores}"
            f"TRY_CAST(json_extract_string({emotion}, '$.valence') AS DOUBLE) AS v, "
            f"TRY_CAST(json_extract_string({emotion}, '$.arousal') AS DOUBLE) AS a, "
            f"TRY_CAST(json_extract_string({emotion}, '$.dominance') AS DOUBLE) AS d, "
            f"json_extract_string({emotion}, '$.dominant') AS label, "
            f"json_extract_string({emotion}, '$.ekman') AS ekman, "
            f"TRY_CAST(json_extract_string({emotion}, '$.confidence') AS DOUBLE) AS confidence, "
            f"{group} AS grp, e.message_id AS message_id "
            f"FROM events e{joins} WHERE {' AND '.join(where)} "
            # One person's readings in time order (under forward merging a person's events
            # can carry several codes); everyone's grouped by person for the fits.
            + (
                "ORDER BY ts, message_id"
                if query.person is not None
                else "ORDER BY code, ts, message_id"
            )
        )
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        with self._cursor() as cur:
            table = cur.sql(sql, params=params).to_arrow_table()
        vad = (
            np.column_stack(
                [table.column(c).to_numpy(zero_copy_only=False) for c in ("v", "a", "d")]
            )
            if table.num_rows
            else np.zeros((0, 3))
        )
        return EmotionRows(
            person=table.column("code").to_numpy().astype(np.int64, copy=False),
            ts=table.column("ts").to_numpy().astype(np.int64, copy=False),
            # Readings can come from clients too: anything not a finite number is missing
            # (NaN), anything outside [-1, 1] is clipped.
            vad=np.clip(np.where(np.isfinite(vad), vad, np.nan).astype(np.float64), -1.0, 1.0),
            label=[v or "neutral" for v in table.column("label").to_pylist()],
            ekman=[v or "neutral" for v in table.column("ekman").to_pylist()],
            confidence=np.nan_to_num(
                table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)
            ),
            group=table.column("grp").to_pylist(),
            message_id=table.column("message_id").to_pylist(),
            plutchik=_scores(table, len(query.plutchik)),
        )

    def property_rows(self, query: PropertyScan) -> PropertyRows:
        person, code, joins = _identity_sql(query.identity)
        uses_person = any(f.property.source == "person" for f in query.filters) or any(
            p.source == "person" for p in query.properties
        )
        if uses_person:
            joins += (
                " LEFT JOIN persons p ON p.workspace_id = e.workspace_id "
                f"AND p.person_id = {person}"
            )
        select = [
            f"{code} AS code",
            f"({person}) AS person",
            "epoch_us(e.timestamp) AS ts",
            "e.event AS event",
        ]
        params: list[Any] = []
        for index, path in enumerate(query.properties):
            expr, values = _value_sql(path)
            select.append(f"{expr} AS v{index}")
            params.extend(values)
        names = sorted(set(query.events))
        where = [
            "e.workspace_id = ?",
            "e.timestamp >= make_timestamptz(?)",
            "e.timestamp < make_timestamptz(?)",
            f"e.event IN ({', '.join('?' * len(names))})" if names else "false",
        ]
        params.extend([query.workspace_id, query.start_us, query.end_us, *names])
        for flt in query.filters:
            sql, values = _filter_sql(flt)
            where.append(f"coalesce({sql}, false)")
            params.extend(values)
        sql = (
            f"SELECT {', '.join(select)} FROM events e{joins} WHERE {' AND '.join(where)} "
            "ORDER BY code, ts, e.message_id"
        )
        with self._cursor() as cur:
            try:
                table = cur.sql(sql, params=params).to_arrow_table()
            except duckdb.InvalidInputException as exc:
                raise ValueError(f"the query could not run: {exc}") from None
        return PropertyRows(
            person=table.column("code").to_numpy().astype(np.int64, copy=False),
            person_ids=[str(v) for v in table.column("person").to_pylist()],
            ts=table.column("ts").to_numpy().astype(np.int64, copy=False),
            event=[str(v) for v in table.column("event").to_pylist()],
            values=tuple(
                cast(list[str | None], table.column(f"v{i}").to_pylist())
                for i in range(len(query.properties))
            ),
        )

    # -- export -------------------------------------------------------------------------------

    def export(self, workspace_id: str, destination: Path, *, fmt: ExportFormat) -> int:
        with self._cursor() as cur:
            if fmt == "parquet":
                columns = ", ".join(("person_id", *ROW_FIELDS))
                cur.execute(
                    f"COPY (SELECT {columns} FROM events WHERE workspace_id = ? "
                    "ORDER BY timestamp, message_id) TO ? (FORMAT parquet)",
                    [workspace_id, str(destination)],
                )
                return self.count(workspace_id)
            reader = cur.sql(
                f"SELECT {_RECENT_COLUMNS} FROM events WHERE workspace_id = ? "
                "ORDER BY timestamp, message_id",
                params=[workspace_id],
            ).to_arrow_reader(50_000)
            written = 0
            with destination.open("wb") as handle:
                for batch in reader:
                    columns_data = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                    lines = [
                        orjson.dumps(row_to_message(list(row))) + b"\n"
                        for row in zip(*columns_data, strict=True)
                    ]
                    handle.writelines(lines)
                    written += len(lines)
            return written

    def close(self) -> None:
        with self._write_lock:
            self._con.close()


def _scores(table: pa.Table, k: int) -> NDArray[np.float64]:
    """The ``p0`` … ``p{k-1}`` columns as an ``(n, k)`` array in [0, 1], NaN where missing
    or not a finite number (readings can come from clients too)."""
    if not k:
        return np.zeros((table.num_rows, 0))
    values = np.column_stack(
        [table.column(f"p{i}").to_numpy(zero_copy_only=False).astype(np.float64) for i in range(k)]
    ).reshape(table.num_rows, k)
    return np.clip(np.where(np.isfinite(values), values, np.nan), 0.0, 1.0)


def _identity_sql(identity: str) -> tuple[str, str, str]:
    """SQL for an event's person id and person code under ``identity``, and the join they
    need: retroactive merging looks the person up now, forward merging uses the one stored
    with the event."""
    if identity != "retroactive":
        return "e.person_id", "e.person_code", ""
    return (
        "coalesce(m.person_id, e.distinct_id)",
        "coalesce(m.person_code, e.distinct_code)",
        " LEFT JOIN identities m ON m.workspace_id = e.workspace_id "
        "AND m.distinct_id = e.distinct_id",
    )


def _value_sql(path: PropertyPath) -> tuple[str, list[Any]]:
    """SQL for the text value of a property, and its parameters."""
    if path.source == "column":
        return f"e.{path.keys[0]}", []
    table = "p" if path.source == "person" else "e"
    column = "traits" if path.source == "person" else path.source
    return f"json_extract_string({table}.{column}, ?)", [_json_path(path.keys)]


def _filter_sql(flt: PropertyFilter) -> tuple[str, list[Any]]:  # noqa: PLR0911 - one per op
    value_sql, params = _value_sql(flt.property)
    value = flt.value
    op = flt.op
    if op == "is_set":
        return f"({value_sql} IS {'NOT ' if value else ''}NULL)", params
    if op in ("eq", "neq"):
        extra: list[Any]
        if isinstance(value, bool):
            sql, extra = f"{value_sql} = ?", ["true" if value else "false"]
        elif isinstance(value, int | float):
            sql, extra = f"TRY_CAST({value_sql} AS DOUBLE) = ?", [float(value)]
        else:
            sql, extra = f"{value_sql} = ?", [str(value)]
        if op == "neq":
            return f"coalesce(NOT ({sql}), true)", params + extra
        return sql, params + extra
    if op == "contains":
        return f"contains(lower({value_sql}), lower(?))", [*params, str(value)]
    if op == "regex":
        return f"regexp_matches({value_sql}, ?)", [*params, str(value)]
    if op in ("gt", "lt"):
        sign = ">" if op == "gt" else "<"
        return f"TRY_CAST({value_sql} AS DOUBLE) {sign} ?", [*params, float(value)]
    if op == "in":
        texts = [_text_of(v) for v in value]
        return f"list_contains(?, {value_sql})", [texts, *params]
    raise ValueError(f"unknown filter operator {op!r}")


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
