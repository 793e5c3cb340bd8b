"""The shared verifier: given a user, a code and who is asking, accept or reject, and why.

Used by the RADIUS server, the PAM socket front, the PAM in-process fallback and the CLI. It knows
nothing of UDP or PAM. A daemon hands it a batch of attempts (everything that arrived in one loop
tick) and it decides them all and records them in ONE transaction (group commit); everyone else
passes a batch of one.

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

from . import names, recovery
from .accounts import Accounts
from .config import Config
from .errors import KeyFileError, MfaError, StoreError, TransactionLost
from .logsetup import RateLimitedLog, escape
from .otp import OtpKey, nearest_first, time_step
from .sealing import Sealer
from .sms import policy as sms_policy
from .sms.policy import SmsTicket
from .store import Storage
from .usercache import FOLD_CHUNK, UserCache
from .usercache import CachedDevice as _Device
from .usercache import CachedUser as _User

log = logging.getLogger("mfa_radius.verifier")
_sms_refusals = RateLimitedLog(log)

MAX_USER_LEN = 256
# Recovery codes checked per user and hour while the user is locked out (10 digits: guessing
# stays hopeless at this rate, and the owner is not shut out by someone who keeps them locked).
LOCKED_RECOVERY_PER_HOUR = 10
_NOT_USED = (None, None, None)  # the audit row's (device, step, drift) of all but TOTP accepts
# Work done for users without devices, so that they take as long as users with one.
_DUMMY_KEY = OtpKey(b"\x00" * 20)


# Attempt and Decision are NamedTuples: one of each per RADIUS request, and a frozen
# dataclass costs ~1 us more to build.
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
        self._used: tuple = _NOT_USED  # (device id, step, drift) of the attempt being decided
        self._locked_tries: dict[str, int] = {}  # recovery codes checked while locked, this batch
        # A sub-key for SMS code hashes, derived through the fingerprint key (never stored).
        self._sms_key = sealer.fingerprint(b"mfa-radius sms code key v1").encode()

    @classmethod
    def open(cls, config: Config, accounts: Accounts | None = None,
             check_all_names: bool = False) -> Verifier:
        """Open the key file and the database named by the config (both must exist); a key file
        that is not the database's is refused (KeyFileError), and the stored user names are
        brought to the config's rule (state.open_keyed_store)."""
        from .state import open_keyed_store

        store, sealer = open_keyed_store(config, check_all_names=check_all_names)
        return cls(config, store, sealer, accounts)

    def reconfigure(self, config: Config) -> None:
        """Swap in a new (validated) config; policy applies from the next attempt. A change of
        the name rule ([policy] username_case, strip_realm) renames the stored names first."""
        old = self.config.policy
        if (old.username_case, old.strip_realm) != (config.policy.username_case,
                                                    config.policy.strip_realm):
            from .state import bring_names

            bring_names(self.store, config)
            self._drop_all()
        self.config = config
        self._names(config)

    def _names(self, config: Config) -> None:
        policy = config.policy
        self.canonical, _ = names.policy_rule(policy)
        self._fold = policy.username_case == names.FOLD
        self._exempt = frozenset(policy.exempt_users)
        # Any case variant of a privileged name is privileged, whatever username_case says.
        self._privileged = frozenset(names.fold_key(u) for u in policy.privileged_users) | {"root"}

    # ---- policy questions ------------------------------------------------------------------

    # The questions below take canonical names (self.canonical); status, verify and issue_sms
    # canonicalise what they are given.

    def is_privileged(self, user: str) -> bool:
        policy = self.config.policy
        if (user if self._fold else names.fold_key(user)) in self._privileged:
            return True
        return bool(self.accounts.groups(user) & set(policy.privileged_groups))

    def allowed_without_device(self, user: str) -> bool:
        policy = self.config.policy
        # A name with a realm left in it (strip_realm = false) is not a local account.
        if names.realm_qualified(user) or self.is_privileged(user):
            return False
        return policy.nullok or bool(self.accounts.groups(user) & set(policy.nullok_groups))

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
            exempt=user in self._exempt,
            privileged=self.is_privileged(user),
            allowed_without_device=self.allowed_without_device(user),
            locked_for=max(0.0, state.locked_until - now),
            digits=tuple(sorted({d.digits for d in state.devices})),
            sms=sms,
            sms_only=sms and not state.devices,
            phone_hint=sms_policy.phone_hint(state.phone or "") if sms else "",
            recovery=state.has_recovery,
        )

    def _sms_usable(self, state: _User) -> bool:
        # A privileged user's phone (from an older policy) is never used, not even to check.
        return bool(state.phone) and not self.is_privileged(state.name)

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
        self.cache.last_active = time.monotonic()
        try:
            with self.store.errors("verification"), self.store.transaction():
                self._refresh()
                self._used = _NOT_USED
                self._locked_tries = {}
                audit: list[tuple] = []
                if len(attempts) == 1:
                    decisions = [self._decide(attempts[0], audit)]
                else:
                    decisions = [self._decide_alone(a, audit) for a in attempts]
                self.store.add_audit(audit)
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
                log.error("refusing user %s from %s: %s", _safe(attempt.user),
                          _safe(attempt.source), exc)
            else:
                log.exception("refusing user %s from %s: internal error", _safe(attempt.user),
                              _safe(attempt.source))
        del audit[mark:]
        self._used = _NOT_USED
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
            decision = self._check(user, attempt.code.strip(), now)
        audit.append((now, user[:MAX_USER_LEN], decision.method, decision.serial,
                      attempt.source[:512], decision.result, decision.reason) + self._used)
        self._used = _NOT_USED
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user %s from %s: %s: %s", _safe(user), _safe(attempt.source),
                      decision.result, self._explain(user, decision, now))
        return decision

    def _explain(self, user: str, decision: Decision, now: float) -> str:
        """Why, for --debug (like radiusd -X): windows, steps, counters, policy; never a code."""
        reason = decision.reason
        if reason == "ok":
            return f"{decision.method} code accepted" + (
                f" from device {decision.serial}" if decision.serial else "")
        if reason == "error" and self._unopenable.get(user):
            return (f"the seeds of device(s) {', '.join(sorted(self._unopenable[user]))} do not "
                    "open with this key file, and the user has no other method: refused")
        if reason in ("exempt", "malformed", "ambiguous_user", "error"):
            return {"exempt": "user is in [policy] exempt_users: no code asked",
                    "malformed": "user name refused by the name rule (empty, over-long, "
                                 "surrounding space, control or format characters), or an "
                                 "empty or over-long code",
                    "ambiguous_user": "two stored user names fold to this one: refused until "
                                      "one is renamed (mfa-radius user rename)",
                    "error": "the database or key file failed: refused (fail closed)"}[reason]
        state = self.cache.get(user)
        if state is None:
            return reason
        if reason == "replay" and decision.method == "recovery":
            return "a recovery code already used (each works once); not counted as a guess"
        if reason == "locked" and decision.method == "recovery":
            return (f"recovery code checked while locked: not one of the user's (at most "
                    f"{LOCKED_RECOVERY_PER_HOUR} an hour while locked)")
        if reason == "locked":
            return (f"locked for {decision.retry_after:.0f} s more after {state.failures} "
                    f"consecutive failures ([policy] lockout_*; 'mfa-radius user unlock')")
        if reason in ("no_device", "no_device_allowed"):
            rule = ("lets it through ([policy] nullok / nullok_groups)" if reason ==
                    "no_device_allowed" else "refuses it (privileged, or nullok off)")
            return f"no device, recovery code or usable phone; policy {rule}"
        parts = []
        for d in state.devices:
            if d.kind == "totp":
                centre = time_step(now, d.period) + d.drift
                w = self.config.otp.totp_window
                parts.append(f"{d.serial} (totp, {d.digits} digits): steps "
                             f"{centre - w}..{centre + w} (drift {d.drift:+d}), "
                             f"last used step {d.last_step}")
            else:
                parts.append(f"{d.serial} (hotp, {d.digits} digits): counters {d.counter}.."
                             f"{d.counter + self.config.otp.hotp_window - 1}")
        what = {"replay": "the code belongs to a step or counter already used (a code works once)",
                "reused_code": "a fresh step gives the digits of the step last accepted, still in "
                               "the window: the same code is never accepted twice (the next "
                               "code works)",
                "bad_code": f"the code matches no device, recovery code or SMS code "
                            f"(failure {state.failures} of {self.config.policy.lockout_failures}"
                            " before a lockout)"}.get(reason, reason)
        return what + "; searched " + ("; ".join(parts) or "no device")

    def _check(self, user: str, code: str, now: float) -> Decision:
        if not user or len(user) > MAX_USER_LEN or not code or len(code) > 64:
            return Decision(False, "malformed")
        if user in self._exempt:
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
            matched, why = self._match(device, code, now)
            if matched is not None:
                if self._consume(device, matched, now):
                    return self._success(state, device.kind, device.serial, now)
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
        if state.phone and sms_policy.looks_like_code(code) and self._sms_usable(state):
            digest = sms_policy.code_hash(self._sms_key, user, code)
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
        if tries >= LOCKED_RECOVERY_PER_HOUR:
            return locked
        self._locked_tries[state.name] = self._locked_tries.get(state.name, 0) + 1
        found = self._recovery(state, code, now)
        # Recorded with method "recovery": the audit rows the hourly limit counts.
        return found if found is not None else locked._replace(method="recovery")

    def _match(self, device: _Device, code: str, now: float) -> tuple[int | None, str | None]:
        """(counter or step to consume, or None; why not: None, "replay" or "reused_code")."""
        if device.kind == "totp":
            # Nearest the (drift-corrected) clock first; the digits of the last accepted step,
            # in the window, are refused even if a fresh step gives them too (OtpKey.find_step).
            return device.key.find_step(code, time_step(now, device.period) + device.drift,
                                        nearest_first(self.config.otp.totp_window),
                                        device.last_step)
        window = self.config.otp.hotp_window
        counter = device.key.find(code, range(device.counter, device.counter + window))
        if counter is not None:
            return counter, None
        behind = device.key.find(code, range(max(0, device.counter - window), device.counter))
        return None, "replay" if behind is not None else None


    def _consume(self, device: _Device, matched: int, now: float) -> bool:
        if device.kind == "totp":
            drift = matched - time_step(now, device.period)
            if not self.store.consume_step(device.id, matched, drift, now):
                return False
            self._used = (device.id, matched, drift)
            device.last_step, device.drift = matched, drift
        else:
            if not self.store.consume_hotp(device.id, matched, now):
                return False
            device.counter = matched + 1
        return True

    def _success(self, state: _User, method: str, serial: str | None, now: float) -> Decision:
        # A device success is remembered in its row (last_used_at); others need the user row.
        if state.failures or state.locked_until or serial is None:
            state.failures, state.locked_until = 0, 0.0
            self.store.set_user_state(state.name, 0, 0.0, success_at=now)
            state.known = True
        return Decision(True, "ok", method, serial)

    def _failure(self, state: _User, now: float) -> Decision:
        policy = self.config.policy
        state.failures += 1
        over = state.failures - policy.lockout_failures
        if over >= 0:
            delay = min(policy.lockout_delay * (2 ** min(over, 32)), policy.lockout_max_delay)
            state.locked_until = now + delay
        self.store.set_user_state(state.name, state.failures, state.locked_until, failure_at=now)
        state.known = True
        if over >= 0:
            log.warning("user %s locked for %.0f s after %d failures", _safe(state.name),
                        state.locked_until - now, state.failures)
        return Decision(False, "bad_code")

    # ---- SMS codes -------------------------------------------------------------------------

    def issue_sms(self, user: str, source: str = "cli", now: float | None = None) -> SmsTicket:
        """Make a new SMS code for `user` and record it (only its hash), or say why not.

        Cheap and local (one short transaction): call it on the event-loop thread, then hand the
        ticket to `SmsSender.send_code` on a worker thread. A new code replaces the user's live
        one. Refused for privileged users, users without a phone, a locked user, and past the
        per-user and global send limits; a refusal never raises.
        """
        now = time.time() if now is None else now
        sms = self.config.sms
        try:
            user = self.canonical(user)
        except names.UserNameError:
            return SmsTicket(False, "malformed")
        try:
            with self.store.errors("issuing an SMS code"), self.store.transaction():
                self._refresh()
                state = self._user(user)
                ticket = self._issue(state, sms, source, now)
        except (StoreError, KeyFileError) as exc:
            log.error("no SMS code for user %s: %s", _safe(user), exc)
            return SmsTicket(False, "error", user)
        except Exception:  # noqa: BLE001 - a bug must not take the loop down
            log.exception("no SMS code for user %s: internal error", _safe(user))
            self._drop_all()
            return SmsTicket(False, "error", user)
        if ticket.ok:
            log.info("SMS code issued for user %s to %s (%s)", _safe(user),
                     sms_policy.mask_phone(ticket.phone), _safe(source))
        else:
            # Refusals are what a flood of "sms" answers produces: a few lines a minute per user
            # and reason, then a count of the rest.
            level = logging.WARNING if ticket.reason in ("privileged", "busy") else logging.INFO
            _sms_refusals.log(level, f"no SMS code {ticket.reason} {user[:64]}",
                              "no SMS code for user %s (%s): %s", _safe(user), _safe(source),
                              sms_policy.explain(ticket.reason, ticket.retry_after))
        return ticket

    def _issue(self, state: _User, sms, source: str, now: float) -> SmsTicket:
        user = state.name
        if state.ambiguous:
            return SmsTicket(False, "no_phone", user)
        if not state.phone:
            return SmsTicket(False, "no_phone", user)
        if self.is_privileged(user):
            return SmsTicket(False, "privileged", user)
        if not sms.gateways:
            return SmsTicket(False, "not_configured", user)
        if state.locked_until > now:
            return SmsTicket(False, "locked", user, retry_after=state.locked_until - now)
        limit = sms_policy.check_limits(
            self.store.sms_sends_since(user, now - sms.send_window),
            *self.store.sms_sends_total(now - 60.0), now=now, send_limit=sms.send_limit,
            send_window=sms.send_window, global_limit=sms.global_limit_per_minute)
        if limit is not None:
            return SmsTicket(False, limit.reason, user, retry_after=limit.retry_after)
        code = sms_policy.new_code()
        expires_at = now + sms.code_ttl
        self.store.replace_sms_code(user, sms_policy.code_hash(self._sms_key, user, code), now,
                                    expires_at)
        self.store.add_sms_send(user, now, source[:512])
        message = sms_policy.render_message(sms.message, code, user, sms.host_name())
        return SmsTicket(True, "ok", user, state.phone, message, expires_at)

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


def _safe(text: str) -> str:
    """A user-supplied string made safe for one log line or a terminal (logsetup.escape), cut
    to MAX_USER_LEN characters first."""
    return escape(text[:MAX_USER_LEN])


__all__ = ["Attempt", "Decision", "UserStatus", "Verifier", "MfaError"]
