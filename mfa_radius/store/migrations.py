"""The SQLite schema's history: one numbered migration per change, keyed on `PRAGMA user_version`.

A new database is created from schema.sql at SCHEMA_VERSION at once; these run only on a database
made by an older mfa-radius, in order, in one transaction (tests/test_store.py checks that a
database migrated from v1 equals a fresh one). They run under sqlite-utils, imported only when a
migration is due (it is slow to import). Each docstring says what the step did; the current design
is told in schema.sql and steplog.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from importlib import resources

SCHEMA_VERSION = 11
# The version schema.sql describes: a new database starts there.
SCHEMA_FILE_VERSION = 11


def _migrate_1(db) -> None:
    """Devices, users, recovery codes and the audit log."""
    db["devices"].create({
        "id": int, "serial": str, "kind": str, "virtual": int, "digits": int, "algorithm": str,
        "period": int, "counter": int, "last_step": int, "drift": int, "seed": bytes,
        "fingerprint": str, "user": str, "created_at": float, "enabled_at": float,
        "last_used_at": float,
    }, pk="id", not_null={"serial", "kind", "digits", "algorithm", "period", "counter",
                           "last_step", "drift", "seed", "fingerprint", "created_at", "virtual"},
        defaults={"virtual": 0, "period": 30, "counter": 0, "last_step": -1, "drift": 0})
    db["devices"].create_index(["serial"], unique=True)
    db["devices"].create_index(["fingerprint"], unique=True)
    db["devices"].create_index(["user"])
    db["users"].create({
        "name": str, "failures": int, "locked_until": float, "last_success": float,
        "last_failure": float, "created_at": float,
    }, pk="name", not_null={"failures", "locked_until", "created_at"},
        defaults={"failures": 0, "locked_until": 0.0})
    db["recovery_codes"].create({
        "id": int, "user": str, "salt": bytes, "hash": bytes, "created_at": float, "used_at": float,
    }, pk="id", not_null={"user", "salt", "hash", "created_at"})
    db["recovery_codes"].create_index(["user"])
    db["audit"].create({
        "id": int, "time": float, "user": str, "method": str, "serial": str, "source": str,
        "result": str, "reason": str,
    }, pk="id", not_null={"time", "result", "reason"})
    db["audit"].create_index(["time"])
    db["audit"].create_index(["user", "time"])


def _migrate_2(db) -> None:
    """SMS codes: the user's phone, the live code (only its HMAC), and the send log."""
    db["users"].add_column("phone", str)
    db["users"].add_column("sms_enabled_at", float)
    db["sms_codes"].create({"user": str, "hash": bytes, "created_at": float, "expires_at": float},
                           pk="user", not_null={"hash", "created_at", "expires_at"})
    db["sms_sends"].create({"id": int, "time": float, "user": str, "source": str},
                           pk="id", not_null={"time", "user"})
    db["sms_sends"].create_index(["time"])
    db["sms_sends"].create_index(["user", "time"])


def _migrate_3(db) -> None:
    """The `changes` table and its triggers (which users a write made stale), `resynced_at`, and
    the audit (user, time) index dropped."""
    conn = db.conn
    db["devices"].add_column("resynced_at", float)
    conn.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "user TEXT NOT NULL)")
    conn.execute("DROP INDEX IF EXISTS idx_audit_user_time")
    on_devices = {
        "insert": ("AFTER INSERT ON devices WHEN NEW.user IS NOT NULL",
                   "INSERT INTO changes (user) VALUES (NEW.user);"),
        "delete": ("AFTER DELETE ON devices WHEN OLD.user IS NOT NULL",
                   "INSERT INTO changes (user) VALUES (OLD.user);"),
        "update": ("AFTER UPDATE OF user, serial, seed, kind, digits, algorithm, period, counter, "
                   "resynced_at ON devices",
                   "INSERT INTO changes (user) SELECT OLD.user WHERE OLD.user IS NOT NULL; "
                   "INSERT INTO changes (user) SELECT NEW.user WHERE NEW.user IS NOT NULL "
                   "AND NEW.user IS NOT OLD.user;"),
    }
    for event, (when, body) in on_devices.items():
        conn.execute(f"CREATE TRIGGER changes_devices_{event} {when} BEGIN {body} END")
    for table, column in (("users", "name"), ("recovery_codes", "user")):
        conn.execute(f"CREATE TRIGGER changes_{table}_insert AFTER INSERT ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (NEW.{column}); END")
        conn.execute(f"CREATE TRIGGER changes_{table}_update AFTER UPDATE ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (OLD.{column}); END")
        conn.execute(f"CREATE TRIGGER changes_{table}_delete AFTER DELETE ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (OLD.{column}); END")


def _migrate_4(db) -> None:
    """A `used` table of TOTP accepts (device, step, drift, time) beside the device rows."""
    conn = db.conn
    conn.execute("CREATE TABLE used (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "device INTEGER NOT NULL, step INTEGER NOT NULL, drift INTEGER NOT NULL, "
                 "time REAL NOT NULL)")
    conn.execute("CREATE TRIGGER used_devices_delete AFTER DELETE ON devices "
                 "BEGIN DELETE FROM used WHERE device = OLD.id; END")


def _migrate_5(db) -> None:
    """The audit time index dropped: rows are appended in time order, so time bounds are found
    over the rowid."""
    db.conn.execute("DROP INDEX IF EXISTS idx_audit_time")


def _latest_by_device(rows: Iterable[tuple[int, int, int, float]]
                      ) -> dict[int, tuple[int, int, float]]:
    """{device id: (step, drift, time)} of each device's highest step among `rows`."""
    latest: dict[int, tuple[int, int, float]] = {}
    for device, step, drift, when in rows:
        if device not in latest or step > latest[device][0]:
            latest[device] = (step, drift, when)
    return latest


def _migrate_6(db) -> None:
    """`used` folded into the device rows and dropped; TOTP accepts carried their step in their
    audit row (audit.device, step, drift) past `fold_mark.upto`."""
    conn = db.conn
    for column in ("device", "step", "drift"):
        conn.execute(f"ALTER TABLE audit ADD COLUMN {column} INTEGER")
    latest = _latest_by_device(conn.execute("SELECT device, step, drift, time FROM used"))
    conn.executemany("UPDATE devices SET last_step = ?, drift = ?, last_used_at = ? "
                     "WHERE id = ? AND last_step < ?",
                     [(step, drift, when, device, step)
                      for device, (step, drift, when) in latest.items()])
    conn.execute("DROP TRIGGER IF EXISTS used_devices_delete")
    conn.execute("DROP TABLE used")
    conn.execute("CREATE TABLE fold_mark (upto INTEGER NOT NULL)")
    conn.execute("INSERT INTO fold_mark (upto) SELECT coalesce(max(id), 0) FROM audit")
    conn.execute("CREATE TRIGGER audit_devices_delete AFTER DELETE ON devices BEGIN "
                 "UPDATE audit SET device = NULL WHERE id > (SELECT upto FROM fold_mark) "
                 "AND device = OLD.id; END")


def _migrate_7(db) -> None:
    """`device_steps`: each device's last used step, folded from the audit rows."""
    conn = db.conn
    conn.execute("CREATE TABLE device_steps (device INTEGER PRIMARY KEY, step INTEGER NOT NULL, "
                 "drift INTEGER NOT NULL, used_at REAL NOT NULL)")
    conn.execute("CREATE TRIGGER device_steps_devices_delete AFTER DELETE ON devices "
                 "BEGIN DELETE FROM device_steps WHERE device = OLD.id; END")


def _migrate_8(db) -> None:
    """`name_rule` (NULL: names as typed, brought to the config's rule at the next open) and
    `name_clashes` (canonical name, stored name)."""
    conn = db.conn
    conn.execute("CREATE TABLE name_rule (rule TEXT)")
    conn.execute("INSERT INTO name_rule (rule) VALUES (NULL)")
    conn.execute("CREATE TABLE name_clashes (name TEXT NOT NULL, stored TEXT NOT NULL, "
                 "PRIMARY KEY (name, stored))")


def _migrate_9(db) -> None:
    """`key_check`: a constant sealed under the database's key file."""
    db.conn.execute("CREATE TABLE key_check (id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "sealed BLOB NOT NULL)")


def _migrate_10(db) -> None:
    """Replay state in two tables only (steplog.py): `recent_steps` added; the audit rows' steps
    past the fold mark folded into `device_steps`, then the positions enable and resync had set in
    the device rows; `fold_mark`, its trigger and devices.last_step and drift dropped."""
    conn = db.conn
    conn.execute("CREATE TABLE recent_steps (device INTEGER PRIMARY KEY, step INTEGER NOT NULL, "
                 "drift INTEGER NOT NULL, used_at REAL NOT NULL)")
    conn.execute("CREATE TRIGGER recent_steps_devices_delete AFTER DELETE ON devices "
                 "BEGIN DELETE FROM recent_steps WHERE device = OLD.id; END")
    # SQLite takes the bare columns from the max() row.
    conn.execute(
        "INSERT INTO device_steps (device, step, drift, used_at) "
        "SELECT device, max(step), drift, time FROM audit WHERE id > (SELECT upto FROM fold_mark) "
        "AND device IS NOT NULL AND device IN (SELECT id FROM devices) GROUP BY device "
        "ON CONFLICT (device) DO UPDATE SET "
        "drift = CASE WHEN excluded.step > device_steps.step THEN excluded.drift ELSE drift END, "
        "step = max(step, excluded.step), used_at = max(used_at, excluded.used_at)")
    # The device row's position won a tie with device_steps before: it still does.
    conn.execute(
        "INSERT INTO device_steps (device, step, drift, used_at) "
        "SELECT id, last_step, drift, 0 FROM devices WHERE last_step >= 0 OR drift != 0 "
        "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift "
        "WHERE excluded.step >= device_steps.step")
    conn.execute("DROP TRIGGER audit_devices_delete")
    conn.execute("DROP TABLE fold_mark")
    conn.execute("ALTER TABLE devices DROP COLUMN last_step")
    conn.execute("ALTER TABLE devices DROP COLUMN drift")


def _migrate_11(db) -> None:
    """`challenges` and `replies`: Access-Challenge State and recent replies, as a shared store
    keeps them."""
    db.conn.execute("CREATE TABLE challenges (state BLOB PRIMARY KEY, user TEXT NOT NULL, "
                    "client TEXT NOT NULL, expires REAL NOT NULL, kind TEXT NOT NULL, "
                    "data TEXT NOT NULL)")
    db.conn.execute("CREATE TABLE replies (key BLOB PRIMARY KEY, reply BLOB NOT NULL, "
                    "expires REAL NOT NULL)")


MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5,
              6: _migrate_6, 7: _migrate_7, 8: _migrate_8, 9: _migrate_9, 10: _migrate_10,
              11: _migrate_11}


def upgrade(conn, version: int) -> None:
    """Bring the schema of `conn` from `version` (0: an empty database) to SCHEMA_VERSION,
    inside the caller's transaction, setting user_version after each step. An empty database
    starts from schema.sql."""
    if version == 0 and SCHEMA_VERSION >= SCHEMA_FILE_VERSION:
        for statement in _statements(resources.files(__package__).joinpath("schema.sql")
                                     .read_text(encoding="utf-8")):
            conn.execute(statement)
        version = SCHEMA_FILE_VERSION
        conn.execute(f"PRAGMA user_version = {version}")
    if version == SCHEMA_VERSION:
        return
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for step in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[step](db)
        conn.execute(f"PRAGMA user_version = {step}")


def _statements(script: str) -> list[str]:
    """The SQL statements of `script`, one by one (executescript would commit first)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"schema.sql ends inside a statement: {buf[:60]!r}")
    return out
