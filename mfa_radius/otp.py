"""HOTP (RFC 4226) and TOTP (RFC 6238) codes, and window matching.

The hot path computes many codes per second, so a key prepares its HMAC pads once and copies the
prepared object per code (hmac.digest() re-fetches the MAC from OpenSSL on every call: FACTS.md).
Codes are checked against pyotp, oathtool and the RFC vectors in the tests.
"""

from __future__ import annotations

import functools
import hmac
import struct
from collections.abc import Iterable

from .hmacprep import PreparedHmac

ALGORITHMS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
DIGITS = (6, 8)
_COUNTER = struct.Struct(">Q").pack  # RFC 4226 5.2: the counter as 8 octets, big-endian
_WORD = struct.Struct(">I").unpack_from


class OtpKey:
    """One seed, prepared for fast code generation."""

    __slots__ = ("_mac", "digits", "_mod")

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

    def find_step(self, code: str, centre: int, offsets: tuple[int, ...],
                  last_used: int) -> tuple[int | None, str | None]:
        """TOTP: (the step to consume, or None; why not: None, "replay" or "reused_code").

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

    def find_pair(self, code1: str, code2: str, first: int, last: int) -> int | None:
        """The counter c in [first, last] with code(c) == code1 and code(c+1) == code2."""
        previous = self.code(first)
        for counter in range(first, last + 1):
            following = self.code(counter + 1)
            if hmac.compare_digest(previous, code1) and hmac.compare_digest(following, code2):
                return counter
            previous = following
        return None


@functools.lru_cache(maxsize=16)
def nearest_first(window: int) -> tuple[int, ...]:
    """TOTP step offsets, nearest the clock first: 0, -1, 1, -2, 2, ... up to `window`."""
    return tuple(sorted(range(-window, window + 1), key=lambda d: (abs(d), d)))


def time_step(now: float, period: int) -> int:
    """The RFC 6238 time step T for Unix time `now` (T0 = 0)."""
    return int(now) // period


def is_code(text: str, digits: int) -> bool:
    return len(text) == digits and text.isascii() and text.isdigit()
