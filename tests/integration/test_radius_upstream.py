"""`password_backend = "radius"` against a real FreeRADIUS 3.2 (Debian `freeradius`) as the upstream
password server, and the policy of each RADIUS client, through the real `mfa-radius serve`.

The upstream's raddb is tests/integration/freeradius/upstream.conf.in: a users file with
Cleartext-Password, and one user whose right password gets an Access-Challenge (a custom Auth-Type
runs pap, then sets the reply's State and Reply-Message and control:Response-Packet-Type =
Access-Challenge, and returns `handled`), whose answer with that State is accepted.

The RADIUS clients are loopback addresses (127.0.0.1 ... 127.0.0.4: all of 127/8 is loopback on
Linux), each its own client with its own policy; requests are built with the project's codec and
sent from a socket bound to the client's address.

Needs root: a local user and group for the group rules (useradd/groupadd, removed after).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time

import pytest
from freeradius_helpers import FreeRadius, freeradius_binary
from mfa_helpers import assign
from radius_helpers import MFA, SECRET, Daemon, access_request, free_port, now_code

from mfa_radius.radius import codec
from mfa_radius.state import open_devices

UP_SECRET = "upstream-secret-71c2"
PASSWORDS = {"alice": "alice-pw-Q7", "carol": "carol-pw-K2", "dave": "dave-pw-M5",
             "root": "root-pw-R1"}
CHALLENGED, ANSWER = "carol", "4242"
UPSTREAM_STATE = bytes.fromhex("7570737472656d2d7374617465")  # upstream.conf.in's
CLASS = b"from-upstream"
FILTER = b"vpn-full"
# 127.0.0.1: password+code checked upstream (and group rule); 127.0.0.2: the appliance checked
# the password, code alone; 127.0.0.3: the password alone (code_required = false); 127.0.0.4:
# upstream password, nullok for a roll-out.
CLIENTS = {"vpn": "127.0.0.1", "appliance": "127.0.0.2", "wifi": "127.0.0.3", "rollout": "127.0.0.4"}


@pytest.fixture(scope="module")
def local_user():
    """A local user in a local group (NSS), also known to the upstream: for the groups rule."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a local user and group")
    freeradius_binary()
    group = f"mfaupg{secrets.token_hex(2)}"
    name = f"mfaup{secrets.token_hex(3)}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "-G", group, name],
                       check=True)
        try:
            yield name, group
        finally:
            subprocess.run(["userdel", name], check=False)
    finally:
        subprocess.run(["groupdel", group], check=False)


def upstream_server(tmp_path, users: dict[str, str], name: str = "upstream",
                    secret: str = UP_SECRET) -> FreeRadius:
    fr = FreeRadius(tmp_path, "upstream.conf.in", {"@SECRET@": secret, "@CHALLENGED@": CHALLENGED,
                                                   "@ANSWER@": ANSWER}, name=name)
    lines = []
    for user, password in users.items():
        lines.append(f'{user} Cleartext-Password := "{password}"')
        if user == "alice":
            lines.append(f'\tClass = "{CLASS.decode()}", Filter-Id = "{FILTER.decode()}"')
    (fr.dir / "users").write_text("\n".join(lines) + "\n")
    return fr.start()


def upstream_entry(address: str, secret: str = UP_SECRET, timeout: float = 2.0,
                   retries: int = 0) -> str:
    return (f'[[radius.upstream]]\naddress = "{address}"\nsecret = "{secret}"\n'
            f"timeout = {timeout}\nretries = {retries}\n")


def clients(vpn_groups: list[str] | None = None) -> str:
    policy = {"vpn": f"groups = {vpn_groups or []!r}\n".replace("'", '"'),
              "appliance": 'password_backend = "none"\n',
              "wifi": "code_required = false\n",
              "rollout": "nullok = true\n"}
    return "".join(f'[[radius.clients]]\nname = "{name}"\naddress = "{address}"\n'
                   f'secret = "{SECRET}"\n{policy[name]}' for name, address in CLIENTS.items())


def daemon(tmp_path, upstreams: str, users: list[str], client_lines: str | None = None) -> Daemon:
    (tmp_path / "mfa").mkdir()
    d = Daemon(tmp_path / "mfa", radius='password_backend = "radius"\n'
               "pass_reply_attributes = true\n", clients=client_lines or clients(),
               extra=upstreams)
    devices = open_devices(d.cfg)
    d.keys = {user: assign(devices, user, f"UP-{user}") for user in users}
    devices.store.close()
    return d.start()


def ask(d: Daemon, user: str, password: str, client: str = "vpn", state: bytes | None = None,
        extra: list | None = None, timeout: float = 10.0):
    """(reply code or None, reply attributes) of an Access-Request from `client`'s address."""
    packet, auth = access_request(user, password.encode(), state=state, extra=extra,
                                  ident=secrets.randbelow(256))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CLIENTS[client], 0))
        reply = d.raw(packet, timeout=timeout, sock=sock)
    if reply is None:
        return None, []
    assert codec.verify_reply(reply, auth, codec.Secret(SECRET.encode()))
    return reply[0], codec.parse_attrs(reply)


def values(attrs, attr_type: int) -> list[bytes]:
    return [v for t, v in attrs if t == attr_type]


def reasons(d: Daemon, count: int) -> list[str]:
    return [re.search(r"reason=(\w+)", line).group(1) for line in d.decisions(count)]


@pytest.fixture
def stack(tmp_path, local_user):
    name, _group = local_user
    up = upstream_server(tmp_path, {**PASSWORDS, name: "local-pw-Z9"})
    d = daemon(tmp_path, upstream_entry(up.address), ["alice", "carol", name])
    yield d, up
    d.stop()
    up.stop()


def test_upstream_password_and_code_accepted_with_its_reply_attributes(stack):
    d, up = stack
    nas = [(4, bytes([192, 0, 2, 77])), (31, b"198.51.100.9"), (32, b"vpn-gw-1")]
    code, attrs = ask(d, "alice", PASSWORDS["alice"] + now_code(d.keys["alice"]), extra=nas)
    assert code == codec.ACCESS_ACCEPT, d.log() + up.log()
    assert values(attrs, 25) == [CLASS] and values(attrs, 11) == [FILTER]
    # The NAS attributes of the client's request reached the upstream (its msg_goodpass line).
    up.wait_log(r"nas=192\.0\.2\.77 csi=198\.51\.100\.9 nasid=vpn-gw-1")
    assert reasons(d, 1) == ["ok"]
    assert PASSWORDS["alice"] not in d.log()


def test_upstream_attributes_kept_through_our_code_challenge(stack):
    d, up = stack
    code, attrs = ask(d, "alice", PASSWORDS["alice"])  # the password alone: we ask for the code
    assert code == codec.ACCESS_CHALLENGE, d.log()
    assert values(attrs, 25) == []  # not in a challenge
    (state,) = values(attrs, codec.STATE)
    code, attrs = ask(d, "alice", now_code(d.keys["alice"]), state=state)
    assert code == codec.ACCESS_ACCEPT, d.log()
    assert values(attrs, 25) == [CLASS] and values(attrs, 11) == [FILTER]
    assert reasons(d, 2) == ["password_ok", "ok"]


def test_upstream_reject_is_bad_password_and_the_code_is_not_burned(stack):
    d, up = stack
    code_now = now_code(d.keys["alice"])
    code, _ = ask(d, "alice", "wrong-pw" + code_now)
    assert code == codec.ACCESS_REJECT
    code, _ = ask(d, "alice", PASSWORDS["alice"] + code_now)  # the same code: still unused
    assert code == codec.ACCESS_ACCEPT, d.log()
    assert reasons(d, 2) == ["bad_password", "ok"]


def test_upstream_challenge_is_relayed_and_its_answer_forwarded(stack):
    d, up = stack
    code, attrs = ask(d, "carol", PASSWORDS["carol"] + now_code(d.keys["carol"]))
    assert code == codec.ACCESS_CHALLENGE, d.log() + up.log()
    assert values(attrs, codec.REPLY_MESSAGE) == [b"Upstream asks: your PIN"]
    (state,) = values(attrs, codec.STATE)
    assert state != UPSTREAM_STATE  # ours, mapped to the upstream's
    code, attrs = ask(d, "carol", ANSWER, state=state)
    assert code == codec.ACCESS_ACCEPT, d.log() + up.log()  # the code came with the password
    code, _ = ask(d, "carol", ANSWER, state=state)  # our State is single use
    assert code == codec.ACCESS_REJECT
    assert reasons(d, 3) == ["upstream_challenge", "ok", "unknown_state"]


def test_upstream_challenge_then_our_code_challenge(stack):
    d, up = stack
    code, attrs = ask(d, "carol", PASSWORDS["carol"])  # no code typed
    assert code == codec.ACCESS_CHALLENGE
    (state,) = values(attrs, codec.STATE)
    code, attrs = ask(d, "carol", "1111", state=state)  # a wrong answer to the upstream
    assert code == codec.ACCESS_REJECT
    code, attrs = ask(d, "carol", PASSWORDS["carol"])
    (state,) = values(attrs, codec.STATE)
    code, attrs = ask(d, "carol", ANSWER, state=state)
    assert code == codec.ACCESS_CHALLENGE, d.log()  # now ours, for the code
    (state,) = values(attrs, codec.STATE)
    code, _ = ask(d, "carol", now_code(d.keys["carol"]), state=state)
    assert code == codec.ACCESS_ACCEPT, d.log()
    assert reasons(d, 5) == ["upstream_challenge", "bad_password", "upstream_challenge",
                             "password_ok", "ok"]


def test_first_upstream_down_second_used(tmp_path, local_user):
    up = upstream_server(tmp_path, PASSWORDS)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    d = daemon(tmp_path, upstream_entry(dead, timeout=0.5, retries=1) + upstream_entry(up.address),
               ["alice"])
    try:
        code, attrs = ask(d, "alice", PASSWORDS["alice"] + now_code(d.keys["alice"]))
        assert code == codec.ACCESS_ACCEPT, d.log()
        d.wait_log(rf"upstream RADIUS {re.escape(dead)}: no verified reply after 2 tries, "
                   "trying the next")
        # The dead server is skipped for a while: the next login asks the second at once.
        started = time.monotonic()
        code, _ = ask(d, "alice", "wrong" + now_code(d.keys["alice"]))
        assert code == codec.ACCESS_REJECT
        assert time.monotonic() - started < 0.9
        assert d.log().count("no verified reply") == 1
    finally:
        d.stop()
        up.stop()


def test_upstream_with_a_wrong_secret_fails_closed(tmp_path, local_user):
    """The real FreeRADIUS knows another secret: it drops our requests (their
    Message-Authenticator does not verify), nothing is accepted, one WARNING names it."""
    up = upstream_server(tmp_path, PASSWORDS)
    d = daemon(tmp_path, upstream_entry(up.address, secret="not-the-secret", timeout=0.5),
               ["alice"])
    try:
        code, _ = ask(d, "alice", PASSWORDS["alice"] + now_code(d.keys["alice"]))
        assert code == codec.ACCESS_REJECT
        assert reasons(d, 1) == ["upstream_unavailable"]
        assert d.log().count(f"upstream RADIUS {up.address}: no verified reply") == 1
        up.wait_log("invalid Message-Authenticator")
    finally:
        d.stop()
        up.stop()


class ForgingUpstream:
    """A server that answers every Access-Request with an Access-Accept the shared secret does
    not give: signed with another secret, or with a right Response Authenticator but no
    Message-Authenticator."""

    def __init__(self, secret: bytes, mode: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.secret, self.mode = secret, mode
        self.answered = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from mfa_radius.hmacprep import md5

        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if self.mode == "wrong_secret":
                request = codec.Request(data[0], data[1], data[4:20], data[:20], False, False)
                reply = codec.build_reply(codec.ACCESS_ACCEPT, request,
                                          codec.Secret(b"forged-secret"))
            else:  # right Response Authenticator, no Message-Authenticator
                head = bytes((codec.ACCESS_ACCEPT, data[1])) + (20).to_bytes(2, "big")
                auth = md5(head + data[4:20] + self.secret).digest()
                reply = head + auth
            self.sock.sendto(reply, addr)
            self.answered += 1

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize("mode", ["wrong_secret", "no_ma"])
def test_upstream_replies_that_do_not_verify_are_dropped(tmp_path, local_user, mode):
    forger = ForgingUpstream(UP_SECRET.encode(), mode)
    d = daemon(tmp_path, upstream_entry(forger.address, timeout=0.5), ["alice"])
    try:
        code, _ = ask(d, "alice", "anything" + now_code(d.keys["alice"]))
        assert code == codec.ACCESS_REJECT
        assert forger.answered >= 1
        assert reasons(d, 1) == ["upstream_unavailable"]
        assert "reply dropped: it does not verify" in d.log()
    finally:
        d.stop()
        forger.stop()


# ---- policy per RADIUS client ------------------------------------------------------------


def test_two_clients_with_different_backends_on_one_server(stack):
    d, up = stack
    key = d.keys["alice"]
    code, _ = ask(d, "alice", now_code(key), client="appliance")  # the code alone
    assert code == codec.ACCESS_ACCEPT, d.log()
    code, _ = ask(d, "alice", now_code(key, 1), client="vpn")  # password+code needed here
    assert code == codec.ACCESS_REJECT
    code, _ = ask(d, "alice", PASSWORDS["alice"] + now_code(key, 1), client="vpn")
    assert code == codec.ACCESS_ACCEPT, d.log()
    assert reasons(d, 3) == ["ok", "bad_password", "ok"]
    # Each line says what the client sets of its own (nothing for the VPN: [radius]'s backend).
    lines = d.decisions(3)
    assert lines[0].endswith('policy="password=none"') and "policy=" not in lines[2]


def test_password_only_client(stack):
    d, up = stack
    code, attrs = ask(d, "alice", PASSWORDS["alice"], client="wifi")
    assert code == codec.ACCESS_ACCEPT, d.log()
    assert values(attrs, 25) == [CLASS]
    code, _ = ask(d, "alice", "wrong-pw", client="wifi")
    assert code == codec.ACCESS_REJECT
    lines = d.decisions(2)
    assert "client=wifi user=alice result=accept reason=password_only" in lines[0]
    assert lines[0].endswith("policy=password_only")
    # Recorded like any accept (the verifier's batch): the audit log has it.
    out = subprocess.run([MFA, "--config", str(d.path), "audit", "--user", "alice", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [(e["result"], e["reason"]) for e in json.loads(out.stdout)][-1:] == [
        ("accept", "password_only")]
    assert "reason=bad_password" in lines[1]


def test_nullok_on_one_client_only(stack):
    d, up = stack
    # dave has no device: let through on the roll-out appliance, not on the VPN.
    code, _ = ask(d, "dave", PASSWORDS["dave"], client="rollout")
    assert code == codec.ACCESS_ACCEPT, d.log()
    code, _ = ask(d, "dave", PASSWORDS["dave"] + "123456", client="vpn")
    assert code == codec.ACCESS_REJECT
    # Privileged: never let through by nullok, asked for a code it cannot have.
    code, _ = ask(d, "root", PASSWORDS["root"], client="rollout")
    assert code == codec.ACCESS_CHALLENGE
    code, _ = ask(d, "root", PASSWORDS["root"] + "123456", client="rollout")
    assert code == codec.ACCESS_REJECT
    assert reasons(d, 4) == ["nullok_client", "no_device", "password_ok", "no_device"]
    assert d.decisions(4)[0].endswith("policy=nullok")


def test_groups_per_client(tmp_path, local_user):
    name, group = local_user
    up = upstream_server(tmp_path, {**PASSWORDS, name: "local-pw-Z9"})
    d = daemon(tmp_path, upstream_entry(up.address), ["alice", name], clients([group]))
    try:
        code, _ = ask(d, name, "local-pw-Z9" + now_code(d.keys[name]))
        assert code == codec.ACCESS_ACCEPT, d.log()
        code, _ = ask(d, "alice", PASSWORDS["alice"] + now_code(d.keys["alice"]))
        assert code == codec.ACCESS_REJECT  # not a member: no password tried
        code, _ = ask(d, "alice", now_code(d.keys["alice"]), client="appliance")
        assert code == codec.ACCESS_ACCEPT  # no group rule on the other client
        assert reasons(d, 3) == ["ok", "not_in_group", "ok"]
        assert "[alice]" not in up.log()  # the upstream never saw alice's password
    finally:
        d.stop()
        up.stop()


def test_dead_upstream_never_holds_code_only_clients(tmp_path, local_user):
    """While a password waits on a silent upstream, another client's code alone is answered at
    once: the upstream checks are asyncio, off the packet loop."""
    dead = f"127.0.0.1:{free_port()}"
    d = daemon(tmp_path, upstream_entry(dead, timeout=2.0, retries=0), ["alice"])
    try:
        waiting = {}
        thread = threading.Thread(target=lambda: waiting.update(reply=ask(
            d, "alice", PASSWORDS["alice"] + now_code(d.keys["alice"]))))
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        code, _ = ask(d, "alice", now_code(d.keys["alice"]), client="appliance")
        assert code == codec.ACCESS_ACCEPT, d.log()
        assert time.monotonic() - started < 1.0
        thread.join()
        assert waiting["reply"][0] == codec.ACCESS_REJECT
        assert reasons(d, 2) == ["ok", "upstream_unavailable"]
    finally:
        d.stop()
