"""Password backend `ldap` against a real OpenLDAP slapd (ldap_support.py, the session fixture
`slapd`): the real `mfa-radius serve`, radclient as the appliance.

The directory: alice (vpn-users), bob (vpn-admins, a group inside vpn-users), carol (no group),
dave (vpn-users, vpn-wifi). Groups are read with a group search (group_filter) and nesting is
followed (nested_groups): OpenLDAP has no memberOf without its overlay.
"""

from __future__ import annotations

import re
import subprocess

import ldap_support
import pytest
from conftest import trusted_tmpdir
from ldap_support import GROUP_FILTER, USERS
from mfa_helpers import assign
from radius_helpers import MFA, Daemon, access_request, need, now_code, radclient, reply_attr

from mfa_radius.radius import codec
from mfa_radius.state import open_devices


def pw(uid: str) -> str:
    return USERS[uid][0]


def ldap_section(slapd, tmp_path, servers: list[str] | None = None, ca_file=None,
                 more: str = "", account: bool = True, group_search: bool = True) -> str:
    """[ldap] for the test directory: a search account (or bind_format), groups by a group
    search walked up (or the memberof overlay's memberOf, one level)."""
    servers = servers or [slapd.ldaps_url]
    if account:
        bind = (f'bind_dn = "{slapd.search_dn}"\n'
                f'bind_password_file = "{slapd.password_file(tmp_path)}"\n')
    else:
        bind = f'bind_format = "uid={{user}},ou=people,{slapd.base_dn}"\n'
    groups = f'group_filter = "{GROUP_FILTER}"\nnested_groups = true\n' if group_search else ""
    return ("[ldap]\n"
            f"servers = [{', '.join(f'{s!r}'.replace(chr(39), chr(34)) for s in servers)}]\n"
            f'ca_file = "{ca_file or slapd.ca_file}"\n' + bind +
            f'base_dn = "{slapd.base_dn}"\n'
            'user_attribute = "uid"\n' + groups +
            "connect_timeout = 2.0\n" + more)


@pytest.fixture
def make_daemon(tmp_path, slapd):
    need("radclient")
    started = []

    def make(ldap: str = "", extra: str = "", devices: tuple = ("alice", "bob", "dave"),
             servers=None, ca_file=None, **section):
        base = tmp_path / f"d{len(started)}"
        base.mkdir()
        d = Daemon(base, radius='password_backend = "ldap"\n',
                   extra=ldap_section(slapd, base, servers, ca_file, ldap, **section) + extra)
        store = open_devices(d.cfg)
        d.keys = {uid: assign(store, uid, f"{uid.upper()}-{len(started)}") for uid in devices}
        store.store.close()
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


def test_ldap_password_and_code_accepted(make_daemon):
    d = make_daemon()
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out + d.log()
    assert "reason=ok" in d.decisions(1)[0]
    assert pw("alice") not in d.log()


def test_ldap_password_then_code_in_a_challenge(make_daemon):
    d = make_daemon()
    result, out = radclient(d, req("alice", pw("alice")))
    assert result == "Access-Challenge", out
    (state,) = reply_attr(out, "State")
    result, out = radclient(d, req("alice", now_code(d.keys["alice"]), state))
    assert result == "Access-Accept", out


def test_ldap_wrong_password_refused_without_burning_the_code(make_daemon):
    d = make_daemon()
    code = now_code(d.keys["alice"])
    result, _ = radclient(d, req("alice", "not-her-password" + code))
    assert result == "Access-Reject"
    assert "reason=bad_password" in d.decisions(1)[-1]
    result, out = radclient(d, req("alice", pw("alice") + code))
    assert result == "Access-Accept", out


def test_ldap_empty_password_refused(make_daemon):
    d = make_daemon()
    packet, _ = access_request("alice", b"")
    reply = d.raw(packet)
    assert reply is not None and reply[0] == codec.ACCESS_REJECT
    result, _ = radclient(d, req("alice", now_code(d.keys["alice"])))  # the code alone
    assert result == "Access-Reject"
    assert all("reason=bad_password" in line for line in d.decisions(2))


def test_ldap_user_outside_required_groups_refused(make_daemon):
    d = make_daemon('required_groups = ["vpn-users"]\n', devices=("alice", "bob", "carol"))
    result, _ = radclient(d, req("carol", pw("carol") + now_code(d.keys["carol"])))
    assert result == "Access-Reject"
    assert "reason=not_in_group" in d.decisions(1)[-1]
    # bob is in vpn-admins, a member of vpn-users: nested groups count.
    result, out = radclient(d, req("bob", pw("bob") + now_code(d.keys["bob"])))
    assert result == "Access-Accept", out
    # carol's code was never asked: it still works where the group is not required.
    assert "not_in_group" not in d.decisions(2)[-1]


def test_ldap_groups_from_member_of(make_daemon):
    # The memberof overlay's memberOf, one level: bob is in vpn-admins only, not vpn-users.
    d = make_daemon('required_groups = ["vpn-admins"]\n', group_search=False)
    result, out = radclient(d, req("bob", pw("bob") + now_code(d.keys["bob"])))
    assert result == "Access-Accept", out
    result, _ = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Reject"
    assert "reason=not_in_group" in d.decisions(2)[-1]


def test_ldap_bind_format_without_a_search_account(make_daemon):
    d = make_daemon('required_groups = ["vpn-users"]\n', account=False, group_search=False,
                    devices=("alice", "carol"))
    result, out = radclient(d, req("ALICE", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out
    result, _ = radclient(d, req("alice", "wrong" + now_code(d.keys["alice"], 1)))
    assert result == "Access-Reject"
    assert "reason=bad_password" in d.decisions(2)[-1]
    result, _ = radclient(d, req("carol", pw("carol") + now_code(d.keys["carol"])))
    assert result == "Access-Reject"
    assert "reason=not_in_group" in d.decisions(3)[-1]
    # A name that would change the bind DN is escaped (RFC 4514): nobody.
    result, _ = radclient(d, req("alice,ou=people", pw("alice")))
    assert result == "Access-Reject"


def test_ldap_group_reply_attribute(make_daemon):
    d = make_daemon(extra='[[radius.replies]]\ngroup = "vpn-wifi"\n'
                    'attributes = { Class = "wifi" }\n')
    result, out = radclient(d, req("dave", pw("dave") + now_code(d.keys["dave"])))
    assert result == "Access-Accept", out
    assert reply_attr(out, "Class") == ["0x77696669"]  # "wifi"
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out
    assert reply_attr(out, "Class") == []


def test_ldap_privileged_group_needs_a_token_despite_nullok(make_daemon):
    d = make_daemon(extra='[policy]\nnullok = true\nprivileged_groups = ["vpn-admins"]\n',
                    devices=())
    result, out = radclient(d, req("carol", pw("carol")))
    assert result == "Access-Accept", out  # nullok: no device, not privileged
    assert "reason=no_device_allowed" in d.decisions(1)[-1]
    result, out = radclient(d, req("bob", pw("bob")))
    assert result == "Access-Challenge", out  # vpn-admins in the directory: a code is asked
    (state,) = reply_attr(out, "State")
    result, _ = radclient(d, req("bob", "123456", state))
    assert result == "Access-Reject"
    assert "reason=no_device" in d.decisions(3)[-1]


@pytest.mark.parametrize("name", ["*)(uid=*", "*", "al*", "alice)(uid=*"])
def test_ldap_filter_injection_refused(make_daemon, name):
    d = make_daemon()
    result, _ = radclient(d, req(name, pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Reject"
    assert "reason=bad_password" in d.decisions(1)[-1]


def test_ldap_first_server_down_second_used(make_daemon, slapd):
    dead = f"ldaps://127.0.0.1:{ldap_support.free_port()}"
    d = make_daemon(servers=[dead, slapd.ldaps_url])
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out


def test_ldap_search_connection_cut_by_the_directory_is_replaced(make_daemon, slapd):
    d = make_daemon()
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out
    slapd.restart()  # the pooled search connection is now dead
    result, out = radclient(d, req("dave", pw("dave") + now_code(d.keys["dave"])))
    assert result == "Access-Accept", out + d.log()


def test_ldap_starttls_on_ldap_url(make_daemon, slapd):
    d = make_daemon("starttls = true\n", servers=[slapd.ldap_url])
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out


def test_ldap_name_is_the_directorys(make_daemon):
    # The user types their mail address; the filter finds them by it, and uid names them:
    # alice's device answers, and the decision line says alice.
    d = make_daemon('user_filter = "(&(objectClass=person)(|(uid={user})(mail={user})))"\n',
                    extra="[policy]\nstrip_realm = false\n")
    result, out = radclient(d, req("Alice@Example.com", pw("alice")))
    assert result == "Access-Challenge", out
    (state,) = reply_attr(out, "State")
    result, out = radclient(d, req("Alice@Example.com", now_code(d.keys["alice"]), state))
    assert result == "Access-Accept", out
    assert re.search(r"user=alice\b", d.decisions(2)[-1])


def test_ldap_wrong_ca_refused_in_one_line(make_daemon, slapd, tmp_path):
    d = make_daemon(ca_file=slapd.wrong_ca_file)
    result, _ = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Reject"
    assert "reason=error" in d.decisions(1)[-1]
    assert "certificate verify failed" in d.log()
    assert "Traceback" not in d.log()
    probe = subprocess.run([MFA, "--config", str(d.path), "check-config", "--probe"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0
    lines = probe.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate verify failed" in lines[0], probe.stderr


def test_ldap_probe_binds_with_the_search_account(make_daemon, slapd):
    d = make_daemon()
    probe = subprocess.run([MFA, "--config", str(d.path), "check-config", "--probe"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert f"ldap: OK, bound as {slapd.search_dn}" in probe.stdout


def test_ldap_certificate_for_another_host_refused(tmp_path):
    other = ldap_support.Slapd.start(trusted_tmpdir("slapd-other-"),
                                     cert_names=("ldap.example.org",))
    try:
        d = Daemon(tmp_path, radius='password_backend = "ldap"\n',
                   extra=ldap_section(other, tmp_path))
        probe = subprocess.run([MFA, "--config", str(d.path), "check-config", "--probe"],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode != 0
        lines = probe.stderr.strip().splitlines()
        assert len(lines) == 1 and "doesn't match any name" in lines[0], probe.stderr
        # The same CA and name over StartTLS: refused alike.
        d.path.write_text(d.path.read_text().replace(other.ldaps_url, other.ldap_url)
                          .replace("[ldap]\n", "[ldap]\nstarttls = true\n"))
        probe = subprocess.run([MFA, "--config", str(d.path), "check-config", "--probe"],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode != 0 and "doesn't match any name" in probe.stderr, probe.stderr
    finally:
        other.destroy()


ROUNDS = 40


def test_ldap_wrong_password_unknown_user_and_locked_user_take_alike(tmp_path, slapd):
    import socket
    import statistics
    import time

    from radius_helpers import SECRET

    from mfa_radius.verifier import Attempt, Verifier

    need("radclient")
    d = Daemon(tmp_path, radius='password_backend = "ldap"\n',
               extra=ldap_section(slapd, tmp_path) + "[policy]\nlockout_failures = 1\n"
               "lockout_delay = 86400\nlockout_max_delay = 86400\n")
    store = open_devices(d.cfg)
    for uid in ("alice", "dave"):
        assign(store, uid, f"{uid.upper()}-1")
    store.store.close()
    verifier = Verifier.open(d.cfg)
    for _ in range(2):
        verifier.verify(Attempt("dave", "0000000"))  # 7 digits: never a code, a failure
    assert verifier.status("dave").locked_for > 0
    verifier.store.close()
    d.start()
    secret = codec.Secret(SECRET.encode())
    cases = {"wrong_password": "alice", "unknown_user": "nobody-here", "locked_user": "dave"}
    times: dict[str, list[float]] = {k: [] for k in cases}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)

            def ask(user: str, ident: int, password: bytes = b"Wrong-Password-x") -> float:
                packet, auth = access_request(user, password, ident=ident)
                started = time.perf_counter()
                sock.sendto(packet, ("127.0.0.1", d.port))
                reply = sock.recv(4096)
                elapsed = time.perf_counter() - started
                assert codec.verify_reply(reply, auth, secret)
                assert reply[0] == (codec.ACCESS_CHALLENGE if password == right
                                    else codec.ACCESS_REJECT)
                return elapsed

            right = pw("alice").encode()
            for i in range(5):  # the daemon times a few real binds first (good ones too)
                ask("alice", i, right if i % 2 else b"Wrong-Password-x")
            for i in range(ROUNDS):
                for kind, user in cases.items():  # interleaved: same load, same moment
                    times[kind].append(ask(user, (i * 3 + len(times[kind])) % 256))
    finally:
        d.stop()
    quartiles = {k: statistics.quantiles(v, n=4) for k, v in times.items()}
    print("\nldap backend reject timing, ms (p25 / median / p75): " +
          ", ".join(f"{k} " + " / ".join(f"{q * 1000:.1f}" for q in quartiles[k])
                    for k in cases))
    base = quartiles["wrong_password"]
    for kind in ("unknown_user", "locked_user"):
        for q, (theirs, ours) in enumerate(zip(quartiles[kind], base)):
            assert 0.4 < theirs / ours < 2.5, (kind, q, quartiles)
    lines = d.decisions(5 + 3 * ROUNDS)
    assert sum("reason=locked" in x for x in lines) == ROUNDS
    assert sum("reason=bad_password" in x for x in lines) == 3 + 2 * ROUNDS


def test_ldap_a_failed_server_is_tried_last_for_a_while(slapd, tmp_path):
    import socket
    import threading
    from types import SimpleNamespace

    from mfa_radius.config.schema import LdapConfig
    from mfa_radius.directory.ldap import Directory

    accepted = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def hang_up():  # a server that takes the connection and closes it: not LDAP
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    broken = f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    settings = SimpleNamespace(**{**vars(LdapConfig()), "servers": [broken, slapd.ldap_url],
                                  "starttls": True, "ca_file": str(slapd.ca_file),
                                  "bind_dn": slapd.search_dn, "base_dn": slapd.base_dn})
    directory = Directory(settings, ldap_support.SEARCH_PW)
    try:
        # The search account's connection tries the broken server, then the live one; alice's
        # bind (a connection of its own) and the next ones go to the live one first.
        for _ in range(3):
            assert directory.authenticate("alice", pw("alice")) is not None
        assert len(accepted) == 1
    finally:
        directory.close()
        listener.close()


def test_ldap_a_directory_that_never_answers_does_not_stall_the_packet_loop(tmp_path, slapd):
    import socket
    import time

    need("radclient")
    silent = socket.socket()  # the kernel completes the handshake; nothing ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        d = Daemon(tmp_path, radius='password_backend = "ldap"\n',
                   extra=ldap_section(slapd, tmp_path, servers=[url], more="starttls = true\n"
                                      "timeout = 2.0\n"))
        d.start()
        try:
            packet, _ = access_request("alice", pw("alice").encode())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                started = time.monotonic()
                sock.sendto(packet, ("127.0.0.1", d.port))
                result, out = radclient(d, "Message-Authenticator = 0x00\n", code="status")
                assert result == "Access-Accept", out  # answered while the bind waits
                assert time.monotonic() - started < 1.5
                reply = sock.recv(4096)  # then the stuck request fails closed
                assert time.monotonic() - started >= 1.5
                assert reply[0] == codec.ACCESS_REJECT
            assert "reason=error" in d.decisions(1)[-1]
        finally:
            d.stop()
    finally:
        silent.close()


def test_ldap_settings_change_on_restart_not_on_reload(make_daemon):
    import signal

    d = make_daemon(devices=("alice",))
    d.path.write_text(d.path.read_text().replace("[ldap]\n",
                                                 '[ldap]\nrequired_groups = ["nobody"]\n'))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"\[ldap\] changed: takes effect after a restart")
    result, out = radclient(d, req("alice", pw("alice") + now_code(d.keys["alice"])))
    assert result == "Access-Accept", out  # the running directory settings


def test_ldap_locked_user_is_locked_under_any_name_the_directory_knows(tmp_path, slapd):
    from mfa_radius.verifier import Attempt, Verifier

    need("radclient")
    d = Daemon(tmp_path, radius='password_backend = "ldap"\n',
               extra=ldap_section(slapd, tmp_path, more='user_filter = "(&(objectClass=person)'
                                  '(|(uid={user})(mail={user})))"\n')
               + "[policy]\nstrip_realm = false\nlockout_failures = 1\nlockout_delay = 86400\n"
               "lockout_max_delay = 86400\n")
    store = open_devices(d.cfg)
    key = assign(store, "alice", "ALICE-1")
    store.store.close()
    verifier = Verifier.open(d.cfg)
    for _ in range(2):
        verifier.verify(Attempt("alice", "0000000"))
    verifier.store.close()
    d.start()
    try:
        result, _ = radclient(d, req("alice@example.com", pw("alice")))
        assert result == "Access-Reject"
        assert re.search(r"user=alice .*reason=locked", d.decisions(1)[-1])
        result, _ = radclient(d, req("alice@example.com", pw("alice") + now_code(key)))
        assert result == "Access-Reject"
        assert "reason=locked" in d.decisions(2)[-1]
    finally:
        d.stop()
