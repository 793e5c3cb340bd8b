"""The shared verifier: given a user, a code and who is asking, accept or reject, and why.

Used by the RADIUS server, the PAM socket front, the PAM in-process fallback and the CLI. It knows
nothing of UDP or PAM. A daemon hands it a batch of attempts (everything that arrived in one loop
tick) and it decides them all and records them in ONE transaction (group commit); everyone else
passes a batch of one.

The rules it applies are mfa_radius.rules (access, lockout, sms) and the device's token kind
(otp.HotpKey, otp.TotpKey: where codes are searched and what an accept consumes); each Decision
carries what it consumed. Why a decision went its way is explain.py's; issuing SMS codes is
sms/issuer.py's.

Users and their devices are cached in memory with their seeds unsealed and HMACs prepared (the
daemon loads them all at start-up, `preload`). When another connection has committed (`PRAGMA
data_version`, checked under the write lock) the users its writes touched, as recorded by the
database's triggers in `changes` and by the TOTP accepts it added to the audit log, are dropped
and read again when next needed; a decision is always made on current state, so a TOTP accept
only has to write its step into its audit row (the used-steps log, Store._migrate_6). The daemon
folds that log into `device_steps` when it is idle (`fold`).
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from . import recovery
from .accounts import Accounts
from .config import Config
from .errors import KeyFileError, MfaError, StoreError, TransactionLost
from .explain import explain
from .logsetup import RateLimitedLog, safe
from .otp import OtpKey, key_for
from .rules import lockout, names
from .rules import sms as sms_rules
from .rules.access import Access, sms_usable
from .sealing import Sealer
from .state import bring_names, open_keyed_store
from .store import Store

log = logging.getLogger("mfa_radius.verifier")
_fold_errors = RateLimitedLog(log, burst=2)

MAX_USER_LEN = 256

# The daemon folds the used-steps log into `device_steps` when no attempt came for FOLD_IDLE
# seconds, FOLD_IDLE_CHUNK steps a transaction, or while busy once steps of FOLD_AT devices
# wait, FOLD_CHUNK steps a transaction. A fold writes each page of that narrow table it touches
# once, so big chunks are cheaper per step, but they hold the loop longer: the big ones only
# when nobody is waiting.
FOLD_IDLE = 1.0
FOLD_IDLE_CHUNK = 20_000
FOLD_AT = 30_000
FOLD_CHUNK = 1000
_NOT_USED = (None, None, None)  # the audit row's (device, step, drift) of all but TOTP accepts
# Work done for users without devices, so that they take as long as users with one.
_DUMMY_KEY = OtpKey(b"\x00" * 20)


# Attempt and Decision are NamedTuples: one of each per RADIUS request, and they are cheaper to
# build than frozen dataclasses.
class Attempt(NamedTuple):
    """One code to check. `source` says who asks, e.g. "radius:vpn1 nas=10.0.0.1" or "pam:sshd"."""

    user: str
    code: str
    source: str = "cli"
    now: float | None = None


class Decision(NamedTuple):
    accepted: bool
    # ok, exempt, no_device_allowed, bad_code, replay, reused_code, locked, no_device,
    # malformed, ambiguous_user, error
    reason: str
    method: str | None = None  # totp, hotp, recovery, sms
    serial: str | None = None
    retry_after: float = 0.0  # seconds, when locked
    # What an accept consumed, as its audit row records it: (device id, step, drift) for a TOTP
    # step; None when nothing goes into the used-steps log (an HOTP counter is the device row's).
    consumed: tuple | None = None

    @property
    def result(self) -> str:
        return "accept" if self.accepted else "reject"


@dataclass(frozen=True, slots=True)
class UserStatus:
    """What the fronts need before they prompt: does this user have a second factor at all?"""

    enrolled: bool  # has an assigned device, unused recovery codes or an SMS phone
    exempt: bool  # listed in policy.exempt_users: no second factor asked
    privileged: bool  # root, policy.privileged_users or a member of policy.privileged_groups
    allowed_without_device: bool  # policy lets this unenrolled user through (nullok)
    locked_for: float  # seconds left of a lockout, 0 when not locked
    digits: tuple[int, ...] = ()  # code lengths of the user's devices (PAM forward_pass splits)
    sms: bool = False  # a code can be sent by SMS (phone set, not privileged, gateways configured)
    sms_only: bool = False  # SMS is the user's only method: send a code before prompting
    phone_hint: str = ""  # "ending 1234", for the prompt ("" without SMS)
    recovery: bool = False  # has unused recovery codes (which open a locked account too)


@dataclass(slots=True)
class _Device:
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
class _User:
    name: str
    known: bool  # has a users row
    failures: int
    locked_until: float
    has_recovery: bool
    devices: list[_Device] = field(default_factory=list)
    phone: str | None = None  # registered for SMS codes
    # Other stored names fold to this one (Store._migrate_8): refused, and never cached.
    ambiguous: bool = False
    unopenable: int = 0  # assigned devices left out: their seeds do not open (_build)


class Verifier:
    def __init__(self, config: Config, store: Store, sealer: Sealer,
                 accounts: Accounts | None = None):
        self.config = config
        self.store = store
        self.sealer = sealer
        self.accounts = accounts or Accounts()
        self._names(config)
        self._cache: dict[str, _User] = {}
        self._version: int | None = None
        self._seq = 0  # the last row of `changes` the cache reflects
        self._used_seq = 0  # the last audit row (the used-steps log) the cache reflects
        # {device id: (step, drift)} of the log's steps not folded yet, kept by the daemon
        # (preload) so that a user read from disk needs no scan of the log; None elsewhere.
        self._unfolded: dict[int, tuple[int, int]] | None = None
        self._last_batch = 0.0  # time.monotonic() of the last verify_batch
        # Why the last batch was refused as "error" (a StoreError or KeyFileError), for the CLI,
        # which has no log; None after a batch that was decided.
        self.last_error: MfaError | None = None
        self._steps_used = False  # in the batch being decided
        self._locked_tries: dict[str, int] = {}  # recovery codes checked while locked, this batch
        # A sub-key for SMS code hashes, derived through the fingerprint key (never stored);
        # sms/issuer.py hashes the codes it issues with it.
        self.sms_key = sealer.fingerprint(b"mfa-radius sms code key v1").encode()
        # {user: serials of their devices whose seeds did not open}, as last read (_build);
        # each serial is logged once, when first found.
        self._unopenable: dict[str, frozenset[str]] = {}
        self.unopenable_devices = 0  # their count, for the metrics (read from another thread)

    @classmethod
    def open(cls, config: Config, accounts: Accounts | None = None,
             check_all_names: bool = False) -> Verifier:
        """Open the key file and the database named by the config (both must exist); a key file
        that is not the database's is refused (KeyFileError), and the stored user names are
        brought to the config's rule (state.open_keyed_store)."""
        store, sealer = open_keyed_store(config, check_all_names=check_all_names)
        return cls(config, store, sealer, accounts)

    def reconfigure(self, config: Config) -> None:
        """Swap in a new (validated) config; policy applies from the next attempt. A change of
        the name rule ([policy] username_case, strip_realm) renames the stored names first."""
        old = self.config.policy
        if (old.username_case, old.strip_realm) != (config.policy.username_case,
                                                    config.policy.strip_realm):
            bring_names(self.store, config)
            self._drop_all()
        self.config = config
        self._names(config)

    def _names(self, config: Config) -> None:
        self.canonical, _ = names.policy_rule(config.policy)
        self._access = Access.of(config.policy)

    # ---- policy questions ------------------------------------------------------------------

    # The questions below take canonical names (self.canonical); status, verify and the SMS
    # issuer canonicalise what they are given. The rules are rules.access; the groups are NSS's.

    def is_privileged(self, user: str) -> bool:
        access = self._access
        # By name first: root and privileged_users need no group lookup.
        return access.privileged_by_name(user) or access.is_privileged(
            user, self.accounts.groups(user))

    def allowed_without_device(self, user: str) -> bool:
        return self._access.allowed_without_device(user, self.accounts.groups(user))

    def status(self, user: str, now: float | None = None) -> UserStatus:
        """What the fronts need before prompting; names.UserNameError for a refused name."""
        now = time.time() if now is None else now
        user = self.canonical(user)
        with self.store.errors("reading user"):
            self._refresh()
            state = self._user(user)
        if state.ambiguous:  # fail closed: a code is asked for, and refused (ambiguous_user)
            return UserStatus(enrolled=True, exempt=False, privileged=self.is_privileged(user),
                              allowed_without_device=False, locked_for=0.0)
        usable = self._sms_usable(state)
        sms = usable and bool(self.config.sms.gateways)
        return UserStatus(
            # A phone counts even without a gateway: nullok must not let its owner through.
            # So does a device whose seed does not open: it is the user's, just unusable.
            enrolled=bool(state.devices) or state.has_recovery or usable
            or bool(state.unopenable),
            exempt=self._access.is_exempt(user),
            privileged=self.is_privileged(user),
            allowed_without_device=self.allowed_without_device(user),
            locked_for=max(0.0, state.locked_until - now),
            digits=tuple(sorted({d.digits for d in state.devices})),
            sms=sms,
            sms_only=sms and not state.devices,
            phone_hint=sms_rules.phone_hint(state.phone or "") if sms else "",
            recovery=state.has_recovery,
        )

    def _sms_usable(self, state: _User) -> bool:
        # The phone first: the group lookup only for users who have one.
        return bool(state.phone) and sms_usable(state.phone, self.is_privileged(state.name))

    # ---- for the SMS issuer (sms/issuer.py) ------------------------------------------------

    def current_user(self, user: str) -> _User:
        """The state of canonical `user` as a decision sees it (others' commits read first);
        call it inside a store transaction."""
        self._refresh()
        return self._user(user)

    def discard_cache(self) -> None:
        """Forget everything cached, after a failure that may have left it behind the database."""
        self._drop_all()

    # ---- verification ----------------------------------------------------------------------

    def verify(self, attempt: Attempt) -> Decision:
        return self.verify_batch([attempt])[0]

    def verify_batch(self, attempts: list[Attempt]) -> list[Decision]:
        """Decide every attempt and record them all in one transaction.

        A decision to accept is returned only after the transaction that records the code as used
        has committed. An attempt whose decision fails (a database error, a bug) is refused
        alone, its writes undone (a savepoint each when the batch holds more than one); if the
        transaction itself fails (reading others' commits, the audit rows, the COMMIT), every
        attempt of the batch is refused (fail closed).
        """
        self._last_batch = time.monotonic()
        try:
            with self.store.errors("verification"), self.store.transaction():
                # Under the write lock and with every commit of others read (_refresh), the
                # cached steps are the database's: the used steps are appended, no check needed.
                self._refresh()
                self._steps_used = False
                self._locked_tries = {}
                audit: list[tuple] = []
                if len(attempts) == 1:
                    decisions = [self._decide(attempts[0], audit)]
                else:
                    decisions = [self._decide_alone(a, audit) for a in attempts]
                self.store.add_audit(audit)
                if self._steps_used:  # our rows of the log: not to be read back as others'
                    self._used_seq = self.store.last_audit_id()
            self.last_error = None
            return decisions
        except (StoreError, KeyFileError) as exc:
            log.error("refusing %d attempt(s): %s", len(attempts), exc)
            self.last_error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must refuse, never accept
            log.exception("refusing %d attempt(s): internal error", len(attempts))
            self.last_error = MfaError(f"internal error: {type(exc).__name__}: {exc}")
        self._drop_all()  # the cache may hold steps of the rolled-back batch
        return [Decision(False, "error") for _ in attempts]

    def _decide_alone(self, attempt: Attempt, audit: list[tuple]) -> Decision:
        """_decide inside a savepoint: a failure refuses this attempt only (reason=error), and
        undoes its writes; its user is read afresh next time."""
        mark = len(audit)
        try:
            with self.store.savepoint():
                return self._decide(attempt, audit)
        except TransactionLost:
            raise  # nothing of the batch can be committed: all of it is refused
        except Exception as exc:  # noqa: BLE001 - a bug must refuse, never accept
            if isinstance(exc, (StoreError, KeyFileError)):
                log.error("refusing user %s from %s: %s", safe(attempt.user),
                          safe(attempt.source), exc)
            else:
                log.exception("refusing user %s from %s: internal error", safe(attempt.user),
                              safe(attempt.source))
        del audit[mark:]
        self._cache.pop(attempt.user, None)
        now = time.time() if attempt.now is None else attempt.now
        audit.append((now, attempt.user[:MAX_USER_LEN], None, None, attempt.source[:512],
                      "reject", "error") + _NOT_USED)
        return Decision(False, "error")

    def _decide(self, attempt: Attempt, audit: list[tuple]) -> Decision:
        now = time.time() if attempt.now is None else attempt.now
        try:
            user = self.canonical(attempt.user)
        except names.UserNameError:
            user, decision = attempt.user, Decision(False, "malformed")
        else:
            decision = self._check(user, attempt.code.strip(), now)
        audit.append((now, user[:MAX_USER_LEN], decision.method, decision.serial,
                      attempt.source[:512], decision.result, decision.reason)
                     + (decision.consumed or _NOT_USED))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user %s from %s: %s: %s", safe(user), safe(attempt.source),
                      decision.result, explain(decision, self._cache.get(user),
                                               self._unopenable.get(user, frozenset()),
                                               self.config, now))
        return decision

    def _check(self, user: str, code: str, now: float) -> Decision:
        if not user or len(user) > MAX_USER_LEN or not code or len(code) > 64:
            return Decision(False, "malformed")
        if self._access.is_exempt(user):
            if self._user(user).ambiguous:
                return Decision(False, "ambiguous_user")
            return Decision(True, "exempt")
        state = self._user(user)
        if state.ambiguous:
            return Decision(False, "ambiguous_user")
        if state.locked_until > now:
            if state.has_recovery and recovery.looks_like_recovery_code(code):
                return self._recover_while_locked(state, code, now)
            return Decision(False, "locked", retry_after=state.locked_until - now)
        if not state.devices and not state.has_recovery and not self._sms_usable(state):
            _DUMMY_KEY.find(code, range(2 * self.config.otp.totp_window + 1))
            if state.unopenable:
                # Enrolled, so never let through by nullok; no code can match, so not a failure.
                return Decision(False, "error")
            if self.allowed_without_device(user):
                return Decision(True, "no_device_allowed")
            return Decision(False, "no_device")

        replay_of: _Device | None = None
        refusal = "replay"
        digits_only = code.isdigit() and code.isascii()
        for device in state.devices:
            if not digits_only or len(code) != device.digits:
                continue
            matched, why = device.key.match(device, code, now, self.config.otp)
            if matched is not None:
                consumed = self._consume(device, matched, now)
                if consumed is not None:
                    return self._success(state, device.kind, device.serial, now,
                                         consumed or None)
                # Another process moved this HOTP counter after we cached the device: refused
                # as a replay, and the user is read afresh next time.
                self._cache.pop(user, None)
                why = "replay"
            if why is not None and replay_of is None:
                replay_of, refusal = device, why
        if recovery.looks_like_recovery_code(code):
            # Used codes are kept (hashed): typing one again is a replay, like a used TOTP step.
            found = self._recovery(state, code, now)
            if found is not None:
                return found
        if state.phone and sms_rules.looks_like_code(code) and self._sms_usable(state):
            digest = sms_rules.code_hash(self.sms_key, user, code)
            live = self.store.sms_code(user)
            if (live is not None and live[1] > now and hmac.compare_digest(digest, live[0])
                    and self.store.consume_sms_code(user, digest, now)):
                return self._success(state, "sms", None, now)
        if replay_of is not None:
            # A used code is not a guess: it does not count towards the lockout.
            if refusal == "reused_code":
                return Decision(False, "reused_code", replay_of.kind, replay_of.serial)
            return Decision(False, "replay", replay_of.kind, replay_of.serial)
        return self._failure(state, now)

    def _recovery(self, state: _User, code: str, now: float) -> Decision | None:
        """Accept an unused recovery code (clearing any lockout), call a used one a replay;
        None when `code` is none of the user's."""
        stored = self.store.recovery_codes(state.name)
        code_id = recovery.match(code, [row[:3] for row in stored]) if stored else None
        if code_id is None:
            return None
        used = next(row[3] for row in stored if row[0] == code_id)
        if not used and self.store.consume_recovery_code(code_id, now):
            state.has_recovery = self.store.has_recovery_codes(state.name)
            return self._success(state, "recovery", None, now)
        return Decision(False, "replay", "recovery")

    def _recover_while_locked(self, state: _User, code: str, now: float) -> Decision:
        """A recovery code typed while locked: checked, up to LOCKED_RECOVERY_PER_HOUR times an
        hour per user, so that someone who keeps an account locked with wrong codes cannot keep
        its owner out; a wrong one neither counts towards nor lengthens the lockout."""
        locked = Decision(False, "locked", retry_after=state.locked_until - now)
        tries = (self.store.recovery_tries_since(state.name[:MAX_USER_LEN], now - 3600.0)
                 + self._locked_tries.get(state.name, 0))
        if not lockout.recovery_try_allowed(tries):
            return locked
        self._locked_tries[state.name] = self._locked_tries.get(state.name, 0) + 1
        found = self._recovery(state, code, now)
        # Recorded with method "recovery": the audit rows the hourly limit counts.
        return found if found is not None else locked._replace(method="recovery")

    def _consume(self, device: _Device, matched: int, now: float) -> tuple | None:
        """Use up `matched` by the rule of the device's kind: what the audit row records of it,
        or None when another process used it first."""
        consumed = device.key.consume(device, matched, now, self.store)
        if consumed:  # a step for the used-steps log
            self._steps_used = True
            if self._unfolded is not None:
                self._unfolded[device.id] = consumed[1:]
        return consumed

    def _success(self, state: _User, method: str, serial: str | None, now: float,
                 consumed: tuple | None = None) -> Decision:
        # A device success is remembered in its row (last_used_at); others need the user row.
        if state.failures or state.locked_until or serial is None:
            state.failures, state.locked_until = 0, 0.0
            self.store.set_user_state(state.name, 0, 0.0, success_at=now)
            state.known = True
        return Decision(True, "ok", method, serial, 0.0, consumed)

    def _failure(self, state: _User, now: float) -> Decision:
        state.failures += 1
        delay = lockout.lock_delay(state.failures, self.config.policy)
        if delay is not None:
            state.locked_until = now + delay
        self.store.set_user_state(state.name, state.failures, state.locked_until, failure_at=now)
        state.known = True
        if delay is not None:
            log.warning("user %s locked for %.0f s after %d failures", safe(state.name),
                        delay, state.failures)
        return Decision(False, "bad_code")

    # ---- cache -----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Bring the cache up to date with what other connections committed."""
        version = self.store.data_version()
        if version == self._version:
            return
        if self._version is None:
            self._cache.clear()
            # The place in the log before its content: a row added in between is read twice,
            # never missed.
            self._version, self._seq = version, self.store.last_change()
            self._restart_log(self.store.last_audit_id())
            return
        first, last, users = self.store.changed_users(self._seq, self._cache_max // 4)
        if users is None or last < self._seq or first > self._seq + 1:
            # A mass change (an import), or a gap: pruned rows, a restored file.
            self._cache.clear()
        else:
            for name in users:
                self._cache.pop(name, None)
        self._version, self._seq = version, last
        self._read_used()

    def _read_used(self) -> None:
        """Take in the steps other processes used since our last look."""
        last = self.store.last_audit_id()
        if last == self._used_seq:
            return
        if last < self._used_seq:
            # The log went back (a restored file): what it said is only in the folded steps
            # now. Read everything again.
            self._cache.clear()
            self._restart_log(last)
            return
        rows = self.store.used_since(self._used_seq)
        # Outside a transaction a row may land between the two reads: it counts.
        last = max(last, rows[-1][0] if rows else 0)
        unfolded = self._unfolded
        for _, device, step, drift, user in rows:
            if unfolded is not None and step > unfolded.get(device, (-1, 0))[0]:
                unfolded[device] = (step, drift)
            if user is not None:
                self._cache.pop(user, None)
        self._used_seq = last

    def _restart_log(self, last: int) -> None:
        """Read the used-steps log afresh from its end `last`: the daemon's steps not folded."""
        self._used_seq = last
        if self._unfolded is not None:
            self._unfolded = self.store.unfolded_steps()

    def _drop_all(self) -> None:
        self._cache.clear()
        self._version = None

    @property
    def _cache_max(self) -> int:
        return self.config.storage.cache_users

    def preload(self) -> int:
        """Load users with devices into the cache, up to `[storage] cache_users`; how many.

        One pass over the database (~10 us a user: the read, the unseal, the HMAC set-up), so
        that nobody's first sign-in after a start pays for a database read.
        """
        # Fold the log first: the folded steps then say who signed in last (the choice below
        # when there are too many users), and the in-memory rest of the log starts empty.
        self.fold(limit=-1)
        with self.store.errors("loading users"):
            if self._unfolded is None:
                self._unfolded = {}
                self._version = None  # _refresh reads the whole log
            self._refresh()
            room = self._cache_max - len(self._cache)
            count = 0
            # Names of a clash are read when asked for, and never cached (_user).
            clashes = {n for canon, stored in self.store.name_clashes().items()
                       for n in (canon, *stored)}
            for name, row, devices, has_recovery in self.store.preload_users(max(room, 0)):
                if name not in self._cache and name not in clashes:
                    self._cache[name] = self._build(name, row, devices, has_recovery,
                                                    self._unfolded)
                    count += 1
        return count

    def _user(self, name: str) -> _User:
        state = self._cache.get(name)
        if state is None:
            state = self._load(name)
            if state.ambiguous:  # its clash may be fixed by a rename at any time
                return state
            if len(self._cache) >= self._cache_max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = state
        return state

    def _load(self, name: str) -> _User:
        row, devices, has_recovery, ambiguous = self.store.load_user(name)
        if ambiguous:
            return _User(name=name, known=row is not None, failures=0, locked_until=0.0,
                         has_recovery=False, ambiguous=True)
        unfolded = self._unfolded
        if unfolded is None and devices:  # not the daemon: scan the (short) log for them
            unfolded = self.store.unfolded_steps(d["id"] for d in devices)
        return self._build(name, row, devices, has_recovery, unfolded)

    def _build(self, name: str, row: dict | None, rows: list[dict], has_recovery: bool,
               unfolded: dict[int, tuple[int, int]] | None) -> _User:
        """A user from its rows, each device's last step the later of its row's and the log's
        (`unfolded`: {device id: (step, drift)} not folded yet)."""
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
                if d["serial"] not in self._unopenable.get(name, ()):
                    log.error("user %s: %s; that device is skipped (its codes are refused)",
                              safe(name), exc)
                continue
            last_step, drift = d["last_step"], d["drift"]
            if unfolded and d["id"] in unfolded and unfolded[d["id"]][0] > last_step:
                last_step, drift = unfolded[d["id"]]
            devices.append(_Device(d["id"], d["serial"], d["kind"], d["digits"], d["period"],
                                   d["counter"], last_step, drift,
                                   key_for(d["kind"], seed, d["algorithm"], d["digits"])))
        if skipped or name in self._unopenable:
            self._note_unopenable(name, skipped)
        return _User(name=name, known=row is not None,
                     failures=row["failures"] if row else 0,
                     locked_until=row["locked_until"] if row else 0.0,
                     has_recovery=has_recovery, devices=devices,
                     phone=row["phone"] if row else None, unopenable=len(skipped))

    def _note_unopenable(self, name: str, serials: list[str]) -> None:
        before = len(self._unopenable.pop(name, ()))
        if serials:
            self._unopenable[name] = frozenset(serials)
        self.unopenable_devices += len(serials) - before

    # ---- folding the used-steps log ------------------------------------------------------

    def fold_due(self, now: float | None = None) -> int:
        """How many steps the daemon should fold now (0: none): FOLD_IDLE_CHUNK when steps wait
        and nobody signed in for FOLD_IDLE seconds, FOLD_CHUNK when steps of FOLD_AT devices
        wait (as far as this process knows; the daemon keeps count, others fold in bulk)."""
        waiting = len(self._unfolded or ())
        if not waiting:
            return 0
        now = time.monotonic() if now is None else now
        if now - self._last_batch >= FOLD_IDLE:
            return FOLD_IDLE_CHUNK
        return FOLD_CHUNK if waiting >= FOLD_AT else 0

    def fold(self, limit: int = FOLD_CHUNK) -> int:
        """Fold up to `limit` rows of the used-steps log into `device_steps` (one short
        transaction); how many devices' steps it wrote. Errors are logged, never raised: the log is
        only folded later."""
        try:
            with self.store.errors("folding used steps"), self.store.transaction():
                self._refresh()
                written, folded = self.store.fold_used(limit)
        except (StoreError, KeyFileError) as exc:
            # The daemon retries every pass: on a full disk, a line or two a minute.
            _fold_errors.error("fold", "folding the used-steps log: %s", exc)
            self._drop_all()
            return 0
        unfolded = self._unfolded
        if unfolded is not None:
            if folded is None:  # under the write lock, every row read: nothing of the log is left
                unfolded.clear()
            else:
                for device, step in folded:
                    if device in unfolded and unfolded[device][0] <= step:
                        del unfolded[device]
        return written

    def forget(self, user: str | None = None) -> None:
        """Drop cached state (all of it, or one user's) after an admin change in this process."""
        if user is None:
            self._cache.clear()
        else:
            self._cache.pop(user, None)


__all__ = ["Attempt", "Decision", "UserStatus", "Verifier", "MfaError"]
