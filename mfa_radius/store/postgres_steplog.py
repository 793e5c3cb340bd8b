"""The PostgreSQL step log: a TOTP device's last used step and drift, one row per device in
`device_steps` (none: never used, step -1, drift 0).

Using a step is one upsert that only moves the step forward: of N nodes sending the same step at
once, the first takes the row's lock and writes; the others wait for its commit, re-check the
condition on the row it committed and write nothing (rowcount 0: a replay). There is no fold:
every node contends on the one row, which is what makes the consume decided once.
"""

from __future__ import annotations

from collections.abc import Iterable

# The columns of a device row that come from here, over `devices d` joined with JOIN.
JOIN = "LEFT JOIN device_steps s ON s.device = d.id"
COLUMNS = {
    "last_step": "coalesce(s.step, -1)",
    "drift": "coalesce(s.drift, 0)",
    # TOTP uses are timed here, HOTP uses in the device row; 0 stands for never.
    "last_used_at": "nullif(greatest(coalesce(d.last_used_at, 0), coalesce(s.used_at, 0)), 0)",
    "user": "d.user_name",
}

_CONSUME = (
    "INSERT INTO device_steps (device, step, drift, used_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift, "
    "used_at = excluded.used_at WHERE excluded.step > device_steps.step")
# Many consumes in one statement (reserve): the devices whose step moved come back.
_CONSUME_MANY = (
    "INSERT INTO device_steps (device, step, drift, used_at) "
    "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::integer[], %s::double precision[]) "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift, "
    "used_at = excluded.used_at WHERE excluded.step > device_steps.step RETURNING device")
# A position set by an admin; on a tie it wins (its drift is the newer word on the clock).
_SET_POSITION = (
    "INSERT INTO device_steps (device, step, drift, used_at) VALUES (%s, %s, %s, 0) "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift "
    "WHERE excluded.step >= device_steps.step")


def device_columns(keys: Iterable[str]) -> str:
    """The select list of device columns `keys` over `devices d` JOIN-ed with the step log."""
    return ", ".join(COLUMNS.get(k, f"d.{k}") for k in keys)


class PgStepLog:
    """The step log over a PgConnection; writes run inside its transaction.

    A round trip to the database per consume would cost more than the rest of a decision, so a
    batch reserves the consumes it will make (reserve): one statement for all of them, whose
    result each consume() of the batch then takes instead of writing. The condition is the same
    statement's, row by row, so a reserved consume wins exactly when consume() would have.
    """

    batched = True

    def __init__(self, db):
        self.db = db
        self._reserved: dict[int, tuple[int, bool]] = {}  # device -> (step, won)

    def consume(self, device: int, step: int, drift: int, now: float) -> bool:
        """Record `step` unless it or a later step is recorded; True only for that caller."""
        reserved = self._reserved.get(device)
        if reserved is not None and reserved[0] == step:
            del self._reserved[device]
            return reserved[1]
        return self.db._run(_CONSUME, (device, step, drift, now)) == 1

    def reserve(self, claims: list[tuple[int, int, int, float]]) -> None:
        """Consume these (device, step, drift, now), one device once, in one statement, for the
        consume() calls of this transaction that will ask for them."""
        claims = [c for c in {c[0]: c for c in claims}.values() if c[0] not in self._reserved]
        if not claims:
            return
        devices, steps, drifts, times = (list(col) for col in zip(*claims))
        won = {row[0] for row in self.db._all(_CONSUME_MANY, (devices, steps, drifts, times))}
        for device, step, _, _ in claims:
            self._reserved[device] = (step, device in won)

    def release(self) -> int:
        """Forget what was reserved; how many reservations no consume() asked for."""
        left = len(self._reserved)
        self._reserved.clear()
        return left

    def set_position(self, device: int, step: int | None, drift: int | None) -> None:
        if step is None and drift is None:
            return
        current, current_drift = self.position(device)
        self.db._run(_SET_POSITION, (device, current if step is None else step,
                                     current_drift if drift is None else drift))

    def reset_drift(self, device: int) -> None:
        self.db._run("UPDATE device_steps SET drift = 0 WHERE device = %s", (device,))

    def position(self, device: int) -> tuple[int, int]:
        row = self.db._one("SELECT step, drift FROM device_steps WHERE device = %s", (device,))
        return (row[0], row[1]) if row else (-1, 0)

    def waiting(self) -> int:
        """Nothing waits: there is no fold."""
        return 0

    def fold(self, limit: int = -1) -> int:
        return 0
