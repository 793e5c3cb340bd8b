"""The PostgreSQL backend's audit log, retention, metrics counts, and what the nodes share
beside the users: others' changes, Access-Challenge State and recent replies."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .postgres_conn import PgConnection

# Change rows are numbered when written but committed in any order: a change committed late
# with a number at most this far behind the newest is still seen (changes_token counts them).
REORDER_WINDOW = 256
CHANGES_KEPT_SECONDS = 3600.0


class PgAuditQueries(PgConnection):
    """Queries of PostgresStore (postgres.py)."""

    def add_audit(self, rows: Iterable[tuple]) -> None:
        # A batch's rows in one COPY: an INSERT per row costs the database a statement each.
        rows = list(rows)
        if rows:
            with self._conn() as conn, conn.cursor() as cur, cur.copy(
                    "COPY audit (time, user_name, method, serial, source, result, reason, "
                    "device, step, drift) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def audit_events(self, user: str | None = None, since: float | None = None,
                     limit: int = 1000) -> list[dict]:
        where: list[str] = []
        args: list[object] = []
        if user is not None:
            where.append("user_name = %s")
            args.append(user)
        if since is not None:
            where.append("time >= %s")
            args.append(since)
        sql = ("SELECT time, user_name, method, serial, source, result, reason FROM audit" +
               (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT %s")
        keys = ("time", "user", "method", "serial", "source", "result", "reason")
        rows = [dict(zip(keys, r)) for r in self._all(sql, [*args, limit])]
        rows.reverse()
        return rows

    def last_audit_id(self) -> int:
        return self._value("SELECT coalesce(max(id), 0) FROM audit")

    def prune_audit(self, before: float, batch: int = 5000) -> int:
        """Delete audit rows older than `before`, `batch` rows per transaction (the newest row
        stays, as in SQLite); how many."""
        total = 0
        while True:
            with self.errors("pruning the audit log"), self.transaction():
                count = self._run(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < %s AND "
                    "id < (SELECT max(id) FROM audit) ORDER BY id LIMIT %s)", (before, batch))
            total += count
            if count < batch:
                return total

    def prune_expired(self, now: float, idle_before: float) -> dict[str, int]:
        done = {}
        with self.errors("pruning expired state"), self.transaction():
            done["sms_codes"] = self._run("DELETE FROM sms_codes WHERE expires_at <= %s", (now,))
            done["users"] = self._run(
                "DELETE FROM users WHERE locked_until <= %s AND phone IS NULL AND "
                "greatest(coalesce(last_failure, 0), coalesce(last_success, 0), created_at) < %s "
                "AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.user_name = users.name) "
                "AND NOT EXISTS (SELECT 1 FROM recovery_codes WHERE recovery_codes.user_name = "
                "users.name)", (now, idle_before))
            done["changes"] = self._run(
                "DELETE FROM changes WHERE at < %s AND seq <= (SELECT max(seq) FROM changes) - %s",
                (now - CHANGES_KEPT_SECONDS, REORDER_WINDOW))
            done["challenges"] = self._run("DELETE FROM challenges WHERE expires <= %s", (now,))
            done["replies"] = self._run("DELETE FROM replies WHERE expires <= %s", (now,))
        return done

    def gauge_counts(self, now: float) -> dict[str, int]:
        with self.errors("counting for metrics"):
            locked = self._value("SELECT count(*) FROM users WHERE locked_until > %s", (now,))
            enrolled, assigned, unassigned = self._row(
                "SELECT count(DISTINCT user_name), count(user_name), count(*) - count(user_name) "
                "FROM devices")
        return {"locked_users": locked, "enrolled_users": enrolled, "devices_assigned": assigned,
                "devices_unassigned": unassigned}

    # ---- what other nodes committed ------------------------------------------------------------

    def changes_token(self) -> int:
        """Changes whenever a tracked change is committed, by any node (ours too): the newest
        number, and how many numbers of the last REORDER_WINDOW are committed (a change whose
        number was drawn earlier but committed later still moves it). Two index lookups."""
        last, recent = self._row(
            "WITH m AS (SELECT coalesce(max(seq), 0) AS last FROM changes) "
            "SELECT m.last, (SELECT count(*) FROM changes WHERE seq > m.last - %s) FROM m",
            (REORDER_WINDOW,))
        return last * (REORDER_WINDOW + 1) + recent

    def last_change(self) -> int:
        return self._value("SELECT coalesce(max(seq), 0) FROM changes")

    def changed_users(self, after: int, limit: int) -> tuple[int, int, set[str] | None]:
        """As in SQLite, but reaching REORDER_WINDOW numbers back from `after`: a change
        committed after the reader's last look with an earlier number is not missed."""
        first, last = self._row("SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) "
                                "FROM changes")
        rows = self._all("SELECT DISTINCT user_name FROM changes WHERE seq > %s LIMIT %s",
                         (after - REORDER_WINDOW, limit + 1))
        return first, last, None if len(rows) > limit else {r[0] for r in rows}

    # ---- challenges and replies shared by the nodes --------------------------------------------

    def put_challenge(self, state: bytes, user: str, client: str, expires: float, kind: str,
                      data: dict) -> None:
        with self.transaction():
            self._run("INSERT INTO challenges (state, user_name, client, expires, kind, data) "
                      "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (state) DO UPDATE SET "
                      "user_name = excluded.user_name, client = excluded.client, "
                      "expires = excluded.expires, kind = excluded.kind, data = excluded.data",
                      (state, user, client, expires, kind, json.dumps(data)))

    def take_challenge(self, state: bytes, now: float
                       ) -> tuple[str, str, float, str, dict] | None:
        with self.transaction():
            row = self._one("DELETE FROM challenges WHERE state = %s RETURNING user_name, "
                            "client, expires, kind, data", (state,))
        if row is None or row[2] <= now:
            return None
        return row[0], row[1], row[2], row[3], json.loads(row[4])

    def put_replies(self, rows: list[tuple[bytes, bytes, float]]) -> None:
        if not rows:
            return
        # One COPY for the batch, outside any transaction (it is one statement): appended, so
        # nothing is looked up to write it; replies_for takes the newest row of a key.
        with self._conn() as conn, conn.cursor() as cur, cur.copy(
                "COPY replies (key, reply, expires) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def replies_for(self, keys: list[bytes], now: float) -> dict[bytes, bytes]:
        # Planned afresh each time: a prepared (generic) plan made while the table was small
        # scans the whole table for `= ANY(array)`, and replies arrive by the batch.
        with self._conn() as conn:
            rows = conn.execute("SELECT key, reply FROM replies WHERE key = ANY(%s) AND "
                                "expires > %s ORDER BY id", (list(keys), now),
                                prepare=False).fetchall()
        return {bytes(key): bytes(reply) for key, reply in rows}
