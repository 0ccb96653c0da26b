"""Rate limiting on the ``limits`` library: fixed windows, counted in this process or shared.

**Strategy.** Every limit is a fixed window (``limits``' ``FixedWindowRateLimiter``): one
counter per key that starts with the key's first hit and expires one period later. It is the
cheapest strategy there is -- one dictionary update in memory, one ``INCR`` in Redis -- and the
API middleware pays it several times on every ingest and decide request. The price is that a
client can spend up to twice its limit around a window's end; the moving window would not
allow that, but costs one entry per hit (a limit of 100,000/minute keeps 100,000 entries per
key and inserts at the head of a list), and the sliding window counter reads two counters per
hit. Abuse limits bound sustained rates, so the burst is an acceptable price.

**Storage.** ``memory://`` (the default) is :class:`BoundedMemoryStorage`: a dictionary of
counters in this process, expired lazily, with a cap on keys. ``limits``' own memory storage
runs a timer thread every 10 ms that walks every key; with 100,000 keys (visitors' addresses
on the ingest paths) that thread used about two thirds of a core in our measurement. Any other
URI (``redis://host:6379``, ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``) is a
``limits`` storage shared by every replica: synchronous for :class:`RateLimit` (sign-in, which
runs in worker threads; ingest's per-workspace event limit uses it too, always in memory),
asynchronous for :class:`AsyncRateLimiter` (the API middleware, on the event loop). A shared
store that fails is logged and the request let through: limits protect the service and must
not take it down with them.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import limits.aio.storage
import limits.aio.strategies
from limits import RateLimitItem, parse
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from nexus.core.errors import ConfigurationError, RateLimited
from nexus.core.logging import get_logger

MEMORY_URI = "memory://"
DEFAULT_MAX_KEYS = 100_000
log = get_logger("nexus.ratelimit")
_PREREQUISITE = re.compile(r"'([^']+)' prerequisite not available")


class BoundedMemoryStorage(Storage):
    """Fixed-window counters in this process: no background thread, at most ``max_keys`` keys.

    Counters live in a dictionary in the order their windows started; past ``max_keys`` the
    oldest window is forgotten first (it is the nearest to expiring anyway). Safe to share
    between threads.
    """

    STORAGE_SCHEME = None  # built by open_storage, not registered under a URI scheme

    def __init__(
        self, *, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(None)
        self.max_keys = max_keys
        self.clock = clock
        # key -> [count, expires_at]
        self._counters: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def count(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Adds ``amount`` to ``key``'s window (a new one of ``expiry`` seconds if it has
        none): the count and when the window ends."""
        now = self.clock()
        counters = self._counters
        with self._lock:
            entry = counters.get(key)
            if entry is None or entry[1] <= now:
                if entry is not None:
                    del counters[key]  # re-inserted below: the order stays window-start order
                elif len(counters) >= self.max_keys:
                    del counters[next(iter(counters))]
                entry = counters[key] = [0, now + expiry]
            entry[0] += amount
            return int(entry[0]), entry[1]

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.count(key, expiry, amount)[0]

    def peek(self, key: str) -> tuple[int, float]:
        """``key``'s count and the end of its window, without counting (0 if it has none)."""
        entry = self._counters.get(key)
        now = self.clock()
        if entry is None or entry[1] <= now:
            return 0, now
        return int(entry[0]), entry[1]

    def get(self, key: str) -> int:
        return self.peek(key)[0]

    def get_expiry(self, key: str) -> float:
        entry = self._counters.get(key)
        return entry[1] if entry is not None else self.clock()

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            count = len(self._counters)
            self._counters.clear()
        return count

    def clear(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)

    def __len__(self) -> int:
        return len(self._counters)


def parse_rate(rate: str, *, setting: str = "rate") -> RateLimitItem:
    """``"100/minute"`` as a ``limits`` item; a malformed rate is a :class:`ConfigurationError`."""
    try:
        return parse(rate)
    except ValueError:
        raise ConfigurationError(
            f"{setting} {rate!r} is not a rate: write it like '100/minute' or '10 per second'"
        ) from None


@dataclass(frozen=True, slots=True)
class Rate:
    """A parsed rate with what counting it in memory needs, worked out once."""

    item: RateLimitItem
    amount: int
    seconds: int
    key_prefix: str  # limits' own key for the item, so both storages name counters alike

    @classmethod
    def parse(cls, rate: str, *, setting: str = "rate") -> Rate:
        item = parse_rate(rate, setting=setting)
        return cls(item, item.amount, item.get_expiry(), item.key_for("") + "/")


def _missing_package(uri: str, exc: LimitsConfigurationError) -> ConfigurationError:
    # Never echo the URI itself: it may carry a password.
    scheme = urlparse(uri).scheme.removeprefix("async+") or uri
    found = _PREREQUISITE.search(str(exc))
    if found is None:
        return ConfigurationError(f"NEXUS_RATE_LIMIT_STORAGE: {scheme}:// is not usable: {exc}")
    package = found.group(1).split(".")[0]  # 'redis.sentinel' comes with 'redis'
    return ConfigurationError(
        f"NEXUS_RATE_LIMIT_STORAGE uses {scheme}://, which needs the '{package}' package: "
        f"install it with `pip install {package}`"
    )


def _is_memory(uri: str) -> bool:
    return uri.startswith(MEMORY_URI)


def open_storage(uri: str = MEMORY_URI, *, max_keys: int = DEFAULT_MAX_KEYS) -> Storage:
    """The synchronous storage behind ``uri``; a missing client package fails here, at start."""
    if _is_memory(uri):
        return BoundedMemoryStorage(max_keys=max_keys)
    try:
        storage = storage_from_string(uri, wrap_exceptions=True)
    except LimitsConfigurationError as exc:
        raise _missing_package(uri, exc) from None
    assert isinstance(storage, Storage)
    return storage


def open_async_storage(uri: str) -> limits.aio.storage.Storage:
    """The asyncio storage behind a shared ``uri`` (Redis through redis-py's asyncio client)."""
    async_uri = uri if uri.startswith("async+") else "async+" + uri
    options: dict[str, str | bool | float] = {"wrap_exceptions": True}
    if urlparse(async_uri).scheme.startswith("async+redis"):
        options["implementation"] = "redispy"
    try:
        storage = storage_from_string(async_uri, **options)
    except LimitsConfigurationError as exc:
        raise _missing_package(uri, exc) from None
    assert isinstance(storage, limits.aio.storage.Storage)
    return storage


def _retry_after(reset_at: float, now: float) -> int:
    return max(1, math.ceil(reset_at - now))


class RateLimit:
    """One rate for many keys: ``hit(*keys)`` counts an attempt and raises :class:`RateLimited`
    with ``Retry-After`` past the rate. Synchronous: for code in worker threads."""

    def __init__(
        self,
        rate: str,
        *,
        storage_uri: str = MEMORY_URI,
        message: str,
        storage: Storage | None = None,
    ) -> None:
        self.item = parse_rate(rate)
        self.storage = storage if storage is not None else open_storage(storage_uri)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.message = message

    def _now(self) -> float:
        return (
            self.storage.clock() if isinstance(self.storage, BoundedMemoryStorage) else time.time()
        )

    def retry_after(self, *keys: str, cost: int = 1) -> int:
        """Counts ``cost`` against ``keys``: 0 if within the rate, else the seconds to wait."""
        try:
            if self.limiter.hit(self.item, *keys, cost=cost):
                return 0
            reset_at, _remaining = self.limiter.get_window_stats(self.item, *keys)
        except StorageError as exc:
            log.warning("rate limit storage failed; request allowed", error=str(exc))
            return 0
        return _retry_after(reset_at, self._now())

    def hit(self, *keys: str, cost: int = 1) -> None:
        retry_after = self.retry_after(*keys, cost=cost)
        if retry_after:
            raise RateLimited(
                f"{self.message} Try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )

    def reset(self, *keys: str) -> None:
        try:
            self.limiter.clear(self.item, *keys)
        except StorageError as exc:
            log.warning("rate limit storage failed to clear", error=str(exc))


class AsyncRateLimiter:
    """Fixed-window counting for code on the event loop, over one storage for many rates.

    In memory the counting is synchronous (no I/O) and goes straight to
    :class:`BoundedMemoryStorage` under ``limits``' own key for the item: the same windows as
    ``FixedWindowRateLimiter`` (count, then compare with the amount), without the key
    formatting and error wrapping that made up half of the middleware's cost in a profile
    (about 2 µs of 4 per hit). A shared store is awaited through ``limits``' asyncio
    strategies, so a Redis round trip never blocks the loop.
    """

    def __init__(self, uri: str = MEMORY_URI, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._shared: limits.aio.strategies.FixedWindowRateLimiter | None = None
        if _is_memory(uri):
            self.storage: BoundedMemoryStorage | None = BoundedMemoryStorage(max_keys=max_keys)
        else:
            self.storage = None
            self._shared = limits.aio.strategies.FixedWindowRateLimiter(open_async_storage(uri))

    def _now(self) -> float:
        return self.storage.clock() if self.storage is not None else time.time()

    async def hit(self, rate: Rate, key: str, *, cost: int = 1) -> int:
        """Counts ``cost`` against ``key``: 0 if within ``rate``, else the seconds to wait."""
        storage = self.storage
        if storage is not None:
            count, reset_at = storage.count(rate.key_prefix + key, rate.seconds, cost)
            return 0 if count <= rate.amount else _retry_after(reset_at, storage.clock())
        assert self._shared is not None
        try:
            if await self._shared.hit(rate.item, key, cost=cost):
                return 0
            reset_at = (await self._shared.get_window_stats(rate.item, key)).reset_time
        except StorageError as exc:
            log.warning("rate limit storage failed; request allowed", error=str(exc))
            return 0
        return _retry_after(reset_at, self._now())

    async def exhausted(self, rate: Rate, key: str) -> int:
        """Without counting: 0 while ``key`` is within ``rate``, else the seconds to wait."""
        storage = self.storage
        if storage is not None:
            count, reset_at = storage.peek(rate.key_prefix + key)
            return 0 if count < rate.amount else _retry_after(reset_at, storage.clock())
        assert self._shared is not None
        try:
            if await self._shared.test(rate.item, key):
                return 0
            reset_at = (await self._shared.get_window_stats(rate.item, key)).reset_time
        except StorageError as exc:
            log.warning("rate limit storage failed; request allowed", error=str(exc))
            return 0
        return _retry_after(reset_at, self._now())
