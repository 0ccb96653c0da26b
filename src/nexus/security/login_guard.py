"""Sign-in lockout with exponential back-off, and credential-stuffing detection.

Pure: no I/O, no clock of its own -- every call is told the time -- so tests replay hours of
attacks in microseconds. The sign-in route asks :meth:`LoginGuard.check` before it checks a
password, and reports the outcome with :meth:`LoginGuard.record_failure` or
:meth:`LoginGuard.record_success`; the failure answers which lockouts and blocks it started,
for the audit log.

Three defences, after OWASP's Authentication and Credential Stuffing Prevention cheat sheets:

* **Account lockout.** After ``lockout_threshold`` consecutive failures an account refuses
  sign-in for ``lockout_base_seconds``; each further failure (once the lock has passed)
  doubles it, up to ``lockout_max_seconds``. A success resets the count; so do
  ``failure_memory_seconds`` without a failure. Accounts that do not exist are tracked the
  same way, so a lockout says nothing about whether an account exists.
* **Credential stuffing from one source.** A source -- an address, or its network (/24 for
  IPv4, /64 for IPv6, where one subscriber holds a whole /64) -- that fails against many
  distinct accounts within ``stuffing_window_seconds`` is blocked for
  ``stuffing_block_seconds``: people mistype their own password, they do not try ten others.
* **A distributed spike.** Many distinct accounts failing across all sources with a high
  failure ratio is a botnet replaying a breach list, each bot trying a few accounts to stay
  under per-source thresholds. While such a spike lasts, a source is blocked after
  ``spike_accounts_per_source`` distinct accounts.

Memory is bounded: accounts, sources and the spike's account set each keep at most
``max_tracked`` entries, least recently used forgotten first; account names are kept as
digests, not as typed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Reason(StrEnum):
    """Why an attempt is refused."""

    ACCOUNT_LOCKED = "account-locked"
    CREDENTIAL_STUFFING = "credential-stuffing"
    FAILURE_SPIKE = "failure-spike"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    lockout_threshold: int = 5
    lockout_base_seconds: float = 30.0
    lockout_max_seconds: float = 3600.0
    failure_memory_seconds: float = 86_400.0
    stuffing_window_seconds: float = 600.0
    stuffing_accounts_per_address: int = 10
    stuffing_accounts_per_network: int = 30
    stuffing_block_seconds: float = 3600.0
    spike_min_accounts: int = 100
    spike_failure_ratio: float = 0.9
    spike_accounts_per_source: int = 3
    max_tracked: int = 100_000

    def lockout_seconds(self, failures: int) -> float:
        """The lock after ``failures`` consecutive failures: 0 below the threshold, then the
        base doubled per failure past it, capped."""
        if failures < self.lockout_threshold:
            return 0.0
        doublings = min(failures - self.lockout_threshold, 62)
        return float(min(self.lockout_base_seconds * 2**doublings, self.lockout_max_seconds))


@dataclass(frozen=True, slots=True)
class Decision:
    """May this attempt go ahead? If not, why, and in how many seconds to try again."""

    allowed: bool
    reason: Reason | None = None
    retry_after: int = 0


ALLOWED = Decision(allowed=True)


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A lockout or block that a failure started: what the audit log records.

    ``subject`` is the account for a lockout, the address or network for a block; ``count``
    the consecutive failures or the distinct accounts that triggered it."""

    reason: Reason
    subject: str
    count: int
    retry_after: int


@dataclass(slots=True)
class _Account:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(slots=True)
class _Source:
    # account digest -> time of its latest failure from this source, oldest first
    failed: OrderedDict[str, float] = field(default_factory=OrderedDict)
    blocked_until: float = 0.0
    reason: Reason = Reason.CREDENTIAL_STUFFING


def sources_of(address: str) -> tuple[tuple[str, bool], ...]:
    """The sources an address belongs to, as ``(key, is_network)``: the address itself and
    its /24 (IPv4) or /64 (IPv6). Something that is not an address is one source by itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ((address, False),)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return ((str(ip), False), (str(network), True))


def _digest(account: str) -> str:
    return hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _seconds(span: float) -> int:
    return max(1, math.ceil(span))


class LoginGuard:
    """The state of sign-in failures in this process. Thread-safe."""

    SPIKE_BUCKETS = 10

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        # Every account that failed recently, anywhere: digest -> time, oldest first.
        self._failed_accounts: OrderedDict[str, float] = OrderedDict()
        # [bucket start, attempts, failures] over the stuffing window, for the failure ratio.
        self._buckets: deque[list[float]] = deque()
        self._lock = threading.Lock()

    # --- questions ---------------------------------------------------------------------

    def check(self, *, account: str, address: str, now: float) -> Decision:
        """Whether a sign-in attempt for ``account`` from ``address`` may be checked at all."""
        with self._lock:
            for key, _network in sources_of(address):
                source = self._sources.get(key)
                if source is not None and source.blocked_until > now:
                    return Decision(False, source.reason, _seconds(source.blocked_until - now))
            state = self._accounts.get(_digest(account))
            if state is not None and state.locked_until > now:
                return Decision(False, Reason.ACCOUNT_LOCKED, _seconds(state.locked_until - now))
            return ALLOWED

    def tracked(self) -> int:
        """Entries held, all tables together: bounded by ``max_tracked`` per table (plus at
        most ``stuffing_accounts_per_network`` accounts per source)."""
        with self._lock:
            return len(self._accounts) + len(self._sources) + len(self._failed_accounts)

    def spike_active(self, *, now: float) -> bool:
        """Many distinct accounts failing across all sources, at a high failure ratio."""
        with self._lock:
            return self._spike(now)

    # --- outcomes ----------------------------------------------------------------------

    def record_failure(self, *, account: str, address: str, now: float) -> tuple[GuardEvent, ...]:
        """A wrong password (or an unknown account): the lockouts and blocks it starts."""
        policy = self.policy
        digest = _digest(account)
        events: list[GuardEvent] = []
        with self._lock:
            state = self._touch(self._accounts, digest, _Account)
            if now - state.last_failure > policy.failure_memory_seconds:
                state.failures = 0
            state.failures += 1
            state.last_failure = now
            lock = policy.lockout_seconds(state.failures)
            if lock:
                state.locked_until = now + lock
                events.append(
                    GuardEvent(Reason.ACCOUNT_LOCKED, account, state.failures, _seconds(lock))
                )
            self._count(now, failed=True)
            self._failed_accounts[digest] = now
            self._failed_accounts.move_to_end(digest)
            self._bound(self._failed_accounts)
            spike = self._spike(now)
            for key, network in sources_of(address):
                event = self._source_failure(key, network, digest, now, spike)
                if event is not None:
                    events.append(event)
        return tuple(events)

    def record_success(self, *, account: str, address: str, now: float) -> None:
        """A correct password: the account's failures are forgiven, here and in its sources."""
        digest = _digest(account)
        with self._lock:
            self._accounts.pop(digest, None)
            self._failed_accounts.pop(digest, None)
            for key, _network in sources_of(address):
                source = self._sources.get(key)
                if source is not None:
                    source.failed.pop(digest, None)
            self._count(now, failed=False)

    # --- internals (called holding the lock) -------------------------------------------

    def _source_failure(
        self, key: str, network: bool, digest: str, now: float, spike: bool
    ) -> GuardEvent | None:
        policy = self.policy
        source = self._touch(self._sources, key, _Source)
        if source.blocked_until > now:
            return None
        failed = source.failed
        horizon = now - policy.stuffing_window_seconds
        while failed and next(iter(failed.values())) < horizon:
            failed.popitem(last=False)
        failed[digest] = now
        failed.move_to_end(digest)
        threshold = (
            policy.stuffing_accounts_per_network
            if network
            else policy.stuffing_accounts_per_address
        )
        # Only as many accounts as it takes to decide are remembered per source.
        while len(failed) > max(threshold, 1):
            failed.popitem(last=False)
        limit = min(threshold, policy.spike_accounts_per_source) if spike else threshold
        if len(failed) < limit:
            return None
        source.blocked_until = now + policy.stuffing_block_seconds
        source.reason = (
            Reason.CREDENTIAL_STUFFING if len(failed) >= threshold else Reason.FAILURE_SPIKE
        )
        return GuardEvent(source.reason, key, len(failed), _seconds(policy.stuffing_block_seconds))

    def _count(self, now: float, *, failed: bool) -> None:
        width = self.policy.stuffing_window_seconds / self.SPIKE_BUCKETS
        if not self._buckets or now - self._buckets[-1][0] >= width:
            self._buckets.append([now, 0.0, 0.0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _spike(self, now: float) -> bool:
        policy = self.policy
        horizon = now - policy.stuffing_window_seconds
        while self._buckets and self._buckets[0][0] < horizon:
            self._buckets.popleft()
        failed = self._failed_accounts
        while failed and next(iter(failed.values())) < horizon:
            failed.popitem(last=False)
        if len(failed) < policy.spike_min_accounts:
            return False
        attempts = sum(b[1] for b in self._buckets)
        failures = sum(b[2] for b in self._buckets)
        return attempts > 0 and failures >= policy.spike_failure_ratio * attempts

    def _touch(self, table: OrderedDict[str, T], key: str, make: type[T]) -> T:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = make()
            self._bound(table)
        else:
            table.move_to_end(key)
        return entry

    def _bound(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self.policy.max_tracked:
            table.popitem(last=False)
