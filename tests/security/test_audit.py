"""The audit chain: sealing and verifying (pure), appending and tamper detection (database)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update

from nexus.core.errors import InvalidInput
from nexus.security import service
from nexus.security.audit import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    Anchor,
    AuditEntry,
    seal,
    verify_chain,
)
from nexus.security.models import AuditLogEntry
from nexus.storage.database import Database

T0 = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
WS = "ws_01JAAAAAAAAAAAAAAAAAAAAAAA"
N = 5

# --- pure core -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
details_strategy = st.dictionaries(st.text(max_size=6), json_values, max_size=3)


def make_chain(details: list[dict[str, Any]], chain: str = WS) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS_HASH
    for i, detail in enumerate(details, start=1):
        entry = seal(
            chain=chain,
            seq=i,
            at=T0 + timedelta(microseconds=i),
            actor=f"usr_{i}",
            action="flag.updated",
            target=f"flag-{i}",
            details=detail,
            prev_hash=prev,
        )
        entries.append(entry)
        prev = entry.hash
    return entries


def test_genesis_entry_links_to_sixty_four_zeros() -> None:
    (entry,) = make_chain([{}])
    assert entry.prev_hash == "0" * 64
    assert len(entry.hash) == 64


def test_hash_ignores_key_order_and_tuple_versus_list() -> None:
    a = seal(
        chain=WS, seq=1, at=T0, actor="u", action="a.b", target="t",
        details={"x": 1, "y": (1, 2)}, prev_hash=GENESIS_HASH,
    )  # fmt: skip
    b = seal(
        chain=WS, seq=1, at=T0, actor="u", action="a.b", target="t",
        details={"y": [1, 2], "x": 1}, prev_hash=GENESIS_HASH,
    )  # fmt: skip
    assert a.hash == b.hash


@given(st.lists(details_strategy, min_size=1, max_size=6))
@settings(max_examples=40, deadline=None)
def test_a_sealed_chain_verifies(details: list[dict[str, Any]]) -> None:
    entries = make_chain(details)
    result = verify_chain(entries, chain=WS)
    assert result.ok
    assert result.count == len(entries)
    assert result.head == Anchor(len(entries), entries[-1].hash)


FIELD_CHANGES: dict[str, Any] = {
    "chain": "ws_other",
    "at": lambda e: e.at + timedelta(microseconds=1),
    "actor": "mallory",
    "action": "flag.deleted",
    "target": "another-flag",
    "details": {"tampered": True},
    "prev_hash": "f" * 64,
    "hash": "e" * 64,
}


@given(
    details=st.lists(details_strategy, min_size=1, max_size=6),
    data=st.data(),
    field=st.sampled_from(sorted(FIELD_CHANGES)),
)
@settings(max_examples=60, deadline=None)
def test_any_altered_field_of_any_entry_is_named(
    details: list[dict[str, Any]], data: st.DataObject, field: str
) -> None:
    entries = make_chain(details)
    position = data.draw(st.integers(0, len(entries) - 1))
    change = FIELD_CHANGES[field]
    value = change(entries[position]) if callable(change) else change
    entries[position] = dataclasses.replace(entries[position], **{field: value})
    result = verify_chain(entries, chain=WS)
    assert not result.ok
    assert result.first_bad_seq == position + 1
    assert result.count == position


def test_anchor_parses_what_it_prints() -> None:
    anchor = Anchor(7, "ab" * 32)
    assert Anchor.parse(str(anchor)) == anchor
    for bad in ("", "7", "x:" + "ab" * 32, "0:" + "ab" * 32, "7:abc"):
        with pytest.raises(ValueError, match="not an anchor"):
            Anchor.parse(bad)


def test_a_truncated_tail_passes_alone_and_fails_against_an_anchor() -> None:
    entries = make_chain([{}] * 4)
    anchor = verify_chain(entries, chain=WS).head
    assert anchor is not None
    assert verify_chain(entries[:2], chain=WS).ok  # a chain alone cannot tell
    result = verify_chain(entries[:2], chain=WS, anchor=anchor)
    assert (result.ok, result.first_bad_seq, result.count) == (False, 3, 2)
    assert "truncated" in (result.reason or "")


def test_a_rewritten_chain_fails_against_an_earlier_anchor() -> None:
    original = make_chain([{}] * 3)
    anchor = verify_chain(original, chain=WS).head
    rewritten = make_chain([{}, {"forged": 1}, {}])  # every hash recomputed
    assert verify_chain(rewritten, chain=WS).ok
    result = verify_chain(rewritten, chain=WS, anchor=anchor)
    assert (result.ok, result.first_bad_seq) == (False, 3)


# --- against the database --------------------------------------------------------------------


def append(database: Database, count: int, workspace_id: str | None = WS) -> list[AuditEntry]:
    with database.session() as db:
        return [
            service.append_entry(
                db,
                workspace_id=workspace_id,
                actor=f"usr_{i}",
                action="flag.updated",
                target=f"flag-{i}",
                details={"version": i, "rules": [{"serve": "on"}], "ratio": 0.1 * i},
            )
            for i in range(1, count + 1)
        ]


def verify(database: Database, anchor: Anchor | None = None) -> Any:
    with database.session() as db:
        return service.verify_log(db, workspace_id=WS, anchor=anchor)


def sql(database: Database, statement: str, **params: Any) -> None:
    with database.engine.begin() as conn:
        assert conn.execute(text(statement), params).rowcount >= 1


def test_appended_entries_verify(database: Database) -> None:
    appended = append(database, N)
    assert [e.seq for e in appended] == list(range(1, N + 1))
    result = verify(database)
    assert (result.ok, result.count, result.first_bad_seq) == (True, N, None)
    assert result.head == Anchor(N, appended[-1].hash)
    with database.session() as db:
        assert service.list_entries(db, workspace_id=WS, after_seq=2, limit=2) == appended[2:4]


def test_chains_are_independent_per_workspace_and_global(database: Database) -> None:
    append(database, 2)
    append(database, 3, workspace_id=None)
    with database.session() as db:
        assert service.list_chains(db) == sorted([GLOBAL_CHAIN, WS])
        assert service.verify_log(db, workspace_id=None).count == 3
        assert service.verify_log(db, workspace_id=WS).count == 2


def test_an_entry_rolls_back_with_the_change_it_records(database: Database) -> None:
    def create_key_then_fail() -> None:
        with database.session() as db:
            service.append_entry(db, workspace_id=WS, actor="u", action="key.created")
            raise RuntimeError("the key could not be stored")

    with pytest.raises(RuntimeError):
        create_key_then_fail()
    assert verify(database).count == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "Flag Updated"}, "action"),
        ({"actor": ""}, "actor"),
        ({"target": "x" * 201}, "target"),
        ({"details": {"when": object()}}, "not JSON"),
    ],
)
def test_invalid_entries_are_refused(
    database: Database, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"actor": "u", "action": "auth.login", **kwargs}
    with pytest.raises(InvalidInput, match=message), database.session() as db:
        service.append_entry(db, workspace_id=None, **arguments)


TAMPERS = {
    "at": "UPDATE audit_log SET at = :later WHERE chain = :c AND seq = :s",
    "actor": "UPDATE audit_log SET actor = 'mallory' WHERE chain = :c AND seq = :s",
    "action": "UPDATE audit_log SET action = 'auth.login' WHERE chain = :c AND seq = :s",
    "target": "UPDATE audit_log SET target = 'other' WHERE chain = :c AND seq = :s",
    "details": """UPDATE audit_log SET details = '{"version": 0}' WHERE chain = :c AND seq = :s""",
    "prev_hash": "UPDATE audit_log SET prev_hash = :fake WHERE chain = :c AND seq = :s",
    "hash": "UPDATE audit_log SET hash = :fake WHERE chain = :c AND seq = :s",
    "chain": "UPDATE audit_log SET chain = 'global' WHERE chain = :c AND seq = :s",
    "seq": "UPDATE audit_log SET seq = seq + 100 WHERE chain = :c AND seq = :s",
    "deleted": "DELETE FROM audit_log WHERE chain = :c AND seq = :s",
}


@pytest.mark.parametrize("position", [1, 3, N])
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_a_tampered_entry_is_named(database: Database, tamper: str, position: int) -> None:
    append(database, N)
    params = {"c": WS, "s": position, "fake": "ab" * 32, "later": datetime(2030, 1, 1, tzinfo=UTC)}
    sql(database, TAMPERS[tamper], **params)
    result = verify(database)
    if tamper in ("deleted", "chain") and position == N:
        # Removing the newest entry leaves a shorter chain that is intact: only an anchor
        # (the head recorded before) can tell.
        assert result.ok
        assert result.count == N - 1
        return
    assert not result.ok, result
    assert result.first_bad_seq == position, result
    assert result.count == position - 1


def test_deleting_the_newest_entries_fails_against_the_anchor(database: Database) -> None:
    append(database, N)
    anchor = verify(database).head
    sql(database, "DELETE FROM audit_log WHERE chain = :c AND seq >= 4", c=WS)
    result = verify(database, anchor)
    assert (result.ok, result.first_bad_seq, result.count) == (False, 4, 3)


CONTENT = ("at", "actor", "action", "target", "details", "prev_hash", "hash")


@pytest.mark.parametrize(("i", "j"), [(1, 2), (2, 5), (1, N)])
def test_swapped_contents_are_named(database: Database, i: int, j: int) -> None:
    appended = append(database, N)
    with database.engine.begin() as conn:
        for seq, source in ((i, appended[j - 1]), (j, appended[i - 1])):
            conn.execute(
                update(AuditLogEntry)
                .where(AuditLogEntry.chain == WS, AuditLogEntry.seq == seq)
                .values({name: getattr(source, name) for name in CONTENT})
            )
    result = verify(database)
    assert (result.ok, result.first_bad_seq) == (False, i)


@pytest.mark.parametrize(("i", "j"), [(1, 2), (2, 5), (1, N)])
def test_swapped_sequence_numbers_are_named(database: Database, i: int, j: int) -> None:
    append(database, N)
    for old, new in ((i, -1), (j, i), (-1, j)):
        sql(database, "UPDATE audit_log SET seq = :new WHERE chain = :c AND seq = :old",
            c=WS, old=old, new=new)  # fmt: skip
    result = verify(database)
    assert (result.ok, result.first_bad_seq) == (False, i)


def test_concurrent_writers_keep_one_linear_chain(database: Database) -> None:
    threads, per_thread = 4, 8
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with database.session() as db:
                    service.append_entry(
                        db, workspace_id=WS, actor=f"thread-{k}", action="auth.login",
                        details={"i": i},
                    )  # fmt: skip
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with database.session() as db:
        entries = service.list_entries(db, workspace_id=WS, limit=1000)
    assert [e.seq for e in entries] == list(range(1, threads * per_thread + 1))
    assert len({e.prev_hash for e in entries}) == len(entries)  # no fork
    assert verify(database).ok
