"""The PostgreSQL schema's history, keyed on the `schema_version` table.

Version 1 is postgres_schema.sql. A later change adds a numbered step to MIGRATIONS (a function
of the connection, run inside the migrating transaction) and raises SCHEMA_VERSION; a node
refuses a database whose version is newer than it knows (another node was upgraded first).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

SCHEMA_VERSION = 1
# The version postgres_schema.sql describes: a new database starts there.
SCHEMA_FILE_VERSION = 1
# Every node migrates under this advisory lock (transaction-scoped): one at a time.
MIGRATION_LOCK = 0x6D666172  # "mfar"

MIGRATIONS: dict[int, Callable] = {}


def current_version(conn) -> int:
    """The schema version of the database, 0 when it holds no mfa-radius schema yet."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def upgrade(conn, version: int) -> None:
    """Bring the schema from `version` (0: empty) to SCHEMA_VERSION, inside the caller's
    transaction."""
    if version == 0:
        script = resources.files(__package__).joinpath("postgres_schema.sql").read_text(
            encoding="utf-8")
        conn.execute(script)
        version = SCHEMA_FILE_VERSION
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    for step in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[step](conn)
        conn.execute("UPDATE schema_version SET version = %s", (step,))
