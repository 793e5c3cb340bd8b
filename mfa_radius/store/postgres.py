"""The PostgreSQL backend of the storage interface (interface.py): one database that several
mfa-radius nodes share (`[storage] backend = "postgresql"`).

Every guarantee of the single SQLite node holds across nodes because each consume is one
conditional write that PostgreSQL's row locks decide (a TOTP step through postgres_steplog.py,
an HOTP counter with `... WHERE counter <= %s`, a recovery or SMS code used once, a challenge
taken once), and a failure is counted in the database (`add_failure`), not from a node's cache.

Its parts live in modules by subject, as the SQLite backend's do: the pool, errors, schema and
transactions (postgres_conn.py), the queries as mixins (postgres_devices.py, postgres_users.py,
postgres_audit.py) and the step log (postgres_steplog.py); this module adds the key check,
copies and the (absent) background work. PostgresStore is more than 300 lines with what it
inherits for the reason SqliteStore is: one set of transactions over one pool.
"""

from __future__ import annotations

from ..config.schema import StorageConfig
from ..errors import StoreError
from .postgres_audit import PgAuditQueries
from .postgres_devices import PgDeviceQueries
from .postgres_users import PgUserQueries


class NoMaintenance:
    """PostgreSQL does its own upkeep (autovacuum): nothing runs beside the pool."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PostgresStore(PgDeviceQueries, PgUserQueries, PgAuditQueries):
    """A node's connections to the shared database, with the queries the verifier and the CLI
    use."""

    @classmethod
    def open(cls, storage: StorageConfig, *, create: bool = False,
             readonly: bool = False) -> PostgresStore:
        """Connect, and bring the schema up to date (with `create`, create it in an empty
        database); StoreError when it is newer than this mfa-radius knows."""
        store = cls(storage)
        store._open(create, readonly)
        return store

    def key_check(self) -> bytes | None:
        with self.errors("reading the key check"):
            value = self._value("SELECT sealed FROM key_check WHERE id = 1")
        return None if value is None else bytes(value)

    def set_key_check(self, sealed: bytes) -> bool:
        with self.errors("writing the key check"), self.transaction():
            return self._run("INSERT INTO key_check (id, sealed) VALUES (1, %s) "
                             "ON CONFLICT (id) DO NOTHING", (sealed,)) == 1

    def maintenance(self, loop) -> NoMaintenance:
        return NoMaintenance()

    def backup(self, dest: str) -> None:
        raise StoreError(f"{self.path}: 'mfa-radius backup' copies SQLite databases only; back "
                         "up a PostgreSQL database with pg_dump (and the key file apart from it)")

    def is_empty(self) -> bool:
        """No device and no user yet (what `store copy` may copy into)."""
        return not self._one("SELECT 1 FROM devices UNION ALL SELECT 1 FROM users LIMIT 1")
