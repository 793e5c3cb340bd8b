"""Lockout arithmetic: consecutive failures lock a user, the delay doubling up to a cap.

With the defaults ([policy] lockout_failures = 5, lockout_delay = 30, lockout_max_delay = 3600)
the fifth consecutive wrong code locks for 30 s, the sixth for 60 s, the seventh for 120 s, ...
never longer than an hour. A success (or `mfa-radius user unlock`) resets the count.
"""

from __future__ import annotations

from typing import Protocol

# Recovery codes checked per user and hour while the user is locked out (10 digits: guessing
# stays hopeless at this rate, and the owner is not shut out by someone who keeps them locked).
LOCKED_RECOVERY_PER_HOUR = 10
# 2**32 lockout delays already exceed any cap: the exponent stops there so the number stays small.
_MAX_DOUBLINGS = 32


class LockoutPolicy(Protocol):
    @property
    def lockout_failures(self) -> int: ...

    @property
    def lockout_delay(self) -> float: ...

    @property
    def lockout_max_delay(self) -> float: ...


def lock_delay(failures: int, policy: LockoutPolicy) -> float | None:
    """Seconds the `failures`-th consecutive failure locks the user for; None below the
    threshold (no lockout yet)."""
    over = failures - policy.lockout_failures
    if over < 0:
        return None
    return min(policy.lockout_delay * (2 ** min(over, _MAX_DOUBLINGS)), policy.lockout_max_delay)


def locked_until(failures: int, now: float, previous: float, policy: LockoutPolicy) -> float:
    """The user's `locked_until` after the `failures`-th consecutive failure at `now` (Unix
    time); `previous` (the value before) stays when the failure does not lock."""
    delay = lock_delay(failures, policy)
    return previous if delay is None else now + delay


def recovery_try_allowed(tries_this_hour: int) -> bool:
    """Whether a recovery code typed while locked is checked at all (LOCKED_RECOVERY_PER_HOUR)."""
    return tries_this_hour < LOCKED_RECOVERY_PER_HOUR
