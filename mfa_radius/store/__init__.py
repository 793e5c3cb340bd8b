"""The only package that speaks SQL: the storage interface and its backends.

    interface.py     Storage, StepLog, Maintenance (Protocols), DuplicateDevice
    sqlite.py        SqliteStore, the SQLite backend (with sqlite_devices/_users/_audit.py)
    steplog.py       the SQLite step log: where a TOTP device's last used step is
    schema.sql       the SQLite schema a new database is created with
    migrations.py    the numbered steps that bring an older database to it
    checkpoints.py   the daemon's WAL checkpoints (SqliteStore.maintenance)

Callers open a database with `open_store(path, ...)` and use only what `Storage` names; a second
backend is a new module here and a branch in `open_store`.
"""

from __future__ import annotations

from .interface import DuplicateDevice, Maintenance, StepLog, Storage
from .migrations import SCHEMA_VERSION
from .sqlite import SqliteStore

# The name the rest of the code has always imported: the default (SQLite) backend.
Store = SqliteStore


def open_store(path: str, *, create: bool = False, readonly: bool = False,
               synchronous: str = "normal", busy_timeout: float = 10.0) -> Storage:
    """Open the database at `path` (with `create`, create it 0600; with `readonly`, for reading
    only: nothing is created, migrated or written) and bring its schema up to date."""
    if readonly:
        return SqliteStore.open_readonly(path)
    return SqliteStore.open(path, create=create, synchronous=synchronous,
                            busy_timeout=busy_timeout)


__all__ = ["DuplicateDevice", "Maintenance", "SCHEMA_VERSION", "SqliteStore", "StepLog",
           "Storage", "Store", "open_store"]
