"""Primary password backends for the RADIUS front: `pam` (python-pam, off the loop) and `none`.

The interface is one coroutine, `check(user, password) -> bool`, so that an LDAP bind or an
upstream RADIUS server can be added later as another small class.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ..config import Config

log = logging.getLogger("mfa_radius.radius")


class Overloaded(Exception):
    """Too many password checks are queued: drop the request, the client will retransmit."""


class NoPasswords:
    """`password_backend = "none"`: the appliance checked the password; RADIUS sees the code
    only."""

    needs_password = False

    async def check(self, user: str, password: bytes) -> bool:
        return False

    def close(self) -> None:
        pass


class PamPasswords:
    """Check passwords with python-pam against `service`, in a bounded thread pool.

    pam_authenticate blocks (pam_unix takes ~50 ms on success, ~2 s on failure without `nodelay`),
    so it never runs on the event loop. A new `pam.pam()` per call: its handle is not thread-safe.
    The service must not contain pam_python (python-pam in this process would crash: FACTS.md).
    """

    needs_password = True

    def __init__(self, service: str, workers: int, max_queued: int | None = None):
        self.service = service
        self.workers = workers
        self.max_queued = max_queued if max_queued is not None else workers * 64
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pam")
        self._pending = 0

    async def check(self, user: str, password: bytes) -> bool:
        if self._pending >= self.max_queued:
            raise Overloaded(f"{self._pending} password checks queued")
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False  # not what the user typed: a wrong shared secret garbles it like this
        if not text or "\x00" in text or "\x00" in user:
            return False
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, _pam_check, self.service, user, text)
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pam_check(service: str, user: str, password: str) -> bool:
    import pam  # python-pam loads libpam through ctypes: only when this backend is used

    handle = pam.pam()
    try:
        ok = bool(handle.authenticate(user, password, service=service, resetcreds=False))
    except Exception as exc:  # noqa: BLE001 - a PAM problem is a refusal, never a crash
        log.error("PAM service %s: %s", service, type(exc).__name__)
        return False
    if not ok and handle.code not in (7, 8, 10):  # AUTH_ERR, CRED_INSUFFICIENT, USER_UNKNOWN
        log.info("PAM service %s: %s (code %s)", service, handle.reason, handle.code)
    return ok


def backend(cfg: Config):
    if cfg.radius.password_backend == "none":
        return NoPasswords()
    return PamPasswords(cfg.radius.pam_service, cfg.radius.pam_workers)
