"""The audit chain, as pure code: how an entry is sealed and how a chain is verified.

Every entry carries the SHA-256 of its predecessor (``prev_hash``) and its own hash over a
canonical encoding of everything it says, so changing, removing, inserting or reordering
any entry breaks a link that :func:`verify_chain` finds. This is the construction of
Schneier and Kelsey, "Secure audit logs to support computer forensics" (ACM TISSEC 2(2),
1999), without their MAC keys: anyone can recompute the hashes, which is what makes the log
checkable by an auditor, and also why it is tamper-evident rather than tamper-proof.

What a chain alone cannot show is a truncated tail: deleting the last *k* entries leaves a
shorter chain that is still intact. An :class:`Anchor` (the sequence number and hash of the
head, as ``verify`` prints them, recorded somewhere the database's writer cannot rewrite)
closes that gap: verifying against it fails if the anchored entry is gone or differs. Someone
who can rewrite the whole table can also recompute every hash from the tampered entry on;
an anchor taken before the tampering catches that too.

There is one chain per workspace and one, :data:`GLOBAL_CHAIN`, for events outside any
workspace (a sign-in, a server-wide key). Chains are independent, so workspaces append
without contending with each other, and the chain's name is part of every hash, so an entry
cannot be moved from one chain to another unnoticed.

No I/O here: dataclasses in, dataclasses out (see :mod:`nexus.security.service` for the
database side).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from nexus.core.clock import as_utc

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"
# "flag.updated", "auth.login", "rollout.rolled_back": a noun, a dot, what happened to it.
ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_ACTION = 80
MAX_ACTOR = 200
MAX_TARGET = 200
_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One sealed entry of a chain; ``seq`` counts from 1 within ``chain``."""

    chain: str
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head recorded outside the database: the chain must still reach it, unchanged."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``"42:9f86…"`` (what ``nexus audit verify`` prints) as an anchor."""
        seq_text, _, hash_text = text.strip().partition(":")
        hash_text = hash_text.lower()
        if not seq_text.isdigit() or int(seq_text) < 1 or not _HASH_PATTERN.match(hash_text):
            raise ValueError(f"not an anchor (SEQ:SHA256HEX): {text!r}")
        return cls(seq=int(seq_text), hash=hash_text)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of walking a chain.

    ``count`` is the number of entries checked before the first bad one (all of them when
    ``ok``); ``first_bad_seq`` is the sequence number where the chain first goes wrong (for
    a removed entry, the number that is missing) and ``reason`` says how. ``head`` is the last
    good entry's anchor, to record for detecting truncation later.
    """

    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head: Anchor | None = None


def canonical_timestamp(at: datetime) -> str:
    """UTC with microseconds, the one spelling of a time that goes into a hash."""
    return as_utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_details(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as it reads back from a JSON column (tuples become lists, keys strings).

    Hashing what the database will return, not what the caller passed, is what lets a stored
    entry verify. Raises ``TypeError`` for what JSON cannot hold (orjson's ``JSONEncodeError``).
    """
    decoded = orjson.loads(orjson.dumps(details))
    if not isinstance(decoded, dict):
        raise TypeError("audit details must be a JSON object")
    return decoded


def entry_hash(
    *,
    chain: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical encoding: a JSON object with sorted keys, no spaces,
    UTF-8, the time as :func:`canonical_timestamp` spells it."""
    document = {
        "chain": chain,
        "seq": seq,
        "at": canonical_timestamp(at),
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def field_problem(*, actor: str, action: str, target: str) -> str | None:
    """What is wrong with an entry's fields, or ``None``."""
    if not actor or len(actor) > MAX_ACTOR:
        return f"actor must have 1 to {MAX_ACTOR} characters"
    if len(action) > MAX_ACTION or not ACTION_PATTERN.match(action):
        return f"action must look like 'flag.updated' (at most {MAX_ACTION} characters)"
    if len(target) > MAX_TARGET:
        return f"target must have at most {MAX_TARGET} characters"
    return None


def seal(
    *,
    chain: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
    prev_hash: str,
) -> AuditEntry:
    """The entry that follows ``prev_hash`` as number ``seq``, with its hash computed."""
    at = as_utc(at)
    details = canonical_details(details)
    digest = entry_hash(
        chain=chain,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=details,
        prev_hash=prev_hash,
    )
    return AuditEntry(chain, seq, at, actor, action, target, details, prev_hash, digest)


def recomputed_hash(entry: AuditEntry) -> str:
    return entry_hash(
        chain=entry.chain,
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        details=entry.details,
        prev_hash=entry.prev_hash,
    )


def _link_problem(
    entry: AuditEntry, *, chain: str, expected_seq: int, prev_hash: str
) -> tuple[int, str] | None:
    """Where and why ``entry`` does not continue the chain, or ``None`` if it does."""
    if entry.chain != chain:
        return entry.seq, f"entry belongs to chain {entry.chain!r}, not {chain!r}"
    if entry.seq > expected_seq:
        missing = (
            f"entry {expected_seq} is"
            if entry.seq == expected_seq + 1
            else f"entries {expected_seq} to {entry.seq - 1} are"
        )
        return expected_seq, f"{missing} missing"
    if entry.seq < expected_seq:
        return entry.seq, f"out of order: found {entry.seq} after {expected_seq - 1}"
    if recomputed_hash(entry) != entry.hash:
        return entry.seq, "hash mismatch: the entry was altered"
    if entry.prev_hash != prev_hash:
        previous = "the genesis hash" if entry.seq == 1 else f"entry {entry.seq - 1}'s hash"
        return (
            entry.seq,
            f"prev_hash does not match {previous}: an entry was removed, inserted or moved",
        )
    return None


def verify_chain(
    entries: Iterable[AuditEntry], *, chain: str, anchor: Anchor | None = None
) -> VerifyResult:
    """Walk ``entries`` of ``chain`` in sequence order and report the first break.

    Checks, for entry *n*: that its number is the next one (a gap means entries were
    removed), that its hash matches its content (an altered entry), that it names entry
    *n - 1*'s hash as ``prev_hash`` (a removed, inserted or reordered entry), and at the end,
    that the chain still reaches ``anchor`` with the same hash (a truncated tail).
    """
    prev_hash = GENESIS_HASH
    head: Anchor | None = None
    count = 0
    for entry in entries:
        problem = _link_problem(entry, chain=chain, expected_seq=count + 1, prev_hash=prev_hash)
        if (
            problem is None
            and anchor is not None
            and entry.seq == anchor.seq
            and entry.hash != anchor.hash
        ):
            problem = entry.seq, f"entry {entry.seq} differs from the anchor"
        if problem is not None:
            return VerifyResult(
                False, count, first_bad_seq=problem[0], reason=problem[1], head=head
            )
        prev_hash = entry.hash
        head = Anchor(entry.seq, entry.hash)
        count += 1
    if anchor is not None and count < anchor.seq:
        reason = f"truncated: the chain ends at {count} but the anchor is entry {anchor.seq}"
        return VerifyResult(False, count, first_bad_seq=count + 1, reason=reason, head=head)
    return VerifyResult(True, count, head=head)
