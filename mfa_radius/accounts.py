"""Who is privileged or in a group: the system's user database (NSS), looked up with a short
cache."""

from __future__ import annotations

import grp
import os
import pwd
import threading
import time


class Accounts:
    """Group membership through NSS (files, sssd, LDAP), cached for `ttl` seconds per user."""

    def __init__(self, ttl: float = 60.0, max_entries: int = 10000):
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        # The RADIUS front looks names up on worker threads and reads them on the loop.
        self._lock = threading.Lock()

    def groups(self, user: str) -> frozenset[str]:
        now = time.monotonic()
        hit = self._cache.get(user)
        if hit and hit[0] > now:
            return hit[1]
        names = frozenset(self._lookup(user))
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[user] = (now + self._ttl, names)
        return names

    @staticmethod
    def _lookup(user: str) -> set[str]:
        try:
            entry = pwd.getpwnam(user)
        except (KeyError, ValueError):
            return set()
        names = set()
        try:
            gids = os.getgrouplist(user, entry.pw_gid)
        except OSError:
            gids = [entry.pw_gid]
        for gid in gids:
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return names


class StaticAccounts(Accounts):
    """Fixed memberships, for tests and for hosts whose users are not system accounts."""

    def __init__(self, memberships: dict[str, set[str]] | None = None):
        super().__init__()
        self._fixed = {u: frozenset(g) for u, g in (memberships or {}).items()}

    def groups(self, user: str) -> frozenset[str]:
        return self._fixed.get(user, frozenset())
