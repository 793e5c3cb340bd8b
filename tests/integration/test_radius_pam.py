"""Password backend `pam` (python-pam, pam_unix) and pam_radius_auth + pamtester as a client.

Needs root: creates real local users (useradd/chpasswd, removed after) and PAM service files in
/etc/pam.d (removed after). The daemon's PAM service is the shipped conf/pam.d/mfa-radius.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from mfa_helpers import assign
from radius_helpers import SECRET, Daemon, need, now_code, radclient, reply_attr

from mfa_radius.state import open_devices

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Horse-Battery-x"
DIGIT_PASSWORD = "staple99123456"  # ends in six digits, like password+code would


def _useradd(name: str, password: str) -> None:
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)


@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates local users and /etc/pam.d services")
    need("radclient", "useradd", "chpasswd")
    tag = secrets.token_hex(3)
    names = {"plain": f"mfart{tag}a", "digits": f"mfart{tag}b", "nodev": f"mfart{tag}c"}
    created = []
    try:
        for key, name in names.items():
            _useradd(name, DIGIT_PASSWORD if key == "digits" else PASSWORD)
            created.append(name)
        yield names
    finally:
        for name in created:
            subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def pam_service(users):
    name = f"mfa-radius-test-{os.getpid()}"
    path = Path("/etc/pam.d") / name
    path.write_text((REPO / "conf/pam.d/mfa-radius").read_text())
    yield name
    path.unlink(missing_ok=True)


@pytest.fixture
def make_daemon(tmp_path, pam_service, users):
    started = []

    def make(radius: str = "", extra: str = "", clients: str | None = None):
        base = tmp_path / f"d{len(started)}"
        base.mkdir()
        d = Daemon(base, radius=f'password_backend = "pam"\npam_service = "{pam_service}"\n'
                   + radius, extra=extra, clients=clients)
        devices = open_devices(d.cfg)
        d.keys = {key: assign(devices, users[key], f"{key.upper()}-{len(started)}")
                  for key in ("plain", "digits")}
        devices.store.close()
        started.append(d.start())
        return d

    yield make
    for d in started:
        d.stop()


def req(user, password, state=None):
    lines = f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'
    if state:
        lines += f"State = {state}\n"
    return lines


def test_password_and_code_in_one(make_daemon, users):
    d = make_daemon()
    result, out = radclient(d, req(users["plain"], PASSWORD + now_code(d.keys["plain"])))
    assert result == "Access-Accept", out
    assert "reason=ok" in d.decisions(1)[0]
    assert PASSWORD not in d.log()


def test_challenge_round_trip_and_state_single_use(make_daemon, users):
    d = make_daemon()
    user = users["plain"]
    result, out = radclient(d, req(user, PASSWORD))
    assert result == "Access-Challenge", out
    assert reply_attr(out, "Reply-Message") == ['"Enter the verification code from your device: "']
    assert reply_attr(out, "Session-Timeout") == ["120"]
    (state,) = reply_attr(out, "State")
    assert len(bytes.fromhex(state[2:])) >= 16
    code = now_code(d.keys["plain"])
    result, out = radclient(d, req(user, code, state))
    assert result == "Access-Accept", out
    result, out = radclient(d, req(user, now_code(d.keys["plain"], 1), state))
    assert result == "Access-Reject", out  # State is single use
    assert "reason=unknown_state" in d.decisions(3)[-1]


def test_duplicate_while_password_check_runs_is_dropped(make_daemon, users):
    import socket as socket_mod

    from radius_helpers import access_request

    from mfa_radius.radius import codec

    d = make_daemon()
    packet, _ = access_request(users["plain"], PASSWORD.encode())
    with socket_mod.socket(socket_mod.AF_INET, socket_mod.SOCK_DGRAM) as sock:
        for _ in range(3):  # the PAM check takes tens of ms: these arrive while it runs
            sock.sendto(packet, ("127.0.0.1", d.port))
        sock.settimeout(1.0)
        first = sock.recv(4096)
        with pytest.raises(socket_mod.timeout):
            sock.recv(4096)  # only one reply for the three copies
        assert first[0] == codec.ACCESS_CHALLENGE
        sock.sendto(packet, ("127.0.0.1", d.port))
        assert sock.recv(4096) == first  # later: the cached reply, the same State
    assert len(d.decisions(1)) == 1


def test_state_bound_to_user(make_daemon, users):
    d = make_daemon()
    _, out = radclient(d, req(users["plain"], PASSWORD))
    (state,) = reply_attr(out, "State")
    result, _ = radclient(d, req(users["digits"], now_code(d.keys["digits"]), state))
    assert result == "Access-Reject"


def test_wrong_password_rejected_and_code_not_burned(make_daemon, users):
    d = make_daemon()
    code = now_code(d.keys["plain"])
    result, _ = radclient(d, req(users["plain"], "wrong-password" + code))
    assert result == "Access-Reject"
    assert "reason=bad_password" in d.decisions(1)[-1]
    result, out = radclient(d, req(users["plain"], PASSWORD + code))
    assert result == "Access-Accept", out


def test_right_password_wrong_code(make_daemon, users):
    d = make_daemon()
    result, _ = radclient(d, req(users["plain"], PASSWORD + "000000"))
    assert result == "Access-Reject"
    # Either a bad code, or (1 in a million) the code happened to be right.
    assert re.search(r"reason=(bad_code|ok)", d.decisions(1)[-1])


def test_password_ending_in_digits_alone_gets_challenge(make_daemon, users):
    d = make_daemon()
    result, out = radclient(d, req(users["digits"], DIGIT_PASSWORD))
    assert result == "Access-Challenge", out
    result, out = radclient(d, req(users["digits"], DIGIT_PASSWORD + now_code(d.keys["digits"])))
    assert result == "Access-Accept", out


def test_unenrolled_user_looks_like_a_wrong_code(make_daemon, users):
    d = make_daemon()
    result, out = radclient(d, req(users["nodev"], PASSWORD))
    assert result == "Access-Challenge", out  # no hint that this user has no device
    (state,) = reply_attr(out, "State")
    result, _ = radclient(d, req(users["nodev"], "123456", state))
    assert result == "Access-Reject"
    assert "reason=no_device" in d.decisions(2)[-1]


def test_exempt_and_nullok_users_need_the_password_only(make_daemon, users):
    d = make_daemon(extra=f'[policy]\nexempt_users = ["{users["plain"]}"]\nnullok = true\n')
    result, out = radclient(d, req(users["plain"], PASSWORD))
    assert result == "Access-Accept", out
    assert "reason=exempt" in d.decisions(1)[-1]
    result, out = radclient(d, req(users["nodev"], PASSWORD))
    assert result == "Access-Accept", out
    assert "reason=no_device_allowed" in d.decisions(2)[-1]
    result, _ = radclient(d, req(users["nodev"], "not-it"))
    assert result == "Access-Reject"


def test_delimiter_mode(make_daemon, users):
    d = make_daemon(radius='password_split = "delimiter"\n')
    result, out = radclient(d, req(users["plain"], f"{PASSWORD},{now_code(d.keys['plain'])}"))
    assert result == "Access-Accept", out
    result, out = radclient(d, req(users["plain"], PASSWORD + now_code(d.keys["plain"], 1)))
    assert result == "Access-Reject", out  # no comma: the whole string is a wrong password


# ---- pam_radius_auth + pamtester: a Linux login through RADIUS to this server ----------------

PAM_RADIUS = "/lib/x86_64-linux-gnu/security/pam_radius_auth.so"


@pytest.fixture
def radius_login(tmp_path, users):
    need("pamtester")
    if not any(os.path.exists(p) for p in (PAM_RADIUS, "/lib/security/pam_radius_auth.so",
                                           "/usr/lib/x86_64-linux-gnu/security/pam_radius_auth.so")):
        pytest.skip("pam_radius_auth.so not installed (Debian package libpam-radius-auth)")
    service = f"mfa-radius-prt-{os.getpid()}"
    path = Path("/etc/pam.d") / service

    def setup(daemon: Daemon, before: str = "", options: str = "") -> str:
        conf = tmp_path / f"pam_radius_auth-{daemon.port}.conf"
        conf.write_text(f"127.0.0.1:{daemon.port} {SECRET} 3\n")
        os.chmod(conf, 0o600)
        path.write_text(before + f"auth required pam_radius_auth.so conf={conf} retry=1 "
                        f"{options}\naccount required pam_permit.so\n")
        return service

    yield setup
    path.unlink(missing_ok=True)


# pam_radius_auth 2.0.0 sends no Message-Authenticator: the per-client override for legacy gear.
LEGACY = (f'[[radius.clients]]\nname = "pam_radius"\naddress = "127.0.0.1"\n'
          f'secret = "{SECRET}"\nrequire_message_authenticator = false\n')


def pamtester(service, user, answers):
    return subprocess.run(["pamtester", service, user, "authenticate"], input=answers,
                          capture_output=True, text=True, timeout=30)


def test_pam_radius_auth_password_then_challenge(make_daemon, radius_login, users):
    d = make_daemon(clients=LEGACY)
    service = radius_login(d)
    user = users["plain"]
    out = pamtester(service, user, f"{PASSWORD}\n{now_code(d.keys['plain'])}\n")
    assert out.returncode == 0, out.stdout + out.stderr + d.log()
    # The prompt ends in ": " (pam_radius_auth shows the Reply-Message as it is).
    assert "Enter the verification code from your device: " in out.stdout + out.stderr
    assert [re.search(r"result=(\w+)", line).group(1) for line in d.decisions(2)] == \
        ["challenge", "accept"]


def test_pam_radius_auth_password_and_code(make_daemon, radius_login, users):
    d = make_daemon(clients=LEGACY)
    service = radius_login(d)
    user = users["plain"]
    out = pamtester(service, user, f"{PASSWORD}{now_code(d.keys['plain'])}\n")
    assert out.returncode == 0, out.stdout + out.stderr + d.log()
    out = pamtester(service, user, f"wrong{now_code(d.keys['plain'], 1)}\n")
    assert out.returncode != 0


def test_pam_radius_auth_code_only(tmp_path, radius_login, users):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=LEGACY)
    devices = open_devices(d.cfg)
    key = assign(devices, users["plain"], "CODE-ONLY")
    devices.store.close()
    d.start()
    try:
        service = radius_login(d)
        out = pamtester(service, users["plain"], f"{now_code(key)}\n")
        assert out.returncode == 0, out.stdout + out.stderr + d.log()
        out = pamtester(service, users["plain"], f"{now_code(key)}\n")  # replay
        assert out.returncode != 0
    finally:
        d.stop()


def test_pam_radius_auth_code_after_local_password(tmp_path, radius_login, users):
    """docs/vpn.md: local password first (pam_unix), then RADIUS for the code alone."""
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=LEGACY)
    devices = open_devices(d.cfg)
    key = assign(devices, users["plain"], "AFTER-LOCAL")
    devices.store.close()
    d.start()
    try:
        service = radius_login(d, before="auth requisite pam_unix.so nodelay\n",
                               options="prompt=Code force_prompt")
        out = pamtester(service, users["plain"], f"{PASSWORD}\n{now_code(key)}\n")
        assert out.returncode == 0, out.stdout + out.stderr + d.log()
        assert "Code: " in out.stdout + out.stderr
        out = pamtester(service, users["plain"], f"wrong\n{now_code(key, 1)}\n")
        assert out.returncode != 0
        assert len(d.decisions(1)) == 1  # requisite pam_unix failed: RADIUS was not asked
    finally:
        d.stop()


# ---- SMS codes after the password (docs/sms.md) ----------------------------------------------

def test_sms_after_password(make_daemon, users, tmp_path):
    from test_radius_sms import enable_phone, sms_config, texted_code

    outbox_dir = tmp_path / "sms"
    outbox_dir.mkdir()
    d = make_daemon(extra=sms_config(outbox_dir))
    enable_phone(d.cfg, users["nodev"])  # SMS is this user's only method
    enable_phone(d.cfg, users["plain"], "+15550002222")  # has a device too

    # SMS only: the code is sent as soon as the password is right.
    result, out = radclient(d, req(users["nodev"], PASSWORD))
    assert result == "Access-Challenge", out
    assert "A code was sent to your phone ending 1111" in reply_attr(out, "Reply-Message")[0]
    (state,) = reply_attr(out, "State")
    result, out = radclient(d, req(users["nodev"], texted_code(outbox_dir, 1), state))
    assert result == "Access-Accept", out

    # Device and phone: the challenge offers the SMS; "sms" asks for it, a new challenge follows.
    result, out = radclient(d, req(users["plain"], PASSWORD))
    assert result == "Access-Challenge", out
    assert "type sms for a code sent to your phone ending 2222" in reply_attr(out, "Reply-Message")[0]
    (state,) = reply_attr(out, "State")
    result, out = radclient(d, req(users["plain"], "sms", state))
    assert result == "Access-Challenge", out
    (state2,) = reply_attr(out, "State")
    assert state2 != state
    result, out = radclient(d, req(users["plain"], texted_code(outbox_dir, 2), state2))
    assert result == "Access-Accept", out


def test_nss_lookups_for_a_password_request_run_off_the_packet_loop(tmp_path, pam_service, users):
    """An unknown name's getpwnam/getgrouplist (maybe a directory server's round trip) runs on
    the password backend's threads, never on the thread of the packet loop."""
    import asyncio
    import socket as socket_mod
    import threading

    from radius_helpers import access_request

    from mfa_radius.accounts import Accounts
    from mfa_radius.radius import codec
    from mfa_radius.radius.server import RadiusServer
    from mfa_radius.verifier import Verifier

    threads: list[str] = []

    # White-box: which thread runs a look-up cannot be seen on the wire, so the accounts'
    # look-up records its thread.
    class Recording(Accounts):
        def _lookup(self, user):
            threads.append(threading.current_thread().name)
            return Accounts._lookup(user)

    d = Daemon(tmp_path, radius=f'password_backend = "pam"\npam_service = "{pam_service}"\n')
    server = RadiusServer(d.cfg, Verifier.open(d.cfg, Recording()))

    async def exchange() -> list[int]:
        server.bind()
        server.start()
        loop = asyncio.get_running_loop()
        codes = []
        with socket_mod.socket(socket_mod.AF_INET, socket_mod.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for name in ("nosuchuser-a", "nosuchuser-b", users["plain"]):
                packet, _ = access_request(name, b"Wrong-Password-x")
                await loop.sock_sendto(sock, packet, ("127.0.0.1", d.port))
                reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
                codes.append(reply[0])
        server.close()
        return codes

    try:
        assert asyncio.run(exchange()) == [codec.ACCESS_REJECT] * 3
    finally:
        server.verifier.store.close()
    assert len(threads) == 3 and all(name.startswith("pam") for name in threads), threads
