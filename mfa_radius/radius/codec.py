"""RADIUS wire format for the attributes this server reads and writes (RFC 2865, 2869, 3579, 5997).

Lean on purpose: each request is parsed once into a list of (type, value) pairs, and a request is
refused (None, a silent drop by the caller) on anything the RFCs call malformed. Decoding and
encoding with pyrad's Packet costs more than FreeRADIUS spends on a whole request
(docs/benchmarks.md); this path keeps the per-request work to a few hashes. pyrad's dictionary
and Packet stay the reference the tests check this codec against. Replies always carry
Message-Authenticator as their FIRST attribute (BlastRADIUS, CVE-2024-3596).
"""

from __future__ import annotations

import hmac
import struct

from ..hmacprep import PreparedHmac, md5

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12

USER_NAME = 1
USER_PASSWORD = 2
CHAP_PASSWORD = 3
REPLY_MESSAGE = 18
STATE = 24
VENDOR_SPECIFIC = 26
SESSION_TIMEOUT = 27
PROXY_STATE = 33
EAP_MESSAGE = 79
MESSAGE_AUTHENTICATOR = 80

# Microsoft (vendor 311, RFC 2548) MS-CHAP-Response, MS-CHAP-Challenge, MS-CHAP2-Response.
_MICROSOFT = (311).to_bytes(4, "big")
_MSCHAP_TYPES = frozenset((1, 11, 25))

HEADER_LEN = 20
MAX_PACKET = 4096
_MA_ZERO = bytes(16)
_HEADER = struct.Struct("!BBH16s")
_compare_digest = hmac.compare_digest
_REPLY_HEAD = struct.Struct("!BBH").pack
_MA_TYPE_LEN = bytes((80, 18))  # Message-Authenticator, 18 octets
_MA_BLANK = _MA_TYPE_LEN + _MA_ZERO  # as it is hashed: value zeroed
# Attributes that may appear at most once in an Access-Request (RFC 2865 5.44, RFC 3579 3.2).
_AT_MOST_ONCE = frozenset((USER_NAME, USER_PASSWORD, CHAP_PASSWORD, STATE, MESSAGE_AUTHENTICATOR))


class Secret:
    """A client's shared secret with its hash states prepared once: each use copies a state
    instead of hashing the secret again."""

    __slots__ = ("_md5", "hmac_md5", "raw")

    def __init__(self, raw: bytes):
        self.raw = raw
        self.hmac_md5 = PreparedHmac(raw, "md5").digest  # HMAC-MD5 keyed with the secret
        self._md5 = md5(raw)

    def md5_prefixed(self, data: bytes) -> bytes:
        """MD5(secret + data), the User-Password keystream block."""
        h = self._md5.copy()
        h.update(data)
        return h.digest()


class Request:
    """A parsed, authenticated request. `attrs` keeps wire order; values are raw bytes.

    `user_name`, `password` (hidden) and `state` are the values of those single-instance
    attributes, or None: recorded while parsing, the only values a code-only request needs.
    `attrs` is listed from `raw` (already checked) when first asked for: a NAS sends a dozen
    attributes the server never reads, and listing them would cost every request.
    """

    __slots__ = ("_attrs", "authenticator", "code", "has_ma", "id", "password", "proxied", "raw",
                 "state", "user_name")

    def __init__(self, code: int, ident: int, authenticator: bytes, raw: bytes, has_ma: bool,
                 proxied: bool = True, user_name: bytes | None = None,
                 password: bytes | None = None, state: bytes | None = None):
        self.proxied = proxied  # carries Proxy-State (True when unknown: look)
        self.code = code
        self.id = ident
        self.authenticator = authenticator
        self.raw = raw
        self.has_ma = has_ma
        self.user_name = user_name
        self.password = password
        self.state = state
        self._attrs: list[tuple[int, bytes]] | None = None

    @property
    def attrs(self) -> list[tuple[int, bytes]]:
        if self._attrs is None:
            self._attrs = parse_attrs(self.raw)
        return self._attrs

    def get(self, attr_type: int) -> bytes | None:
        for t, v in self.attrs:
            if t == attr_type:
                return v
        return None

    def all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attrs if t == attr_type]

    def is_mschap(self) -> bool:
        """Whether the request carries MS-CHAP or MS-CHAPv2 (Microsoft vendor attributes)."""
        return any(t == VENDOR_SPECIFIC and len(v) > 5 and v[:4] == _MICROSOFT
                   and v[4] in _MSCHAP_TYPES for t, v in self.attrs)


class Malformed(Exception):
    """Why a packet was dropped (for the rate-limited log line, never sent to anyone).

    `cause` is a fixed word for metrics: malformed, wrong_secret (the Message-Authenticator does
    not match: the client's secret is not ours), missing_message_authenticator.
    """

    def __init__(self, message: str, cause: str = "malformed"):
        super().__init__(message)
        self.cause = cause


def parse_request(data: bytes, secret: Secret, require_ma: bool) -> Request:
    """Parse and authenticate an Access-Request or Status-Server; raise Malformed otherwise.

    Octets beyond the Length field are padding and ignored (RFC 2865 3); a packet shorter than its
    Length field, an attribute shorter than 2 octets or running past the end, a repeated
    single-instance attribute, or a wrong Message-Authenticator make the whole packet malformed.
    """
    if len(data) < HEADER_LEN:
        raise Malformed("shorter than a RADIUS header")
    code, ident, length, authenticator = _HEADER.unpack_from(data)
    if code not in (ACCESS_REQUEST, STATUS_SERVER):
        raise Malformed(f"unexpected packet code {code}")
    if length < HEADER_LEN or length > MAX_PACKET:
        raise Malformed(f"bad length field {length}")
    if len(data) < length:
        raise Malformed(f"truncated: length field {length}, received {len(data)}")
    data = data[:length]
    ma_at = -1
    seen = 0
    user_name = password = state = None
    proxied = False
    pos = HEADER_LEN
    while pos < length:
        if pos + 2 > length:
            raise Malformed("attribute header runs past the end")
        attr_type = data[pos]
        attr_len = data[pos + 1]
        end = pos + attr_len
        if attr_len < 2 or end > length:
            raise Malformed(f"attribute {attr_type} has bad length {attr_len}")
        # The attributes the server reads are all single-instance: one test for the others.
        if attr_type in _AT_MOST_ONCE:
            bit = 1 << attr_type
            if seen & bit:
                raise Malformed(f"attribute {attr_type} appears more than once")
            seen |= bit
            if attr_type == MESSAGE_AUTHENTICATOR:
                if attr_len != 18:
                    raise Malformed("Message-Authenticator has bad length")
                ma_at = pos + 2
            elif attr_type == USER_NAME:
                user_name = data[pos + 2:end]
            elif attr_type == USER_PASSWORD:
                password = data[pos + 2:end]
            elif attr_type == STATE:
                state = data[pos + 2:end]
        elif attr_type == PROXY_STATE:
            proxied = True
        pos = end
    if ma_at >= 0:
        check = data[:ma_at] + _MA_ZERO + data[ma_at + 16:]
        if not _compare_digest(secret.hmac_md5(check), data[ma_at:ma_at + 16]):
            raise Malformed("Message-Authenticator does not match", "wrong_secret")
    elif require_ma or code == STATUS_SERVER or (seen >> EAP_MESSAGE) & 1:
        raise Malformed("no Message-Authenticator", "missing_message_authenticator")
    if code == ACCESS_REQUEST:
        if password is not None and (seen >> CHAP_PASSWORD) & 1:
            raise Malformed("both User-Password and CHAP-Password")
        if password is not None and (len(password) < 16 or len(password) > 128
                                     or len(password) % 16):
            raise Malformed("User-Password has bad length")
    return Request(code, ident, authenticator, data, ma_at >= 0, proxied, user_name, password,
                   state)


def decrypt_password(encrypted: bytes, authenticator: bytes, secret: Secret) -> bytes:
    """Undo the User-Password hiding of RFC 2865 5.2; trailing NUL padding removed."""
    if len(encrypted) == 16:  # a code alone, the usual case: one block, no loop
        return _xor(encrypted, secret.md5_prefixed(authenticator)).rstrip(b"\x00")
    out = bytearray()
    last = authenticator
    for i in range(0, len(encrypted), 16):
        block = encrypted[i:i + 16]
        key = secret.md5_prefixed(last)
        out += _xor(block, key)
        last = block
    return bytes(out).rstrip(b"\x00")


def encrypt_password(password: bytes, authenticator: bytes, secret: Secret) -> bytes:
    """RFC 2865 5.2 hiding (used by tests and tools acting as a client)."""
    padded = password + b"\x00" * (-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), 16):
        key = secret.md5_prefixed(last)
        block = _xor(padded[i:i + 16], key)
        out += block
        last = block
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def encode_attr(attr_type: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"attribute {attr_type} value longer than 253 octets")
    return bytes((attr_type, len(value) + 2)) + value


def build_reply(code: int, request: Request, secret: Secret, attrs: bytes = b"") -> bytes:
    """A signed reply: Message-Authenticator first, then `attrs` (already encoded), then the
    request's Proxy-State attributes in order (RFC 2865 5.33)."""
    if request.proxied:
        body = attrs + b"".join(encode_attr(PROXY_STATE, v) for t, v in request.attrs
                                if t == PROXY_STATE)
    else:
        body = attrs
    length = HEADER_LEN + 18 + len(body)
    if length > MAX_PACKET:
        raise ValueError("reply longer than 4096 octets")
    head = _REPLY_HEAD(code, request.id, length)
    # RFC 3579 3.2: the MA of a reply is computed with the Request Authenticator in the header.
    signed = head + request.authenticator
    rest = _MA_TYPE_LEN + secret.hmac_md5(signed + _MA_BLANK + body) + body
    response_auth = md5(signed + rest + secret.raw).digest()
    return head + response_auth + rest


def build_request(code: int, ident: int, authenticator: bytes, secret: Secret,
                  attrs: list[tuple[int, bytes]], sign: bool = True) -> bytes:
    """An Access-Request or Status-Server, Message-Authenticator first when `sign` (tests,
    tools)."""
    body = b"".join(encode_attr(t, v) for t, v in attrs)
    length = HEADER_LEN + len(body) + (18 if sign else 0)
    head = struct.pack("!BBH", code, ident, length) + authenticator
    if not sign:
        return head + body
    ma = secret.hmac_md5(head + b"\x50\x12" + _MA_ZERO + body)
    return head + b"\x50\x12" + ma + body


def verify_reply(reply: bytes, request_authenticator: bytes, secret: Secret) -> bool:
    """Check a reply's Response Authenticator and Message-Authenticator (tests, tools)."""
    if len(reply) < HEADER_LEN:
        return False
    length = struct.unpack_from("!H", reply, 2)[0]
    if length != len(reply):
        return False
    expected = md5(reply[:4] + request_authenticator + reply[20:] + secret.raw).digest()
    if not hmac.compare_digest(expected, reply[4:20]):
        return False
    if reply[20:22] != b"\x50\x12":
        return False
    check = reply[:4] + request_authenticator + b"\x50\x12" + _MA_ZERO + reply[38:]
    return hmac.compare_digest(secret.hmac_md5(check), reply[22:38])


def parse_attrs(data: bytes) -> list[tuple[int, bytes]]:
    """The attributes of a well-formed packet (Request.attrs, tests, tools)."""
    length = struct.unpack_from("!H", data, 2)[0]
    out, pos = [], HEADER_LEN
    while pos < length:
        out.append((data[pos], data[pos + 2:pos + data[pos + 1]]))
        pos += data[pos + 1]
    return out
