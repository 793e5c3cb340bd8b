"""Who is privileged or in a group: the system's user database (NSS), looked up with a short
cache."""

from __future__ import annotations

import grp
import os
import pwd
import time


class Accounts:
    """Group membership through NSS (files, sssd, LDAP), cached for `ttl` seconds per user."""

    def __init__(self, ttl: float = 60.0, max_entries: int = 10000):
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def groups(self, user: str) -> frozenset[str]:
        now = time.monotonic()
        hit = self._cache.get(user)
        if hit and hit[0] > now:
            return hit[1]
        names = frozenset(self._lookup(user))
        if len(self._cache) >= self._max:
            self._cache.pop(next(iter(self._cache)))
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


def is_privileged(policy, accounts: Accounts, user: str) -> bool:
    """Whether `user` is privileged under `policy` (a PolicyConfig): root, a listed user or a
    member of a listed group. Privileged users need a device: no nullok, no SMS."""
    if user == "root" or user in policy.privileged_users:
        return True
    return bool(accounts.groups(user) & set(policy.privileged_groups))


class StaticAccounts(Accounts):
    """Fixed memberships, for tests and for hosts whose users are not system accounts."""

    def __init__(self, memberships: dict[str, set[str]] | None = None):
        super().__init__()
        self._fixed = {u: frozenset(g) for u, g in (memberships or {}).items()}

    def groups(self, user: str) -> frozenset[str]:
        return self._fixed.get(user, frozenset())
