"""Benchmark users and their TOTP seeds, codes computed here (RFC 6238, SHA1, 6 digits, 30 s)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time

PERIOD = 30


def user_name(i: int, prefix: str = "u") -> str:
    return f"{prefix}{i:07d}"


def seed_for(i: int, salt: bytes) -> bytes:
    """A distinct 160-bit seed per user, reproducible within one run (salt is random per run)."""
    return hashlib.sha1(salt + i.to_bytes(8, "big")).digest()


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode().rstrip("=")


def totp(seed: bytes, step: int) -> str:
    digest = hmac.new(seed, struct.pack(">Q", step), "sha1").digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 1000000:06d}"


def current_step(now: float | None = None) -> int:
    return int(time.time() if now is None else now) // PERIOD


def seconds_left(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return PERIOD - (now % PERIOD)


def wait_for_room(needed: float) -> float:
    """Sleep into the next step if fewer than `needed` seconds are left in this one; the wait."""
    left = seconds_left()
    if left >= needed:
        return 0.0
    time.sleep(left + 0.02)
    return left + 0.02
