"""SMS codes through RADIUS: "sms" (or an empty answer) asks for a code, the challenge takes it.

The `file` gateway writes each message to an outbox file, where the test reads the code.
"""

from __future__ import annotations

import re
import time

import pytest
from mfa_helpers import assign
from radius_helpers import Daemon, need, now_code, radclient, reply_attr

from mfa_radius.sms.service import SmsService
from mfa_radius.state import open_devices
from mfa_radius.verifier import Verifier

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture(scope="module")
def tools():
    need("radclient")


def sms_config(tmp_path):
    return f'[sms]\n[[sms.gateways]]\ntype = "file"\npath = "{tmp_path}/outbox"\n'


def enable_phone(cfg, user, phone="+15550001111"):
    verifier = Verifier.open(cfg)
    try:
        SmsService(verifier).enable(user, phone)
    finally:
        verifier.store.close()


def texted_code(tmp_path, count=1, timeout=5.0):
    """The code of the `count`-th message in the outbox (waiting for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = tmp_path / "outbox"
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return re.findall(r"\b(\d{6})\b", lines[count - 1])[-1]
        time.sleep(0.05)
    raise AssertionError("no SMS in the outbox")


def req(user, password, state=None):
    lines = f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'
    return lines + (f"State = {state}\n" if state else "")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', extra=sms_config(tmp_path))
    enable_phone(d.cfg, "carol")
    devices = open_devices(d.cfg)
    d.alice = assign(devices, "alice", "ALICE-SMS")
    devices.store.close()
    d.start()
    yield d
    d.stop()


def test_code_only_sms_round_trip(daemon, tmp_path):
    result, out = radclient(daemon, req("carol", "sms"))
    assert result == "Access-Challenge", out
    (message,) = reply_attr(out, "Reply-Message")
    assert "A code was sent to your phone ending 1111" in message
    (state,) = reply_attr(out, "State")
    code = texted_code(tmp_path)
    assert code not in daemon.log()
    result, out = radclient(daemon, req("carol", code, state))
    assert result == "Access-Accept", out
    assert "reason=ok" in daemon.decisions(2)[-1]
    # The texted code is single use.
    _, out = radclient(daemon, req("carol", "sms"))
    (state,) = reply_attr(out, "State")
    result, _ = radclient(daemon, req("carol", code, state))
    assert result == "Access-Reject"


def test_user_without_phone_gets_no_sms(daemon, tmp_path):
    result, _ = radclient(daemon, req("alice", "sms"))
    assert result == "Access-Reject"
    assert not (tmp_path / "outbox").exists()
    result, out = radclient(daemon, req("alice", now_code(daemon.alice)))
    assert result == "Access-Accept", out


def test_send_limit_is_explained(daemon, tmp_path):
    for _ in range(3):  # [sms] send_limit default
        result, _ = radclient(daemon, req("carol", "sms"))
        assert result == "Access-Challenge"
    result, out = radclient(daemon, req("carol", "sms"))
    assert result == "Access-Challenge", out  # a code sent earlier can still be typed
    (message,) = reply_attr(out, "Reply-Message")
    assert "Too many codes sent; try again in" in message
    # Without a password backend a State proves nothing: the refusal gives none, and the
    # answer, a request of its own, is checked as a code.
    assert reply_attr(out, "State") == []
    result, out = radclient(daemon, req("carol", texted_code(tmp_path, 3)))
    assert result == "Access-Accept", out


def test_answer_without_user_password_at_a_challenge_sends_an_sms(daemon, tmp_path):
    # radclient (like a FreeRADIUS proxy) leaves an empty User-Password out of the packet: at a
    # challenge, a request with the State and no User-Password is the empty answer.
    result, out = radclient(daemon, req("carol", "sms"))
    assert result == "Access-Challenge", out
    (state,) = reply_attr(out, "State")
    texted_code(tmp_path)
    lines = f'User-Name = "carol"\nMessage-Authenticator = 0x00\nState = {state}\n'
    result, out = radclient(daemon, lines)
    assert result == "Access-Challenge", out + daemon.log()
    (message,) = reply_attr(out, "Reply-Message")
    assert message == '"A code was sent to your phone ending 1111. Enter the code: "'
    (state,) = reply_attr(out, "State")
    result, out = radclient(daemon, req("carol", texted_code(tmp_path, 2), state))
    assert result == "Access-Accept", out
    # Without a State, a missing User-Password is still refused.
    result, _ = radclient(daemon, 'User-Name = "carol"\nMessage-Authenticator = 0x00\n')
    assert result == "Access-Reject"
    assert "reason=no_user_password" in daemon.decisions(4)[-1]


def test_refused_sms_requests_add_no_state_and_log_a_few_lines(daemon, tmp_path):
    """A flood of "sms" answers past the send limit: no State each, a few log lines, and a
    real user's pending State still works."""
    import socket

    from radius_helpers import SECRET, access_request

    from mfa_radius.radius import codec

    enable_phone(daemon.cfg, "dave", "+15550002222")
    result, out = radclient(daemon, req("dave", "sms"))
    assert result == "Access-Challenge", out
    (dave_state,) = reply_attr(out, "State")
    secret = codec.Secret(SECRET.encode())
    states = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        for i in range(300):
            packet, auth = access_request("carol", b"sms", ident=i % 256)
            sock.sendto(packet, ("127.0.0.1", daemon.port))
            reply = sock.recv(4096)
            assert codec.verify_reply(reply, auth, secret)
            assert reply[0] == codec.ACCESS_CHALLENGE
            states += any(t == codec.STATE for t, _ in codec.parse_attrs(reply))
    assert states == 3  # the three codes sent ([sms] send_limit); none for the refusals
    result, out = radclient(daemon, req("dave", texted_code(tmp_path, 1), dave_state))
    assert result == "Access-Accept", out
    refusals = daemon.log().count("no SMS code for user carol")
    assert 1 <= refusals <= 5, refusals
