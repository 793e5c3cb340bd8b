"""The lockout arithmetic (rules.lockout), property-based: N consecutive failures lock for the
delay, doubling with each further failure, never past the cap; below N nothing locks."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, strategies as st

from mfa_radius.rules import lockout


@dataclass(frozen=True)
class Policy:
    lockout_failures: int
    lockout_delay: float
    lockout_max_delay: float


policies = st.builds(Policy, st.integers(1, 20), st.floats(1, 3600), st.floats(1, 86400)) \
    .filter(lambda p: p.lockout_max_delay >= p.lockout_delay)


@given(policies, st.integers(0, 10_000))
def test_lock_delay_follows_the_doubling_rule(policy, failures):
    delay = lockout.lock_delay(failures, policy)
    over = failures - policy.lockout_failures
    if over < 0:
        assert delay is None
    else:
        assert delay == min(policy.lockout_delay * 2 ** min(over, 32), policy.lockout_max_delay)
        assert policy.lockout_delay <= delay <= policy.lockout_max_delay


@given(policies, st.integers(0, 200))
def test_each_further_failure_locks_at_least_as_long(policy, failures):
    first = lockout.lock_delay(failures, policy)
    second = lockout.lock_delay(failures + 1, policy)
    assert second is not None or first is None
    if first is not None:
        assert first <= second <= max(2 * first, policy.lockout_max_delay)


@given(policies, st.integers(0, 10_000), st.floats(0, 2e9), st.floats(0, 2e9))
def test_locked_until_keeps_the_old_value_below_the_threshold(policy, failures, now, previous):
    until = lockout.locked_until(failures, now, previous, policy)
    delay = lockout.lock_delay(failures, policy)
    assert until == (previous if delay is None else now + delay)


def test_recovery_tries_while_locked_are_capped_per_hour():
    assert lockout.recovery_try_allowed(lockout.LOCKED_RECOVERY_PER_HOUR - 1)
    assert not lockout.recovery_try_allowed(lockout.LOCKED_RECOVERY_PER_HOUR)
