"""WAL checkpoints for the daemon, off the event loop (SqliteStore.maintenance).

SQLite checkpoints at commit once the WAL holds 1,000 pages: the committing connection copies the
pages into the database file and fsyncs both files, and the WAL written since the last checkpoint
goes to disk in that fsync. On the daemon's connection that stalls the loop for the length of
two fsyncs every few hundred commits under load: the tail latency of every client.

So the daemon's connection does not checkpoint at commit (`defer_checkpoints`); a thread of
its own, on its own connection, runs PASSIVE checkpoints (the sqlite3 module releases the GIL in
them, and a PASSIVE checkpoint never blocks the writer). That alone never lets the WAL start
over: a busy writer always commits while the checkpoint runs, so the checkpoint ends a few frames
short, and SQLite restarts the WAL only when a write begins with every frame copied. Hence the
second half: when the thread has copied a large WAL it asks the loop to copy the last few frames
itself, between two of its transactions (a small checkpoint), after which the
next commit starts the WAL from the beginning.

If the thread stops working, SQLite's own checkpoint at commit takes over at FALLBACK_PAGES.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ..errors import StoreError

log = logging.getLogger("mfa_radius.checkpoints")

INTERVAL = 0.1  # seconds between two checkpoints of the thread
# A WAL this long (16 MiB of 4 KiB pages) is brought to its end by the loop, then starts over.
# Each such catch-up holds the loop for two fsyncs: rarely, with a long WAL.
RESTART_PAGES = 4000
FALLBACK_PAGES = 20000  # 80 MiB of WAL: the daemon's connection checkpoints at commit again


class Checkpointer:
    def __init__(self, store, loop: asyncio.AbstractEventLoop,
                 interval: float = INTERVAL, restart_pages: int = RESTART_PAGES):
        self.store = store  # the loop's connection
        self.loop = loop
        self.interval = interval
        self.restart_pages = restart_pages
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._catch_up_pending = False
        self._caught_up_at = 0  # the WAL's length when the loop was last asked to catch up
        self._failing = False

    def start(self) -> None:
        self.store.defer_checkpoints(FALLBACK_PAGES)
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            own = type(self.store).open(self.store.path)
        except StoreError as exc:
            log.error("WAL checkpoints left to SQLite's checkpoint at commit: %s", exc)
            return
        try:
            while not self._stop.wait(self.interval):
                self._pass(own)
        finally:
            own.close()

    def _pass(self, own) -> None:
        try:
            busy, pages, copied = own.checkpoint()
        except StoreError as exc:
            if not self._failing:
                log.error("WAL checkpoint failed (retrying every %.1f s): %s", self.interval, exc)
            self._failing = True
            return
        if self._failing:
            log.info("WAL checkpoints work again")
            self._failing = False
        # An idle daemon's WAL stays this long until the next commit starts it over: one catch-up
        # for it is enough.
        if (pages >= self.restart_pages and not busy and not self._catch_up_pending
                and pages != self._caught_up_at):
            self._catch_up_pending, self._caught_up_at = True, pages
            try:
                self.loop.call_soon_threadsafe(self._catch_up)
            except RuntimeError:  # the loop is closed: the daemon is stopping
                self._stop.set()

    def _catch_up(self) -> None:
        """On the loop, between transactions: copy the frames committed since the thread's pass."""
        self._catch_up_pending = False
        try:
            self.store.checkpoint()
        except StoreError as exc:
            log.error("WAL checkpoint failed: %s", exc)
