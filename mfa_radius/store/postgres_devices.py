"""The PostgreSQL backend's device queries: the verifier's loads, and the device lifecycle
(the same answers as sqlite_devices.py; the column `user_name` comes back under the key "user")."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import psycopg

from . import postgres_steplog as steplog
from .interface import DuplicateDevice
from .postgres_conn import PgConnection
from .sqlite_devices import DEVICE_COLUMNS

_POSITION = ("last_step", "drift")
_DEVICES_JOINED = f"devices d {steplog.JOIN}"
_DEVICE_SELECT = f"SELECT {steplog.device_columns(DEVICE_COLUMNS)} FROM {_DEVICES_JOINED}"

_LOAD_DEVICE_KEYS = ("id", "serial", "kind", "digits", "algorithm", "period", "counter",
                     "last_step", "drift", "seed")
_STILL_HELD = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = x.stored)"
                          for t, c in (("users", "name"), ("devices", "user_name"),
                                       ("recovery_codes", "user_name"),
                                       ("sms_codes", "user_name")))
_AMBIGUOUS = ("EXISTS (SELECT 1 FROM name_clashes x WHERE x.name = q.n AND x.stored != q.n "
              f"AND ({_STILL_HELD}))")
_LOAD_USER = (
    "SELECT u.name IS NOT NULL, u.failures, u.locked_until, u.phone, EXISTS (SELECT 1 FROM "
    "recovery_codes r WHERE r.user_name = q.n AND r.used_at IS NULL), " + _AMBIGUOUS + ", "
    + steplog.device_columns(_LOAD_DEVICE_KEYS) +
    " FROM (SELECT %s::text AS n) q LEFT JOIN users u ON u.name = q.n "
    f"LEFT JOIN devices d ON d.user_name = q.n {steplog.JOIN} ORDER BY d.id")
_USER_OF = {"user": "user_name"}


class PgDeviceQueries(PgConnection):
    """Queries of PostgresStore (postgres.py)."""

    def load_user(self, name: str) -> tuple[dict | None, list[dict], bool, bool]:
        rows = self._all(_LOAD_USER, (name,))
        first = rows[0]
        user = ({"failures": first[1], "locked_until": first[2], "phone": first[3]}
                if first[0] else None)
        devices = [dict(zip(_LOAD_DEVICE_KEYS, r[6:])) for r in rows if r[6] is not None]
        return user, devices, bool(first[4]), bool(first[5])

    def preload_users(self, limit: int) -> Iterator[tuple[str, dict | None, list[dict], bool]]:
        recovery = {r[0] for r in self._all(
            "SELECT DISTINCT user_name FROM recovery_codes WHERE used_at IS NULL")}
        columns = ("SELECT d.user_name, u.name IS NOT NULL, u.failures, u.locked_until, "
                   "u.phone, " + steplog.device_columns(_LOAD_DEVICE_KEYS))
        rows = self._all(
            f"WITH recent AS (SELECT d.user_name FROM {_DEVICES_JOINED} WHERE d.user_name IS "
            "NOT NULL GROUP BY d.user_name ORDER BY max(coalesce("
            + steplog.COLUMNS["last_used_at"] + ", d.enabled_at, d.created_at)) DESC LIMIT %s) "
            + columns + f" FROM recent q JOIN devices d ON d.user_name = q.user_name "
            f"{steplog.JOIN} LEFT JOIN users u ON u.name = d.user_name "
            "ORDER BY d.user_name, d.id", (limit,))
        name: str | None = None
        user: dict | None = None
        devices: list[dict] = []
        for r in rows:
            if r[0] != name:
                if name is not None:
                    yield name, user, devices, name in recovery
                name, devices = r[0], []
                user = {"failures": r[2], "locked_until": r[3], "phone": r[4]} if r[1] else None
            devices.append(dict(zip(_LOAD_DEVICE_KEYS, r[5:])))
        if name is not None:
            yield name, user, devices, name in recovery

    def user_devices(self, name: str) -> list[dict]:
        rows = self._all(_DEVICE_SELECT + " WHERE d.user_name = %s ORDER BY d.id", (name,))
        return [dict(zip(DEVICE_COLUMNS, r)) for r in rows]

    # ---- consuming (inside transaction()) ------------------------------------------------------

    def consume_hotp(self, device_id: int, counter: int, now: float) -> bool:
        """Move the next expected counter past `counter` unless it already is: a counter never
        moves back, and of two nodes only one moves it."""
        return self._run("UPDATE devices SET counter = %s, last_used_at = %s "
                         "WHERE id = %s AND counter <= %s",
                         (counter + 1, now, device_id, counter)) == 1

    def consume_step(self, device_id: int, step: int, drift: int, now: float) -> bool:
        return self.steps.consume(device_id, step, drift, now)

    # ---- device lifecycle ----------------------------------------------------------------------

    def device(self, serial: str) -> dict | None:
        row = self._one(_DEVICE_SELECT + " WHERE d.serial = %s", (serial,))
        return dict(zip(DEVICE_COLUMNS, row)) if row else None

    def insert_devices(self, devices: Iterable[dict]) -> int:
        """Insert new devices (inside a transaction); DuplicateDevice when a serial or seed is
        taken (the transaction goes on, as in SQLite: the insert runs in a savepoint)."""
        cols = [c for c in DEVICE_COLUMNS if c != "id" and c not in _POSITION]
        sql = (f"INSERT INTO devices ({', '.join(_USER_OF.get(c, c) for c in cols)}) VALUES "
               f"({', '.join('%s' for _ in cols)})")
        rows = list(devices)
        with self.transaction():
            try:
                with self.savepoint():
                    self._many(sql, ([d.get(c) for c in cols] for d in rows))
            except psycopg.errors.UniqueViolation as exc:
                raise DuplicateDevice(f"a serial or seed is already taken: "
                                      f"{str(exc).splitlines()[0]}") from None
            for d in rows:
                if d.get("last_step", -1) != -1 or d.get("drift", 0):
                    device_id = self._value("SELECT id FROM devices WHERE serial = %s",
                                            (d["serial"],))
                    self.steps.set_position(device_id, d.get("last_step", -1), d.get("drift", 0))
        return len(rows)

    def clashes(self, serials: list[str], fingerprints: list[str]) -> tuple[set, set]:
        taken_serials = {r[0] for r in self._all(
            "SELECT serial FROM devices WHERE serial = ANY(%s)", (list(serials),))}
        taken_fps = {r[0] for r in self._all(
            "SELECT fingerprint FROM devices WHERE fingerprint = ANY(%s)", (list(fingerprints),))}
        return taken_serials, taken_fps

    def assign_device(self, device_id: int, user: str, *, now: float, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> bool:
        if self._run("UPDATE devices SET user_name = %s, enabled_at = %s, "
                     "counter = coalesce(%s, counter) WHERE id = %s AND user_name IS NULL",
                     (user, now, counter, device_id)) != 1:
            return False
        self.steps.set_position(device_id, last_step, drift)
        return True

    def resync_device(self, device_id: int, *, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> None:
        self._run("UPDATE devices SET counter = coalesce(%s, counter), resynced_at = %s "
                  "WHERE id = %s", (counter, time.time(), device_id))
        self.steps.set_position(device_id, last_step, drift)

    def unassign_device(self, device_id: int, user: str) -> bool:
        if self._run("UPDATE devices SET user_name = NULL, enabled_at = NULL "
                     "WHERE id = %s AND user_name = %s", (device_id, user)) != 1:
            return False
        self.steps.reset_drift(device_id)
        return True

    def delete_device(self, device_id: int) -> bool:
        return self._run("DELETE FROM devices WHERE id = %s AND user_name IS NULL",
                         (device_id,)) == 1

    def count_user_devices(self, user: str) -> int:
        return self._value("SELECT count(*) FROM devices WHERE user_name = %s", (user,))

    def list_devices(self, user: str | None = None, status: str = "any") -> list[dict]:
        where, args = [], []
        if user is not None:
            where.append("d.user_name = %s")
            args.append(user)
        if status == "assigned":
            where.append("d.user_name IS NOT NULL")
        elif status == "unassigned":
            where.append("d.user_name IS NULL")
        sql = (_DEVICE_SELECT + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY d.serial COLLATE \"C\"")
        return [dict(zip(DEVICE_COLUMNS, r)) for r in self._all(sql, args)]

    def oldest_seeds(self, limit: int) -> list[tuple[str, bytes]]:
        with self.errors("reading seeds"):
            return self._all("SELECT serial, seed FROM devices ORDER BY id LIMIT %s", (limit,))
