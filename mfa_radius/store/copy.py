"""`mfa-radius store copy`: a SQLite database into an empty PostgreSQL one, so that a single
host can become one node of several without anyone enrolling again.

Everything that decides a login is copied: devices (sealed seeds as they are: every node uses
the same key file), users (failures, lockouts, phones), each TOTP device's last used step and
drift (the higher of the SQLite step log's two tables), recovery codes (used ones too: typing
one again stays a replay), SMS codes and sends, the audit log, the name rule and clashes, and
the key check. Not copied: the change log (every node starts its cache afresh) and nothing
else exists (challenges and replies live seconds). One transaction; it is committed only when
the count of every table in PostgreSQL equals the count read from SQLite.
"""

from __future__ import annotations

from ..errors import StoreError
from . import steplog

# (SQLite table, its columns, the PostgreSQL columns they go to). The select of the step log
# gives each TOTP device's position as steplog.py defines it.
_TABLES: list[tuple[str, str, str, str]] = [
    ("devices", "SELECT id, serial, kind, virtual, digits, algorithm, period, counter, seed, "
     "fingerprint, user, created_at, enabled_at, last_used_at, resynced_at FROM devices",
     "devices", "id, serial, kind, virtual, digits, algorithm, period, counter, seed, "
     "fingerprint, user_name, created_at, enabled_at, last_used_at, resynced_at"),
    ("users", "SELECT name, failures, locked_until, last_success, last_failure, created_at, "
     "phone, sms_enabled_at FROM users", "users",
     "name, failures, locked_until, last_success, last_failure, created_at, phone, "
     "sms_enabled_at"),
    ("device_steps", f"SELECT d.id, {steplog.COLUMNS['last_step']}, {steplog.COLUMNS['drift']}, "
     "max(coalesce(s.used_at, 0), coalesce(r.used_at, 0)) FROM devices d "
     f"{steplog.JOIN} WHERE s.device IS NOT NULL OR r.device IS NOT NULL",
     "device_steps", "device, step, drift, used_at"),
    ("recovery_codes", "SELECT id, user, salt, hash, created_at, used_at FROM recovery_codes",
     "recovery_codes", "id, user_name, salt, hash, created_at, used_at"),
    ("sms_codes", "SELECT user, hash, created_at, expires_at FROM sms_codes", "sms_codes",
     "user_name, hash, created_at, expires_at"),
    ("sms_sends", "SELECT id, time, user, source FROM sms_sends", "sms_sends",
     "id, time, user_name, source"),
    ("audit", "SELECT id, time, user, method, serial, source, result, reason, device, step, "
     "drift FROM audit ORDER BY id", "audit",
     "id, time, user_name, method, serial, source, result, reason, device, step, drift"),
    ("name_clashes", "SELECT name, stored FROM name_clashes", "name_clashes", "name, stored"),
]
_SEQUENCES = ("devices", "recovery_codes", "sms_sends", "audit")


def copy_sqlite_to_postgres(source, target) -> dict[str, int]:
    """Copy the SqliteStore `source` into the empty PostgresStore `target` (schema created, key
    checks already compared by the caller); {table: rows}, verified by counts."""
    counts: dict[str, int] = {}
    with source.errors("reading the database to copy"), target.errors("copying"), \
            source.transaction(), target.transaction() as pg:
        if not target.is_empty():
            raise StoreError(f"{target.path}: already holds devices or users; store copy only "
                             "fills an empty database")
        for name, select, table, columns in _TABLES:
            rows = source.conn.execute(select).fetchall()
            with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            counts[name] = len(rows)
        rule = source.conn.execute("SELECT rule FROM name_rule").fetchone()
        pg.execute("UPDATE name_rule SET rule = %s", (rule[0] if rule else None,))
        sealed = source.key_check()
        if sealed is not None:
            pg.execute("INSERT INTO key_check (id, sealed) VALUES (1, %s) "
                       "ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed", (sealed,))
        counts["key_check"] = 0 if sealed is None else 1
        for table in _SEQUENCES:
            pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")
        # The triggers logged every copied user as changed: no node has cached any yet.
        pg.execute("DELETE FROM changes")
        for name, _, table, _ in _TABLES:
            found = pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if found != counts[name]:
                raise StoreError(f"{target.path}: copy check failed: {table} holds {found} "
                                 f"rows, SQLite {counts[name]}; nothing was copied")
    return counts
