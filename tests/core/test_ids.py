"""Ids sort by creation time and say what they name."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from nexus.core import ids
from nexus.core.ids import is_id, new_id


@given(st.integers(min_value=0, max_value=2**48 - 2), st.integers(min_value=1, max_value=10**6))
def test_later_ids_sort_after_earlier_ones(ms: int, gap: int) -> None:
    later = min(ms + gap, 2**48 - 1)
    assert new_id("ws", now_ms=ms) < new_id("ws", now_ms=later)


def test_shape_and_prefix() -> None:
    value = new_id("key")
    assert is_id(value, "key")
    assert not is_id(value, "ws")
    assert len(value) == len("key_") + 26
    assert not is_id("key_0123")
    assert len({new_id("ws") for _ in range(1000)}) == 1000


def test_the_timestamp_is_the_ulid_spec_one() -> None:
    # The ULID spec's example: 1469918176385 ms is 01ARYZ6S41.
    assert new_id("evt", now_ms=1469918176385).startswith("evt_01ARYZ6S41")
    assert new_id("evt", now_ms=2**48 - 1).startswith("evt_7ZZZZZZZZZ")


def test_ids_stay_unique_across_pool_refills_and_forks() -> None:
    """Random bits come from the OS in blocks; many blocks' worth are all distinct, and a
    forked child does not repeat what its parent hands out."""
    ms = 1_700_000_000_000
    assert len({new_id("evt", now_ms=ms) for _ in range(5_000)}) == 5_000
    while len(ids._randoms) < 2:  # random bits left in the pool when the process forks
        new_id("evt")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(new_id("evt", now_ms=ms) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    parent = {new_id("evt", now_ms=ms) for _ in range(50)}
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 50
    assert not parent & child
