"""The SQLite backend of the storage interface (interface.py): one database file in WAL mode.

Anything that consumes a code runs inside a short `BEGIN IMMEDIATE` transaction, and every
consume is a conditional write (an HOTP counter moves with `... WHERE counter <= ?`, a TOTP step
goes through the step log, a recovery or SMS code is used once), so two processes (the daemon and
a PAM fallback, or two CLI calls) can never both accept one code. A new database is created from
schema.sql; an older one is brought up to date by migrations.py.

SqliteStore is one class of more than 300 lines (with what it inherits) because it is one
connection with one set of transactions: everything a caller does between `transaction()` and
its commit must run on that connection. Its parts live in modules by subject: the connection
itself (sqlite_conn.py: opening, errors, migrations, transactions), the queries as mixins over it
(sqlite_devices.py, sqlite_users.py, sqlite_audit.py) and the step log (steplog.py); this module
adds the key check, others' commits, copies and the daemon's background work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import urllib.parse

from ..errors import StoreError
from .checkpoints import Checkpointer
from .sqlite_audit import AuditQueries
from .sqlite_conn import _check_access
from .sqlite_devices import DeviceQueries
from .sqlite_users import UserQueries


class SqliteStore(DeviceQueries, UserQueries, AuditQueries):
    """A connection to the database file, with the queries the verifier and the CLI use."""

    shared = False  # one node's file: no other server answers from it

    @classmethod
    def open_readonly(cls, path: str) -> SqliteStore:
        """Open an existing database for reading only (check-config): nothing is created,
        migrated or written, not even the WAL's files when they are missing."""
        _check_access(path)
        if not os.path.exists(path):
            raise StoreError(f"{path}: database not found (create it with 'mfa-radius init')")
        try:
            conn = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro",
                                   uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        return cls(conn, path)

    def user_summary(self, name: str) -> dict:
        row = self.user_row(name) or {"name": name, "failures": 0, "locked_until": 0.0,
                                      "last_success": None, "last_failure": None,
                                      "created_at": None}
        row["devices"] = [d["serial"] for d in self.user_devices(name)]
        row["recovery_codes_left"] = self.conn.execute(
            "SELECT count(*) FROM recovery_codes WHERE user = ? AND used_at IS NULL",
            (name,)).fetchone()[0]
        return row

    # ---- the key check (keycheck.py) ----------------------------------------------------------

    def key_check(self) -> bytes | None:
        """The sealed key-check constant, or None when no key has been bound yet."""
        with self.errors("reading the key check"):
            row = self.conn.execute("SELECT sealed FROM key_check WHERE id = 1").fetchone()
        return row[0] if row else None

    def set_key_check(self, sealed: bytes) -> bool:
        """Bind the database to a key (its sealed constant) unless one already is; True if this
        call wrote it. Runs its own transaction."""
        with self.errors("writing the key check"), self.transaction():
            return self.conn.execute("INSERT OR IGNORE INTO key_check (id, sealed) VALUES (1, ?)",
                                     (sealed,)).rowcount == 1

    def defer_checkpoints(self, pages: int) -> None:
        """Checkpoint at commit only once the WAL holds `pages` pages (SQLite's default: 1000);
        the daemon's Checkpointer does them before that."""
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE WAL checkpoint: (1 if it could not run, pages in the WAL, pages copied)."""
        with self.errors("WAL checkpoint"):
            busy, pages, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, pages, copied

    # ---- what other connections committed ------------------------------------------------------

    def changes_token(self) -> int:
        """A number that changes whenever another connection commits (never for our own
        commits): the cheap first test of UserCache.refresh."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def last_change(self) -> int:
        """The sequence number of the latest tracked change (0 when none)."""
        return self.conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]

    def changed_users(self, after: int, limit: int) -> tuple[int, int, set[str] | None]:
        """(oldest kept seq, latest seq, users changed after `after`); None instead of the set
        when more than `limit` users changed (drop everything instead)."""
        first, last = self.conn.execute(
            "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM changes").fetchone()
        rows = self.conn.execute("SELECT DISTINCT user FROM changes WHERE seq > ? LIMIT ?",
                                 (after, limit + 1)).fetchall()
        return first, last, None if len(rows) > limit else {r[0] for r in rows}

    # ---- copies and background work -------------------------------------------------------------

    def maintenance(self, loop) -> Checkpointer:
        """The daemon's background work for this connection (WAL checkpoints off the event
        loop): start() it once the loop runs, stop() it before closing."""
        return Checkpointer(self, loop)

    def backup(self, dest: str) -> None:
        """A consistent copy of the live database (SQLite online backup), created 0600.

        Written to a temporary file next to `dest` without a rollback journal, checked, then
        linked into place: a failure (a full disk, an interrupt) leaves neither a half-written
        `dest` nor a `dest-journal`, and an existing `dest` is never overwritten.
        """
        if os.path.lexists(dest):
            raise StoreError(f"{dest}: already exists; refusing to overwrite it")
        folder, name = os.path.split(os.path.abspath(dest))
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise StoreError(f"{dest}: cannot create backup: {exc.strerror}") from None
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                with self.errors("backup"):
                    # The copy is thrown away on any failure: no journal needed (or left).
                    target.execute("PRAGMA journal_mode = OFF")
                    self.conn.backup(target, pages=1024)
                    check = target.execute("PRAGMA integrity_check").fetchone()[0]
                    if check != "ok":
                        raise StoreError(f"{dest}: backup failed its integrity check: {check}")
            finally:
                target.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            try:
                os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwritten
            except FileExistsError:
                raise StoreError(f"{dest}: already exists; refusing to overwrite it") from None
            except OSError as exc:
                raise StoreError(f"{dest}: cannot create backup: {exc.strerror}") from None
        finally:
            for leftover in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
