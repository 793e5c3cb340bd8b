"""The SQLite backend's audit log, retention and metrics counts."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable

from .sqlite_conn import SqliteConnection

# Times in the audit log may go back a little (a clock stepped back, an attempt timed by its
# caller): time bounds found over the rowid are widened by this much, then filtered exactly.
AUDIT_CLOCK_SLACK = 600.0
# Rows of `changes` kept by housekeeping (a server more than this far behind reloads all users).
CHANGES_KEPT = 100_000


class AuditQueries(SqliteConnection):
    """Queries of SqliteStore (sqlite.py), on its connection."""

    def add_audit(self, rows: Iterable[tuple]) -> None:
        """rows: (time, user, method, serial, source, result, reason, device id, step, drift),
        the last three set for a TOTP accept only (history: the step log holds what is used)."""
        self.conn.executemany("INSERT INTO audit (time, user, method, serial, source, result, "
                              "reason, device, step, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              rows)


    def audit_events(self, user: str | None = None, since: float | None = None,
                     limit: int = 1000) -> list[dict]:
        """The newest `limit` events (of `user`, at or after `since`), oldest first."""
        where: list[str] = []
        args: list[object] = []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if since is not None:
            where.append("id >= ? AND time >= ?")
            args += [self._audit_id_at(since - AUDIT_CLOCK_SLACK), since]
        sql = ("SELECT time, user, method, serial, source, result, reason FROM audit" +
               (" WHERE " + " AND ".join(where) if where else "") +
               " ORDER BY id DESC LIMIT ?")
        keys = ("time", "user", "method", "serial", "source", "result", "reason")
        rows = [dict(zip(keys, r)) for r in self.conn.execute(sql, [*args, limit])]
        rows.reverse()
        return rows

    def _audit_id_at(self, when: float) -> int:
        """The first audit rowid whose time is at or after `when` (one past the last row when
        none is), by binary search over the rowids (two primary-key lookups a halving)."""
        lo, hi = self.conn.execute("SELECT coalesce(min(id), 1), coalesce(max(id), 0) + 1 "
                                   "FROM audit").fetchone()
        first_after = "SELECT id, time FROM audit WHERE id >= ? ORDER BY id LIMIT 1"
        while lo < hi:
            mid = (lo + hi) // 2
            row = self.conn.execute(first_after, (mid,)).fetchone()
            if row is None or row[0] >= hi or row[1] >= when:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    # ---- housekeeping and metrics ----------------------------------------------------------

    def prune_audit(self, before: float, batch: int = 5000) -> int:
        """Delete audit rows older than `before`, `batch` rows per transaction; return how many.

        Small transactions keep the write lock for milliseconds, so logins are never held up
        behind a prune of a year's worth of rows. Only rows before the time bound over the
        rowids (widened by AUDIT_CLOCK_SLACK) are looked at; each is checked on its own time.
        The newest row stays, so that audit ids only grow (an id is never given twice: a reader
        that keeps its place in the log by id never rereads nor misses a row). The audit holds
        no replay state (steplog.py): what is deleted here cannot make a used code work again.
        """
        total = 0
        while True:
            with self.errors("pruning the audit log"), self.transaction():
                bound = min(self._audit_id_at(before + AUDIT_CLOCK_SLACK), self.last_audit_id())
                cur = self.conn.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id < ? AND time < ? "
                    "ORDER BY id LIMIT ?)", (bound, before, batch))
            total += cur.rowcount
            if cur.rowcount < batch:
                return total

    def last_audit_id(self) -> int:
        """The id of the newest audit row (0 before the first)."""
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]

    def prune_expired(self, now: float, idle_before: float) -> dict[str, int]:
        """Delete state that no longer means anything; return {what: rows deleted}.

        - SMS codes past their expiry (they can no longer be used);
        - user rows that only hold failure counters (no device, recovery code or phone), not locked
          and idle since `idle_before`: mostly names guessed by password sprayers.
        """
        done = {}
        with self.errors("pruning expired state"), self.transaction():
            done["sms_codes"] = self.conn.execute(
                "DELETE FROM sms_codes WHERE expires_at <= ?", (now,)).rowcount
            done["users"] = self.conn.execute(
                "DELETE FROM users WHERE locked_until <= ? AND phone IS NULL AND "
                "max(coalesce(last_failure, 0), coalesce(last_success, 0), created_at) < ? "
                "AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.user = users.name) "
                "AND NOT EXISTS (SELECT 1 FROM recovery_codes WHERE recovery_codes.user = "
                "users.name)", (now, idle_before)).rowcount
            # Servers keep their place in `changes`; one that fell behind the oldest kept row
            # reloads everything, so a modest tail is enough.
            done["changes"] = self.conn.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?",
                (CHANGES_KEPT,)).rowcount
            done["challenges"] = self.conn.execute(
                "DELETE FROM challenges WHERE expires <= ?", (now,)).rowcount
            done["replies"] = self.conn.execute(
                "DELETE FROM replies WHERE expires <= ?", (now,)).rowcount
        return done

    def gauge_counts(self, now: float) -> dict[str, int]:
        """Numbers for the metrics gauges: locked and enrolled users, assigned/unassigned
        devices."""
        with self.errors("counting for metrics"):
            locked = self.conn.execute("SELECT count(*) FROM users WHERE locked_until > ?",
                                       (now,)).fetchone()[0]
            enrolled, assigned, unassigned = self.conn.execute(
                "SELECT count(DISTINCT user), count(user), count(*) - count(user) FROM devices"
            ).fetchone()
        return {"locked_users": locked, "enrolled_users": enrolled, "devices_assigned": assigned,
                "devices_unassigned": unassigned}

    # ---- challenges and replies (what a shared store shares; here for the same tests) --------

    def _own_transaction(self):
        return contextlib.nullcontext() if self.conn.in_transaction else self.transaction()

    def put_challenge(self, state: bytes, user: str, client: str, expires: float, kind: str,
                      data: dict) -> None:
        with self._own_transaction():
            self.conn.execute("INSERT OR REPLACE INTO challenges (state, user, client, expires, "
                              "kind, data) VALUES (?, ?, ?, ?, ?, ?)",
                              (state, user, client, expires, kind, json.dumps(data)))

    def take_challenge(self, state: bytes, now: float
                       ) -> tuple[str, str, float, str, dict] | None:
        with self._own_transaction():
            row = self.conn.execute("DELETE FROM challenges WHERE state = ? RETURNING user, "
                                    "client, expires, kind, data", (state,)).fetchone()
        if row is None or row[2] <= now:
            return None
        return row[0], row[1], row[2], row[3], json.loads(row[4])

    def put_replies(self, rows: list[tuple[bytes, bytes, float]]) -> None:
        with self._own_transaction():
            self.conn.executemany("INSERT OR REPLACE INTO replies (key, reply, expires) "
                                  "VALUES (?, ?, ?)", rows)

    def replies_for(self, keys: list[bytes], now: float) -> dict[bytes, bytes]:
        out = {}
        for key in keys:
            row = self.conn.execute("SELECT reply FROM replies WHERE key = ? AND expires > ?",
                                    (key, now)).fetchone()
            if row is not None:
                out[key] = row[0]
        return out
