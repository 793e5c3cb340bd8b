"""The daemon's WAL checkpoints: off the loop's connection, and the WAL still starts over."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

from mfa_radius.store import checkpoints
from mfa_radius.store.checkpoints import Checkpointer
from mfa_radius.store import Store

PAGE = 4096


def _busy_writer(store: Store, seconds: float,
                 most: int | None = None) -> Coroutine[Any, Any, int]:
    """Commits back to back, as a loaded server does, yielding to the loop between them, for
    `seconds` or until `most` commits."""

    async def write() -> int:
        commits = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until and (most is None or commits < most):
            with store.transaction():
                store.add_audit([(time.time(), f"u{commits}", "totp", "S1", "radius:t", "accept",
                                  "ok", None, None, None)])
            commits += 1
            await asyncio.sleep(0)
        return commits

    return write()


def _wal_pages(path: str) -> int:
    return os.path.getsize(path + "-wal") // PAGE


def test_wal_starts_over_under_a_steady_stream_of_commits(cfg):
    store = Store.open(cfg.storage.database)

    async def main():
        cp = Checkpointer(store, asyncio.get_running_loop(), interval=0.01, restart_pages=50)
        cp.start()
        try:
            return await _busy_writer(store, 1.5)
        finally:
            cp.stop()

    commits = asyncio.run(main())
    # Each commit appends at least one page: without a restart the WAL would hold them all.
    assert commits > 1000
    assert _wal_pages(cfg.storage.database) < commits / 4
    store.close()


def test_without_the_checkpointer_the_deferred_wal_keeps_growing(cfg):
    """The control for the test above: it is the Checkpointer that bounds the WAL."""
    store = Store.open(cfg.storage.database)
    store.defer_checkpoints(checkpoints.FALLBACK_PAGES)

    async def main():
        # Below the fallback: past it SQLite's own checkpoint at commit restarts the WAL, which
        # a fast machine reaches within the half second.
        return await _busy_writer(store, 0.5, most=checkpoints.FALLBACK_PAGES // 2)

    commits = asyncio.run(main())
    assert _wal_pages(cfg.storage.database) >= commits
    store.close()


def test_the_loops_connection_never_checkpoints_at_commit(cfg):
    store = Store.open(cfg.storage.database)
    store.defer_checkpoints(checkpoints.FALLBACK_PAGES)
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 20000
    store.close()


def test_a_database_the_thread_cannot_open_is_logged_and_sqlite_takes_over(cfg, caplog):
    store = Store.open(cfg.storage.database)

    async def main():
        cp = Checkpointer(store, asyncio.get_running_loop(), interval=0.01)
        store.path = os.path.join(os.path.dirname(cfg.storage.database), "gone", "mfa.db")
        cp.start()
        cp.stop()

    with caplog.at_level(logging.ERROR, logger="mfa_radius.checkpoints"):
        asyncio.run(main())
    assert "left to SQLite's checkpoint at commit" in caplog.text
    assert "database not found" in caplog.text
    store.close()


def test_an_idle_daemon_is_asked_to_catch_up_once(cfg):
    store = Store.open(cfg.storage.database)
    asked = []

    async def main():
        loop = asyncio.get_running_loop()
        cp = Checkpointer(store, loop, interval=0.01, restart_pages=20)
        cp._catch_up = lambda: asked.append(cp._caught_up_at) or setattr(
            cp, "_catch_up_pending", False)
        cp.start()
        try:
            await _busy_writer(store, 0.05)
            await asyncio.sleep(0.3)  # ~30 passes over the same long WAL, no commit
        finally:
            cp.stop()

    asyncio.run(main())
    assert asked and len(asked) == len(set(asked))  # never twice for the same WAL
    store.close()
