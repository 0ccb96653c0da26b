"""Rate limiting on the ``limits`` library: a moving window per key.

Storage is in memory for the embedded deployment; a ``redis://`` URI shares the counters
between replicas in scale-out.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from nexus.core.errors import RateLimited


class RateLimit:
    """``hit(key)`` counts one attempt and raises :class:`RateLimited` past the limit."""

    def __init__(self, rate: str, *, storage_uri: str = "memory://", message: str) -> None:
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.message = message

    def hit(self, *keys: str, cost: int = 1) -> None:
        if self.limiter.hit(self.item, *keys, cost=cost):
            return
        reset_at, _remaining = self.limiter.get_window_stats(self.item, *keys)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"{self.message} Try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    def reset(self, *keys: str) -> None:
        self.limiter.clear(self.item, *keys)
