"""The shared verifier: given a user, a code and who is asking, accept or reject, and why.

Used by the RADIUS server, the PAM socket front, the PAM in-process fallback and the CLI. It knows
nothing of UDP or PAM. A daemon hands it a batch of attempts (everything that arrived in one loop
tick) and it decides them all and records them in ONE transaction (group commit); everyone else
passes a batch of one.

The rules it applies are mfa_radius.rules (access, lockout, sms) and the device's token kind
(otp.HotpKey, otp.TotpKey: where codes are searched and what an accept consumes); each Decision
carries what it consumed. Why a decision went its way is explain.py's; issuing SMS codes is
sms/issuer.py's.

`Verifier` is one class of about 420 lines (its module a little over 500) on purpose: a
decision reads the user, the policy and the store inside one transaction, and its steps (match,
consume, success, failure, recovery while locked) share that state; split into several objects,
each attempt would pay the hops between them on the RADIUS hot path. Reserving a batch's steps
ahead (_reserve, _claim) must follow _check's tests exactly, so it sits beside it. What is not a
decision already lives elsewhere.

Users and their devices come from a UserCache (usercache.py), brought up to date with others'
commits at the start of each batch; every code is consumed by a conditional write in the store
(a TOTP step through the step log), so a stale cache can only turn into a refused replay.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

from . import recovery
from .accounts import Accounts
from .config import Config
from .errors import KeyFileError, MfaError, StoreError, TransactionLost
from .explain import explain
from .logsetup import RateLimitedLog, safe
from .otp import OtpKey
from .rules import lockout, names
from .rules import sms as sms_rules
from .rules.access import Access, sms_usable
from .sealing import Sealer
from .state import bring_names, open_keyed_store
from .store import Storage
from .usercache import FOLD_CHUNK, UserCache
from .usercache import CachedDevice as _Device
from .usercache import CachedUser as _User

log = logging.getLogger("mfa_radius.verifier")

MAX_USER_LEN = 256

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
    nullok: bool | None = None  # the RADIUS client's own nullok; None: the policy's
    # The primary password was checked and the RADIUS client needs no code (code_required =
    # false): recorded as an accept unless the user is locked.
    password_only: bool = False


class Decision(NamedTuple):
    accepted: bool
    # ok, exempt, no_device_allowed, nullok_client, password_only, bad_code, replay,
    # reused_code, locked, no_device, malformed, ambiguous_user, error
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


class _AttemptFailed(Exception):
    """Deciding one attempt of a batch failed: the batch is decided again, each attempt alone."""


class Verifier:
    def __init__(self, config: Config, store: Storage, sealer: Sealer,
                 accounts: Accounts | None = None):
        self.config = config
        self.store = store
        self.sealer = sealer
        self.accounts = accounts or Accounts()
        self._names(config)
        self.cache = UserCache(store, sealer, lambda: self.config)
        # Why the last batch was refused as "error" (a StoreError or KeyFileError), for the CLI,
        # which has no log; None after a batch that was decided.
        self.last_error: MfaError | None = None
        self._outage = RateLimitedLog(log, per_seconds=60.0, burst=1)
        self._locked_tries: dict[str, int] = {}  # recovery codes checked while locked, this batch
        # A sub-key for SMS code hashes, derived through the fingerprint key (never stored);
        # sms/issuer.py hashes the codes it issues with it.
        self.sms_key = sealer.fingerprint(b"mfa-radius sms code key v1").encode()

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
        alone, its writes undone; if the transaction itself fails (reading others' commits, the
        audit rows, the COMMIT), every attempt of the batch is refused (fail closed).
        """
        self.cache.last_active = time.monotonic()
        try:
            try:
                return self._batch(attempts, isolate=False)
            except _AttemptFailed:
                # The batch was rolled back whole: decide it again with each attempt in a
                # savepoint of its own, so that only the failing one is refused. Savepoints
                # cost every attempt two statements, so they are only paid for after a failure.
                self._forget_users(attempts)
                return self._batch(attempts, isolate=True)
        except (StoreError, KeyFileError) as exc:
            # Once a minute while the database stays unreachable (with how many were
            # suppressed), not once per batch: an outage under load must not flood the log.
            self._outage.error("store", "refusing %d attempt(s): %s", len(attempts), exc)
            self.last_error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must refuse, never accept
            log.exception("refusing %d attempt(s): internal error", len(attempts))
            self.last_error = MfaError(f"internal error: {type(exc).__name__}: {exc}")
        self._drop_all()  # the cache may hold steps of the rolled-back batch
        return [Decision(False, "error") for _ in attempts]

    def _batch(self, attempts: list[Attempt], isolate: bool) -> list[Decision]:
        """One transaction for the whole batch. Without `isolate` a failure while deciding one
        attempt of several raises _AttemptFailed (and rolls the batch back); with it, each
        attempt is decided in a savepoint (_decide_alone)."""
        with self.store.errors("verification"), self.store.transaction():
            self._refresh()
            self._locked_tries = {}
            audit: list[tuple] = []
            if len(attempts) == 1:
                decisions = [self._decide(attempts[0], audit)]
            elif isolate:
                decisions = [self._decide_alone(a, audit) for a in attempts]
            elif self.store.steps.batched:
                decisions = self._decide_reserved(attempts, audit)
            else:
                decisions = [self._decide_or_fail(a, audit) for a in attempts]
            self.store.add_audit(audit)
        if isinstance(self.last_error, StoreError):
            self._outage.flush()
            log.warning("verification works again: the database answers")
        self.last_error = None
        return decisions

    def _decide_reserved(self, attempts: list[Attempt], audit: list[tuple]) -> list[Decision]:
        """The batch's decisions after reserving the steps they will consume (_reserve)."""
        steps = self.store.steps
        try:
            decisions = [self._decide_or_fail(a, audit) for a in self._reserve(attempts)]
        except BaseException:
            steps.release()
            raise
        if steps.release():
            # A reserved step no decision asked for is used without an accept: never
            # committed; the batch is decided again, without reserving.
            raise _AttemptFailed()
        return decisions

    def _reserve(self, attempts: list[Attempt]) -> list[Attempt]:
        """Reserve, in one statement, the TOTP steps this batch's decisions will consume (a
        backend where each consume is a round trip: steps.batched), and fix each attempt's
        `now` so that its decision matches what was reserved. Only attempts whose decision is
        sure to ask for that step: the one attempt of its user in the batch (an earlier one
        could lock the user or use the step), neither exempt, ambiguous nor locked."""
        fixed = [a if a.now is not None else a._replace(now=time.time()) for a in attempts]
        users: list[str | None] = []
        seen: set[str] = set()
        twice: set[str] = set()
        for attempt in fixed:
            try:
                user: str | None = self.canonical(attempt.user)
            except names.UserNameError:
                user = None
            if user in seen:
                twice.add(user)
            seen.add(user or "")
            users.append(user)
        claims = []
        for attempt, user in zip(fixed, users):
            if user is not None and user not in twice:
                claim = self._claim(user, attempt.code.strip(), attempt.now or 0.0)
                if claim is not None:
                    claims.append(claim)
        if claims:
            self.store.steps.reserve(claims)
        return fixed

    def _claim(self, user: str, code: str, now: float) -> tuple | None:
        """The step _check will consume first for this code, as the kind claims it; None when
        _check would not reach a TOTP consume (the same tests, in the same order)."""
        if not user or len(user) > MAX_USER_LEN or not code or len(code) > 64 \
                or not (code.isdigit() and code.isascii()) or self._access.is_exempt(user):
            return None
        state = self._user(user)
        if state.ambiguous or state.locked_until > now:
            return None
        for device in state.devices:
            if len(code) != device.digits:
                continue
            matched, _ = device.key.match(device, code, now, self.config.otp)
            if matched is not None:
                return device.key.claim(device, matched, now)
        return None

    def _decide_or_fail(self, attempt: Attempt, audit: list[tuple]) -> Decision:
        try:
            return self._decide(attempt, audit)
        except TransactionLost:
            raise  # nothing of the batch can be committed: all of it is refused
        except Exception as exc:  # noqa: BLE001 - decided again, alone, by verify_batch
            raise _AttemptFailed() from exc

    def _forget_users(self, attempts: list[Attempt]) -> None:
        """Forget the users of a rolled-back batch: their cached state may hold its writes."""
        for attempt in attempts:
            try:
                self.cache.forget(self.canonical(attempt.user))
            except names.UserNameError:
                pass

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
        self.cache.forget(attempt.user)
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
            if attempt.password_only:
                locked_until = self._user(user).locked_until
                decision = (Decision(False, "locked", retry_after=locked_until - now)
                            if locked_until > now else Decision(True, "password_only"))
            else:
                decision = self._check(user, attempt.code.strip(), now, attempt.nullok)
        audit.append((now, user[:MAX_USER_LEN], decision.method, decision.serial,
                      attempt.source[:512], decision.result, decision.reason)
                     + (decision.consumed or _NOT_USED))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user %s from %s: %s: %s", safe(user), safe(attempt.source),
                      decision.result, explain(decision, self.cache.get(user),
                                               self._unopenable.get(user, frozenset()),
                                               self.config, now))
        return decision

    def _check(self, user: str, code: str, now: float, nullok: bool | None = None) -> Decision:
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
            if nullok and not names.realm_qualified(user) and \
                    not self._access.is_privileged(user, self.accounts.groups(user)):
                return Decision(True, "nullok_client")  # this RADIUS client's roll-out
            if nullok is None and self.allowed_without_device(user):
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
                self.cache.forget(user)
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
        """Use up `matched` by the rule of the device's kind (one conditional write in the store):
        what the audit row records of it, or None when another process used it first."""
        return device.key.consume(device, matched, now, self.store)

    def _success(self, state: _User, method: str, serial: str | None, now: float,
                 consumed: tuple | None = None) -> Decision:
        # A device success is remembered in its row (last_used_at); others need the user row.
        if state.failures or state.locked_until or serial is None:
            state.failures, state.locked_until = 0, 0.0
            self.store.set_user_state(state.name, 0, 0.0, success_at=now)
            state.known = True
        return Decision(True, "ok", method, serial, 0.0, consumed)

    def _failure(self, state: _User, now: float) -> Decision:
        # Counted in the store: failures of one user on several nodes at once all count.
        state.failures = self.store.add_failure(state.name, now)
        delay = lockout.lock_delay(state.failures, self.config.policy)
        if delay is not None:
            state.locked_until = max(state.locked_until, now + delay)
            self.store.lock_user(state.name, state.locked_until)
        state.known = True
        if delay is not None:
            log.warning("user %s locked for %.0f s after %d failures", safe(state.name),
                        delay, state.failures)
        return Decision(False, "bad_code")

    # ---- the user cache (usercache.py) -------------------------------------------------------

    # The decision methods above read users through these.
    def _refresh(self) -> None:
        self.cache.refresh()

    def _user(self, name: str) -> _User:
        return self.cache.user(name)

    def _drop_all(self) -> None:
        self.cache.drop_all()

    @property
    def _unopenable(self) -> dict[str, frozenset[str]]:
        return self.cache.unopenable

    @property
    def unopenable_devices(self) -> int:
        """Assigned devices whose seeds do not open (for the metrics)."""
        return self.cache.unopenable_devices

    def preload(self) -> int:
        """Load users with devices into the cache, up to `[storage] cache_users`; how many."""
        return self.cache.preload()

    def fold_due(self, now: float | None = None) -> int:
        """How many devices' used steps the daemon should fold now (UserCache.fold_due)."""
        return self.cache.fold_due(now)

    def fold(self, limit: int = FOLD_CHUNK) -> int:
        """Fold the step log (UserCache.fold); how many devices' steps were moved."""
        return self.cache.fold(limit)

    def forget(self, user: str | None = None) -> None:
        """Drop cached state (all of it, or one user's) after an admin change in this process."""
        self.cache.forget(user)


__all__ = ["Attempt", "Decision", "UserStatus", "Verifier", "MfaError"]
