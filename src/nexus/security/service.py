"""Append to, read and verify the audit chains stored in ``audit_log``.

An entry is appended in the caller's session, so it commits or rolls back with the change it
records. Appending is safe under concurrency, and the chain never forks or skips a number:
on PostgreSQL the next number is read from the chain's head and inserted in a savepoint; the
primary key ``(chain, seq)`` refuses the second of two writers that read the same head, and
that writer reads the new head and tries again. SQLite has a single writer, so there the
append takes the write lock before it reads the head and cannot be overtaken.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import Conflict, InvalidInput
from nexus.security.audit import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    Anchor,
    AuditEntry,
    VerifyResult,
    field_problem,
    seal,
    verify_chain,
)
from nexus.security.models import AuditLogEntry

MAX_ATTEMPTS = 50
_BATCH = 1000


def chain_for(workspace_id: str | None) -> str:
    """The chain a workspace's entries go to; workspace-less events go to ``"global"``."""
    return GLOBAL_CHAIN if workspace_id is None else workspace_id


_COLUMNS = (
    AuditLogEntry.chain,
    AuditLogEntry.seq,
    AuditLogEntry.at,
    AuditLogEntry.actor,
    AuditLogEntry.action,
    AuditLogEntry.target,
    AuditLogEntry.details,
    AuditLogEntry.prev_hash,
    AuditLogEntry.hash,
)


def _entries(db: Session, chain: str, *, after_seq: int, limit: int) -> list[AuditEntry]:
    # Plain rows, not ORM objects: reading a long chain leaves nothing in the session.
    rows = db.execute(
        select(*_COLUMNS)
        .where(AuditLogEntry.chain == chain, AuditLogEntry.seq > after_seq)
        .order_by(AuditLogEntry.seq)
        .limit(limit)
    )
    return [AuditEntry(*row) for row in rows]


def _head(db: Session, chain: str) -> tuple[int, str]:
    row = db.execute(
        select(AuditLogEntry.seq, AuditLogEntry.hash)
        .where(AuditLogEntry.chain == chain)
        .order_by(AuditLogEntry.seq.desc())
        .limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (row.seq, row.hash)


def _take_sqlite_write_lock(db: Session, chain: str) -> None:
    # An UPDATE that matches nothing still takes SQLite's one write lock (and makes pysqlite
    # open the transaction), so no other writer can move the head until this one commits.
    db.execute(
        text("UPDATE audit_log SET seq = seq WHERE chain = :chain AND seq < 0"), {"chain": chain}
    )


def _insert_next(db: Session, *, chain: str, at: datetime, fields: dict[str, Any]) -> AuditEntry:
    seq, prev_hash = _head(db, chain)
    try:
        entry = seal(chain=chain, seq=seq + 1, at=at, prev_hash=prev_hash, **fields)
    except TypeError as exc:
        raise InvalidInput(f"audit details are not JSON: {exc}") from None
    db.execute(insert(AuditLogEntry).values(**dataclasses.asdict(entry)))
    return entry


def append_entry(
    db: Session,
    *,
    workspace_id: str | None,
    actor: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Seal and store the next entry of the workspace's chain (or the global one).

    ``actor`` is who acted (a user or key id, ``"system"``), ``action`` what happened
    (``"flag.updated"``), ``target`` what it happened to, ``details`` any JSON object.
    """
    problem = field_problem(actor=actor, action=action, target=target)
    if problem is not None:
        raise InvalidInput(problem)
    chain = chain_for(workspace_id)
    fields = {"actor": actor, "action": action, "target": target, "details": details or {}}
    if db.get_bind().dialect.name == "sqlite":
        # SQLite has one writer at a time: holding the lock, nobody can take our number.
        # (A savepoint is no way out there: pysqlite opens no transaction before it, so
        # releasing it would commit the caller's work.)
        _take_sqlite_write_lock(db, chain)
        return _insert_next(db, chain=chain, at=at or utcnow(), fields=fields)
    for attempt in range(MAX_ATTEMPTS):
        try:
            with db.begin_nested():
                return _insert_next(db, chain=chain, at=at or utcnow(), fields=fields)
        except IntegrityError:
            # Another writer took this number first: read the new head and try again.
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter
    raise Conflict(f"could not append to audit chain {chain!r}: too much contention")


def list_entries(
    db: Session, *, workspace_id: str | None, after_seq: int = 0, limit: int = 100
) -> list[AuditEntry]:
    """Up to ``limit`` entries of a chain after number ``after_seq``, oldest first."""
    return _entries(db, chain_for(workspace_id), after_seq=after_seq, limit=limit)


def list_chains(db: Session) -> list[str]:
    """Every chain with at least one entry, ``"global"`` among the workspace ids."""
    return list(db.scalars(select(AuditLogEntry.chain).distinct().order_by(AuditLogEntry.chain)))


def _walk(db: Session, chain: str) -> Iterator[AuditEntry]:
    # Keyset pages keep memory flat however long the chain is.
    after = 0
    while True:
        page = _entries(db, chain, after_seq=after, limit=_BATCH)
        yield from page
        if len(page) < _BATCH:
            return
        after = page[-1].seq


def verify_log(
    db: Session, *, workspace_id: str | None, anchor: Anchor | None = None
) -> VerifyResult:
    """Walk a chain from the genesis and report whether it is intact (see
    :func:`nexus.security.audit.verify_chain`); with ``anchor``, a truncated tail fails too."""
    chain = chain_for(workspace_id)
    return verify_chain(_walk(db, chain), chain=chain, anchor=anchor)
