"""The daemon's PAM socket against a malicious local user (`nobody`), with the real daemon.

test_pam_server.py checks the caps in process with small limits and root as the only peer;
test_pam_pamtester.py checks that a non-root caller may only ask about itself. Here: `nobody`
opening as many connections as it can and holding them, hammering requests, or trickling bytes,
must not keep root's logins (sshd, su) out or slow them down.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from pam_support import SUCCESS, pamtester
from reliability_helpers import FullServer, require_root_and

# Runs as `nobody` under Debian's python3 -S: opens N connections to the socket and holds them
# silent for HOLD seconds (reconnecting whenever the server closes one), printing how many it
# got answered with something.
HOG = r"""
import _socket, sys, time
path, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks, refused = [], 0
for _ in range(n):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
        socks.append(s)
    except OSError:
        refused += 1
print("connected", len(socks), "refused", refused, flush=True)
end = time.monotonic() + hold
while time.monotonic() < end:
    for i, s in enumerate(socks):
        s.setblocking(False)
        try:
            data = s.recv(100)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        s.close()
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # reconnect at once
        try:
            s.connect(path)
        except OSError:
            pass
        socks[i] = s
    time.sleep(0.02)
"""

HAMMER = r"""
import _socket, sys
path, n = sys.argv[1], int(sys.argv[2])
counts = {}
for _ in range(n):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"verify\tuser=nobody\tcode=123456\n")
    reply = s.recv(4096).decode()
    head = reply.split("\t")[0] + ":" + (reply.split("reason=")[1].split("\t")[0].strip()
                                         if "reason=" in reply else "")
    counts[head] = counts.get(head, 0) + 1
    s.close()
print(counts)
"""

TRICKLE = r"""
import _socket, sys, time
s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    for ch in b"status\tuser=nobody":
        s.send(bytes([ch]))
        time.sleep(0.3)
except OSError:
    pass
"""


@pytest.fixture
def server():
    require_root_and()
    s = FullServer()
    s.start()
    yield s
    s.close()


def as_nobody(program: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-S", "-c",
                             program, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def timed_login(svc, user, code) -> float:
    started = time.monotonic()
    out = pamtester(svc, user, code)
    elapsed = time.monotonic() - started
    assert SUCCESS in out, out
    return elapsed


def test_connection_hog_does_not_keep_root_logins_out(server):
    totp = server.enroll("alice")
    svc = server.service()
    baseline = timed_login(svc, "alice", server.next_code(totp))
    hog = as_nobody(HOG, str(server.socket), "300", "4")
    try:
        line = hog.stdout.readline()
        assert line.startswith("connected"), hog.stderr.read()
        time.sleep(0.3)
        elapsed = [timed_login(svc, "alice", server.next_code(totp)) for _ in range(3)]
    finally:
        hog.kill()
        hog.wait()
    print(f"PAM socket: root login {baseline * 1000:.0f} ms alone, "
          f"{max(elapsed) * 1000:.0f} ms (worst of 3) while nobody holds {line.split()[1]} "
          "connections")
    assert max(elapsed) < 10 * baseline + 1.0
    assert "Traceback" not in server.log()


def test_request_hammer_is_throttled_per_uid_and_root_unaffected(server):
    totp = server.enroll("bob")
    svc = server.service()
    hammer = as_nobody(HAMMER, str(server.socket), "60")
    out, err = hammer.communicate(timeout=60)
    assert hammer.returncode == 0, err
    counts = eval(out)  # noqa: S307 - our own child's repr of a dict of str -> int
    assert counts.get("error:throttled", 0) >= 40, counts
    assert sum(v for k, v in counts.items() if k.startswith("ok")) <= 12, counts
    # Root (sshd's position) is not in nobody's bucket.
    timed_login(svc, "bob", server.next_code(totp))


def test_trickling_client_does_not_stall_logins(server):
    totp = server.enroll("carl")
    svc = server.service()
    slow = [as_nobody(TRICKLE, str(server.socket)) for _ in range(5)]
    try:
        time.sleep(0.3)
        elapsed = timed_login(svc, "carl", server.next_code(totp))
    finally:
        for p in slow:
            p.kill()
            p.wait()
    assert elapsed < 2.0, elapsed
