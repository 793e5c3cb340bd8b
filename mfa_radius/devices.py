"""The device lifecycle, as AWS IAM names it: create, import, enable, resync, deactivate, delete,
list.

These functions are what the CLI calls; a script can call them with the same names.
"""

from __future__ import annotations

import base64
import builtins
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import recovery
from .config import Config
from .errors import DeviceError
from .otp import ALGORITHMS, DIGITS, KINDS, is_code, key_for, kind_names
from .rules import names
from .sealing import Sealer
from .store import DuplicateDevice, Storage

SERIAL = re.compile(r"^[\w+=/:,.@-]{1,256}$", re.ASCII)
USER = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
SEED_BYTES = 20  # 160 bits, what RFC 4226 recommends and authenticator apps expect


@dataclass(frozen=True)
class DeviceSpec:
    """A device to add: from create-virtual, a CSV line or a PSKC key package."""

    serial: str
    seed: bytes = field(repr=False)  # never in a log line or a test report
    kind: str = "totp"
    digits: int = 6
    algorithm: str = "SHA1"
    period: int = 30
    counter: int = 0
    user: str | None = None
    virtual: bool = False


def check_serial(serial: str) -> str:
    if not SERIAL.fullmatch(serial or ""):
        raise DeviceError(f"invalid serial {serial[:40]!r}: use 1-256 characters of letters, "
                          "digits and +=/:,.@_-")
    return serial


def check_user(user: str) -> str:
    if not USER.match(user or "") or user != user.strip():
        raise DeviceError("invalid user name: 1-256 printable characters, no surrounding spaces")
    return user


def check_spec(spec: DeviceSpec) -> None:
    check_serial(spec.serial)
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise DeviceError(f"{spec.serial}: type must be {kind_names()}, not {spec.kind!r}")
    if spec.digits not in DIGITS:
        raise DeviceError(f"{spec.serial}: digits must be 6 or 8, not {spec.digits}")
    if spec.algorithm not in ALGORITHMS:
        raise DeviceError(f"{spec.serial}: algorithm must be SHA1, SHA256 or SHA512, "
                          f"not {spec.algorithm!r}")
    if spec.counter < 0:
        raise DeviceError(f"{spec.serial}: counter must not be negative")
    problem = kind.spec_problem(spec.period, spec.counter)
    if problem:
        raise DeviceError(f"{spec.serial}: {problem}")
    if len(spec.seed) < 10:
        raise DeviceError(f"{spec.serial}: seed is too short ({len(spec.seed) * 8} bits; "
                          "at least 80 are needed, 160 recommended)")
    if spec.user is not None:
        check_user(spec.user)


class Devices:
    """Lifecycle operations over one store and sealer."""

    def __init__(self, config: Config, store: Storage, sealer: Sealer):
        self.config = config
        self.store = store
        self.sealer = sealer
        self._canonical, _ = names.policy_rule(config.policy)

    def user_name(self, raw: str) -> str:
        """`raw` in canonical form (rules/names.py: ALICE and EXAMPLE\\alice are alice), as every
        name is stored; names.UserNameError when the rule refuses it."""
        return self._canonical(raw)

    # ---- create / import -------------------------------------------------------------------

    def create_virtual(self, serial: str, *, kind: str = "totp", digits: int = 6,
                       algorithm: str = "SHA1", period: int = 30, issuer: str | None = None,
                       deliver: Callable[[dict], None] | None = None) -> dict:
        """Create an unassigned virtual device with a fresh seed; return its secret and URI.

        `deliver(info)` (e.g. writing a QR code file) runs before the device is committed: if it
        raises, no device is created, so a seed is never stored that nobody was shown.
        """
        seed = secrets.token_bytes(SEED_BYTES)
        spec = DeviceSpec(serial, seed, kind, digits, algorithm, period, virtual=True)
        check_spec(spec)  # before the URI: pyotp has its own, less clear, errors
        secret = base64.b32encode(seed).decode().rstrip("=")
        # The period as a listing shows it (None for a kind without one).
        own = KINDS[kind].public_fields({"period": period, "counter": 0, "drift": 0})
        info = {"serial": serial, "type": kind, "digits": digits, "algorithm": algorithm,
                "period": own["period"], "secret": secret,
                "otpauth_uri": provisioning_uri(spec, secret, issuer or self.config.otp.issuer)}
        self.add([spec], before_commit=(lambda: deliver(info)) if deliver else None)
        return info

    def add(self, specs: list[DeviceSpec],
            before_commit: Callable[[], None] | None = None) -> int:
        """Add devices in ONE transaction: all of them or, on any problem, none.
        `before_commit()` runs last inside it: raising undoes everything."""
        seen_serials: dict[str, bool] = {}
        seen_fps: dict[str, str] = {}
        rows = []
        now = time.time()
        assigned: dict[str, int] = {}
        for spec in specs:
            check_spec(spec)
            if spec.user is not None:
                try:
                    spec = replace(spec, user=self._canonical(spec.user))
                except names.UserNameError as exc:
                    raise DeviceError(f"{spec.serial}: {exc}") from None
            fp = self.sealer.fingerprint(spec.seed)
            if spec.serial in seen_serials:
                raise DeviceError(f"serial {spec.serial} appears twice in the input")
            if fp in seen_fps:
                raise DeviceError(f"devices {seen_fps[fp]} and {spec.serial} have the same seed "
                                  "(one seed, one device)")
            seen_serials[spec.serial] = True
            seen_fps[fp] = spec.serial
            if spec.user:
                assigned[spec.user] = assigned.get(spec.user, 0) + 1
            rows.append({"serial": spec.serial, "kind": spec.kind, "virtual": int(spec.virtual),
                         "digits": spec.digits, "algorithm": spec.algorithm,
                         "period": spec.period, "counter": spec.counter, "last_step": -1,
                         "drift": 0, "seed": self.sealer.seal(spec.seed, spec.serial),
                         "fingerprint": fp, "user": spec.user, "created_at": now,
                         "enabled_at": now if spec.user else None, "last_used_at": None})
        with self.store.errors("adding devices"), self.store.transaction():
            taken_serials, taken_fps = self.store.clashes(list(seen_serials), list(seen_fps))
            if taken_serials:
                raise DeviceError(f"serial {sorted(taken_serials)[0]} already exists"
                                  + (f" (and {len(taken_serials) - 1} more)"
                                     if len(taken_serials) > 1 else ""))
            if taken_fps:
                serial = seen_fps[sorted(taken_fps)[0]]
                raise DeviceError(f"device {serial}: its seed is already held by another device "
                                  "(one seed, one device)")
            for user, count in assigned.items():
                if self.store.count_user_devices(user) + count > self.config.policy.max_devices:
                    raise DeviceError(f"user {user} would hold more than "
                                      f"{self.config.policy.max_devices} devices")
                self.store.ensure_user(user, now)
            try:
                added = self.store.insert_devices(rows)
            except DuplicateDevice:
                raise DeviceError("a serial or seed was added by someone else meanwhile; "
                                  "nothing was imported, try again") from None
            if before_commit is not None:
                before_commit()
            return added

    # ---- enable / resync / deactivate / delete -------------------------------------------

    def enable(self, user: str, serial: str, code1: str, code2: str,
               now: float | None = None) -> dict:
        """Assign an unassigned device to `user` if code1, code2 are two consecutive codes of it."""
        user = self.user_name(check_user(user))
        now = time.time() if now is None else now
        with self.store.errors("enabling device"), self.store.transaction():
            device = self._device(serial)
            if device["user"] is not None:
                who = "this user" if device["user"] == user else "another user"
                raise DeviceError(f"device {serial} is already assigned to {who}; "
                                  "deactivate it first")
            if self.store.count_user_devices(user) >= self.config.policy.max_devices:
                raise DeviceError(f"user {user} already holds {self.config.policy.max_devices} "
                                  "devices (the maximum)")
            position = self._find_pair(device, code1, code2, now)
            self.store.ensure_user(user, now)
            if not self.store.assign_device(device["id"], user, now=now, **position):
                raise DeviceError(f"device {serial} was assigned by someone else meanwhile")
        return {"user": user, "serial": serial, "status": "assigned"}

    def resync(self, user: str, serial: str, code1: str, code2: str,
               now: float | None = None) -> dict:
        """Re-align a drifted TOTP clock or a far-ahead HOTP counter from two consecutive codes."""
        user = self.user_name(user)
        now = time.time() if now is None else now
        with self.store.errors("resynchronising device"), self.store.transaction():
            device = self._device(serial)
            if device["user"] != user:
                raise DeviceError(f"device {serial} is not assigned to {user}")
            position = self._find_pair(device, code1, code2, now)
            self.store.resync_device(device["id"], **position)
        return {"user": user, "serial": serial, "status": "resynchronised",
                **({"drift_steps": position["drift"]} if "drift" in position else
                   {"counter": position["counter"]})}

    def deactivate(self, user: str, serial: str) -> dict:
        user = self.user_name(user)
        with self.store.errors("deactivating device"), self.store.transaction():
            device = self._device(serial)
            if device["user"] != user or not self.store.unassign_device(device["id"], user):
                raise DeviceError(f"device {serial} is not assigned to {user}")
        return {"user": user, "serial": serial, "status": "unassigned"}

    def delete(self, serial: str) -> dict:
        with self.store.errors("deleting device"), self.store.transaction():
            device = self._device(serial)
            if device["user"] is not None or not self.store.delete_device(device["id"]):
                raise DeviceError(f"device {serial} is assigned; deactivate it before deleting it")
        return {"serial": serial, "status": "deleted"}

    def list(self, user: str | None = None, status: str = "any") -> list[dict]:
        if user is not None:
            user = self.user_name(user)
        with self.store.errors("listing devices"):
            rows = self.store.list_devices(user, status)
        # A seed that does not open (sealed under another key, a row copied from another device)
        # is shown, not fatal: the admin deletes or replaces that device.
        return [{**public_view(r), "seed_opens": self.sealer.opens(r["seed"], r["serial"])}
                for r in rows]

    # ---- recovery codes --------------------------------------------------------------------

    def issue_recovery_codes(self, user: str, count: int | None = None) -> builtins.list[str]:
        """Replace the user's recovery codes with `count` new ones; returned once, stored hashed."""
        user = self.user_name(check_user(user))
        count = self.config.policy.recovery_codes if count is None else count
        if not 1 <= count <= 100:
            raise DeviceError("count must be between 1 and 100")
        codes = recovery.generate(count)
        hashed = recovery.hash_codes(codes)
        now = time.time()
        with self.store.errors("issuing recovery codes"), self.store.transaction():
            self.store.ensure_user(user, now)
            self.store.replace_recovery_codes(user, hashed, now)
        return codes

    def rename_user(self, old: str, new: str) -> dict:
        """Move everything stored under name `old` (exactly as stored: a name of a clash, or one
        the rule now refuses) to `new` (canonicalised). Never a merge: refused when `new` holds
        anything already. The audit log keeps the old name."""
        new = self.user_name(new)
        with self.store.errors("renaming user"), self.store.transaction():
            if not self.store.rename_user(old, new):
                raise DeviceError(f"cannot rename '{names.describe(old)}' to "
                                  f"'{names.describe(new)}': the first holds nothing or the "
                                  "second already holds devices, codes or a phone (renames "
                                  "never merge users)")
        return {"user": new, "renamed_from": old}

    # ---- helpers ---------------------------------------------------------------------------

    def _device(self, serial: str) -> dict:
        check_serial(serial)
        device = self.store.device(serial)
        if device is None:
            raise DeviceError(f"no device with serial {serial}")
        return device

    def _find_pair(self, device: dict, code1: str, code2: str, now: float) -> dict:
        """Where two consecutive codes sit, searched over the wide resync window only.

        Steps (or counters) already used stay used, also when a deactivated device is enabled
        again: otherwise re-enabling it with two old codes would reopen the steps after them.
        """
        code1, code2 = code1.strip(), code2.strip()
        digits = device["digits"]
        if not (is_code(code1, digits) and is_code(code2, digits)):
            raise DeviceError(f"codes must be {digits} digits each")
        if code1 == code2:
            raise DeviceError("the two codes must be consecutive codes, not the same code twice")
        key = key_for(device["kind"], self.sealer.unseal(device["seed"], device["serial"]),
                      device["algorithm"], digits)
        window = self.config.otp.resync_window
        position = key.locate_pair(device, code1, code2, now, window)
        if position is None:
            raise DeviceError(key.pair_missing(device["serial"], window))
        return position


def provisioning_uri(spec: DeviceSpec, secret_b32: str, issuer: str) -> str:
    """The otpauth:// Key URI that authenticator apps scan (built by pyotp)."""
    return KINDS[spec.kind].provisioning_uri(secret_b32, digits=spec.digits,
                                             algorithm=spec.algorithm, name=spec.serial,
                                             issuer=issuer, period=spec.period,
                                             counter=spec.counter)


def public_view(row: dict) -> dict:
    """A device row without its sealed seed or fingerprint."""
    return {"serial": row["serial"], "type": row["kind"], "user": row["user"],
            "status": "assigned" if row["user"] is not None else "unassigned",
            "virtual": bool(row["virtual"]), "digits": row["digits"],
            "algorithm": row["algorithm"], **KINDS[row["kind"]].public_fields(row),
            "created_at": row["created_at"], "enabled_at": row["enabled_at"],
            "last_used_at": row["last_used_at"]}
