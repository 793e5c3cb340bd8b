"""The lean RADIUS codec, cross-checked against pyrad (an independent implementation)."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad.dictionary import Dictionary
from pyrad.packet import AccessAccept, AccessRequest, AuthPacket, Packet

from mfa_radius.radius import codec
from mfa_radius.radius.replies import DICTIONARY

SECRET = b"testing123"
S = codec.Secret(SECRET)


@pytest.fixture(scope="module")
def rdict():
    return Dictionary(DICTIONARY)


def pyrad_request(rdict, password="hunter2", ma=True, **attrs):
    pkt = AuthPacket(code=AccessRequest, secret=SECRET, dict=rdict, id=7)
    if ma:
        pkt.add_message_authenticator()
    pkt["User-Name"] = "alice"
    pkt["User-Password"] = pkt.PwCrypt(password)
    for name, value in attrs.items():
        pkt[name.replace("_", "-")] = value
    return pkt, pkt.RequestPacket()


def test_parses_pyrad_request_and_decrypts_password(rdict):
    _, raw = pyrad_request(rdict, password="a" * 40)
    req = codec.parse_request(raw, S, require_ma=True)
    assert req.code == codec.ACCESS_REQUEST and req.id == 7 and req.has_ma
    assert req.get(codec.USER_NAME) == b"alice"
    hidden = req.get(codec.USER_PASSWORD)
    assert codec.decrypt_password(hidden, req.authenticator, S) == b"a" * 40


def test_wrong_secret_fails_message_authenticator(rdict):
    _, raw = pyrad_request(rdict)
    with pytest.raises(codec.Malformed, match="Message-Authenticator does not match") as exc:
        codec.parse_request(raw, codec.Secret(b"wrong"), require_ma=False)
    assert exc.value.cause == "wrong_secret"


def test_missing_message_authenticator_only_when_required(rdict):
    _, raw = pyrad_request(rdict, ma=False)
    assert not codec.parse_request(raw, S, require_ma=False).has_ma
    with pytest.raises(codec.Malformed, match="no Message-Authenticator"):
        codec.parse_request(raw, S, require_ma=True)


def test_status_server_always_needs_message_authenticator():
    auth = os.urandom(16)
    unsigned = codec.build_request(codec.STATUS_SERVER, 1, auth, S, [], sign=False)
    with pytest.raises(codec.Malformed):
        codec.parse_request(unsigned, S, require_ma=False)
    signed = codec.build_request(codec.STATUS_SERVER, 1, auth, S, [])
    assert codec.parse_request(signed, S, require_ma=True).code == codec.STATUS_SERVER


def test_reply_verified_by_pyrad_with_message_authenticator_first(rdict):
    pkt, raw = pyrad_request(rdict, Proxy_State=[b"one", b"two"])
    req = codec.parse_request(raw, S, require_ma=True)
    attrs = codec.encode_attr(codec.REPLY_MESSAGE, b"hello")
    reply = codec.build_reply(codec.ACCESS_ACCEPT, req, S, attrs)
    assert reply[20] == codec.MESSAGE_AUTHENTICATOR  # first attribute (BlastRADIUS)
    decoded = Packet(secret=SECRET, dict=rdict, packet=reply)
    assert decoded.code == AccessAccept
    assert pkt.VerifyReply(decoded, reply, enforce_ma=True)
    assert codec.verify_reply(reply, req.authenticator, S)
    # Proxy-State copied in order, after the server's own attributes.
    assert [v for t, v in codec.parse_attrs(reply) if t == codec.PROXY_STATE] == [b"one", b"two"]


def test_password_round_trip_matches_pyrad(rdict):
    for password in (b"", b"x", b"p" * 16, b"q" * 17, "pässwörd".encode(), b"z" * 128):
        auth = os.urandom(16)
        mine = codec.encrypt_password(password, auth, S)
        pkt = AuthPacket(secret=SECRET, dict=rdict, authenticator=auth)
        if password:
            assert mine == pkt.PwCrypt(password)
        assert codec.decrypt_password(mine, auth, S) == password


def _header(code, ident, length, auth=b"\x00" * 16):
    return struct.pack("!BBH", code, ident, length) + auth


@pytest.mark.parametrize("raw,why", [
    (b"\x01\x01\x00", "shorter"),
    (_header(1, 1, 19), "bad length"),
    (_header(1, 1, 4097), "bad length"),
    (_header(1, 1, 30), "truncated"),
    (_header(4, 1, 20), "code"),
    (_header(1, 1, 21) + b"\x01", "past the end"),
    (_header(1, 1, 22) + b"\x01\x01", "bad length"),
    (_header(1, 1, 23) + b"\x01\x05x", "bad length"),
    (_header(1, 1, 26) + b"\x01\x03a\x01\x03b", "more than once"),
    (_header(1, 1, 30) + b"\x02\x0a" + b"x" * 8, "User-Password"),
    (_header(1, 1, 31) + b"\x50\x0b" + b"x" * 9, "Message-Authenticator"),
])
def test_malformed_packets_refused(raw, why):
    with pytest.raises(codec.Malformed, match=why):
        codec.parse_request(raw, S, require_ma=False)


def test_padding_after_length_is_ignored():
    auth = os.urandom(16)
    raw = codec.build_request(codec.ACCESS_REQUEST, 3, auth, S, [(codec.USER_NAME, b"bob")])
    req = codec.parse_request(raw + b"\x00garbage", S, require_ma=True)
    assert req.get(codec.USER_NAME) == b"bob"
    assert req.raw == raw


def test_tampered_attribute_fails_message_authenticator():
    raw = bytearray(codec.build_request(codec.ACCESS_REQUEST, 3, os.urandom(16), S,
                                        [(codec.USER_NAME, b"bob")]))
    raw[-1] ^= 1
    with pytest.raises(codec.Malformed):
        codec.parse_request(bytes(raw), S, require_ma=True)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_malformed(data):
    try:
        codec.parse_request(data, S, require_ma=False)
    except codec.Malformed:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=10),
       st.booleans())
def test_well_formed_requests_parse_in_order(attrs, sign):
    attrs = [(t, v) for t, v in attrs if t not in (codec.MESSAGE_AUTHENTICATOR, 2, 1, 3, 24, 79)]
    raw = codec.build_request(codec.ACCESS_REQUEST, 9, os.urandom(16), S, attrs, sign=sign)
    req = codec.parse_request(raw, S, require_ma=sign)
    assert [a for a in req.attrs if a[0] != codec.MESSAGE_AUTHENTICATOR] == attrs


def test_response_authenticator_formula():
    raw = codec.build_request(codec.ACCESS_REQUEST, 5, b"A" * 16, S, [])
    req = codec.parse_request(raw, S, require_ma=True)
    reply = codec.build_reply(codec.ACCESS_REJECT, req, S)
    expected = hashlib.md5(reply[:4] + b"A" * 16 + reply[20:] + SECRET).digest()
    assert reply[4:20] == expected
