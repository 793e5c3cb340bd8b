"""`password_backend = "ldap"`: the primary password checked by a bind to LDAP / Active
Directory (directory/ldap.py), on threads of its own, never on the packet loop.

Like PamPasswords: a bounded pool (Overloaded past it), and the same padding (passwords.Padding)
so that an unknown user, a wrong password and a locked account take alike. What a successful
bind found is kept per user for a while: the user's groups (which the policy and the reply
attributes read through `accounts()`), and the directory's name for them (`user_attribute`),
which becomes the name policy sees, so ALICE, alice@example.com and EXAMPLE\\alice are one user.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..accounts import Accounts
from ..config import Config
from ..directory.ldap import Directory, DirectoryError, Found
from ..errors import ConfigError
from ..rules.names import UserNameError, policy_rule
from ..secret_files import private_file_problem
from .password_timing import Overloaded, Padding, ThreadedChecks

log = logging.getLogger("mfa_radius.radius")

MAX_KNOWN = 10000  # users whose groups are kept


class LdapPasswords(ThreadedChecks):
    needs_password = True
    queued = "directory checks"

    def __init__(self, directory: Directory, cfg: Config):
        ldap = cfg.ldap
        self.directory = directory
        self.required = frozenset(g.lower() for g in ldap.required_groups)
        self.max_queued = ldap.pool_size * 64
        self._pool = ThreadPoolExecutor(max_workers=ldap.pool_size, thread_name_prefix="ldap")
        self._pending = 0
        self._padding = Padding()
        self._canonical, _ = policy_rule(cfg.policy)
        # Kept past a challenge's lifetime: the answer to it is decided with these groups.
        self._ttl = max(600.0, 2 * cfg.radius.challenge_timeout)
        self._known: dict[str, tuple[float, Found]] = {}
        self._aliases: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> LdapPasswords:
        return cls(Directory(cfg.ldap, read_bind_password(cfg.ldap.bind_password_file)), cfg)

    # ---- the backend interface (passwords.py) ---------------------------------------------

    async def check(self, user: str, password: bytes) -> bool:
        """Whether `password` is `user`'s in the directory; a reject takes as long as a bind."""
        if self._pending >= self.max_queued:
            raise Overloaded(f"{self._pending} directory checks queued")
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if not text or "\x00" in text or "\x00" in user:
            return False  # an empty password never reaches a bind (unauthenticated bind)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            found, elapsed = await loop.run_in_executor(self._pool, self._authenticate, user,
                                                        text)
        finally:
            self._pending -= 1
        if isinstance(found, DirectoryError):
            raise found  # the directory could not be asked: an error, not a wrong password
        await self._padding.after(found is not None, elapsed)
        if found is None:
            return False
        self._remember(user, found)
        return True

    async def pad(self) -> None:
        await self._padding.pad()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.directory.close()

    # ---- what a bind found -----------------------------------------------------------------

    def admits(self, user: str) -> bool:
        """After a successful bind: whether `user` is in one of required_groups (or none is
        required)."""
        if not self.required:
            return True
        found = self._found(user)
        return found is not None and not self.required.isdisjoint(g.lower()
                                                                   for g in found.groups)

    def name_of(self, user: str) -> str:
        """The directory's name for `user` (canonical form), after a successful bind."""
        found = self._found(user)
        if found is None:
            return user
        try:
            return self._canonical(found.name)
        except UserNameError:
            return user

    def alias(self, user: str) -> str:
        """The directory's name for a name a successful bind was made with (a challenge's
        answer arrives under the name as sent)."""
        hit = self._aliases.get(user)
        return hit[1] if hit and hit[0] > time.monotonic() else user

    def accounts(self, base: Accounts) -> Accounts:
        """`base` with the directory's groups for the users checked here."""
        return DirectoryAccounts(self, base)

    def groups_of(self, user: str) -> frozenset[str] | None:
        found = self._found(user)
        return found.groups if found else None

    def _found(self, user: str) -> Found | None:
        hit = self._known.get(user)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def _remember(self, user: str, found: Found) -> None:
        until = time.monotonic() + self._ttl
        name = self.name_of_found(found, user)
        with self._lock:
            for table in (self._known, self._aliases):
                while len(table) >= MAX_KNOWN:
                    table.pop(next(iter(table)), None)
            for key in {user, name}:
                self._known.pop(key, None)
                self._known[key] = (until, found)
            if name != user:
                self._aliases.pop(user, None)
                self._aliases[user] = (until, name)

    def name_of_found(self, found: Found, user: str) -> str:
        try:
            return self._canonical(found.name)
        except UserNameError:
            return user

    def _authenticate(self, user: str, password: str):
        """(Found, None for a refusal, or the DirectoryError when the directory could not be
        asked; seconds taken), on a worker thread."""
        started = time.monotonic()
        try:
            found = self.directory.authenticate(user, password)
        except DirectoryError as exc:
            return exc, time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - a directory problem is a refusal, never a crash
            return DirectoryError(f"LDAP: {type(exc).__name__}"), time.monotonic() - started
        return found, time.monotonic() - started


class DirectoryAccounts(Accounts):
    """Groups from the directory for the users it checked; the others' from `base` (NSS)."""

    def __init__(self, passwords: LdapPasswords, base: Accounts):
        super().__init__()
        self._passwords = passwords
        self._base = base

    def groups(self, user: str) -> frozenset[str]:
        found = self._passwords.groups_of(user)
        return found if found is not None else self._base.groups(user)


def read_bind_password(path: str) -> str:
    """The search account's password (the file's first line); "" without a file."""
    if not path:
        return ""
    problem = private_file_problem(path)
    if problem:
        raise ConfigError(f"[ldap] bind_password_file {problem}")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[ldap] bind_password_file {path}: cannot be read: {exc}") from None


def probe(cfg: Config) -> str:
    """`check-config --probe`: one line saying the directory answered, or DirectoryError."""
    if cfg.radius.password_backend != "ldap":
        raise ConfigError("--probe: [radius] password_backend is not \"ldap\": nothing to probe")
    directory = Directory(cfg.ldap, read_bind_password(cfg.ldap.bind_password_file))
    try:
        return f"ldap: OK, {directory.probe()}"
    except DirectoryError as exc:
        raise DirectoryError(f"ldap: {exc}") from None
    finally:
        directory.close()
