"""The timing of password checks: no enumeration by it, and a bound on how many may queue.

A directory or pam_unix answers an unknown user (or an account without a password hash) at once,
and a wrong password for a real account only after hashing or binding. So a reject that came
back much faster than the checks that did the work (successes, and rejects as slow as they) is
held on the loop (asyncio.sleep, never a thread) until it has taken as long as one of those,
drawn at random from the recent ones: its time follows theirs. Shared by the backends that run
checks on threads (passwords.PamPasswords, ldap_passwords.LdapPasswords).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from collections import deque
from concurrent.futures import ThreadPoolExecutor

# Seconds a fast reject is padded to until a check that did the work has been timed.
COLD_PAD = 0.05
TIMINGS_KEPT = 64  # recent durations of checks that did the work: the padding follows them


class Overloaded(Exception):
    """Too many password checks are queued: drop the request, the client will retransmit."""


class ThreadedChecks:
    """`run` of a backend whose blocking work (a PAM conversation, a bind, an NSS look-up) runs
    on its thread pool `_pool`, with at most `max_queued` waiting (Overloaded beyond)."""

    _pool: ThreadPoolExecutor
    _pending: int
    max_queued: int
    queued = "password checks"  # what the Overloaded message says is queued

    async def run(self, fn, *args):
        """`fn(*args)` on the pool's threads: NSS look-ups (getpwnam, getgrouplist) may ask a
        directory server, and an unknown name must not hold the packet loop."""
        if self._pending >= self.max_queued:
            raise Overloaded(f"{self._pending} {self.queued} queued")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1


class Padding:
    """The timing of the checks that did the work (hashed, bound), and the wait that makes a
    fast reject look like one of them (the module's docstring)."""

    def __init__(self):
        self._timings: deque[float] = deque(maxlen=TIMINGS_KEPT)

    async def after(self, ok: bool, elapsed: float) -> None:
        """Record a check that took `elapsed` seconds, or hold a fast reject until it looks
        like the others."""
        timings = self._timings
        typical = statistics.median(timings) if timings else COLD_PAD
        if ok or elapsed >= typical / 2:
            timings.append(elapsed)  # it did the work: what the others must look like
        else:
            await asyncio.sleep(self.target() - elapsed)

    async def pad(self) -> None:
        await asyncio.sleep(self.target())

    def target(self) -> float:
        return secrets.choice(self._timings) if self._timings else COLD_PAD
