"""The PostgreSQL backend's user queries: names, failure state, recovery codes and SMS codes
(the same answers as sqlite_users.py)."""

from __future__ import annotations

import time

from .. import names
from .postgres_conn import PgConnection
from .sqlite_users import SMS_SEND_LOG_DAYS, USER_COLUMNS

_USER_SELECT = "SELECT " + ", ".join(USER_COLUMNS) + " FROM users"
_NAME_COLUMNS = (("users", "name"), ("devices", "user_name"), ("recovery_codes", "user_name"),
                 ("sms_codes", "user_name"), ("sms_sends", "user_name"))
_HOLDERS = _NAME_COLUMNS[:4]


class PgUserQueries(PgConnection):
    """Queries of PostgresStore (postgres.py)."""

    # ---- user names ----------------------------------------------------------------------------

    def name_rule(self) -> str | None:
        return self._value("SELECT rule FROM name_rule")

    def stored_names(self, holders_only: bool = False) -> set[str]:
        tables = _HOLDERS if holders_only else _NAME_COLUMNS
        sql = " UNION ".join(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL" for t, c in tables)
        return {r[0] for r in self._all(sql)}

    def canonicalise_names(self, canonical, rule: str, force: bool = False):
        """As SqliteStore.canonicalise_names; the nodes do it one at a time (the name_rule row
        is locked first)."""
        if not force and self.name_rule() == rule:
            return None
        with self.transaction():
            current = self._value("SELECT rule FROM name_rule FOR UPDATE")
            if not force and current == rule:  # another node did it meanwhile
                return None
            holders = self.stored_names(holders_only=True)
            plan = names.plan(holders, canonical)
            for old, new in plan.renames.items():
                self._rename_rows(old, new)
            for old, new in names.follower_renames(self.stored_names() - holders, canonical,
                                                   plan).items():
                self._run("UPDATE sms_sends SET user_name = %s WHERE user_name = %s", (new, old))
            self._run("DELETE FROM name_clashes")
            self._many("INSERT INTO name_clashes (name, stored) VALUES (%s, %s)",
                       [(canon, s) for canon, members in plan.clashes.items() for s in members])
            self._run("UPDATE name_rule SET rule = %s", (rule,))
        return plan

    def name_clashes(self) -> dict[str, list[str]]:
        held = self.stored_names(holders_only=True)
        out: dict[str, list[str]] = {}
        for name, stored in self._all('SELECT name, stored FROM name_clashes '
                                      'ORDER BY name COLLATE "C", stored COLLATE "C"'):
            if stored in held:
                out.setdefault(name, []).append(stored)
        return {k: v for k, v in out.items() if len(v) > 1}

    def _holds(self, name: str) -> bool:
        holds = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = %(n)s)" for t, c in _HOLDERS)
        with self._conn() as conn:
            row = conn.execute(f"SELECT {holds}", {"n": name}).fetchone()
        return bool(row and row[0])

    def rename_user(self, old: str, new: str) -> bool:
        if self._holds(new) or not self._holds(old):
            return False
        self._rename_rows(old, new)
        return True

    def _rename_rows(self, old: str, new: str) -> None:
        for table, column in _NAME_COLUMNS:
            self._run(f"UPDATE {table} SET {column} = %s WHERE {column} = %s", (new, old))
        self._run("INSERT INTO changes (user_name) VALUES (%s)", (new,))

    # ---- users and recovery codes --------------------------------------------------------------

    def user_row(self, name: str) -> dict | None:
        row = self._one(_USER_SELECT + " WHERE name = %s", (name,))
        return dict(zip(USER_COLUMNS, row)) if row else None

    def user_summary(self, name: str) -> dict:
        row = self.user_row(name) or {"name": name, "failures": 0, "locked_until": 0.0,
                                      "last_success": None, "last_failure": None,
                                      "created_at": None}
        row["devices"] = [d["serial"] for d in self.user_devices(name)]  # type: ignore[attr-defined]
        row["recovery_codes_left"] = self._value(
            "SELECT count(*) FROM recovery_codes WHERE user_name = %s AND used_at IS NULL",
            (name,))
        return row

    def has_recovery_codes(self, name: str) -> bool:
        return self._one("SELECT 1 FROM recovery_codes WHERE user_name = %s AND used_at IS NULL "
                         "LIMIT 1", (name,)) is not None

    def recovery_codes(self, name: str) -> list[tuple[int, bytes, bytes, bool]]:
        return self._all("SELECT id, salt, hash, used_at IS NOT NULL FROM recovery_codes "
                         "WHERE user_name = %s ORDER BY id", (name,))

    def recovery_tries_since(self, name: str, since: float) -> int:
        return self._value(
            "SELECT count(*) FROM audit WHERE user_name = %s AND time > %s AND "
            "method = 'recovery' AND reason IN ('locked', 'replay')", (name, since))

    def consume_recovery_code(self, code_id: int, now: float) -> bool:
        return self._run("UPDATE recovery_codes SET used_at = %s WHERE id = %s AND "
                         "used_at IS NULL", (now, code_id)) == 1

    def set_user_state(self, name: str, failures: int, locked_until: float, *,
                       success_at: float | None = None, failure_at: float | None = None) -> None:
        self._run(
            "INSERT INTO users (name, failures, locked_until, last_success, last_failure, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            "failures = excluded.failures, locked_until = excluded.locked_until, "
            "last_success = coalesce(excluded.last_success, users.last_success), "
            "last_failure = coalesce(excluded.last_failure, users.last_failure)",
            (name, failures, locked_until, success_at, failure_at, time.time()))

    def add_failure(self, name: str, now: float) -> int:
        """One more consecutive failure of `name` (its row created when missing), counted in
        the database: failures on several nodes at once all count. The new count."""
        return self._value(
            "INSERT INTO users (name, failures, last_failure, created_at) VALUES (%s, 1, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET failures = users.failures + 1, "
            "last_failure = excluded.last_failure RETURNING failures", (name, now, now))

    def lock_user(self, name: str, until: float) -> None:
        """Lock `name` until `until`, unless it already is for longer."""
        self._run("UPDATE users SET locked_until = greatest(locked_until, %s) WHERE name = %s",
                  (until, name))

    def ensure_user(self, name: str, now: float) -> None:
        self._run("INSERT INTO users (name, created_at) VALUES (%s, %s) "
                  "ON CONFLICT (name) DO NOTHING", (name, now))

    def unlock_user(self, name: str) -> bool:
        return self._run("UPDATE users SET failures = 0, locked_until = 0 WHERE name = %s",
                         (name,)) == 1

    def replace_recovery_codes(self, user: str, hashed: list[tuple[bytes, bytes]],
                               now: float) -> None:
        with self.transaction():
            self._run("DELETE FROM recovery_codes WHERE user_name = %s", (user,))
            self._many("INSERT INTO recovery_codes (user_name, salt, hash, created_at) "
                       "VALUES (%s, %s, %s, %s)", [(user, s, h, now) for s, h in hashed])

    def user_names(self) -> list[str]:
        rows = self._all("SELECT name FROM users UNION SELECT user_name FROM devices "
                         'WHERE user_name IS NOT NULL ORDER BY 1 COLLATE "C"')
        return [r[0] for r in rows]

    # ---- SMS -------------------------------------------------------------------------------

    def set_phone(self, user: str, phone: str | None, now: float) -> bool:
        with self.transaction():
            if phone is not None:
                self.ensure_user(user, now)
            changed = self._run(
                "UPDATE users SET phone = %s, sms_enabled_at = %s WHERE name = %s AND "
                "phone IS DISTINCT FROM %s", (phone, now if phone else None, user, phone))
            if phone is None:
                self._run("DELETE FROM sms_codes WHERE user_name = %s", (user,))
        return changed == 1

    def sms_users(self) -> list[dict]:
        rows = self._all("SELECT name, phone, sms_enabled_at FROM users WHERE phone IS "
                         'NOT NULL ORDER BY name COLLATE "C"')
        return [{"user": r[0], "phone": r[1], "enabled_at": r[2]} for r in rows]

    def sms_code(self, user: str) -> tuple[bytes, float] | None:
        return self._one("SELECT hash, expires_at FROM sms_codes WHERE user_name = %s", (user,))

    def replace_sms_code(self, user: str, digest: bytes, now: float, expires_at: float) -> None:
        self._run("INSERT INTO sms_codes (user_name, hash, created_at, expires_at) VALUES "
                  "(%s, %s, %s, %s) ON CONFLICT (user_name) DO UPDATE SET hash = excluded.hash, "
                  "created_at = excluded.created_at, expires_at = excluded.expires_at",
                  (user, digest, now, expires_at))

    def consume_sms_code(self, user: str, digest: bytes, now: float) -> bool:
        """Use up the live code with this hash: one DELETE, so one caller of all nodes."""
        return self._run("DELETE FROM sms_codes WHERE user_name = %s AND hash = %s AND "
                         "expires_at > %s", (user, digest, now)) == 1

    def sms_sends_since(self, user: str, since: float) -> list[float]:
        return [r[0] for r in self._all(
            "SELECT time FROM sms_sends WHERE user_name = %s AND time > %s ORDER BY time",
            (user, since))]

    def sms_sends_total(self, since: float) -> tuple[int, float | None]:
        count, oldest = self._row("SELECT count(*), min(time) FROM sms_sends WHERE time > %s",
                                  (since,))
        return count, oldest

    def add_sms_send(self, user: str, now: float, source: str) -> None:
        self._run("INSERT INTO sms_sends (time, user_name, source) VALUES (%s, %s, %s)",
                  (now, user, source))
        self._run("DELETE FROM sms_sends WHERE time < %s", (now - SMS_SEND_LOG_DAYS * 86400,))
