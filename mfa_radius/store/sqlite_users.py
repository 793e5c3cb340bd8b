"""The SQLite backend's user queries: names, failure state, recovery codes and SMS codes."""

from __future__ import annotations

import time

from .. import names
from .sqlite_conn import SqliteConnection

USER_COLUMNS = ("name", "failures", "locked_until", "last_success", "last_failure", "created_at",
                "phone")
_USER_SELECT = "SELECT " + ", ".join(USER_COLUMNS) + " FROM users"
# The tables whose user names are rewritten when names are brought to a rule (the audit log is
# history: its rows keep the names as they were written). The first four hold something of the
# user's (a row that makes two stored names a clash); the SMS send log only follows.
_NAME_COLUMNS = (("users", "name"), ("devices", "user"), ("recovery_codes", "user"),
                 ("sms_codes", "user"), ("sms_sends", "user"))
_HOLDERS = _NAME_COLUMNS[:4]
# The send log is kept this long (the rate limits look back minutes; the rest is for audits).
SMS_SEND_LOG_DAYS = 30


class UserQueries(SqliteConnection):
    """Queries of SqliteStore (sqlite.py), on its connection."""

    # ---- user names (names.py): the rule they were brought to, and clashes ---------------------

    def name_rule(self) -> str | None:
        """The rule the stored names were last brought to (None: as typed)."""
        return self.conn.execute("SELECT rule FROM name_rule").fetchone()[0]

    def stored_names(self, holders_only: bool = False) -> set[str]:
        """Every distinct user name stored outside the audit log (with holders_only, only those
        holding something: a users row, a device, recovery codes, an SMS code)."""
        tables = _HOLDERS if holders_only else _NAME_COLUMNS
        sql = " UNION ".join(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL" for t, c in tables)
        return {r[0] for r in self.conn.execute(sql)}

    def canonicalise_names(self, canonical, rule: str, force: bool = False):
        """Bring the stored names to `rule` (names.rule_id) with `canonical` (its
        canonicaliser), unless they already are or with `force`; the names.NamePlan, or None
        when nothing was due.

        Renames each name of the plan in every table but the audit log, and replaces
        `name_clashes` with the plan's clashes (never merged). Names only in the SMS send log
        follow their user's canonical name (the send limits count them together).
        """
        if not force and self.name_rule() == rule:
            return None
        with self.transaction():
            if not force and self.name_rule() == rule:  # another process did it meanwhile
                return None
            holders = self.stored_names(holders_only=True)
            plan = names.plan(holders, canonical)
            for old, new in plan.renames.items():
                self._rename_rows(old, new)
            for old, new in names.follower_renames(self.stored_names() - holders, canonical,
                                                   plan).items():
                self.conn.execute("UPDATE sms_sends SET user = ? WHERE user = ?", (new, old))
            self.conn.execute("DELETE FROM name_clashes")
            self.conn.executemany("INSERT INTO name_clashes (name, stored) VALUES (?, ?)",
                                  [(canon, s) for canon, members in plan.clashes.items()
                                   for s in members])
            self.conn.execute("UPDATE name_rule SET rule = ?", (rule,))
        return plan

    def name_clashes(self) -> dict[str, list[str]]:
        """{canonical name: its stored names} of the clashes still held (schema.sql)."""
        held = self.stored_names(holders_only=True)
        out: dict[str, list[str]] = {}
        for name, stored in self.conn.execute("SELECT name, stored FROM name_clashes "
                                              "ORDER BY name, stored"):
            if stored in held:
                out.setdefault(name, []).append(stored)
        return {k: v for k, v in out.items() if len(v) > 1}

    def rename_user(self, old: str, new: str) -> bool:
        """Move everything of stored name `old` (taken as stored, not canonicalised) to `new`
        (inside a transaction); False when `new` already holds something (never a merge) or
        `old` holds nothing. The audit log keeps the old name."""
        holds = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = ?1)" for t, c in _HOLDERS)
        if self.conn.execute(f"SELECT {holds}", (new,)).fetchone()[0]:
            return False
        if not self.conn.execute(f"SELECT {holds}", (old,)).fetchone()[0]:
            return False
        self._rename_rows(old, new)
        return True

    def _rename_rows(self, old: str, new: str) -> None:
        for table, column in _NAME_COLUMNS:
            self.conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))
        # The `changes` triggers log the old name of an update; a server may have cached the
        # new one (as a user without devices).
        self.conn.execute("INSERT INTO changes (user) VALUES (?)", (new,))


    # ---- users and recovery codes --------------------------------------------------------------

    def user_row(self, name: str) -> dict | None:
        row = self.conn.execute(_USER_SELECT + " WHERE name = ?", (name,)).fetchone()
        return dict(zip(USER_COLUMNS, row)) if row else None

    def has_recovery_codes(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM recovery_codes WHERE user = ? AND used_at IS NULL"
                                 " LIMIT 1", (name,)).fetchone() is not None

    def recovery_codes(self, name: str) -> list[tuple[int, bytes, bytes, bool]]:
        """(id, salt, hash, used) of the user's recovery codes, used ones too (a used code typed
        again is a replay, not a guess)."""
        return self.conn.execute("SELECT id, salt, hash, used_at IS NOT NULL FROM recovery_codes "
                                 "WHERE user = ? ORDER BY id", (name,)).fetchall()

    def recovery_tries_since(self, name: str, since: float) -> int:
        """Recovery codes checked for `name` while it was locked (audit rows with method
        recovery, reason locked or replay) since `since`."""
        return self.conn.execute(
            "SELECT count(*) FROM audit WHERE user = ? AND time > ? AND method = 'recovery' "
            "AND reason IN ('locked', 'replay')", (name, since)).fetchone()[0]
    def consume_recovery_code(self, code_id: int, now: float) -> bool:
        cur = self.conn.execute("UPDATE recovery_codes SET used_at = ? WHERE id = ? AND "
                                "used_at IS NULL", (now, code_id))
        return cur.rowcount == 1

    def set_user_state(self, name: str, failures: int, locked_until: float, *,
                       success_at: float | None = None, failure_at: float | None = None) -> None:
        self.conn.execute(
            "INSERT INTO users (name, failures, locked_until, last_success, last_failure, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "failures = excluded.failures, locked_until = excluded.locked_until, "
            "last_success = coalesce(excluded.last_success, last_success), "
            "last_failure = coalesce(excluded.last_failure, last_failure)",
            (name, failures, locked_until, success_at, failure_at, time.time()))

    def add_failure(self, name: str, now: float) -> int:
        """One more consecutive failure of `name` (its row created when missing); the count."""
        return self.conn.execute(
            "INSERT INTO users (name, failures, last_failure, created_at) VALUES (?, 1, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET failures = failures + 1, "
            "last_failure = excluded.last_failure RETURNING failures",
            (name, now, now)).fetchone()[0]

    def lock_user(self, name: str, until: float) -> None:
        """Lock `name` until `until`, unless it already is for longer."""
        self.conn.execute("UPDATE users SET locked_until = max(locked_until, ?) WHERE name = ?",
                          (until, name))

    def ensure_user(self, name: str, now: float) -> None:
        self.conn.execute("INSERT INTO users (name, created_at) VALUES (?, ?) "
                          "ON CONFLICT(name) DO NOTHING", (name, now))

    def unlock_user(self, name: str) -> bool:
        cur = self.conn.execute("UPDATE users SET failures = 0, locked_until = 0 WHERE name = ?",
                                (name,))
        return cur.rowcount == 1

    def replace_recovery_codes(self, user: str, hashed: list[tuple[bytes, bytes]],
                               now: float) -> None:
        self.conn.execute("DELETE FROM recovery_codes WHERE user = ?", (user,))
        self.conn.executemany("INSERT INTO recovery_codes (user, salt, hash, created_at) "
                              "VALUES (?, ?, ?, ?)", ((user, s, h, now) for s, h in hashed))

    def user_names(self) -> list[str]:
        """Every user the database knows: with a users row or an assigned device."""
        rows = self.conn.execute("SELECT name FROM users UNION SELECT user FROM devices "
                                 "WHERE user IS NOT NULL ORDER BY 1")
        return [r[0] for r in rows]

    # ---- SMS -------------------------------------------------------------------------------

    def set_phone(self, user: str, phone: str | None, now: float) -> bool:
        """Register (or with None, remove) the user's SMS phone; False if nothing changed."""
        if phone is not None:
            self.ensure_user(user, now)
        cur = self.conn.execute(
            "UPDATE users SET phone = ?, sms_enabled_at = ? WHERE name = ? AND "
            "phone IS NOT ?", (phone, now if phone else None, user, phone))
        if phone is None:
            self.conn.execute("DELETE FROM sms_codes WHERE user = ?", (user,))
        return cur.rowcount == 1

    def sms_users(self) -> list[dict]:
        """Every user with a phone registered for SMS codes: user, phone, enabled_at."""
        rows = self.conn.execute("SELECT name, phone, sms_enabled_at FROM users WHERE phone IS "
                                 "NOT NULL ORDER BY name")
        return [{"user": r[0], "phone": r[1], "enabled_at": r[2]} for r in rows]

    def sms_code(self, user: str) -> tuple[bytes, float] | None:
        """(hash, expires_at) of the user's live code, if one was issued."""
        return self.conn.execute("SELECT hash, expires_at FROM sms_codes WHERE user = ?",
                                 (user,)).fetchone()

    def replace_sms_code(self, user: str, digest: bytes, now: float, expires_at: float) -> None:
        """Store a new code for the user; the previous one, if any, stops working."""
        self.conn.execute("INSERT INTO sms_codes (user, hash, created_at, expires_at) VALUES "
                          "(?, ?, ?, ?) ON CONFLICT(user) DO UPDATE SET hash = excluded.hash, "
                          "created_at = excluded.created_at, expires_at = excluded.expires_at",
                          (user, digest, now, expires_at))

    def consume_sms_code(self, user: str, digest: bytes, now: float) -> bool:
        """Use up the live code with this hash; True only for the one caller that got it."""
        cur = self.conn.execute("DELETE FROM sms_codes WHERE user = ? AND hash = ? AND "
                                "expires_at > ?", (user, digest, now))
        return cur.rowcount == 1

    def sms_sends_since(self, user: str, since: float) -> list[float]:
        """Times of the user's sends after `since`."""
        return [r[0] for r in self.conn.execute(
            "SELECT time FROM sms_sends WHERE user = ? AND time > ? ORDER BY time",
            (user, since))]

    def sms_sends_total(self, since: float) -> tuple[int, float | None]:
        """(how many sends for anyone after `since`, the oldest of them)."""
        count, oldest = self.conn.execute("SELECT count(*), min(time) FROM sms_sends WHERE "
                                          "time > ?", (since,)).fetchone()
        return count, oldest

    def add_sms_send(self, user: str, now: float, source: str) -> None:
        self.conn.execute("INSERT INTO sms_sends (time, user, source) VALUES (?, ?, ?)",
                          (now, user, source))
        self.conn.execute("DELETE FROM sms_sends WHERE time < ?",
                          (now - SMS_SEND_LOG_DAYS * 86400,))

