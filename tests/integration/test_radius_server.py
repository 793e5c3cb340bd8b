"""The real `mfa-radius serve` on a loopback UDP port, driven by radclient and raw sockets.

Backend "none" here (the appliance checked the password, RADIUS sees the code alone); the PAM
password backend and pam_radius_auth are in test_radius_pam.py.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time

import pytest
from mfa_helpers import assign
from radius_helpers import (
    MFA,
    SECRET,
    Daemon,
    access_request,
    free_port,
    need,
    now_code,
    radclient,
    reply_attr,
)

from mfa_radius.radius import codec
from mfa_radius.state import open_devices

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture(scope="module")
def tools():
    need("radclient")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', extra="""
[[radius.replies]]
user = "alice"
attributes = { Class = "vpn-users", Session-Timeout = 3600, Fortinet-Group-Name = "admins" }
""")
    yield d
    d.stop()


@pytest.fixture
def alice(daemon):
    devices = open_devices(daemon.cfg)
    key = assign(devices, "alice", "ALICE-1")
    devices.store.close()
    daemon.start()
    return key


def signed(user, password):
    return f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'


def test_code_accepted_with_reply_attributes_then_replay_rejected(daemon, alice):
    code = now_code(alice)
    result, out = radclient(daemon, signed("alice", code))
    assert result == "Access-Accept", out
    assert reply_attr(out, "Class") == ["0x76706e2d7573657273"]
    assert reply_attr(out, "Session-Timeout") == ["3600"]
    assert reply_attr(out, "Fortinet-Group-Name") == ['"admins"']  # a vendor attribute
    result, out = radclient(daemon, signed("alice", code))
    assert result == "Access-Reject", out
    assert reply_attr(out, "Class") == []
    lines = daemon.decisions(2)
    assert 'user=alice result=accept reason=ok' in lines[0]
    assert 'user=alice result=reject reason=replay' in lines[1]
    assert code not in daemon.log()  # never the code in the log


def test_reject_carries_only_message_authenticator_first(daemon, alice):
    packet, auth = access_request("alice", b"000000")
    reply = daemon.raw(packet)
    assert reply[0] == codec.ACCESS_REJECT
    assert codec.verify_reply(reply, auth, codec.Secret(SECRET.encode()))
    assert [t for t, _ in codec.parse_attrs(reply)] == [codec.MESSAGE_AUTHENTICATOR]


def test_unknown_user_gets_the_same_reject(daemon, alice):
    packet, _ = access_request("mallory", b"123456")
    reply = daemon.raw(packet)
    assert reply[0] == codec.ACCESS_REJECT and len(reply) == 38
    assert "reason=no_device" in daemon.wait_log(r'user=mallory .*').group(0)


def test_request_without_message_authenticator_dropped(daemon, alice):
    code = now_code(alice)
    result, out = radclient(daemon, f'User-Name = "alice"\nUser-Password = "{code}"\n')
    assert result is None, out
    daemon.wait_log(r"dropped request from 127\.0\.0\.1: malformed \(client local\): "
                    r"no Message-Authenticator")
    # The code was not burned by the dropped request.
    assert radclient(daemon, signed("alice", code))[0] == "Access-Accept"


def test_legacy_client_override_accepts_unsigned(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=(
        '[[radius.clients]]\nname = "legacy"\naddress = "127.0.0.0/8"\n'
        f'secret = "{SECRET}"\nrequire_message_authenticator = false\n'))
    devices = open_devices(d.cfg)
    key = assign(devices, "bob", "BOB-1")
    devices.store.close()
    d.start()
    try:
        result, out = radclient(d, f'User-Name = "bob"\nUser-Password = "{now_code(key)}"\n')
        assert result == "Access-Accept", out
        assert reply_attr(out, "Message-Authenticator")  # replies are signed anyway
    finally:
        d.stop()


def test_wrong_secret_dropped_and_logged_as_wrong_secret(daemon, alice):
    code = now_code(alice)
    result, out = radclient(daemon, signed("alice", code), secret="not-the-secret")
    assert result is None, out
    daemon.wait_log(r"WARNING mfa_radius\.radius: dropped request from 127\.0\.0\.1: wrong shared "
                    r"secret \(client local\): Message-Authenticator does not match\n")
    assert "malformed" not in daemon.log()
    assert radclient(daemon, signed("alice", code))[0] == "Access-Accept"


def test_mschap_request_rejected_as_mschap_unsupported(daemon, alice):
    # MS-CHAPv2 as a NAS sends it: MS-CHAP-Challenge and MS-CHAP2-Response (Microsoft, 311).
    def microsoft(vendor_type: int, value: bytes) -> tuple[int, bytes]:
        return 26, (311).to_bytes(4, "big") + bytes((vendor_type, len(value) + 2)) + value

    packet, _ = access_request("alice", None, extra=[microsoft(11, os.urandom(16)),
                                                     microsoft(25, os.urandom(50))])
    assert daemon.raw(packet)[0] == codec.ACCESS_REJECT
    assert "user=alice result=reject reason=mschap_unsupported" in daemon.decisions(1)[0]
    # Another vendor's attribute without a User-Password is not MS-CHAP.
    packet, _ = access_request("alice", None, extra=[(26, (9).to_bytes(4, "big") + b"\x01\x05abc")])
    assert daemon.raw(packet)[0] == codec.ACCESS_REJECT
    assert "reason=no_user_password" in daemon.decisions(2)[1]


def test_unknown_client_dropped(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=(
        '[[radius.clients]]\nname = "far"\naddress = "192.0.2.0/24"\n'
        f'secret = "{SECRET}"\n'))
    d.start()
    try:
        result, _ = radclient(d, signed("alice", "123456"), retries=1, timeout=0.5)
        assert result is None
        d.wait_log(r"dropped request from 127\.0\.0\.1: unknown client")
        packet, _ = access_request("alice", b"123456")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                sock.sendto(packet, ("127.0.0.1", d.port))
        assert radclient(d, "Message-Authenticator = 0x00\n", code="status",
                         timeout=0.5)[0] is None  # also unknown; and the flood was read
        assert 1 <= d.log().count("unknown client") <= 5  # rate-limited (logsetup burst)
    finally:
        d.stop()


def test_status_server(daemon, alice):
    result, out = radclient(daemon, "Message-Authenticator = 0x00\n", code="status")
    assert result == "Access-Accept", out
    # RFC 5997: Status-Server without a Message-Authenticator is dropped.
    packet = codec.build_request(codec.STATUS_SERVER, 3, os.urandom(16),
                                 codec.Secret(SECRET.encode()), [], sign=False)
    assert daemon.raw(packet, timeout=0.5) is None


def test_proxy_state_copied_in_order(daemon, alice):
    lines = signed("alice", "000000") + "Proxy-State = 0x01\nProxy-State = 0x0203\n"
    result, out = radclient(daemon, lines)
    assert result == "Access-Reject"
    assert reply_attr(out, "Proxy-State") == ["0x01", "0x0203"]
    packet, _ = access_request("alice", b"000000", extra=[
        (codec.PROXY_STATE, b"first"), (30, b"called-station"), (codec.PROXY_STATE, b"2nd")])
    reply = daemon.raw(packet)
    assert codec.parse_attrs(reply)[0][0] == codec.MESSAGE_AUTHENTICATOR
    assert [v for t, v in codec.parse_attrs(reply) if t == codec.PROXY_STATE] == [b"first", b"2nd"]


def test_retransmit_gets_cached_reply_and_never_reprocessed(daemon, alice):
    code = now_code(alice)
    packet, auth = access_request("alice", code.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        first = daemon.raw(packet, sock=sock)
        again = daemon.raw(packet, sock=sock)
    assert first[0] == codec.ACCESS_ACCEPT and again == first
    assert codec.verify_reply(first, auth, codec.Secret(SECRET.encode()))
    # A new request (new authenticator) with the same code is a replay: the retransmit was not.
    packet2, _ = access_request("alice", code.encode())
    assert daemon.raw(packet2)[0] == codec.ACCESS_REJECT
    assert [line.split()[2] for line in daemon.decisions(2)] == ["result=accept", "result=reject"]


def test_retransmitted_wrong_code_counts_one_failure(daemon, alice):
    packet, _ = access_request("alice", b"000000")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        replies = {daemon.raw(packet, sock=sock) for _ in range(8)}  # > lockout_failures
    assert len(replies) == 1 and next(iter(replies))[0] == codec.ACCESS_REJECT
    store = open_devices(daemon.cfg).store
    try:
        assert store.user_row("alice")["failures"] == 1  # committed before the reply was sent
    finally:
        store.close()
    result, out = radclient(daemon, signed("alice", now_code(alice)))
    assert result == "Access-Accept", out  # not locked out
    assert len(daemon.decisions(2)) == 2


def test_lockout_after_wrong_codes(daemon, alice):
    for i in range(5):  # [policy] lockout_failures default
        packet, _ = access_request("alice", b"%06d" % (900000 + i))
        assert daemon.raw(packet)[0] == codec.ACCESS_REJECT
    result, _ = radclient(daemon, signed("alice", now_code(alice)))
    assert result == "Access-Reject"
    assert "reason=locked" in daemon.decisions(6)[-1]


def test_duplicate_from_other_port_is_a_new_request(daemon, alice):
    code = now_code(alice)
    packet, _ = access_request("alice", code.encode())
    assert daemon.raw(packet)[0] == codec.ACCESS_ACCEPT
    assert daemon.raw(packet)[0] == codec.ACCESS_REJECT  # other source port: replay


def test_ipv6_listen(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=(
        f'[[radius.clients]]\nname = "v6"\naddress = "::1"\nsecret = "{SECRET}"\n'))
    d.path.write_text(d.path.read_text().replace(f'["127.0.0.1:{d.port}"]',
                                                 f'["[::1]:{d.port}"]'))
    try:
        d.start()
    except AssertionError as exc:
        if "Cannot assign" in str(exc) or "not available" in str(exc):
            pytest.skip("no ::1 on this host")
        raise
    try:
        result, out = radclient(d, "Message-Authenticator = 0x00\n", code="status",
                                address=f"[::1]:{d.port}")
        assert result == "Access-Accept", out
    finally:
        d.stop()


def test_fuzz_malformed_packets_then_still_serving(daemon, alice):
    rng = random.Random(1234)
    secret = codec.Secret(SECRET.encode())
    valid = [access_request("alice", b"123456", extra=[(codec.PROXY_STATE, b"p")])[0],
             codec.build_request(codec.STATUS_SERVER, 1, os.urandom(16), secret, [])]
    deadline = time.monotonic() + 4
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            kind = rng.random()
            if kind < 0.3:
                data = os.urandom(rng.randint(0, 200))
            elif kind < 0.5:  # a plausible header with random attributes
                body = os.urandom(rng.randint(0, 100))
                data = bytes([rng.choice([1, 12, 4, 2])]) + bytes([rng.randint(0, 255)]) + \
                    (20 + len(body) + rng.randint(-3, 3)).to_bytes(2, "big", signed=False) \
                    if 20 + len(body) - 3 >= 0 else b""
                data += os.urandom(16) + body
            else:  # flip, cut or extend a valid packet
                data = bytearray(rng.choice(valid))
                for _ in range(rng.randint(1, 4)):
                    op = rng.random()
                    if op < 0.6 and data:
                        data[rng.randrange(len(data))] = rng.randint(0, 255)
                    elif op < 0.8:
                        del data[rng.randrange(len(data) + 1):]
                    else:
                        data += os.urandom(rng.randint(1, 10))
                data = bytes(data)
            try:
                sock.sendto(data, ("127.0.0.1", daemon.port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)
            try:
                while sock.recv(4096):
                    pass
            except BlockingIOError:
                pass
            if sent % 200 == 0:
                time.sleep(0.002)  # let the server keep up; this is a robustness test
    assert sent > 1000
    assert daemon.proc.poll() is None, daemon.log()
    result, out = radclient(daemon, signed("alice", now_code(alice)))
    assert result == "Access-Accept", out
    assert "Traceback" not in daemon.log() and "internal error" not in daemon.log()


def test_sighup_reload_adds_client_and_keeps_running(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=(
        '[[radius.clients]]\nname = "far"\naddress = "192.0.2.1"\nsecret = "x"\n'))
    d.start()
    try:
        assert radclient(d, "Message-Authenticator = 0x00\n", code="status",
                         timeout=0.5)[0] is None
        d.path.write_text(d.path.read_text() + '[[radius.clients]]\nname = "near"\n'
                          f'address = "127.0.0.1"\nsecret = "{SECRET}"\n')
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("reloaded")
        assert radclient(d, "Message-Authenticator = 0x00\n", code="status")[0] == "Access-Accept"
        d.path.write_text(d.path.read_text() + "bogus = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("reload refused, keeping the running config")
        assert radclient(d, "Message-Authenticator = 0x00\n", code="status")[0] == "Access-Accept"
    finally:
        assert d.stop() == 0
    assert "stopping" in d.log()


def test_config_error_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[radius]\nlisten = [\"127.0.0.1:1812\"]\nnonsense = 1\n")
    out = subprocess.run([MFA, "--config", str(path), "serve"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "nonsense" in out.stderr


def test_port_in_use_is_one_line(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", d.port))
        out = subprocess.run([MFA, "--config", str(d.path), "serve"], capture_output=True,
                             text=True, timeout=30)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{d.port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_secret_file_too_open_refused(tmp_path):
    secret = tmp_path / "s"
    secret.write_text("abc\n")
    os.chmod(secret, 0o644)
    d = Daemon(tmp_path, clients=(
        f'[[radius.clients]]\nname = "x"\naddress = "127.0.0.1"\nsecret_file = "{secret}"\n'))
    out = subprocess.run([MFA, "--config", str(d.path), "serve"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_metrics_count_decisions_drops_duplicates_and_status_server_apart(tmp_path):
    import urllib.request

    port = free_port()
    d = Daemon(tmp_path, radius='password_backend = "none"\n',
               extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    devices = open_devices(d.cfg)
    key = assign(devices, "alice", "ALICE-M")
    devices.store.close()
    d.start()
    try:
        packet, _ = access_request("alice", now_code(key).encode())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            assert d.raw(packet, sock=sock)[0] == codec.ACCESS_ACCEPT
            assert d.raw(packet, sock=sock)[0] == codec.ACCESS_ACCEPT  # retransmit
        assert radclient(d, signed("alice", "000000"), secret="wrong", timeout=0.5)[0] is None
        for _ in range(2):  # health checks: counted apart from the logins
            assert radclient(d, "Message-Authenticator = 0x00\n", code="status")[0] == \
                "Access-Accept"
        d.decisions(1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        d.stop()
    assert 'mfa_radius_requests_total{client="local",front="radius",result="accept"} 1.0' in text
    assert 'mfa_radius_decisions_total{front="radius",reason="ok"} 1.0' in text
    assert 'mfa_radius_radius_duplicates_total{client="local"} 1.0' in text
    assert 'mfa_radius_dropped_total{cause="wrong_secret",front="radius"} 1.0' in text
    assert 'mfa_radius_status_server_total{client="local"} 2.0' in text
    assert 'reason="status_server"' not in text
    assert "alice" not in text  # never a user name in a label


def test_log_lines_stay_in_time_order(daemon, alice):
    # Decision lines are written in bulk a moment later; a warning logged in between (here a
    # drop) must not overtake the decision logged before it.
    packet, _ = access_request("alice", now_code(alice).encode())
    wrong, _ = access_request("alice", b"123456", secret="not-the-secret")
    bad, _ = access_request("alice", b"000000")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert daemon.raw(packet, sock=sock)[0] == codec.ACCESS_ACCEPT
        sock.sendto(wrong, ("127.0.0.1", daemon.port))  # no answer: no wait
        assert daemon.raw(bad, sock=sock)[0] == codec.ACCESS_REJECT
    daemon.decisions(2)
    daemon.stop()
    lines = daemon.log().splitlines()
    events = [i for i, line in enumerate(lines)
              if "result=" in line or "wrong shared secret" in line]
    assert ["result=accept" in lines[events[0]], "wrong shared secret" in lines[events[1]],
            "result=reject" in lines[events[2]]] == [True, True, True], lines
    stamps = [line.split()[0] for line in lines]
    assert stamps == sorted(stamps), lines
