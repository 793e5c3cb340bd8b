"""The step log: the one owner of TOTP replay state in the SQLite database.

Where a TOTP device's last used step is (with the drift it implied): the higher of its row in
`device_steps` and its row in `recent_steps`; no row in either means never used (step -1, drift
0). `device_steps` holds the folded steps and the positions that enable and resync set;
`recent_steps` the steps used since the last fold. Nothing else holds replay state: the audit rows
are history (their device, step and drift columns are never read to decide), so pruning them
cannot bring a used code back.

Using a step is one conditional write (`consume`): it succeeds only when no step at or past it
is recorded for the device, and its success decides the accept, whatever the caller had cached.

Why two tables: an accept upserts one row of `recent_steps`, which the fold keeps small, so a
busy commit writes a few of its pages; an upsert into `device_steps`, one row per device of the
whole database, would land on a page of its own for nearly every accept, and a commit's cost
grows with the pages it writes. The fold moves `recent_steps` into `device_steps` in bulk, where
many steps share each page written: the daemon does it when idle or once enough steps wait
(UserCache.fold_due), housekeeping on every pass.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

# The three columns of a device row that come from here, over `devices d` joined with JOIN.
JOIN = ("LEFT JOIN device_steps s ON s.device = d.id "
        "LEFT JOIN recent_steps r ON r.device = d.id")
COLUMNS = {
    "last_step": "max(coalesce(s.step, -1), coalesce(r.step, -1))",
    "drift": "CASE WHEN coalesce(r.step, -1) > coalesce(s.step, -1) THEN r.drift "
             "ELSE coalesce(s.drift, 0) END",
    # TOTP uses are timed here, HOTP uses in the device row; 0 stands for never.
    "last_used_at": "nullif(max(coalesce(d.last_used_at, 0), coalesce(s.used_at, 0), "
                    "coalesce(r.used_at, 0)), 0)",
}

_CONSUME = (
    "INSERT INTO recent_steps (device, step, drift, used_at) "
    "SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS "
    "(SELECT 1 FROM device_steps WHERE device = ?1 AND step >= ?2) "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift, "
    "used_at = excluded.used_at WHERE excluded.step > recent_steps.step")
# A position set by an admin; on a tie it wins (its drift is the newer word on the clock).
_SET_POSITION = (
    "INSERT INTO device_steps (device, step, drift, used_at) VALUES (?, ?, ?, 0) "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift "
    "WHERE excluded.step >= device_steps.step")
# A fold never moves a step back (a resync may be ahead), nor the time of the last use.
_FOLD = (
    "INSERT INTO device_steps (device, step, drift, used_at) "
    "SELECT device, step, drift, used_at FROM recent_steps WHERE device <= ? "
    "ON CONFLICT (device) DO UPDATE SET "
    "drift = CASE WHEN excluded.step > device_steps.step THEN excluded.drift ELSE drift END, "
    "step = max(step, excluded.step), used_at = max(used_at, excluded.used_at)")


def device_columns(keys: Iterable[str]) -> str:
    """The select list of device columns `keys` over `devices d` JOIN-ed with the step log."""
    return ", ".join(COLUMNS.get(k, f"d.{k}") for k in keys)


class StepLog:
    """The step log on one connection. Writes run inside the connection's transaction."""

    # A consume is a statement on a local file, cheaper than planning a batch of them ahead:
    # reserve() does nothing and each consume() writes.
    batched = False

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def consume(self, device: int, step: int, drift: int, now: float) -> bool:
        """Record `step` as the device's last used one unless a step at or past it already is;
        True only for the one caller that recorded it."""
        return self.conn.execute(_CONSUME, (device, step, drift, now)).rowcount == 1

    def reserve(self, claims: list[tuple[int, int, int, float]]) -> None:
        pass

    def release(self) -> int:
        return 0

    def set_position(self, device: int, step: int | None, drift: int | None) -> None:
        """Enable or resync: the step the next code must be past and the clock's drift (either
        may be None: kept). A used step ahead of `step` stays the last used one."""
        if step is None and drift is None:
            return
        current, current_drift = self.position(device)
        self.conn.execute(_SET_POSITION, (device, current if step is None else step,
                                          current_drift if drift is None else drift))

    def reset_drift(self, device: int) -> None:
        """A deactivated device's drift goes (the next owner's clock is another); its last used
        step stays, so none of its old codes works again."""
        for table in ("device_steps", "recent_steps"):
            self.conn.execute(f"UPDATE {table} SET drift = 0 WHERE device = ?", (device,))

    def position(self, device: int) -> tuple[int, int]:
        """(last used step, drift) of one device."""
        return self.conn.execute(
            f"SELECT {COLUMNS['last_step']}, {COLUMNS['drift']} FROM (SELECT ? AS id) d "
            "LEFT JOIN device_steps s ON s.device = d.id "
            "LEFT JOIN recent_steps r ON r.device = d.id", (device,)).fetchone()

    def waiting(self) -> int:
        """Devices whose last step is not folded yet."""
        return self.conn.execute("SELECT count(*) FROM recent_steps").fetchone()[0]

    def fold(self, limit: int = -1) -> int:
        """Move the steps of up to `limit` devices (all with -1) from `recent_steps` into
        `device_steps`, inside a transaction; how many were moved."""
        if limit > 0:
            row = self.conn.execute("SELECT device FROM recent_steps ORDER BY device "
                                    "LIMIT 1 OFFSET ?", (limit - 1,)).fetchone()
            bound = row[0] if row else None
        else:
            bound = None
        if bound is None:
            bound = self.conn.execute("SELECT max(device) FROM recent_steps").fetchone()[0]
            if bound is None:
                return 0
        self.conn.execute(_FOLD, (bound,))
        return self.conn.execute("DELETE FROM recent_steps WHERE device <= ?", (bound,)).rowcount
