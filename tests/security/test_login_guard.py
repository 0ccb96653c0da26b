"""The sign-in guard: lockout with exponential back-off, credential-stuffing detection, bounded
memory. Pure: the clock is a number passed in."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from nexus.security.login_guard import (
    GuardPolicy,
    LoginGuard,
    Reason,
    sources_of,
)

POLICY = GuardPolicy(
    lockout_threshold=5,
    lockout_base_seconds=30,
    lockout_max_seconds=3600,
    stuffing_window_seconds=600,
    stuffing_accounts_per_address=10,
    stuffing_accounts_per_network=30,
    stuffing_block_seconds=3600,
    spike_min_accounts=20,
    spike_failure_ratio=0.9,
    spike_accounts_per_source=3,
)
# The same without the spike, to see the per-source thresholds alone.
NO_SPIKE = replace(POLICY, spike_min_accounts=10**9)
ALICE = "alice@example.test"
HOME = "198.51.100.7"


def fail(guard: LoginGuard, account: str, address: str, now: float) -> set[Reason]:
    return {e.reason for e in guard.record_failure(account=account, address=address, now=now)}


def test_five_failures_lock_the_account_for_30_s() -> None:
    guard = LoginGuard(POLICY)
    for i in range(4):
        assert fail(guard, ALICE, HOME, now=i) == set()
        assert guard.check(account=ALICE, address=HOME, now=i).allowed
    events = guard.record_failure(account=ALICE, address=HOME, now=4)
    assert [(e.reason, e.count, e.retry_after) for e in events] == [(Reason.ACCOUNT_LOCKED, 5, 30)]
    refused = guard.check(account=ALICE, address=HOME, now=5)
    assert (refused.allowed, refused.reason, refused.retry_after) == (
        False,
        Reason.ACCOUNT_LOCKED,
        29,
    )
    assert guard.check(account=ALICE, address=HOME, now=34).allowed


def test_each_further_failure_doubles_the_lock_up_to_the_cap() -> None:
    guard = LoginGuard(POLICY)
    now = 0.0
    for _ in range(4):
        fail(guard, ALICE, HOME, now)
    locks = []
    for _ in range(10):
        (event,) = guard.record_failure(account=ALICE, address=HOME, now=now)
        locks.append(event.retry_after)
        assert guard.check(account=ALICE, address=HOME, now=now + event.retry_after - 1).reason
        now += event.retry_after  # the next try comes once the lock has passed
        assert guard.check(account=ALICE, address=HOME, now=now).allowed
    assert locks == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_the_lock_is_the_accounts_from_every_address() -> None:
    guard = LoginGuard(POLICY)
    for i in range(5):
        fail(guard, ALICE, HOME, now=i)
    assert guard.check(account=ALICE, address="203.0.113.9", now=5).reason is (
        Reason.ACCOUNT_LOCKED
    )
    assert guard.check(account="bob@example.test", address=HOME, now=5).allowed


def test_a_success_resets_the_count() -> None:
    guard = LoginGuard(POLICY)
    for i in range(5):
        fail(guard, ALICE, HOME, now=i)
    guard.record_success(account=ALICE, address=HOME, now=40)
    assert guard.check(account=ALICE, address=HOME, now=40).allowed
    for i in range(4):
        assert fail(guard, ALICE, HOME, now=41 + i) == set()  # counting from one again
    assert fail(guard, ALICE, HOME, now=46) == {Reason.ACCOUNT_LOCKED}


def test_failures_are_forgotten_after_a_quiet_day() -> None:
    guard = LoginGuard(POLICY)
    for i in range(4):
        fail(guard, ALICE, HOME, now=i)
    later = 3 + POLICY.failure_memory_seconds + 1
    assert fail(guard, ALICE, HOME, now=later) == set()


def test_an_account_that_does_not_exist_locks_the_same_way() -> None:
    # The guard never asks whether an account exists, so its answers cannot tell.
    guard = LoginGuard(POLICY)
    for i in range(5):
        fail(guard, "nobody@example.test", HOME, now=i)
        fail(guard, ALICE, HOME, now=i)
    assert guard.check(account="nobody@example.test", address=HOME, now=6) == guard.check(
        account=ALICE, address=HOME, now=6
    )


def test_one_address_failing_on_many_accounts_is_blocked() -> None:
    guard = LoginGuard(POLICY)
    attacker = "203.0.113.66"
    for i in range(9):
        assert fail(guard, f"user{i}@example.test", attacker, now=i) == set()
    events = guard.record_failure(account="user9@example.test", address=attacker, now=9)
    assert [(e.reason, e.subject, e.count, e.retry_after) for e in events] == [
        (Reason.CREDENTIAL_STUFFING, attacker, 10, 3600)
    ]
    blocked = guard.check(account="someone-new@example.test", address=attacker, now=10)
    assert (blocked.allowed, blocked.reason, blocked.retry_after) == (
        False,
        Reason.CREDENTIAL_STUFFING,
        3599,
    )
    # Others, and the accounts themselves from elsewhere, are not affected.
    assert guard.check(account="user0@example.test", address=HOME, now=10).allowed
    assert guard.check(account="user0@example.test", address=attacker, now=9 + 3600).allowed


def test_accounts_spread_beyond_the_window_do_not_add_up() -> None:
    guard = LoginGuard(POLICY)
    attacker = "203.0.113.66"
    for i in range(30):
        assert fail(guard, f"user{i}@example.test", attacker, now=i * 100.0) == set()
    assert guard.check(account=ALICE, address=attacker, now=3000).allowed


def test_a_network_failing_on_many_accounts_is_blocked() -> None:
    guard = LoginGuard(NO_SPIKE)
    # One account from each of 30 addresses of one /24: no address alone crosses its line.
    events = set()
    for i in range(30):
        events |= fail(guard, f"user{i}@example.test", f"203.0.113.{i + 1}", now=i)
    assert events == {Reason.CREDENTIAL_STUFFING}
    assert not guard.check(account=ALICE, address="203.0.113.200", now=31).allowed
    assert guard.check(account=ALICE, address="203.0.114.1", now=31).allowed


def test_ipv6_addresses_group_by_their_64() -> None:
    assert sources_of("2001:db8:1:2::99") == (
        ("2001:db8:1:2::99", False),
        ("2001:db8:1:2::/64", True),
    )
    assert sources_of("::ffff:203.0.113.5")[0] == ("203.0.113.5", False)
    assert sources_of("testclient") == (("testclient", False),)
    guard = LoginGuard(NO_SPIKE)
    for i in range(30):
        fail(guard, f"user{i}@example.test", f"2001:db8:1:2::{i + 1:x}", now=i)
    assert not guard.check(account=ALICE, address="2001:db8:1:2:ffff::1", now=31).allowed
    assert guard.check(account=ALICE, address="2001:db8:1:3::1", now=31).allowed


def _spread_failures(guard: LoginGuard, accounts: int, now: float) -> None:
    """One failure each on ``accounts`` accounts, from as many different networks."""
    for i in range(accounts):
        fail(guard, f"victim{i}@example.test", f"192.0.{i % 250}.{i // 250 + 1}", now=now)


def test_a_distributed_spike_blocks_sources_sooner() -> None:
    guard = LoginGuard(POLICY)
    _spread_failures(guard, 25, now=0)
    assert guard.spike_active(now=1)
    bot = "198.18.0.1"
    assert fail(guard, "a@example.test", bot, now=1) == set()
    assert fail(guard, "b@example.test", bot, now=2) == set()
    assert fail(guard, "c@example.test", bot, now=3) == {Reason.FAILURE_SPIKE}
    refused = guard.check(account=ALICE, address=bot, now=4)
    assert (refused.allowed, refused.reason) == (False, Reason.FAILURE_SPIKE)


def test_no_spike_while_most_sign_ins_succeed() -> None:
    guard = LoginGuard(POLICY)
    for i in range(300):
        guard.record_success(account=f"happy{i}@example.test", address=HOME, now=0)
    _spread_failures(guard, 25, now=0)
    assert not guard.spike_active(now=1)
    bot = "198.18.0.1"
    for name in "abc":
        assert fail(guard, f"{name}@example.test", bot, now=1) == set()
    assert guard.check(account=ALICE, address=bot, now=2).allowed


def test_the_spike_passes_with_its_window() -> None:
    guard = LoginGuard(POLICY)
    _spread_failures(guard, 25, now=0)
    assert guard.spike_active(now=1)
    assert not guard.spike_active(now=POLICY.stuffing_window_seconds + 1)


def test_memory_stays_bounded() -> None:
    guard = LoginGuard(GuardPolicy(max_tracked=100, spike_min_accounts=10**9))
    for i in range(5000):
        guard.record_failure(
            account=f"user{i}@example.test",
            address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            now=i,
        )
    assert guard.tracked() <= 300


@given(st.integers(min_value=0, max_value=10_000))
def test_the_lock_never_shrinks_and_never_passes_the_cap(failures: int) -> None:
    now, following = POLICY.lockout_seconds(failures), POLICY.lockout_seconds(failures + 1)
    assert 0 <= now <= following <= POLICY.lockout_max_seconds
