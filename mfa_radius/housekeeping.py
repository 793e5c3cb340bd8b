"""Housekeeping: fold the step log, prune the audit log past its retention, and state that has
expired.

The daemon runs `periodic(...)` as an asyncio task (hourly, no timer unit needed); an admin or a
cron job can run the same pass with `run_once(config)` (the CLI's `mfa-radius housekeeping`).
The pass uses its own database connection in a worker thread and deletes in small transactions,
so it never stalls the event loop nor holds the write lock long enough to delay a login.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import metrics
from .config import Config
from .errors import MfaError
from .state import open_store

log = logging.getLogger("mfa_radius.housekeeping")

INTERVAL = 3600.0
# Let the daemon finish starting (and a crash loop show itself) before the first pass.
FIRST_DELAY = 60.0
# User rows that hold nothing but failure counters are dropped after this long without activity.
IDLE_USER_DAYS = 30
DAY = 86400.0


def prune(store, config: Config, now: float | None = None) -> dict[str, int]:
    """One pass over `store`: {"used": devices folded, "audit": rows, "sms_codes": rows,
    "users": rows, "changes": rows} deleted."""
    now = time.time() if now is None else now
    done = {"audit": 0}
    # The daemon folds the log itself when idle (fold_when_idle); this covers hosts where only
    # the PAM fallback or the CLI used steps.
    with store.errors("folding used steps"), store.transaction():
        done["used"] = store.steps.fold()
    days = config.storage.audit_retention_days
    if days:
        done["audit"] = store.prune_audit(now - days * DAY)
    done.update(store.prune_expired(now, idle_before=now - IDLE_USER_DAYS * DAY))
    return done


def run_once(config: Config, now: float | None = None) -> dict[str, int]:
    """Open the database, prune, close; log and count what was deleted."""
    store = open_store(config)
    try:
        done = prune(store, config, now)
    finally:
        store.close()
    if any(count for what, count in done.items() if what not in ("changes", "used")):
        log.info("housekeeping: %s", describe(done, config))
    metrics.AUDIT_PRUNED.inc(done["audit"])
    return done


def describe(done: dict[str, int], config: Config) -> str:
    """One line for the admin: what a pass deleted."""
    days = config.storage.audit_retention_days
    kept = f"older than {days} days" if days else "none: audit_retention_days = 0 keeps all"
    folded = (f"; used TOTP steps of {done['used']} devices folded"
              if done.get("used") else "")
    return (f"deleted {done.get('audit', 0)} audit rows ({kept}), "
            f"{done.get('sms_codes', 0)} expired SMS codes, "
            f"{done.get('users', 0)} idle user rows without devices{folded}")


async def periodic(get_config: Callable[[], Config], interval: float = INTERVAL,
                   first_delay: float = FIRST_DELAY) -> None:
    """Run a pass every `interval` seconds until cancelled; `get_config()` gives the live config
    (so a reload that changes the retention applies to the next pass). Errors are logged, never
    raised: a full disk must not stop the authentication server."""
    await asyncio.sleep(first_delay)
    while True:
        try:
            await asyncio.to_thread(run_once, get_config())
        except MfaError as exc:
            log.error("housekeeping failed: %s", exc)
        except Exception:
            log.exception("housekeeping failed")
        await asyncio.sleep(interval)


async def fold_when_idle(verifier, interval: float = 0.5) -> None:
    """The daemon's fold of the step log (Verifier.fold_due), a chunk per loop pass so that a
    request arriving meanwhile waits for one chunk at most."""
    while True:
        await asyncio.sleep(interval)
        try:
            while chunk := verifier.fold_due():
                if not verifier.fold(chunk):
                    break
                await asyncio.sleep(0)
        except Exception:  # the log waits for the next pass; the server goes on
            log.exception("folding the step log failed")
