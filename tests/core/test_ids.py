"""Ids sort by creation time and say what they name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
