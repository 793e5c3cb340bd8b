"""HMAC with its two pad states hashed once per key (RFC 2104), for keys used many times.

A MAC is then two copies of prepared hash objects, two updates and two digests: less work than
copying a prepared `hmac.HMAC` (OpenSSL 3 copies the whole HMAC context) or calling
`hmac.digest()`, which fetches the MAC anew on every call (docs/benchmarks.md, "Figures behind
the design"). The RADIUS path computes three of these per request: the TOTP code, and the
Message-Authenticator of the request and of the reply. Checked against `hmac` in the tests.

The hashes are CPython's own implementations (`_md5`, `_sha1`, ...: what hashlib itself uses
when it is built without OpenSSL) where the interpreter has them. For the short messages here
OpenSSL 3's per-call overhead dominates: a copy allocates, the digest copies again, and every
context is cleansed and freed, which costs more than the hashing itself for HMAC-MD5 of a
RADIUS packet or MD5(secret + 16 octets). RADIUS needs MD5 (RFC 2865) wherever it runs,
as FreeRADIUS's own MD5 code shows; these are the same functions, not weaker ones, and the
tests check them against hashlib and the RFC 2202 vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any


def _constructors() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for name, module in (("md5", "_md5"), ("sha1", "_sha1"), ("sha256", "_sha256"),
                         ("sha512", "_sha512")):
        try:
            found[name] = getattr(__import__(module), name)
        except (ImportError, AttributeError):  # an interpreter built without them
            found[name] = getattr(hashlib, name)
    return found


HASHES = _constructors()
md5 = HASHES["md5"]

_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class PreparedHmac:
    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, digest: str):
        make = HASHES[digest]  # sha1, sha256, sha512, md5
        block = make().block_size
        if len(key) > block:
            key = make(key).digest()
        key = key.ljust(block, b"\x00")
        self._inner = make(key.translate(_IPAD))
        self._outer = make(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()
