"""The SQLite backend's connection: opening the file, mapping SQLite's errors to one line,
bringing the schema up to date, transactions and savepoints. The queries (sqlite_devices.py,
sqlite_users.py, sqlite_audit.py) are mixins over it, combined in sqlite.SqliteStore."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Self

from ..errors import StoreError, TransactionLost
from ..private_files import make_private_dirs
from . import migrations
from .steplog import StepLog


def _check_access(path: str, opened: bool = False) -> None:
    """Refuse, saying why, when this user may not use the database: SQLite only says "unable to
    open database file", and a directory that may not be searched hides the file. `opened`:
    SQLite has failed, so also look at the file's and the directory's permissions."""
    try:
        os.stat(path)
    except PermissionError:
        pass
    except OSError:  # missing, or a path through a file: said when it is created or opened
        return
    else:
        folder = os.path.dirname(os.path.abspath(path))
        # Effective ids: under sudo or su the real uid is the caller's, not root.
        if not opened or os.geteuid() == 0 or (
                os.access(path, os.R_OK | os.W_OK, effective_ids=True)
                and os.access(folder, os.W_OK | os.X_OK, effective_ids=True)):
            return
    raise StoreError(f"{path}: permission denied: run this as root (or as a user with read "
                     f"and write access to {path} and its directory)")


# The sqlite3 module "adapts" every parameter that is not an int, float, str or bytearray: for
# None it looks up `__adapt__` and `__conform__`, two failed attribute lookups that each build
# and discard an AttributeError (an audit row of a reject binds three to five NULLs). A
# registered adapter is found in its table first. The table is the sqlite3 module's, shared by
# the whole process, and there is no per-connection one; registering here is harmless to any
# other user of sqlite3 in the process: the adapter returns None itself, which sqlite3 binds as
# NULL exactly as it did before (tests/test_store.py::test_null_parameters_still_bind_null).
sqlite3.register_adapter(type(None), lambda value: value)


class SqliteConnection:
    """One connection to the database file."""

    shared = False  # this host's file: no other node writes it

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path
        self.steps = StepLog(conn)

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, create: bool = False, synchronous: str = "normal",
             busy_timeout: float = 10.0) -> Self:
        """Open (or with `create`, create 0600) the database and bring its schema up to date."""
        _check_access(path)
        if not os.path.exists(path):
            if not create:
                raise StoreError(f"{path}: database not found (create it with 'mfa-radius init')")
            try:
                make_private_dirs(os.path.dirname(os.path.abspath(path)))
                # 0600 whatever the umask; SQLite gives -wal and -shm the database's mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(f"{path}: cannot create database: {exc.strerror}") from None
        else:
            cls._check_empty(path, create)
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            store = cls(conn, path)
            with store.errors("open"):
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{path}: cannot switch the database to WAL mode "
                                     f"(journal_mode is {mode}); is the directory writable?")
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                # 16 MiB of page cache (default 2 MiB): the device pages a busy server updates
                # stay in memory even with a million enrolled users.
                conn.execute("PRAGMA cache_size = -16384")
                conn.execute("PRAGMA foreign_keys = ON")
                store._migrate()
        except sqlite3.Error as exc:
            _check_access(path, opened=True)
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        return store

    @staticmethod
    def _check_empty(path: str, create: bool) -> None:
        """An empty file (a truncated copy, a `touch`) would silently become a new, empty
        database with whatever mode it has: only `init` may do that, and makes it 0600."""
        try:
            empty = os.path.isfile(path) and os.path.getsize(path) == 0
            if empty and create:
                os.chmod(path, 0o600)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open database: {exc.strerror}") from None
        if empty and not create:
            raise StoreError(f"{path}: the database file is empty (0 bytes), not an mfa-radius "
                             "database; restore it from a backup, or run 'mfa-radius init' to "
                             "start a new one there")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn SQLite errors into one clear StoreError line naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text or "malformed" in text:
                hint = "the file is corrupt or not an mfa-radius database; restore it from a backup"
            elif "readonly" in text or ("unable to open" in text and not os.access(
                    os.path.dirname(os.path.abspath(self.path)), os.W_OK)):
                # WAL mode must create -wal and -shm next to the file: a read-only directory
                # (or mount) only shows up as "unable to open database file".
                hint = "the database (or its directory) is read-only"
            elif "disk is full" in text or "disk I/O" in text:
                hint = "the disk is full or failing"
            elif "locked" in text or "busy" in text:
                hint = "the database stayed locked by another process"
            else:
                hint = text
            raise StoreError(f"{self.path}: {doing} failed: {hint}") from None

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == migrations.SCHEMA_VERSION:
            return
        if version > migrations.SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema v{version} is newer than this "
                             f"mfa-radius (v{migrations.SCHEMA_VERSION}); upgrade mfa-radius")
        with self.transaction():
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version < migrations.SCHEMA_VERSION:
                migrations.upgrade(self.conn, version)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            # A failed COMMIT (deferred constraint, full disk) leaves the transaction open,
            # holding the write lock for every process: roll it back as well.
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside transaction(): the writes of the block are undone if it raises, the rest of
        the transaction stays. Raises TransactionLost when SQLite had to abandon the whole
        transaction (a full disk, an I/O error): nothing of it can be committed then."""
        self.conn.execute("SAVEPOINT attempt")
        try:
            yield
        except BaseException as exc:
            try:
                if not self.conn.in_transaction:
                    raise TransactionLost(f"{self.path}: the transaction was rolled back: "
                                          f"{exc}") from None
                self.conn.execute("ROLLBACK TO attempt")
                self.conn.execute("RELEASE attempt")
            except sqlite3.Error as again:
                raise TransactionLost(f"{self.path}: cannot undo a failed step: {again}") \
                    from None
            raise
        self.conn.execute("RELEASE attempt")
