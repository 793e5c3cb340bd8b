"""The verifier's users in memory: read once, seeds unsealed and HMACs prepared, kept in step
with what other connections commit.

The daemon loads every user with a device at start-up (`preload`); others are read when first
asked about (`user`). Before each decision, under the write lock, `refresh` asks the store what
other connections committed since (`changes_token`, then the users their writes touched, as the
database's triggers recorded them) and drops just those users, or everything after a mass change
or a gap. A used TOTP step is not such a change: the step log's conditional write refuses a step
that another process used after we read the device, and the verifier then reads that user
afresh. So the cache saves reads; replay safety never depends on it.

The cache also schedules the daemon's fold of the step log (`fold_due`, `fold`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config
from .errors import KeyFileError, StoreError
from .logsetup import RateLimitedLog, escape
from .otp import OtpKey, key_for
from .sealing import Sealer
from .store import Storage

log = logging.getLogger("mfa_radius.verifier")
_fold_errors = RateLimitedLog(log, burst=2)

# The daemon folds the step log when no attempt came for FOLD_IDLE seconds, FOLD_IDLE_CHUNK
# devices a transaction, or while busy once FOLD_AT devices wait, FOLD_CHUNK a transaction. A
# fold rewrites a page of device_steps for nearly every device it moves, and those pages go
# through the WAL and its checkpoints: folding during a burst cost the burst more than the
# larger log costs each commit, so busy folds wait for a long log (docs/benchmarks.md).
FOLD_IDLE = 1.0
FOLD_IDLE_CHUNK = 20_000
FOLD_AT = 30_000
FOLD_CHUNK = 2000


@dataclass(slots=True)
class CachedDevice:
    id: int
    serial: str
    kind: str
    digits: int
    period: int
    counter: int
    last_step: int
    drift: int
    key: OtpKey


@dataclass(slots=True)
class CachedUser:
    name: str
    known: bool  # has a users row
    failures: int
    locked_until: float
    has_recovery: bool
    devices: list[CachedDevice] = field(default_factory=list)
    phone: str | None = None  # registered for SMS codes
    # Other stored names fold to this one (a clash): refused, and never cached.
    ambiguous: bool = False
    unopenable: int = 0  # assigned devices left out: their seeds do not open (_build)


class UserCache:
    def __init__(self, store: Storage, sealer: Sealer, config: Callable[[], Config]):
        self.store = store
        self.sealer = sealer
        self._config = config  # the verifier's live config
        self._users: dict[str, CachedUser] = {}
        self._token: int | None = None  # the store's changes_token() the cache reflects
        self._seq = 0  # the last change (store.last_change) the cache reflects
        self.last_active = 0.0  # time.monotonic() of the last batch (Verifier.verify_batch)
        # {user: serials of their devices whose seeds did not open}, as last read (_build);
        # each serial is logged once, when first found.
        self.unopenable: dict[str, frozenset[str]] = {}
        self.unopenable_devices = 0  # their count, for the metrics (read from another thread)

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, name: str) -> bool:
        return name in self._users

    @property
    def _max(self) -> int:
        return self._config().storage.cache_users

    def get(self, name: str) -> CachedUser | None:
        """The cached state of `name`, without reading the database (None: not cached)."""
        return self._users.get(name)

    def refresh(self) -> None:
        """Drop what other connections' commits made stale (inside the caller's transaction for
        a decision: then nothing can change until it commits)."""
        token = self.store.changes_token()
        if token == self._token:
            return
        if self._token is None:
            self._users.clear()
            self._token, self._seq = token, self.store.last_change()
            return
        first, last, users = self.store.changed_users(self._seq, self._max // 4)
        if users is None or last < self._seq or first > self._seq + 1:
            # A mass change (an import), or a gap: pruned rows, a restored file.
            self._users.clear()
        else:
            for name in users:
                self._users.pop(name, None)
        self._token, self._seq = token, last

    def drop_all(self) -> None:
        """Forget everything, and read everything again (after a failed transaction)."""
        self._users.clear()
        self._token = None

    def forget(self, user: str | None = None) -> None:
        """Drop cached state (all of it, or one user's), e.g. after an admin change in this
        process (its own commits do not show in changes_token)."""
        if user is None:
            self._users.clear()
        else:
            self._users.pop(user, None)

    def user(self, name: str) -> CachedUser:
        """The state of `name` (a canonical name), read from the database unless cached."""
        state = self._users.get(name)
        if state is None:
            state = self._load(name)
            if state.ambiguous:  # its clash may be fixed by a rename at any time
                return state
            if len(self._users) >= self._max:
                self._users.pop(next(iter(self._users)))
            self._users[name] = state
        return state

    def preload(self) -> int:
        """Load users with devices, up to `[storage] cache_users`; how many were loaded.

        One pass over the database (the read, the unseal, the HMAC set-up of each), so that
        nobody's first sign-in after a start pays for a database read.
        """
        # Fold the log first: the folded steps then say who signed in last (the choice below
        # when there are too many users).
        self.fold(limit=-1)
        with self.store.errors("loading users"):
            self.refresh()
            room = self._max - len(self._users)
            count = 0
            # Names of a clash are read when asked for, and never cached (user).
            clashes = {n for canon, stored in self.store.name_clashes().items()
                       for n in (canon, *stored)}
            for name, row, devices, has_recovery in self.store.preload_users(max(room, 0)):
                if name not in self._users and name not in clashes:
                    self._users[name] = self._build(name, row, devices, has_recovery)
                    count += 1
        return count

    def _load(self, name: str) -> CachedUser:
        row, devices, has_recovery, ambiguous = self.store.load_user(name)
        if ambiguous:
            return CachedUser(name=name, known=row is not None, failures=0, locked_until=0.0,
                              has_recovery=False, ambiguous=True)
        return self._build(name, row, devices, has_recovery)

    def _build(self, name: str, row: dict | None, rows: list[dict],
               has_recovery: bool) -> CachedUser:
        """A user from its rows (each device's last step as the step log gives it)."""
        devices = []
        skipped: list[str] = []
        for d in rows:
            try:
                seed = self.sealer.unseal(d["seed"], d["serial"])
            except KeyFileError as exc:
                # Sealed under another key, or a row copied from another device (the seal binds
                # the serial): this device can never accept, so leaving it out opens nothing,
                # and the user's other devices and everyone else keep working.
                skipped.append(d["serial"])
                if d["serial"] not in self.unopenable.get(name, ()):
                    log.error("user %s: %s; that device is skipped (its codes are refused)",
                              escape(name[:256]), exc)
                continue
            devices.append(CachedDevice(d["id"], d["serial"], d["kind"], d["digits"],
                                        d["period"], d["counter"], d["last_step"], d["drift"],
                                        key_for(d["kind"], seed, d["algorithm"], d["digits"])))
        if skipped or name in self.unopenable:
            self._note_unopenable(name, skipped)
        return CachedUser(name=name, known=row is not None,
                          failures=row["failures"] if row else 0,
                          locked_until=row["locked_until"] if row else 0.0,
                          has_recovery=has_recovery, devices=devices,
                          phone=row["phone"] if row else None, unopenable=len(skipped))

    def _note_unopenable(self, name: str, serials: list[str]) -> None:
        before = len(self.unopenable.pop(name, ()))
        if serials:
            self.unopenable[name] = frozenset(serials)
        self.unopenable_devices += len(serials) - before

    # ---- folding the step log --------------------------------------------------------------

    def fold_due(self, now: float | None = None) -> int:
        """How many devices' steps the daemon should fold now (0: none): FOLD_IDLE_CHUNK when
        steps wait and nobody signed in for FOLD_IDLE seconds, FOLD_CHUNK when FOLD_AT wait."""
        try:
            with self.store.errors("counting used steps"):
                waiting = self.store.steps.waiting()
        except StoreError as exc:
            _fold_errors.error("fold", "folding the step log: %s", exc)
            return 0
        if not waiting:
            return 0
        now = time.monotonic() if now is None else now
        if now - self.last_active >= FOLD_IDLE:
            return FOLD_IDLE_CHUNK
        return FOLD_CHUNK if waiting >= FOLD_AT else 0

    def fold(self, limit: int = FOLD_CHUNK) -> int:
        """Fold the steps of up to `limit` devices (-1: all) in one short transaction; how many.
        Errors are logged, never raised: the log is only folded later."""
        try:
            with self.store.errors("folding used steps"), self.store.transaction():
                return self.store.steps.fold(limit)
        except (StoreError, KeyFileError) as exc:
            # The daemon retries every pass: on a full disk, a line or two a minute.
            _fold_errors.error("fold", "folding the step log: %s", exc)
            return 0
