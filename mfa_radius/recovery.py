"""Recovery codes: one-time, 10 digits, shown once, stored only as scrypt hashes.

All codes issued together share one random salt, so checking an attempt costs one slow hash
however many codes the user has left.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DIGITS = 10
# scrypt cost: 16 MiB (128 * N * r) and tens of milliseconds per check, too slow for guessing a
# stolen hash; online attempts are bounded by the lockout.
_N, _R, _P = 2 ** 14, 8, 1


def normalise(text: str) -> str:
    """Drop the separators people type ("12345-67890", "12345 67890")."""
    return text.replace("-", "").replace(" ", "")


def looks_like_recovery_code(text: str) -> bool:
    code = normalise(text)
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def generate(count: int) -> list[str]:
    """`count` fresh codes, formatted as the user sees them (XXXXX-XXXXX)."""
    codes: set[str] = set()
    while len(codes) < count:
        codes.add(str(secrets.randbelow(10 ** DIGITS)).zfill(DIGITS))
    return [f"{c[:5]}-{c[5:]}" for c in sorted(codes)]


def hash_codes(codes: list[str]) -> list[tuple[bytes, bytes]]:
    """(salt, hash) for each code, one salt for the batch."""
    salt = secrets.token_bytes(16)
    return [(salt, _hash(normalise(c), salt)) for c in codes]


def match(text: str, stored: list[tuple[int, bytes, bytes]]) -> int | None:
    """The id of the stored (id, salt, hash) that `text` opens, compared in constant time."""
    code = normalise(text)
    found = None
    digests: dict[bytes, bytes] = {}
    for code_id, salt, digest in stored:
        if salt not in digests:
            digests[salt] = _hash(code, salt)
        if hmac.compare_digest(digests[salt], digest) and found is None:
            found = code_id
    return found


def _hash(code: str, salt: bytes) -> bytes:
    return hashlib.scrypt(code.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
