"""User-name variants against the real `mfa-radius serve`: under nullok with password backend
"none" (the appliance checked the password against a directory that ignores case and realms),
no variant of a name may skip the code its canonical user needs."""

from __future__ import annotations

import pytest
from mfa_helpers import assign
from radius_helpers import Daemon, access_request, need, now_code, radclient

from mfa_radius.radius import codec
from mfa_radius.state import open_devices

pytestmark = pytest.mark.usefixtures("tools")

NULLOK = '[policy]\nnullok = true\n'
VARIANTS = ["ALICE", "Alice", "alice ", " alice", "alice\t", "EXAMPLE\\alice", "alice@EXAMPLE",
            "ＡＬＩＣＥ", "ali\u200bce", "alice\u202e"]


@pytest.fixture(scope="module")
def tools():
    need("radclient")


def _daemon(tmp_path, extra=NULLOK):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', extra=extra)
    devices = open_devices(d.cfg)
    key = assign(devices, "alice", "ALICE-1")
    devices.store.close()
    return d.start(), key


def _ask(daemon, user: str, code: str) -> int:
    packet, _ = access_request(user, code.encode())
    reply = daemon.raw(packet, timeout=3.0)
    assert reply is not None, daemon.log()
    return reply[0]


@pytest.fixture
def daemon(tmp_path):
    d, key = _daemon(tmp_path)
    d.key = key
    yield d
    d.stop()


@pytest.mark.parametrize("sent", VARIANTS + ["ROOT", "Root", "root"])
def test_no_variant_of_a_name_skips_the_code_under_nullok(daemon, sent):
    assert _ask(daemon, sent, "000000") == codec.ACCESS_REJECT
    line = daemon.decisions(1)[-1]
    assert "result=reject" in line
    assert any(f"reason={r}" in line for r in ("bad_code", "malformed", "no_device")), line


@pytest.mark.parametrize("sent,reason", [("ALICE", "bad_code"), ("alice ", "malformed"),
                                         ("ali\u200bce", "malformed"), ("ROOT", "no_device")])
def test_each_variant_is_decided_as_its_canonical_user(daemon, sent, reason):
    assert _ask(daemon, sent, "000000") == codec.ACCESS_REJECT
    assert f"reason={reason}" in daemon.decisions(1)[-1]


@pytest.mark.parametrize("sent", ["ALICE", "EXAMPLE\\alice", "alice@EXAMPLE", "ＡＬＩＣＥ"])
def test_a_variant_with_alices_code_is_alice(tmp_path, sent):
    d, key = _daemon(tmp_path)
    try:
        assert _ask(d, sent, now_code(key)) == codec.ACCESS_ACCEPT
        line = d.decisions(1)[-1]
        assert line.startswith("client=local user=alice result=accept reason=ok"), line
        assert "name_sent=" in line  # the name as sent, escaped, after the stable fields
    finally:
        d.stop()


def test_radclient_sends_upper_case_alice_and_alices_code_is_used_up(daemon):
    code = now_code(daemon.key)
    lines = f'User-Name = "ALICE"\nUser-Password = "{code}"\nMessage-Authenticator = 0x00\n'
    assert radclient(daemon, lines)[0] == "Access-Accept"
    # The same code for the plain name is a replay: one user, one used step.
    assert _ask(daemon, "alice", code) == codec.ACCESS_REJECT
    assert "user=alice result=reject reason=replay" in daemon.decisions(2)[-1]


def test_an_unenrolled_variant_is_let_through_as_its_canonical_name_only(daemon):
    # nullok is for unenrolled users: BOB is bob, who has no device.
    assert _ask(daemon, "BOB", "000000") == codec.ACCESS_ACCEPT
    line = daemon.decisions(1)[-1]
    assert "user=bob result=accept reason=no_device_allowed" in line


def test_without_strip_realm_a_realm_name_never_passes_by_nullok(tmp_path):
    d, key = _daemon(tmp_path, NULLOK + "strip_realm = false\n")
    try:
        for sent in ("alice@EXAMPLE", "EXAMPLE\\alice", "bob@EXAMPLE"):
            assert _ask(d, sent, "000000") == codec.ACCESS_REJECT, sent
        lines = d.decisions(3)
        assert all("reason=no_device" in line for line in lines), lines
        assert "user=alice@example" in lines[0]
        assert _ask(d, "ALICE", now_code(key)) == codec.ACCESS_ACCEPT  # case is still folded
    finally:
        d.stop()


def test_exact_case_keeps_case_and_root_stays_root(tmp_path):
    d, key = _daemon(tmp_path, NULLOK + 'username_case = "exact"\n')
    try:
        assert _ask(d, "alice", now_code(key)) == codec.ACCESS_ACCEPT
        # Alice is another account here: unenrolled, so nullok lets it through as Alice...
        assert _ask(d, "Alice", "000000") == codec.ACCESS_ACCEPT
        assert "user=Alice result=accept reason=no_device_allowed" in d.decisions(2)[-1]
        # ... but any case of root is root: privileged, never without a device.
        assert _ask(d, "ROOT", "000000") == codec.ACCESS_REJECT
        assert "user=ROOT result=reject reason=no_device" in d.decisions(3)[-1]
        assert _ask(d, "alice ", "000000") == codec.ACCESS_REJECT
        assert "reason=malformed" in d.decisions(4)[-1]
    finally:
        d.stop()


def test_exempt_users_and_replies_name_the_canonical_user(tmp_path):
    extra = ('[policy]\nexempt_users = ["Bob"]\n'
             '[[radius.replies]]\nuser = "ALICE"\nattributes = { Class = "vpn" }\n')
    d, key = _daemon(tmp_path, extra)
    try:
        assert _ask(d, "BOB", "-") == codec.ACCESS_ACCEPT
        assert "user=bob result=accept reason=exempt" in d.decisions(1)[-1]
        assert _ask(d, "bob ", "-") == codec.ACCESS_REJECT  # never exempt: malformed
        lines = f'User-Name = "Alice"\nUser-Password = "{now_code(key)}"\n' \
                "Message-Authenticator = 0x00\n"
        result, out = radclient(d, lines)
        assert result == "Access-Accept" and "Class = 0x76706e" in out, out
    finally:
        d.stop()
