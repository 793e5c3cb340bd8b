"""HOTP (RFC 4226) and TOTP (RFC 6238): the code math, and one class per token kind.

`OtpKey` holds one seed and the RFC 4226 math every kind shares (the code for a counter, a search
over counters, a pair of consecutive codes). Each kind is a thin subclass, in the manner of
pyotp's HOTP and TOTP, with the rules of that kind: where its codes are searched (`match`), what
an accepted code consumes (`consume`), where two consecutive codes put the device (`locate_pair`),
how its window reads in a debug line (`describe`) and which stored fields are its own
(`public_fields`). `KINDS` names them; a new kind is one more subclass there.

The hot path computes many codes per second, so a key prepares its HMAC pads once and copies the
prepared object per code (hmac.digest() fetches the MAC from OpenSSL again on every call).
Codes are checked against pyotp, oathtool and the RFC vectors in the tests.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Iterable
from typing import Protocol

from .hmacprep import PreparedHmac

ALGORITHMS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
DIGITS = (6, 8)
MAX_PERIOD = 3600  # seconds, the longest TOTP step
MAX_COUNTER = 2 ** 62  # far past any token's life; keeps counter + window inside 8 bytes
_COUNTER = struct.Struct(">Q").pack  # RFC 4226 5.2: the counter as 8 octets, big-endian
_WORD = struct.Struct(">I").unpack_from


class DeviceState(Protocol):
    """What the kind rules read and move of a device: its row's moving parts."""

    id: int
    period: int
    counter: int
    last_step: int
    drift: int


class Windows(Protocol):
    """[otp]'s search windows."""

    @property
    def totp_window(self) -> int: ...

    @property
    def hotp_window(self) -> int: ...


class CounterStore(Protocol):
    """The store's conditional writes that consume a code (mfa_radius.store.Storage)."""

    def consume_hotp(self, device_id: int, counter: int, now: float) -> bool: ...

    def consume_step(self, device_id: int, step: int, drift: int, now: float) -> bool: ...


# What `consume` returns for an accept with no step for its audit row (falsy).
NOT_LOGGED = ()


class OtpKey:
    """One seed, prepared for fast code generation: the RFC 4226 math of every kind."""

    __slots__ = ("_mac", "digits", "_mod")
    kind = ""  # the name stored in devices.kind; "" for a bare key (codes only)

    def __init__(self, seed: bytes, algorithm: str = "SHA1", digits: int = 6):
        self._mac = PreparedHmac(seed, ALGORITHMS[algorithm]).digest
        self.digits = digits
        self._mod = 10 ** digits

    def _value(self, counter: int) -> int:
        """RFC 4226 5.3: the HMAC of the counter, dynamically truncated, modulo 10**digits."""
        digest = self._mac(_COUNTER(counter))
        return (_WORD(digest, digest[-1] & 0x0F)[0] & 0x7FFFFFFF) % self._mod

    def code(self, counter: int) -> str:
        """The code for an HOTP counter or a TOTP time step."""
        return str(self._value(counter)).zfill(self.digits)

    def find(self, code: str, counters: Iterable[int]) -> int | None:
        """The first of `counters` (tried in the order given) whose code is `code`, or None.

        `code` must be `digits` ASCII digits (is_code). It stops at the first match: the time
        tells only whether, and at which position, the code matched, which the answer tells
        anyway; every wrong code costs the whole window. Codes are compared as integers below
        2**31, one machine-word comparison, not character by character.
        """
        if len(code) != self.digits or not (code.isascii() and code.isdigit()):
            return None
        wanted = int(code)
        value = self._value
        for counter in counters:
            # Before the epoch / counter 0 there is no code.
            if counter >= 0 and value(counter) == wanted:
                return counter
        return None

    def find_pair(self, code1: str, code2: str, first: int, last: int) -> int | None:
        """The counter c in [first, last] with code(c) == code1 and code(c+1) == code2."""
        previous = self.code(first)
        for counter in range(first, last + 1):
            following = self.code(counter + 1)
            if hmac.compare_digest(previous, code1) and hmac.compare_digest(following, code2):
                return counter
            previous = following
        return None

    # ---- the rules of a kind (each subclass) -------------------------------------------------

    def match(self, device: DeviceState, code: str, now: float,
              windows: Windows) -> tuple[int | None, str | None]:
        """(the counter or step to consume, or None; why not: None, "replay" or "reused_code").

        `code` must be `digits` ASCII digits."""
        raise NotImplementedError

    def consume(self, device: DeviceState, matched: int, now: float,
                store: CounterStore) -> tuple | None:
        """Use up `matched` (from `match`) and move `device` past it. Returns what goes into the
        accept's audit row of it, (device id, step, drift), or NOT_LOGGED; None
        when the store's conditional write lost (another process used it first: a replay)."""
        raise NotImplementedError

    def claim(self, device: DeviceState, matched: int, now: float) -> tuple | None:
        """What `consume` will ask the step log for, (device id, step, drift, now), so that a
        batch can reserve it ahead (Storage.steps.reserve); None when the kind consumes
        elsewhere."""
        return None

    def locate_pair(self, row: dict, code1: str, code2: str, now: float,
                    window: int) -> dict | None:
        """Where two consecutive codes put a device (the columns to store: enable, resync),
        searched over `window` past what the device used already; None when they are not two
        consecutive codes there. Steps or counters used stay used."""
        raise NotImplementedError

    @staticmethod
    def pair_missing(serial: str, window: int) -> str:
        """The error for codes `locate_pair` did not find."""
        raise NotImplementedError

    def describe(self, device: DeviceState, now: float, windows: Windows) -> str:
        """Where codes are searched now and what was used, for a debug line; never a code."""
        raise NotImplementedError

    @staticmethod
    def public_fields(row: dict) -> dict:
        """The kind's own fields of a device row, for listings: period, counter, drift_steps
        (None where they do not apply)."""
        return {"period": None, "counter": None, "drift_steps": None}

    # The one number a seed file gives per kind besides the seed (a CSV line's fifth column):
    # its name in messages, and its default.
    position_name = ""
    position_default = 0

    @staticmethod
    def position(value: int) -> dict:
        """The DeviceSpec fields that number sets."""
        return {}

    @staticmethod
    def kept(period: int, counter: int) -> tuple[int, int]:
        """(period, start counter) as a device of this kind stores them, from a file that gives
        both (PSKC)."""
        return period, counter

    @staticmethod
    def spec_problem(period: int, counter: int, period_name: str = "period",
                     counter_name: str = "counter") -> str | None:
        """Why a device of this kind cannot have this period or start counter, or None; the
        names are the input's (a PSKC file says "time interval")."""
        return None

    @classmethod
    def provisioning_uri(cls, secret_b32: str, *, digits: int, algorithm: str, name: str,
                         issuer: str, period: int, counter: int) -> str:
        """The otpauth:// Key URI that authenticator apps scan (built by pyotp)."""
        raise NotImplementedError


class HotpKey(OtpKey):
    """RFC 4226: a counter the token and the server move on together, one code per press."""

    __slots__ = ()
    kind = "hotp"

    def match(self, device, code, now, windows):
        window = windows.hotp_window
        counter = self.find(code, range(device.counter, device.counter + window))
        if counter is not None:
            return counter, None
        behind = self.find(code, range(max(0, device.counter - window), device.counter))
        return None, "replay" if behind is not None else None

    def consume(self, device, matched, now, store):
        # The counter is the row's: one conditional write, which another process may win.
        if not store.consume_hotp(device.id, matched, now):
            return None
        device.counter = matched + 1
        return NOT_LOGGED

    def locate_pair(self, row, code1, code2, now, window):
        start = row["counter"]
        counter = self.find_pair(code1, code2, start, start + window)
        return None if counter is None else {"counter": counter + 2}

    @staticmethod
    def pair_missing(serial, window):
        return (f"device {serial}: the codes are not two consecutive codes of this device "
                f"within {window} counters")

    def describe(self, device, now, windows):
        return f"counters {device.counter}..{device.counter + windows.hotp_window - 1}"

    @staticmethod
    def public_fields(row):
        return {"period": None, "counter": row["counter"], "drift_steps": None}

    position_name = "start counter"
    position_default = 0

    @staticmethod
    def position(value):
        return {"counter": value}

    @staticmethod
    def spec_problem(period, counter, period_name="period", counter_name="counter"):
        if not 0 <= counter <= MAX_COUNTER:
            return f"{counter_name} {counter} is out of range"
        return None

    @classmethod
    def provisioning_uri(cls, secret_b32, *, digits, algorithm, name, issuer, period, counter):
        # pyotp only for enrolment: the PAM fallback imports this module on every login.
        import pyotp

        hotp = pyotp.HOTP(secret_b32, digits=digits, digest=getattr(hashlib, algorithm.lower()),
                          name=name, issuer=issuer or None, initial_count=counter)
        return hotp.provisioning_uri(initial_count=counter)


class TotpKey(OtpKey):
    """RFC 6238: the counter is the time step; the device's clock drift is learnt per accept,
    and each step is accepted once (the last accepted step is the device's replay mark)."""

    __slots__ = ()
    kind = "totp"

    def find_step(self, code: str, centre: int, offsets: tuple[int, ...],
                  last_used: int) -> tuple[int | None, str | None]:
        """(the step to consume, or None; why not: None, "replay" or "reused_code").

        `offsets` are tried in order (nearest the clock first) around `centre`; `last_used` is
        the device's last accepted step. A step at or before it is never accepted again: a code
        matching only such steps is a "replay". RFC 6238 5.2: an OTP accepted once is never
        accepted again, so the digits of the accepted step, while it is in the window, are
        refused even when a fresh step happens to give them too (one chance in 10**digits per
        pair of steps): "reused_code", and the user types the next code. The digits of a step
        that was skipped were never accepted: a fresh step giving them is accepted. The first
        fresh match ends the search; a wrong code costs every step of the window. `code` must
        be `digits` ASCII digits.
        """
        wanted = int(code)
        value = self._value
        stale = False
        for offset in offsets:
            step = centre + offset
            if step >= 0 and value(step) == wanted:
                if step <= last_used:
                    stale = True
                    continue
                if last_used >= 0 and min(offsets) <= last_used - centre <= max(offsets) \
                        and value(last_used) == wanted:
                    return None, "reused_code"
                return step, None
        return None, "replay" if stale else None

    def match(self, device, code, now, windows):
        # Nearest the (drift-corrected) clock first.
        return self.find_step(code, time_step(now, device.period) + device.drift,
                              nearest_first(windows.totp_window), device.last_step)

    def claim(self, device, matched, now):
        return (device.id, matched, matched - time_step(now, device.period), now)

    def consume(self, device, matched, now, store):
        # One conditional write in the step log, which another process may win: the cache is
        # never trusted for it. The accept's audit row records the step as history.
        drift = matched - time_step(now, device.period)
        if not store.consume_step(device.id, matched, drift, now):
            return None
        device.last_step, device.drift = matched, drift
        return (device.id, matched, drift)

    def locate_pair(self, row, code1, code2, now, window):
        current = time_step(now, row["period"])
        first = max(current - window, row["last_step"] + 1)
        step = self.find_pair(code1, code2, first, current + window)
        return None if step is None else {"last_step": step + 1, "drift": step + 1 - current}

    @staticmethod
    def pair_missing(serial, window):
        return (f"device {serial}: the codes are not two consecutive codes of this device "
                "(wait for a new code and type the next two as they appear)")

    def describe(self, device, now, windows):
        centre = time_step(now, device.period) + device.drift
        w = windows.totp_window
        return (f"steps {centre - w}..{centre + w} (drift {device.drift:+d}), last used step "
                f"{device.last_step}")

    @staticmethod
    def public_fields(row):
        return {"period": row["period"], "counter": None, "drift_steps": row["drift"]}

    position_name = "period"
    position_default = 30

    @staticmethod
    def position(value):
        return {"period": value}

    @staticmethod
    def kept(period, counter):
        return period, 0  # a time-based token has no counter of its own

    @staticmethod
    def spec_problem(period, counter, period_name="period", counter_name="counter"):
        if not 1 <= period <= MAX_PERIOD:
            return f"{period_name} must be 1-{MAX_PERIOD} seconds, not {period}"
        return None

    @classmethod
    def provisioning_uri(cls, secret_b32, *, digits, algorithm, name, issuer, period, counter):
        # pyotp only for enrolment: the PAM fallback imports this module on every login.
        import pyotp

        otp = pyotp.TOTP(secret_b32, digits=digits, digest=getattr(hashlib, algorithm.lower()),
                         interval=period, name=name, issuer=issuer or None)
        return otp.provisioning_uri()


# The token kinds, by the name stored in devices.kind (and typed in CSV files and --type).
KINDS: dict[str, type[OtpKey]] = {cls.kind: cls for cls in (TotpKey, HotpKey)}


def key_for(kind: str, seed: bytes, algorithm: str = "SHA1", digits: int = 6) -> OtpKey:
    """The key of a device of `kind` (KeyError for an unknown kind)."""
    return KINDS[kind](seed, algorithm, digits)


def kind_names(sep: str = " or ") -> str:
    """The kinds for a message: "totp or hotp"."""
    return sep.join(KINDS)


@functools.lru_cache(maxsize=16)
def nearest_first(window: int) -> tuple[int, ...]:
    """TOTP step offsets, nearest the clock first: 0, -1, 1, -2, 2, ... up to `window`."""
    return tuple(sorted(range(-window, window + 1), key=lambda d: (abs(d), d)))


def time_step(now: float, period: int) -> int:
    """The RFC 6238 time step T for Unix time `now` (T0 = 0)."""
    return int(now) // period


def is_code(text: str, digits: int) -> bool:
    return len(text) == digits and text.isascii() and text.isdigit()
