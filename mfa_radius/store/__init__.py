"""The only package that speaks SQL: the storage interface and its backends.

    interface.py     Storage, StepLog, Maintenance (Protocols), DuplicateDevice
    sqlite.py        SqliteStore, the SQLite backend (with sqlite_devices/_users/_audit.py)
    steplog.py       the SQLite step log: where a TOTP device's last used step is
    schema.sql       the SQLite schema a new database is created with
    migrations.py    the numbered steps that bring an older database to it
    checkpoints.py   the daemon's WAL checkpoints (SqliteStore.maintenance)
    postgres.py      PostgresStore, the shared PostgreSQL backend (with postgres_conn/_devices/
                     _users/_audit/_steplog.py, postgres_schema.sql, postgres_migrations.py)
    copy.py          `store copy`: a SQLite database into an empty PostgreSQL one

Callers open a database with `open_store(storage, ...)` (the [storage] settings, or a SQLite
path) and use only what `Storage` names.
"""

from __future__ import annotations

from ..config.schema import StorageConfig
from .interface import DuplicateDevice, Maintenance, StepLog, Storage
from .migrations import SCHEMA_VERSION
from .sqlite import SqliteStore

# The name the rest of the code has always imported: the default (SQLite) backend.
Store = SqliteStore


def open_store(path: str | StorageConfig, *, create: bool = False, readonly: bool = False,
               synchronous: str = "normal", busy_timeout: float = 10.0) -> Storage:
    """Open the database the [storage] settings name (or the SQLite file at `path`) and bring
    its schema up to date: with `create`, create it (a SQLite file 0600; the schema in an empty
    PostgreSQL database); with `readonly`, for reading only: nothing is created, migrated or
    written."""
    if isinstance(path, StorageConfig):
        storage = path
        if storage.backend == "postgresql":
            from .postgres import PostgresStore  # psycopg only where it is used

            return PostgresStore.open(storage, create=create, readonly=readonly)
        path, synchronous, busy_timeout = (storage.database, storage.synchronous,
                                           storage.busy_timeout)
    if readonly:
        return SqliteStore.open_readonly(path)
    return SqliteStore.open(path, create=create, synchronous=synchronous,
                            busy_timeout=busy_timeout)


__all__ = ["DuplicateDevice", "Maintenance", "SCHEMA_VERSION", "SqliteStore", "StepLog",
           "Storage", "Store", "open_store"]
