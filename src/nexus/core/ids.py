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


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new id such as ``ws_01J9ZQ…`` (prefix, underscore, 26-character ULID)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_id(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` has the shape of an id (and the given prefix)."""
    if not _ID_RE.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")
