"""Synthetic Segment traffic for the ingestion and import benchmarks.

Messages look like a small shop's analytics.js traffic: mostly page views and product events
from anonymous visitors, an identify now and then, each with a ``messageId``, an
``anonymousId``, a timestamp, a few properties and a page context, about 200-250 bytes of JSON.
They are a pure function of their index (no random state), so every run and both benchmarks
send the same messages, and :func:`message` can be called in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

VISITORS = 50_000
PRODUCTS = 500
IDENTIFY_EVERY = 200  # 0.5 % of messages are identify calls
# One message every 259 ms from 2026-01-01T00:00:00Z: 10 million fill January.
STEP_MS = 259
_TRACK = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed")
_PATHS = ("/", "/products", "/cart", "/checkout")


def _iso(offset_ms: int) -> str:
    """2026-01-01T00:00:00Z plus ``offset_ms`` (under 31 days) as RFC 3339."""
    seconds, millis = divmod(offset_ms, 1000)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"2026-01-{days + 1:02d}T{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}Z"


def message(index: int) -> dict[str, Any]:
    """The ``index``-th message of the synthetic stream."""
    visitor = index * 7919 % VISITORS
    product = index * 104_729 % PRODUCTS
    base: dict[str, Any] = {
        "messageId": f"bench-{index:014d}",
        "anonymousId": f"anon-{visitor:07d}",
        "timestamp": _iso(index * STEP_MS % (31 * 86_400_000)),
    }
    kind = index % 10
    if index % IDENTIFY_EVERY == IDENTIFY_EVERY - 1:
        base.update(
            type="identify",
            userId=f"user-{visitor:07d}",
            traits={"email": f"visitor{visitor}@example.com", "plan": "free"},
        )
    elif kind < 4:
        base.update(
            type="page",
            name="Product" if kind else "Home",
            properties={"path": _PATHS[kind]},
        )
    else:
        event = _TRACK[min(kind - 4, 3)]
        base.update(
            type="track",
            event=event,
            properties={"sku": f"SKU-{product:04d}", "price": 10 + product % 90 + 0.99},
        )
    base["context"] = {"page": {"path": f"/products/{product}"}, "locale": "en-US"}
    return base


def messages(count: int, *, start: int = 0) -> Iterator[dict[str, Any]]:
    for index in range(start, start + count):
        yield message(index)


def write_jsonl(path: Path, count: int, *, chunk: int = 10_000) -> int:
    """Stream ``count`` messages to ``path`` as JSON lines; returns the bytes written."""
    written = 0
    dumps = orjson.dumps
    with path.open("wb") as handle:
        for start in range(0, count, chunk):
            block = b"".join(
                dumps(m) + b"\n" for m in messages(min(chunk, count - start), start=start)
            )
            handle.write(block)
            written += len(block)
    return written
