"""The PostgreSQL backend's connections: a small pool (psycopg_pool), errors as one line naming
the database (never its password), the schema brought up to date, transactions and savepoints.
The queries (postgres_devices.py, postgres_users.py, postgres_audit.py) are mixins over it,
combined in postgres.PostgresStore.

A transaction holds one pooled connection until it ends; a read outside one borrows a
connection for that statement (autocommit), as SQLite's autocommit reads do. A connection the
database dropped (a restart, a network cut) is found by the pool's check before it is handed
out and replaced, so service resumes by itself once the database is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config.schema import StorageConfig
from ..errors import StoreError, TransactionLost
from ..secret_files import read_password
from . import postgres_migrations as migrations
from .postgres_steplog import PgStepLog


# The pool logs each failed reconnect on several lines; a failed request is already one
# StoreError line from the caller (rate-limited by the server), so only its own errors show.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# After the database could not be reached, requests fail at once for this long instead of each
# waiting connect_timeout for a connection: a server's packet loop stays responsive (and drops,
# failing closed) during an outage, and tries the database again this often.
RETRY_AFTER = 1.0
# A pooled connection used within this many seconds is handed out without the pool's check (a
# round trip each time): under load every batch would pay it. One the database dropped since is
# then found by its first statement, which fails that batch alone (closed); the pool replaces it.
CHECK_IDLE = 1.0


def one_line(exc: BaseException, password: str = "") -> str:
    """psycopg's message on one line, without the password should libpq ever echo it."""
    if isinstance(exc, PoolTimeout):
        text = "no connection to the database (is it down or unreachable?)"
    else:
        text = "; ".join(p.strip() for p in str(exc).splitlines() if p.strip()) or \
            type(exc).__name__
    if password:
        text = text.replace(password, "********")
    return text


class PgConnection:
    """The pool of one node's connections to the shared database."""

    shared = True

    def __init__(self, storage: StorageConfig):
        self.path = storage.dsn  # what errors name (config.checks refuses a DSN with a password)
        self._password = read_password(storage.password_file) if storage.password_file else ""
        self._kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(storage.connect_timeout)),
            "options": f"-c statement_timeout={int(storage.statement_timeout * 1000)}",
            "application_name": "mfa-radius",
            "autocommit": True,
        }
        if self._password:
            self._kwargs["password"] = self._password
        for key in ("sslmode", "sslrootcert"):
            if getattr(storage, key):
                self._kwargs[key] = getattr(storage, key)
        self._timeout = storage.connect_timeout
        self._pool_size = storage.pool_size
        self._pool: ConnectionPool | None = None
        self._down_until = 0.0  # monotonic time before which the database is not tried again
        # Pooled connection -> when it was last used; weak, so a connection the pool replaced
        # leaves by itself.
        self._used: weakref.WeakKeyDictionary[psycopg.Connection, float] = \
            weakref.WeakKeyDictionary()
        self._local = threading.local()
        self.steps = PgStepLog(self)

    # ---- opening -------------------------------------------------------------------------------

    def _open(self, create: bool, readonly: bool = False) -> None:
        """Connect once (a precise error when the database cannot be reached), bring the schema
        up to date (with `create`, create it in an empty database), then start the pool."""
        try:
            conn = psycopg.connect(self.path, **self._kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"{self.path}: cannot connect to the database: "
                             f"{one_line(exc, self._password)}") from None
        try:
            with self.errors("open"):
                self._migrate(conn, create, readonly)
        finally:
            conn.close()
        self._pool = ConnectionPool(self.path, kwargs=self._kwargs, min_size=1,
                                    max_size=self._pool_size, timeout=self._timeout,
                                    check=self._check_idle, open=False,
                                    name="mfa-radius", reconnect_timeout=24 * 3600.0)
        try:
            self._pool.open(wait=True, timeout=self._timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"{self.path}: cannot connect to the database") from None

    def _migrate(self, conn: psycopg.Connection, create: bool, readonly: bool) -> None:
        version = migrations.current_version(conn)
        if version > migrations.SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema v{version} is newer than this "
                             f"mfa-radius (v{migrations.SCHEMA_VERSION}); upgrade mfa-radius")
        if version == migrations.SCHEMA_VERSION:
            return
        if version == 0 and not create:
            raise StoreError(f"{self.path}: no mfa-radius schema in this database (create it "
                             "with 'mfa-radius init')")
        if readonly:
            raise StoreError(f"{self.path}: database schema v{version} is older than this "
                             f"mfa-radius (v{migrations.SCHEMA_VERSION}); 'mfa-radius init' or "
                             "'serve' brings it up to date")
        with conn.transaction():
            # One node migrates at a time; the others find the work done.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK,))
            version = migrations.current_version(conn)
            if version < migrations.SCHEMA_VERSION:
                migrations.upgrade(conn, version)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # ---- errors --------------------------------------------------------------------------------

    @property
    def _doing(self) -> list[str]:
        stack = getattr(self._local, "doing", None)
        if stack is None:
            stack = self._local.doing = []
        return stack

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn psycopg's errors into one clear StoreError line naming the database."""
        self._doing.append(doing)
        try:
            yield
        except psycopg.Error as exc:
            raise StoreError(f"{self.path}: {doing} failed: "
                             f"{one_line(exc, self._password)}") from None
        finally:
            self._doing.pop()

    def _store_error(self, exc: psycopg.Error) -> StoreError:
        doing = self._doing[-1] if self._doing else "database access"
        return StoreError(f"{self.path}: {doing} failed: {one_line(exc, self._password)}")

    # ---- transactions --------------------------------------------------------------------------

    @property
    def _tx(self) -> psycopg.Connection | None:
        return getattr(self._local, "tx", None)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction on one pooled connection: committed on success, rolled back on any
        error. Inside another transaction() of this thread, it joins that one."""
        if self._tx is not None:
            yield self._tx
            return
        try:
            with self._pooled() as conn:
                conn.execute("BEGIN")
                self._local.tx = conn
                try:
                    yield conn
                except BaseException:
                    self._local.tx = None
                    if not conn.closed and conn.info.transaction_status != \
                            psycopg.pq.TransactionStatus.UNKNOWN:
                        conn.execute("ROLLBACK")
                    raise
                self._local.tx = None
                conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._local.tx = None
            raise self._store_error(exc) from None

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside transaction(): the writes of the block are undone if it raises, the rest of
        the transaction stays. TransactionLost when the connection was lost (nothing of the
        transaction can be committed then)."""
        conn = self._tx
        if conn is None:
            raise StoreError(f"{self.path}: a savepoint outside a transaction")
        try:
            conn.execute("SAVEPOINT attempt")
        except psycopg.Error as exc:
            raise TransactionLost(f"{self.path}: the transaction was lost: "
                                  f"{one_line(exc, self._password)}") from None
        try:
            yield
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK TO SAVEPOINT attempt")
                conn.execute("RELEASE SAVEPOINT attempt")
            except psycopg.Error as again:
                raise TransactionLost(f"{self.path}: cannot undo a failed step: "
                                      f"{one_line(again, self._password)}") from None
            if isinstance(exc, psycopg.OperationalError) and conn.broken:
                raise TransactionLost(f"{self.path}: the transaction was rolled back: "
                                      f"{one_line(exc, self._password)}") from None
            raise
        conn.execute("RELEASE SAVEPOINT attempt")

    # ---- running statements ------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        """The transaction's connection, or a pooled one for one autocommit statement."""
        tx = self._tx
        if tx is not None:
            yield tx
            return
        with self._pooled() as conn:
            yield conn

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool; within RETRY_AFTER of a failure to reach the database, a
        StoreError at once."""
        if self._pool is None:
            raise StoreError(f"{self.path}: the database connection is closed")
        if time.monotonic() < self._down_until:
            raise StoreError(f"{self.path}: the database is unreachable (tried again every "
                             f"{RETRY_AFTER:g} s)")
        try:
            with self._pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._used[conn] = time.monotonic()
        except PoolTimeout:  # no connection could be had: down or unreachable
            self._down_until = time.monotonic() + RETRY_AFTER
            raise

    def _check_idle(self, conn: psycopg.Connection) -> None:
        """The pool's check of a connection before handing it out, skipped when it was in use
        a moment ago (CHECK_IDLE)."""
        if time.monotonic() - self._used.get(conn, 0.0) >= CHECK_IDLE:
            ConnectionPool.check_connection(conn)

    def _all(self, sql: str, args: Iterable = ()) -> list[tuple]:
        with self._conn() as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    def _one(self, sql: str, args: Iterable = ()) -> tuple | None:
        with self._conn() as conn:
            return conn.execute(sql, tuple(args)).fetchone()

    def _row(self, sql: str, args: Iterable = ()) -> tuple:
        """The one row of an aggregate query (always there)."""
        row = self._one(sql, args)
        if row is None:
            raise StoreError(f"{self.path}: a query returned no row")
        return row

    def _value(self, sql: str, args: Iterable = ()) -> Any:
        row = self._one(sql, args)
        return None if row is None else row[0]

    def _run(self, sql: str, args: Iterable = ()) -> int:
        """Run a write; how many rows it changed."""
        with self._conn() as conn:
            return conn.execute(sql, tuple(args)).rowcount

    def _many(self, sql: str, rows: Iterable[Iterable]) -> None:
        with self._conn() as conn, conn.cursor() as cur:
            cur.executemany(sql, [tuple(r) for r in rows])
