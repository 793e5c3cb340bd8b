"""Hostile user names reach the log and the admin's terminal as escapes, never as raw controls.

A RADIUS User-Name is whatever a client (or anyone holding its secret) sends: an ESC sequence
that clears the screen, a newline that forges a row or a log line, C1 controls (U+0085 is a
newline to some terminals, U+009B is CSI) and bidi overrides that reorder what an admin reads.
"""

from __future__ import annotations

import socket

import pytest
from mfa_helpers import assign
from radius_helpers import SECRET, Daemon, access_request

from mfa_radius.radius import codec
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

HOSTILE = "mallory\x1b[2J\nFORGED\x85x\x9b31mred\u2028y\u2029z\u202eevil\u2066i\u200fm"
RAW = ["\x1b", "\n", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u2066", "\u200f"]
ESCAPED = ["\\x1b[2J", "\\n", "\\x85", "\\x9b", "\\u2028", "\\u2029", "\\u202e", "\\u2066",
           "\\u200f"]


def assert_clean(text: str) -> None:
    """No raw character of the hostile name; its newline did not start a line of its own."""
    for raw in RAW:
        if raw != "\n":
            assert raw not in text, repr(raw)
    assert not [x for x in text.splitlines() if x.startswith("FORGED")], text


def cli(cfg_path, *args):
    from conftest import run_cli

    return run_cli(cfg_path, *args)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n')
    devices = open_devices(d.cfg)
    assign(devices, "alice", "ALICE-1")
    devices.store.close()
    yield d.start()
    d.stop()


def test_hostile_radius_user_name_is_escaped_in_the_log_and_in_audit(daemon):
    packet, auth = access_request(HOSTILE, b"123456")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(packet, ("127.0.0.1", daemon.port))
        reply = sock.recv(4096)
    assert reply[0] == codec.ACCESS_REJECT
    assert codec.verify_reply(reply, auth, codec.Secret(SECRET.encode()))
    (line,) = daemon.decisions(1)
    assert_clean(daemon.log())
    assert "reason=malformed" in line  # refused at the front door, before any policy
    for escaped in ESCAPED:
        assert escaped in line, (escaped, line)
    assert "FORGED" in line  # on the decision line itself, not a line of its own


def test_audit_and_user_tables_escape_a_forged_row(tmp_path):
    """Rows written before names were checked (or by the library directly) print escaped too."""
    from mfa_helpers import make_config

    cfg = make_config(tmp_path)
    devices = open_devices(cfg)
    # Names are refused at every front door now; a database from before that (or edited by
    # hand) may still hold such rows, written here below the name rule.
    assign(devices, "evetmp", "EVE-1")
    with devices.store.transaction():
        devices.store.conn.execute("UPDATE devices SET user = ? WHERE serial = 'EVE-1'",
                                   ("eve\x9b2J\x85\u202elive",))
        devices.store.conn.execute("INSERT INTO users (name, created_at) VALUES (?, 0)",
                                   (HOSTILE,))
        devices.store.add_audit([(1.0, HOSTILE, None, None, "pam:sshd rhost=\x1b]0;owned\x07",
                                  "reject", "bad_code", None, None, None)])
    devices.store.close()
    path = tmp_path / "mfa-radius.toml"
    for args in (["audit"], ["user", "list"], ["report"], ["device", "list"]):
        out = cli(path, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert_clean(out.stdout)
        assert "\x07" not in out.stdout, args
        assert ("mallory\\x1b[2J\\nFORGED" in out.stdout
                or "eve\\x9b2J\\x85\\u202elive" in out.stdout), args
    # Asked about such a name, the CLI refuses it in one escaped line.
    out = cli(path, "user", "show", HOSTILE)
    assert out.returncode != 0 and len(out.stderr.splitlines()) == 1
    assert_clean(out.stderr)
