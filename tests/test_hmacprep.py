"""PreparedHmac gives exactly what the standard library's hmac gives."""

from __future__ import annotations

import builtins
import hashlib
import hmac
import os

import pytest

from mfa_radius import hmacprep
from mfa_radius.hmacprep import HASHES, PreparedHmac


@pytest.mark.parametrize("digest", ["md5", "sha1", "sha256", "sha512"])
@pytest.mark.parametrize("key_len", [0, 1, 16, 20, 63, 64, 65, 128, 129, 300])
def test_prepared_hmac_equals_hmac(digest, key_len):
    key = os.urandom(key_len)
    prepared = PreparedHmac(key, digest)
    for message in (b"", b"\x00" * 8, os.urandom(37), os.urandom(4096)):
        assert prepared.digest(message) == hmac.digest(key, message, digest)
    # Reusable: the prepared states are copied, never consumed.
    assert prepared.digest(b"abc") == prepared.digest(b"abc") == hmac.digest(key, b"abc", digest)


def test_rfc2202_hmac_md5_and_sha1_vectors():
    assert PreparedHmac(b"\x0b" * 16, "md5").digest(b"Hi There").hex() == \
        "9294727a3638bb1c13f48ef8158bfc9d"
    assert PreparedHmac(b"\x0b" * 20, "sha1").digest(b"Hi There").hex() == \
        "b617318655057264e28bc0b6fb378c8ef146be00"
    assert PreparedHmac(b"\xaa" * 80, "sha1").digest(
        b"Test Using Larger Than Block-Size Key - Hash Key First").hex() == \
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"


def test_the_hashes_used_equal_hashlibs():
    for name, make in HASHES.items():
        for message in (b"", b"abc", os.urandom(100), os.urandom(4096)):
            assert make(message).digest() == hashlib.new(name, message).digest()
        prepared = make(b"abc")
        copy = prepared.copy()
        copy.update(b"d")
        assert copy.digest() == hashlib.new(name, b"abcd").digest()
        assert prepared.digest() == hashlib.new(name, b"abc").digest()  # the copy left it alone


def test_cpythons_own_hashes_when_there_and_hashlib_otherwise(monkeypatch):
    import _md5

    assert HASHES["md5"] is _md5.md5
    real_import = builtins.__import__

    def without_builtin_md5(name, *args, **kwargs):
        if name == "_md5":
            raise ImportError("built without it")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_builtin_md5)
    # White-box: which implementation backs the hashes is invisible in their output (the point
    # is that both agree); only the chooser can be asked.
    found = hmacprep._constructors()
    assert found["md5"] is hashlib.md5 and found["sha1"] is HASHES["sha1"]
