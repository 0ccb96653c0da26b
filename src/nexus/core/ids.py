"""Prefixed, time-sortable identifiers (``ws_01J9…``).

The body is a ULID: 48 bits of milliseconds since the epoch and 80 random bits, in Crockford's
base32 (https://github.com/ulid/spec). Sorting ids sorts by creation time, which is what cursor
pagination relies on; the prefix says what an id names, so a key id pasted where a workspace id
belongs is caught at once.
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_RE = re.compile(r"^[a-z]{2,4}_[0-9A-HJKMNP-TV-Z]{26}$")


# Two base32 digits per 10 bits, and the shifts that cut the 130-bit digit string into 13
# such pairs from the top (the first digit carries the 128-bit value's top three bits).
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_SHIFTS = tuple(range(120, -10, -10))


# The 80 random bits of ids to come, read from the OS 400 ids at a time: a decision makes
# several ids, and one ``getrandom`` call per id showed up in its profile. ``list.pop`` and
# ``list.extend`` are atomic, so threads share the pool without a lock (two refilling at
# once only read more than needed).
_RANDOM_BLOCK = 400
_randoms: list[int] = []


def _random80() -> int:
    try:
        return _randoms.pop()
    except IndexError:
        block = os.urandom(10 * _RANDOM_BLOCK)
        _randoms.extend(int.from_bytes(block[i : i + 10], "big") for i in range(0, len(block), 10))
        return _randoms.pop()


def _reseed_after_fork() -> None:
    # A forked child must not hand out the random bits its parent also holds.
    _randoms.clear()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new id such as ``ws_01J9ZQ…`` (prefix, underscore, 26-character ULID)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | _random80()
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_id(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` has the shape of an id (and the given prefix)."""
    if not _ID_RE.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")
