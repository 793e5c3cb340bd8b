"""Seeds at rest: AES-256-GCM under a key file, and a keyed fingerprint for "one seed, one device".

The key file holds 32 random bytes, base64 encoded, and must be readable by its owner only. Two
sub-keys are derived from it (one for sealing, one for fingerprints) so that a fingerprint can never
be used as a sealing key or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from .errors import KeyFileError
from .private_files import make_private_dirs, read_private_file

KEY_BYTES = 32
_NONCE = 12
_VERSION = b"\x01"
# What the key check seals (Store.key_check), under its own associated data so that no device's
# sealed seed can pass for it, nor it for a seed.
_CHECK = b"mfa-radius key check"
_CHECK_AAD = b"mfa-radius key check v1"


def create_key_file(path: str) -> None:
    """Write a new random key to `path` with mode 0600; refuse to overwrite an existing one."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        make_private_dirs(parent)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: key file already exists; refusing to overwrite it "
                           "(every sealed seed depends on it)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_key_file(path: str) -> bytes:
    """Return the 32-byte key, refusing a file that group or others can read or write."""
    try:
        raw = read_private_file(path, "key file", KeyFileError)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found (create it with 'mfa-radius init')") \
            from None
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: key file is malformed (expected {KEY_BYTES} bytes, base64)")
    return key


class Sealer:
    """Seal and unseal seeds; fingerprint them without revealing them."""

    def __init__(self, master_key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        seal_key = hmac.digest(master_key, b"mfa-radius seal v1", hashlib.sha256)
        self._aead = AESGCM(seal_key)
        self._fp_key = hmac.digest(master_key, b"mfa-radius fingerprint v1", hashlib.sha256)

    @classmethod
    def from_file(cls, path: str) -> Sealer:
        return cls(read_key_file(path))

    def seal(self, seed: bytes, serial: str) -> bytes:
        """Encrypt `seed`, bound to the device's serial (moving a blob to another row fails)."""
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, seed, _aad(serial))

    def unseal(self, blob: bytes, serial: str) -> bytes:
        """Decrypt a sealed seed; raise KeyFileError when the key is not the one that sealed it."""
        from cryptography.exceptions import InvalidTag

        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE + 16:
            raise KeyFileError(f"device {serial}: sealed seed is malformed")
        try:
            return self._aead.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], _aad(serial))
        except InvalidTag:
            raise KeyFileError(f"device {serial}: seed does not open with this key file "
                               "(sealed under another key, or its row was copied or tampered "
                               "with)") from None

    def opens(self, blob: bytes, serial: str) -> bool:
        """Whether a sealed seed opens with this key (for admin views and the key check)."""
        try:
            self.unseal(blob, serial)
        except KeyFileError:
            return False
        return True

    def key_check(self) -> bytes:
        """A new sealed key-check constant for this key."""
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, _CHECK, _CHECK_AAD)

    def matches_key_check(self, blob: bytes) -> bool:
        """Whether `blob` (from Store.key_check) was sealed by this key."""
        from cryptography.exceptions import InvalidTag

        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE + 16:
            return False
        try:
            opened = self._aead.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], _CHECK_AAD)
        except InvalidTag:
            return False
        return hmac.compare_digest(opened, _CHECK)

    def fingerprint(self, seed: bytes) -> str:
        """A keyed digest of the seed: equal seeds give equal fingerprints, nothing else leaks."""
        return hmac.digest(self._fp_key, seed, hashlib.sha256).hex()


def _aad(serial: str) -> bytes:
    return b"mfa-radius seed v1:" + serial.encode("utf-8")
