"""FreeRADIUS 3.2 (Debian `freeradius`) as a proxy in front of the real `mfa-radius serve`.

The proxy runs the shipped home-server snippet (conf/freeradius/proxy-mfa-radius.conf, quoted in
docs/vpn.md) with the test's addresses, in its own raddb (tests/integration/freeradius/), in the
foreground. radclient is the NAS: it talks to the proxy only. The proxy sends from 127.0.0.2, the
address of mfa-radius's only client, with a secret of its own.

Needs root: FreeRADIUS runs as root here, and the password step checks a real local user's
password through PAM (useradd/chpasswd, removed after; a PAM service file in /etc/pam.d).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from freeradius_helpers import FreeRadius, freeradius_binary
from mfa_helpers import assign
from radius_helpers import Daemon, free_port, need, now_code, radclient, reply_attr

from mfa_radius.radius import codec
from mfa_radius.sms.service import SmsService
from mfa_radius.state import open_devices
from mfa_radius.verifier import Verifier

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SNIPPET = REPO / "conf/freeradius/proxy-mfa-radius.conf"
NAS_SECRET = "nas-secret-4f1c"
HOME_SECRET = "home-secret-9b2e"
PROXY_SOURCE = "127.0.0.2"  # src_ipaddr of the home server: mfa-radius's client address
PASSWORD = "Horse-Battery-x"
PHONE = "+15550001111"


class FreeRadiusProxy(FreeRadius):
    """The proxy: radiusd.conf.in, and proxy.conf the shipped snippet with the test's
    addresses (`timing`: the snippet's settings changed)."""

    def __init__(self, tmp: Path, home_port: int, **timing: str):
        super().__init__(tmp, "radiusd.conf.in", {"@NAS_SECRET@": NAS_SECRET,
                                                  # see test_unsigned_nas_request
                                                  "@NAS_REQUIRE_MA@": "no"}, name="proxy")
        snippet = SNIPPET.read_text()
        for old, new in (("192.0.2.1", "127.0.0.1"), ("port = 1812", f"port = {home_port}"),
                         ("SECRET", HOME_SECRET), ("192.0.2.5", PROXY_SOURCE)):
            assert old in snippet
            snippet = snippet.replace(old, new)
        for key, value in timing.items():
            snippet, n = re.subn(rf"\b{key} = \S+", f"{key} = {value}", snippet)
            assert n == 1, key
        (self.dir / "proxy.conf").write_text(snippet)


@pytest.fixture(scope="module")
def freeradius():
    if os.geteuid() != 0:
        pytest.skip("needs root: runs FreeRADIUS, creates a local user and a PAM service")
    freeradius_binary()
    need("radclient")


@pytest.fixture(scope="module")
def user(freeradius):
    """A local user (PAM password) for the password step."""
    need("useradd", "chpasswd")
    name = f"mfapx{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{PASSWORD}\n", text=True, check=True)
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def pam_service(user):
    name = f"mfa-radius-proxytest-{os.getpid()}"
    path = Path("/etc/pam.d") / name
    path.write_text((REPO / "conf/pam.d/mfa-radius").read_text())
    yield name
    path.unlink(missing_ok=True)


def home_server(tmp_path: Path, radius: str, extra: str = "") -> Daemon:
    """mfa-radius with the proxy as its only client (the proxy's src_ipaddr)."""
    (tmp_path / "mfa").mkdir()
    return Daemon(tmp_path / "mfa", radius=radius, extra=extra, clients=(
        f'[[radius.clients]]\nname = "proxy"\naddress = "{PROXY_SOURCE}"\n'
        f'secret = "{HOME_SECRET}"\n'))


@pytest.fixture
def stack(tmp_path, user, pam_service):
    """mfa-radius (password + code, SMS by file gateway, metrics) behind a FreeRADIUS proxy."""
    metrics_port = free_port()
    d = home_server(
        tmp_path, f'password_backend = "pam"\npam_service = "{pam_service}"\n',
        f'[sms]\n[[sms.gateways]]\ntype = "file"\npath = "{tmp_path}/outbox"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[[radius.replies]]\nuser = "{user}"\nattributes = {{ Class = "vpn-users" }}\n')
    d.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    devices = open_devices(d.cfg)
    d.key = assign(devices, user, "PROXY-1")
    devices.store.close()
    verifier = Verifier.open(d.cfg)
    try:
        SmsService(verifier).enable(user, PHONE)
    finally:
        verifier.store.close()
    d.start()
    proxy = FreeRadiusProxy(tmp_path, d.port).start()
    yield d, proxy
    proxy.stop()
    d.stop()


def nas(user: str, password: str | None, state: str | None = None, extra: str = "") -> str:
    """radclient's request lines, as a NAS signs them (Message-Authenticator)."""
    lines = f'User-Name = "{user}"\nMessage-Authenticator = 0x00\n'
    if password is not None:
        lines += f'User-Password = "{password}"\n'
    if state:
        lines += f"State = {state}\n"
    return lines + extra


def ask(proxy: FreeRadiusProxy, lines: str):
    return radclient(proxy, lines, secret=NAS_SECRET, timeout=5)


def texted_code(tmp_path: Path, count: int = 1, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = tmp_path / "outbox"
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return re.findall(r"\b(\d{6})\b", lines[count - 1])[-1]
        time.sleep(0.05)
    raise AssertionError("no SMS in the outbox")


def metric(url: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


def test_docs_quote_the_shipped_proxy_snippet():
    docs = (REPO / "docs/vpn.md").read_text()
    assert SNIPPET.read_text().strip() in docs


def test_password_and_code_accept_then_replay_reject_through_proxy(stack, user):
    d, proxy = stack
    code = now_code(d.key)
    result, out = ask(proxy, nas(user, PASSWORD + code))
    assert result == "Access-Accept", out + proxy.log() + d.log()
    assert reply_attr(out, "Class") == ["0x76706e2d7573657273"]  # reply attributes pass through
    result, out = ask(proxy, nas(user, PASSWORD + code))
    assert result == "Access-Reject", out
    result, out = ask(proxy, nas(user, "wrong-password" + now_code(d.key)))
    assert result == "Access-Reject", out
    lines = d.decisions(3)
    assert f"client=proxy user={user} result=accept reason=ok" in lines[0]
    assert f"client=proxy user={user} result=reject reason=replay" in lines[1]
    assert "reason=bad_password" in lines[2]
    assert PASSWORD not in d.log() and code not in d.log()


def test_realm_is_stripped_before_mfa_radius(stack, user):
    d, proxy = stack
    result, out = ask(proxy, nas(f"{user}@example.com", PASSWORD + now_code(d.key)))
    assert result == "Access-Accept", out + proxy.log()
    assert f"user={user} result=accept" in d.decisions(1)[0]


def test_unsigned_nas_request_reaches_mfa_radius_signed(stack, user):
    # The NAS sends no Message-Authenticator (the proxy's client allows it); mfa-radius requires
    # one ([radius] require_message_authenticator = true), so this accept means the proxy signed
    # what it sent. Every reply of mfa-radius is signed, and FreeRADIUS checks it.
    d, proxy = stack
    result, out = radclient(proxy, f'User-Name = "{user}"\nUser-Password = '
                            f'"{PASSWORD}{now_code(d.key)}"\n', secret=NAS_SECRET, timeout=5)
    assert result == "Access-Accept", out + d.log()
    assert "dropped" not in d.log()


def test_challenge_through_proxy_password_then_code(stack, user):
    d, proxy = stack
    result, out = ask(proxy, nas(user, PASSWORD))
    assert result == "Access-Challenge", out + d.log()
    assert reply_attr(out, "Reply-Message") == [
        '"Enter the verification code from your device (or type sms for a code sent to your '
        'phone ending 1111): "']
    (state,) = reply_attr(out, "State")
    result, out = ask(proxy, nas(user, now_code(d.key), state))
    assert result == "Access-Accept", out + d.log()
    result, out = ask(proxy, nas(user, now_code(d.key), state))  # a State is single use
    assert result == "Access-Reject", out
    assert [re.search(r"reason=(\w+)", line).group(1) for line in d.decisions(3)] == \
        ["password_ok", "ok", "unknown_state"]


def test_empty_answer_through_proxy_sends_an_sms(stack, user, tmp_path):
    # The user types nothing at the challenge: the proxy sends no User-Password at all.
    d, proxy = stack
    result, out = ask(proxy, nas(user, PASSWORD))
    assert result == "Access-Challenge", out
    (state,) = reply_attr(out, "State")
    result, out = ask(proxy, nas(user, "", state))
    assert result == "Access-Challenge", out + d.log()
    assert reply_attr(out, "Reply-Message") == [
        '"A code was sent to your phone ending 1111. Enter the code: "']
    (state,) = reply_attr(out, "State")
    result, out = ask(proxy, nas(user, texted_code(tmp_path), state))
    assert result == "Access-Accept", out + d.log()
    assert [re.search(r"reason=(\w+)", line).group(1) for line in d.decisions(3)] == \
        ["password_ok", "sms_queued", "ok"]


def test_empty_user_password_from_nas_through_proxy_sends_an_sms(stack, user, tmp_path):
    # A NAS that sends the empty answer as a User-Password of 16 NULs (RFC 2865 5.2 padding).
    d, proxy = stack
    _, out = ask(proxy, nas(user, PASSWORD))
    (state,) = reply_attr(out, "State")
    secret = codec.Secret(NAS_SECRET.encode())
    auth = os.urandom(16)
    packet = codec.build_request(codec.ACCESS_REQUEST, 9, auth, secret, [
        (codec.USER_NAME, user.encode()),
        (codec.USER_PASSWORD, codec.encrypt_password(b"", auth, secret)),
        (codec.STATE, bytes.fromhex(state[2:]))])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet, ("127.0.0.1", proxy.port))
        reply = sock.recv(4096)
    assert reply[0] == codec.ACCESS_CHALLENGE, d.log()
    texted_code(tmp_path)
    assert "reason=sms_queued" in d.decisions(2)[1]


def test_proxy_state_copied_in_order_behind_proxy(stack, user):
    d, proxy = stack
    result, out = ask(proxy, nas(user, PASSWORD + "000000",
                                 extra="Proxy-State = 0x01\nProxy-State = 0x0203\n"))
    assert result == "Access-Reject", out
    # What mfa-radius replied to the proxy (radiusd.conf.in's post-proxy puts it in a
    # Reply-Message): the NAS's two, then the proxy's own, in the order of the request.
    (seen,) = reply_attr(out, "Reply-Message")
    values = seen.strip('"').removeprefix("proxy-state=").split(",")
    assert values[:2] == ["0x01", "0x0203"] and len(values) == 3, seen
    assert reply_attr(out, "Proxy-State") == ["0x01", "0x0203"]


def test_status_server_marks_home_server_alive(tmp_path, freeradius):
    # Only one home server: a timeout makes it a zombie, and only an answer to the proxy's
    # Status-Server (status_check = status-server) brings it back. No request reaches
    # mfa-radius in between, so the revival is the Status-Server answer.
    metrics_port = free_port()
    d = home_server(tmp_path, 'password_backend = "none"\n',
                    f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    devices = open_devices(d.cfg)
    key = assign(devices, "alice", "ALICE-PX")
    devices.store.close()
    proxy = FreeRadiusProxy(tmp_path, d.port, response_window="1", zombie_period="30",
                            check_interval="6", check_timeout="1").start()
    try:
        result, out = ask(proxy, nas("alice", now_code(key)))  # mfa-radius is not running yet
        assert result == "Access-Reject", out
        proxy.wait_log(rf"Marking home server 127\.0\.0\.1 port {d.port} as zombie")
        d.start()
        proxy.wait_log(r"Received response to status check \d+", timeout=20)
        proxy.wait_log(rf"Marking home server 127\.0\.0\.1 port {d.port} alive", timeout=5)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert metric(url, "mfa_radius_status_server_total", client="proxy") >= 1
        # Health checks are not logins.
        assert metric(url, "mfa_radius_requests_total", client="proxy") == 0
        assert "client=" not in d.log()
        result, out = ask(proxy, nas("alice", now_code(key)))
        assert result == "Access-Accept", out + proxy.log()
    finally:
        proxy.stop()
        d.stop()
