"""The SQLite backend's device queries: the verifier's loads, and the device lifecycle."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator

from . import steplog
from .sqlite_conn import SqliteConnection
from .interface import DuplicateDevice

DEVICE_COLUMNS = ("id", "serial", "kind", "virtual", "digits", "algorithm", "period", "counter",
                  "last_step", "drift", "seed", "fingerprint", "user", "created_at", "enabled_at",
                  "last_used_at")
# Kept by the step log, not in the device row.
_POSITION = ("last_step", "drift")
_DEVICES_JOINED = f"devices d {steplog.JOIN}"
_DEVICE_SELECT = f"SELECT {steplog.device_columns(DEVICE_COLUMNS)} FROM {_DEVICES_JOINED}"

# The verifier's cold load of one user, in ONE query (three separate ones cost twice as much):
# the user row (if any), whether unused recovery codes exist, whether the name is a clash, and
# one row per assigned device.
_LOAD_DEVICE_KEYS = ("id", "serial", "kind", "digits", "algorithm", "period", "counter",
                     "last_step", "drift", "seed")
# A clash (name_clashes) counts while one of its other stored names still holds something.
_STILL_HELD = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = x.stored)"
                          for t, c in (("users", "name"), ("devices", "user"),
                                       ("recovery_codes", "user"), ("sms_codes", "user")))
_AMBIGUOUS = ("EXISTS (SELECT 1 FROM name_clashes x WHERE x.name = q.n AND x.stored != q.n "
              f"AND ({_STILL_HELD}))")
_LOAD_USER = (
    "SELECT u.name IS NOT NULL, u.failures, u.locked_until, u.phone, EXISTS (SELECT 1 FROM "
    "recovery_codes r WHERE r.user = q.n AND r.used_at IS NULL), " + _AMBIGUOUS + ", "
    + steplog.device_columns(_LOAD_DEVICE_KEYS) +
    f" FROM (SELECT ? AS n) q LEFT JOIN users u ON u.name = q.n "
    f"LEFT JOIN devices d ON d.user = q.n {steplog.JOIN} ORDER BY d.id")


class DeviceQueries(SqliteConnection):
    """Queries of SqliteStore (sqlite.py), on its connection."""

    # ---- the verifier's reads ----------------------------------------------------------------

    def load_user(self, name: str) -> tuple[dict | None, list[dict], bool, bool]:
        """(users row or None, assigned devices with sealed seeds, has unused recovery codes,
        whether other stored names fold to this one: a clash)."""
        rows = self.conn.execute(_LOAD_USER, (name,)).fetchall()
        first = rows[0]
        user = ({"failures": first[1], "locked_until": first[2], "phone": first[3]}
                if first[0] else None)
        devices = [dict(zip(_LOAD_DEVICE_KEYS, r[6:])) for r in rows if r[6] is not None]
        return user, devices, bool(first[4]), bool(first[5])

    def preload_users(self, limit: int) -> Iterator[tuple[str, dict | None, list[dict], bool]]:
        """(name, users row or None, devices, has unused recovery codes) for up to `limit` users
        with an assigned device (the server's start-up load; users with no device are loaded
        when first asked about). With more such users than `limit`, the most recently active
        ones (a device used, or enabled, last): they are the likeliest to sign in next."""
        recovery = {r[0] for r in self.conn.execute(
            "SELECT DISTINCT user FROM recovery_codes WHERE used_at IS NULL")}
        columns = ("SELECT d.user, u.name IS NOT NULL, u.failures, u.locked_until, u.phone, "
                   + steplog.device_columns(_LOAD_DEVICE_KEYS))
        enrolled = self.conn.execute("SELECT count(*) FROM (SELECT DISTINCT user FROM devices "
                                     "WHERE user IS NOT NULL)").fetchone()[0]
        if enrolled <= limit:
            rows = self.conn.execute(
                columns + f" FROM {_DEVICES_JOINED} LEFT JOIN users u ON u.name = d.user "
                "WHERE d.user IS NOT NULL ORDER BY d.user, d.id")
        else:
            rows = self.conn.execute(
                f"WITH recent AS (SELECT d.user FROM {_DEVICES_JOINED} WHERE d.user IS NOT NULL "
                "GROUP BY d.user ORDER BY max(coalesce(" + steplog.COLUMNS["last_used_at"] +
                ", d.enabled_at, d.created_at)) DESC LIMIT ?) "
                + columns + f" FROM recent q JOIN devices d ON d.user = q.user {steplog.JOIN} "
                "LEFT JOIN users u ON u.name = d.user ORDER BY d.user, d.id", (limit,))
        name: str | None = None
        user: dict | None = None
        devices: list[dict] = []
        count = 0
        for r in rows:
            if r[0] != name:
                if name is not None:
                    yield name, user, devices, name in recovery
                    count += 1
                    if count >= limit:
                        return
                name, devices = r[0], []
                user = {"failures": r[2], "locked_until": r[3], "phone": r[4]} if r[1] else None
            devices.append(dict(zip(_LOAD_DEVICE_KEYS, r[5:])))
        if name is not None and count < limit:
            yield name, user, devices, name in recovery

    def user_devices(self, name: str) -> list[dict]:
        rows = self.conn.execute(_DEVICE_SELECT + " WHERE d.user = ? ORDER BY d.id", (name,))
        return [dict(zip(DEVICE_COLUMNS, r)) for r in rows]

    # ---- consuming (inside transaction()) ------------------------------------------------------

    def consume_hotp(self, device_id: int, counter: int, now: float) -> bool:
        """Move the next expected counter past `counter` unless it already is; True if fresh."""
        cur = self.conn.execute("UPDATE devices SET counter = ?, last_used_at = ? "
                                "WHERE id = ? AND counter <= ?",
                                (counter + 1, now, device_id, counter))
        return cur.rowcount == 1

    def consume_step(self, device_id: int, step: int, drift: int, now: float) -> bool:
        """Use TOTP `step` of a device unless it or a later one was used; True if fresh."""
        return self.steps.consume(device_id, step, drift, now)

    # ---- device lifecycle ----------------------------------------------------------------------

    def device(self, serial: str) -> dict | None:
        row = self.conn.execute(_DEVICE_SELECT + " WHERE d.serial = ?", (serial,)).fetchone()
        return dict(zip(DEVICE_COLUMNS, row)) if row else None

    def insert_devices(self, devices: Iterable[dict]) -> int:
        """Insert new devices (inside a transaction); DuplicateDevice when a serial or seed is
        taken. A device's last_step and drift, when given, become its position."""
        cols = [c for c in DEVICE_COLUMNS if c != "id" and c not in _POSITION]
        sql = (f"INSERT INTO devices ({', '.join(cols)}) VALUES "
               f"({', '.join('?' for _ in cols)})")
        rows = list(devices)
        try:
            # rowcount, not total_changes: the `changes` triggers' rows are not devices.
            count = self.conn.executemany(sql, ([d.get(c) for c in cols] for d in rows)).rowcount
        except sqlite3.IntegrityError as exc:
            raise DuplicateDevice(f"a serial or seed is already taken: {exc}") from None
        for d in rows:
            if d.get("last_step", -1) != -1 or d.get("drift", 0):
                (device_id,), = self.conn.execute("SELECT id FROM devices WHERE serial = ?",
                                                  (d["serial"],))
                self.steps.set_position(device_id, d.get("last_step", -1), d.get("drift", 0))
        return count

    def clashes(self, serials: list[str], fingerprints: list[str]) -> tuple[set, set]:
        """Which of these serials and fingerprints are already held by a device."""
        taken_serials: set[str] = set()
        taken_fps: set[str] = set()
        for chunk in _chunks(serials):
            q = f"SELECT serial FROM devices WHERE serial IN ({','.join('?' * len(chunk))})"
            taken_serials.update(r[0] for r in self.conn.execute(q, chunk))
        for chunk in _chunks(fingerprints):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT fingerprint FROM devices WHERE fingerprint IN ({marks})"
            taken_fps.update(r[0] for r in self.conn.execute(q, chunk))
        return taken_serials, taken_fps

    def assign_device(self, device_id: int, user: str, *, now: float, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> bool:
        """Assign an unassigned device; False if it was assigned meanwhile."""
        cur = self.conn.execute(
            "UPDATE devices SET user = ?, enabled_at = ?, counter = coalesce(?, counter) "
            "WHERE id = ? AND user IS NULL", (user, now, counter, device_id))
        if cur.rowcount != 1:
            return False
        self.steps.set_position(device_id, last_step, drift)
        return True

    def resync_device(self, device_id: int, *, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> None:
        # resynced_at fires the `changes` trigger: the verifiers read the device again.
        self.conn.execute("UPDATE devices SET counter = coalesce(?, counter), resynced_at = ? "
                          "WHERE id = ?", (counter, time.time(), device_id))
        self.steps.set_position(device_id, last_step, drift)

    def unassign_device(self, device_id: int, user: str) -> bool:
        cur = self.conn.execute("UPDATE devices SET user = NULL, enabled_at = NULL "
                                "WHERE id = ? AND user = ?", (device_id, user))
        if cur.rowcount != 1:
            return False
        self.steps.reset_drift(device_id)
        return True

    def delete_device(self, device_id: int) -> bool:
        cur = self.conn.execute("DELETE FROM devices WHERE id = ? AND user IS NULL", (device_id,))
        return cur.rowcount == 1

    def count_user_devices(self, user: str) -> int:
        return self.conn.execute("SELECT count(*) FROM devices WHERE user = ?",
                                 (user,)).fetchone()[0]

    def list_devices(self, user: str | None = None, status: str = "any") -> list[dict]:
        where, args = [], []
        if user is not None:
            where.append("d.user = ?")
            args.append(user)
        if status == "assigned":
            where.append("d.user IS NOT NULL")
        elif status == "unassigned":
            where.append("d.user IS NULL")
        sql = (_DEVICE_SELECT + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY d.serial")
        return [dict(zip(DEVICE_COLUMNS, r)) for r in self.conn.execute(sql, args)]

    def oldest_seeds(self, limit: int) -> list[tuple[str, bytes]]:
        """(serial, sealed seed) of the `limit` oldest devices: the ones sealed first."""
        with self.errors("reading seeds"):
            return self.conn.execute("SELECT serial, seed FROM devices ORDER BY id LIMIT ?",
                                     (limit,)).fetchall()


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
