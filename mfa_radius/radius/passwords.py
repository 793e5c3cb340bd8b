"""Primary password backends for the RADIUS front: `pam` (python-pam, off the loop) and `none`.

The interface is coroutines, `check(user, password) -> bool`, `pad()` (as long as a check, none
run) and `run(fn, *args)` (blocking look-ups off the loop), so that an LDAP bind or an upstream
RADIUS server can be added later as another small class.

No enumeration by timing: pam_unix answers an unknown user, or an account without a password
hash, at once, and a wrong password for a real account only after hashing it; password_timing.py
pads such fast rejects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ..config import Config
from .password_timing import COLD_PAD, TIMINGS_KEPT, Overloaded, Padding, ThreadedChecks

__all__ = ["COLD_PAD", "TIMINGS_KEPT", "NoPasswords", "Overloaded", "Padding", "PamPasswords",
           "backend"]

log = logging.getLogger("mfa_radius.radius")


class NoPasswords:
    """`password_backend = "none"`: the appliance checked the password; RADIUS sees the code
    only."""

    needs_password = False

    async def check(self, user: str, password: bytes) -> bool:
        return False

    async def pad(self) -> None:
        pass

    async def run(self, fn, *args):
        return fn(*args)

    def close(self) -> None:
        pass


class PamPasswords(ThreadedChecks):
    """Check passwords with python-pam against `service`, in a bounded thread pool.

    pam_authenticate blocks (a password hash on success, and pam_unix's fail delay of about two
    seconds on failure without `nodelay`), so it never runs on the event loop. A new `pam.pam()`
    per call: its handle is not thread-safe. The service must not contain pam_python: python-pam
    calling a stack with pam_python.so segfaults the calling process (Debian's libpython3.11).
    """

    needs_password = True

    def __init__(self, service: str, workers: int, max_queued: int | None = None):
        self.service = service
        self.workers = workers
        self.max_queued = max_queued if max_queued is not None else workers * 64
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pam")
        self._pending = 0
        self._padding = Padding()

    async def check(self, user: str, password: bytes) -> bool:
        """Whether `password` is `user`'s; a reject takes as long as a check that hashed."""
        if self._pending >= self.max_queued:
            raise Overloaded(f"{self._pending} password checks queued")
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False  # not what the user typed: a wrong shared secret garbles it like this
        if not text or "\x00" in text or "\x00" in user:
            return False  # the same for every user name: tells nothing about the account
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            ok, elapsed = await loop.run_in_executor(self._pool, _pam_check, self.service, user,
                                                     text)
        finally:
            self._pending -= 1
        await self._padding.after(ok, elapsed)
        return ok

    async def pad(self) -> None:
        """As long as a check, without one (a locked account: its password is not tried)."""
        await self._padding.pad()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pam_check(service: str, user: str, password: str) -> tuple[bool, float]:
    """(password accepted, seconds pam_authenticate took), on a worker thread."""
    import pam  # python-pam loads libpam through ctypes: only when this backend is used

    handle = pam.pam()
    started = time.monotonic()
    try:
        ok = bool(handle.authenticate(user, password, service=service, resetcreds=False))
    except Exception as exc:  # noqa: BLE001 - a PAM problem is a refusal, never a crash
        log.error("PAM service %s: %s", service, type(exc).__name__)
        return False, time.monotonic() - started
    elapsed = time.monotonic() - started
    if not ok and handle.code not in (7, 8, 10):  # AUTH_ERR, CRED_INSUFFICIENT, USER_UNKNOWN
        log.info("PAM service %s: %s (code %s)", service, handle.reason, handle.code)
    return ok, elapsed


def backend(cfg: Config, name: str | None = None):
    """The backend `name` (default: [radius] password_backend); clients may name their own."""
    name = name or cfg.radius.password_backend
    if name == "radius":
        from .upstream import RadiusPasswords

        return RadiusPasswords.from_config(cfg)
    if name == "none":
        return NoPasswords()
    if cfg.radius.password_backend == "ldap":
        from .ldap_passwords import LdapPasswords

        return LdapPasswords.from_config(cfg)
    return PamPasswords(cfg.radius.pam_service, cfg.radius.pam_workers)
