"""Fuzzing the RADIUS decoder and the server's request handler (hypothesis, bounded).

test_radius_codec.py already feeds random bytes to the decoder; here the inputs are valid signed
requests with mutations (bit flips, cuts, splices, length-field lies, repeated attributes), which
reach the deeper branches, and the whole in-process request handler behind the decoder: whatever
arrives, only `Malformed` leaves the decoder, and the handler answers or drops without raising.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa_radius import config as config_mod
from mfa_radius import metrics
from mfa_radius.errors import MfaError
from mfa_radius.radius import codec
from mfa_radius.radius.server import RadiusServer
from mfa_radius.state import init, open_devices
from mfa_radius.verifier import Verifier

from mfa_helpers import assign

SECRET = b"testing123"
S = codec.Secret(SECRET)
CORPUS = Path(__file__).parent / "data" / "radius-corpus"

_attr = st.tuples(st.sampled_from([1, 2, 3, 4, 18, 24, 26, 31, 33, 79, 80, 255]),
                  st.binary(max_size=60))


@st.composite
def valid_packets(draw):
    code = draw(st.sampled_from([codec.ACCESS_REQUEST, codec.STATUS_SERVER]))
    attrs = [(codec.USER_NAME, draw(st.binary(min_size=1, max_size=30)))]
    if draw(st.booleans()):
        password = draw(st.binary(max_size=40))
        auth = draw(st.binary(min_size=16, max_size=16))
        attrs.append((codec.USER_PASSWORD, codec.encrypt_password(password, auth, S)))
    else:
        auth = draw(st.binary(min_size=16, max_size=16))
    attrs += [(t, v) for t, v in draw(st.lists(_attr, max_size=5))
              if t not in (codec.MESSAGE_AUTHENTICATOR, codec.USER_NAME, codec.USER_PASSWORD)]
    return codec.build_request(code, draw(st.integers(0, 255)), auth, S, attrs,
                               sign=draw(st.booleans()))


@st.composite
def mutated_packets(draw):
    data = bytearray(draw(valid_packets()))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "cut", "extend", "length", "splice", "attrlen"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[draw(st.integers(0, len(data))):]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "length" and len(data) >= 4:
            data[2:4] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        elif op == "splice":
            i = draw(st.integers(0, len(data)))
            data[i:i] = bytes(draw(_attr.map(lambda a: bytes((a[0], len(a[1]) + 2)) + a[1])))
        elif op == "attrlen" and len(data) > 21:
            data[21] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(mutated_packets(), st.booleans())
def test_mutated_requests_only_raise_malformed(data, require_ma):
    try:
        request = codec.parse_request(data, S, require_ma)
    except codec.Malformed as exc:
        assert exc.cause in ("malformed", "wrong_secret",
                             "missing_message_authenticator")
        return
    # What parses is usable by the handler: bounded, attributes inside the packet.
    assert len(request.raw) <= codec.MAX_PACKET
    assert sum(len(v) + 2 for _, v in request.attrs) == len(request.raw) - codec.HEADER_LEN
    hidden = request.get(codec.USER_PASSWORD)
    if hidden is not None:
        codec.decrypt_password(hidden, request.authenticator, S)


@settings(max_examples=300, deadline=None)
@given(valid_packets())
def test_a_signed_request_with_any_bit_flipped_is_refused(data):
    """Message-Authenticator covers every octet: one flipped bit anywhere is a drop."""
    if data[20:22] != b"\x50\x12":
        return  # unsigned
    for i in range(0, len(data), max(1, len(data) // 16)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(codec.Malformed):
            codec.parse_request(bytes(flipped), S, require_ma=True)


def test_corpus_is_refused_by_the_decoder():
    files = sorted(CORPUS.glob("*.hex"))
    assert len(files) >= 10
    for path in files:
        data = bytes.fromhex("".join(path.read_text().split()))
        with pytest.raises(codec.Malformed):
            codec.parse_request(data, S, require_ma=True)


# ---- the request handler, in process ----------------------------------------------------------

class Handler:
    """A RadiusServer with a real verifier on a real UDP socket, its loop run by hand: each
    datagram is sent, then the loop turns until the server's socket is drained (the server
    decides and answers a drained socket within that readable event)."""

    def __init__(self, tmp: Path):
        path = tmp / "mfa-radius.toml"
        for attempt in range(20):  # a free port, unless another process takes it first
            port = free_port()
            path.write_text(
                "[storage]\n"
                f'database = "{tmp}/mfa.db"\nkey_file = "{tmp}/secret.key"\n'
                'synchronous = "normal"\n'
                f'[pam]\nsocket = "{tmp}/pam.sock"\n'
                f'[radius]\nlisten = ["127.0.0.1:{port}"]\npassword_backend = "none"\n'
                '[[radius.clients]]\nname = "local"\naddress = "127.0.0.1"\n'
                f'secret = "{SECRET.decode()}"\nrequire_message_authenticator = false\n')
            cfg = config_mod.load(str(path))
            if attempt == 0:
                init(cfg)
                devices = open_devices(cfg)
                self.key = assign(devices, "alice", "A1")
                devices.store.close()
            self.server = RadiusServer(cfg, Verifier.open(cfg))
            try:
                self.server.bind()
                break
            except MfaError:
                self.server.close()
                self.server.verifier.store.close()
        else:
            raise RuntimeError("no free UDP port")
        self.address = ("127.0.0.1", port)
        # The daemon's metrics: every datagram is either answered or counted as a drop.
        self.server.metrics = metrics
        self.errors: list[logging.LogRecord] = []
        self._log = _Errors(self.errors)
        logging.getLogger("mfa_radius").addHandler(self._log)
        self.loop = asyncio.new_event_loop()
        self.server.start(self.loop)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.setblocking(False)

    def feed(self, data: bytes) -> list[bytes]:
        self.peer.sendto(data, self.address)
        (listening,) = self.server.sockets
        while select.select([listening], [], [], 0)[0]:
            self.loop.run_until_complete(asyncio.sleep(0))
        replies = []
        while True:
            try:
                replies.append(self.peer.recv(4096))
            except BlockingIOError:
                return replies

    def close(self):
        logging.getLogger("mfa_radius").removeHandler(self._log)
        self.server.close()
        self.server.verifier.store.close()
        self.loop.close()
        self.peer.close()


class _Errors(logging.Handler):
    """Records what the server logs with a traceback: an exception it caught."""

    def __init__(self, into: list):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record):
        if record.exc_info:
            self.into.append(record)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dropped() -> float:
    return sum(sample.value for family in metrics.DROPPED.collect()
               for sample in family.samples
               if sample.name.endswith("_total") and sample.labels["front"] == "radius")


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    h = Handler(tmp_path_factory.mktemp("handler"))
    yield h
    h.close()


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(mutated_packets(), valid_packets(), st.binary(max_size=120)))
def test_handler_answers_or_drops_never_raises(handler, data):
    drops = dropped()
    replies = handler.feed(data)
    assert not handler.errors, handler.errors[0].getMessage()
    # Exactly one of the two: one reply, or one drop counted by its cause (nothing is left
    # waiting for a decision).
    assert len(replies) + (dropped() - drops) == 1
    for reply in replies:
        # Any answer is a signed Accept (Status-Server only: no valid code here), Reject or
        # Challenge for exactly this request.
        assert reply[0] in (codec.ACCESS_ACCEPT, codec.ACCESS_REJECT, codec.ACCESS_CHALLENGE)
        assert codec.verify_reply(reply, data[4:20], S)
        if reply[0] == codec.ACCESS_ACCEPT:
            assert data[0] == codec.STATUS_SERVER


def test_handler_still_accepts_after_fuzzing(handler):
    import time

    from mfa_radius.otp import time_step

    code = handler.key.code(time_step(time.time(), 30) + 1)
    auth = os.urandom(16)
    data = codec.build_request(codec.ACCESS_REQUEST, 3, auth, S, [
        (codec.USER_NAME, b"alice"),
        (codec.USER_PASSWORD, codec.encrypt_password(code.encode(), auth, S))])
    (reply,) = handler.feed(data)
    assert reply[0] == codec.ACCESS_ACCEPT
