"""Enumeration: an unknown user, a user without a device and a wrong code get the same reply on
the wire (code, attribute types and lengths), and their response times are measured and printed
(docs/SECURITY.md quotes them). With `password_backend = "pam"`, a wrong password for a real
account, an unknown name and a locked account are rejected alike in time too (the one timing
that is asserted, with bounds wide enough for a loaded machine: pam_unix alone makes the first
~30x faster than the others).
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from mfa_helpers import assign
from radius_helpers import SECRET, Daemon, access_request
from reliability_helpers import S, FullServer, require_root_and

from mfa_radius.radius import codec
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

REPO = Path(__file__).resolve().parents[2]
PAM_ROUNDS = 60

ROUNDS = 200


@pytest.fixture
def server():
    require_root_and()
    s = FullServer(extra_toml="[policy]\nlockout_failures = 1000000\n")
    yield s
    s.close()


def shape(reply: bytes) -> list[tuple[int, int]]:
    """(type, length) of each attribute: what an observer sees besides the random octets."""
    return [(t, len(v)) for t, v in codec.parse_attrs(reply)]


def test_unknown_user_no_device_and_wrong_code_look_the_same(server):
    totp = server.enroll("alice")
    server.enroll("dave")
    dev = [d for d in server.devices.list(user="dave")][0]
    server.devices.deactivate("dave", dev["serial"])
    server.start()
    good = server.next_code(totp)
    wrong = f"{(int(good) + 1) % 1000000:06d}"
    cases = {"unknown_user": ("nosuchuser", wrong), "no_device": ("dave", wrong),
             "wrong_code": ("alice", wrong)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    shapes: dict[str, set] = {k: set() for k in cases}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        for i in range(ROUNDS):
            for kind, (user, code) in cases.items():  # interleaved: same load, same moment
                packet, auth = server.request(user, code, ident=i % 256)
                started = time.perf_counter()
                sock.sendto(packet, ("127.0.0.1", server.port))
                reply = sock.recv(4096)
                times[kind].append(time.perf_counter() - started)
                assert codec.verify_reply(reply, auth, S)
                assert reply[0] == codec.ACCESS_REJECT, kind
                shapes[kind].add((reply[0], len(reply), tuple(shape(reply))))
    assert shapes["unknown_user"] == shapes["no_device"] == shapes["wrong_code"], shapes
    assert len(shapes["wrong_code"]) == 1
    medians = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    p90 = {k: statistics.quantiles(v, n=10)[-1] * 1e6 for k, v in times.items()}
    print("\nreject timing, us (median / p90) over "
          f"{ROUNDS} interleaved requests each: " +
          ", ".join(f"{k} {medians[k]:.0f} / {p90[k]:.0f}" for k in cases))
    # Sanity only (never a speed target): no case is an order of magnitude apart.
    assert max(medians.values()) < 10 * min(medians.values()), medians
    reasons = server.stop()
    assert "reason=no_device" in reasons and "reason=bad_code" in reasons


@pytest.fixture
def pam_daemon(tmp_path):
    """A daemon with `password_backend = "pam"` (the shipped conf/pam.d/mfa-radius) and two
    real local accounts, both enrolled; the second locked out."""
    require_root_and("useradd", "chpasswd")
    tag = secrets.token_hex(3)
    real, locked = f"mfaen{tag}r", f"mfaen{tag}l"
    service = Path("/etc/pam.d") / f"mfa-radius-enum-{os.getpid()}"
    created = []
    daemon = None
    try:
        for name in (real, locked):
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
            created.append(name)
            subprocess.run(["chpasswd"], input=f"{name}:Horse-Battery-x\n", text=True,
                           check=True)
        service.write_text((REPO / "conf/pam.d/mfa-radius").read_text())
        daemon = Daemon(tmp_path, radius=f'password_backend = "pam"\npam_service = '
                        f'"{service.name}"\n', extra="[policy]\nlockout_failures = 1\n"
                        "lockout_delay = 86400\nlockout_max_delay = 86400\n")
        devices = open_devices(daemon.cfg)
        assign(devices, real, "REAL-1")
        assign(devices, locked, "LOCKED-1")
        devices.store.close()
        verifier = Verifier.open(daemon.cfg)
        for _ in range(2):
            verifier.verify(Attempt(locked, "0000000"))  # 7 digits: never a code, a failure
        assert verifier.status(locked).locked_for > 0
        verifier.store.close()
        daemon.start()
        yield daemon, real, locked
    finally:
        if daemon is not None:
            daemon.stop()
        service.unlink(missing_ok=True)
        for name in created:
            subprocess.run(["userdel", name], check=False)


def test_pam_backend_wrong_password_unknown_user_and_locked_user_take_alike(pam_daemon):
    daemon, real, locked = pam_daemon
    unknown = f"nouser{secrets.token_hex(4)}"
    secret = codec.Secret(SECRET.encode())
    cases = {"wrong_password": real, "unknown_user": unknown, "locked_user": locked}
    times: dict[str, list[float]] = {k: [] for k in cases}
    shapes: dict[str, set] = {k: set() for k in cases}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)

        def ask(user: str, ident: int) -> tuple[bytes, float]:
            packet, auth = access_request(user, b"Wrong-Password-x", ident=ident)
            started = time.perf_counter()
            sock.sendto(packet, ("127.0.0.1", daemon.port))
            reply = sock.recv(4096)
            elapsed = time.perf_counter() - started
            assert codec.verify_reply(reply, auth, secret)
            return reply, elapsed

        for i in range(5):  # the daemon times a few real checks first
            ask(real, i)
        for i in range(PAM_ROUNDS):
            for kind, user in cases.items():  # interleaved: same load, same moment
                reply, elapsed = ask(user, (i * 3 + len(times[kind])) % 256)
                assert reply[0] == codec.ACCESS_REJECT, kind
                times[kind].append(elapsed)
                shapes[kind].add((len(reply), tuple((t, len(v))
                                                    for t, v in codec.parse_attrs(reply))))
    assert shapes["wrong_password"] == shapes["unknown_user"] == shapes["locked_user"], shapes
    quartiles = {k: statistics.quantiles(v, n=4) for k, v in times.items()}
    print("\npam backend reject timing, ms (p25 / median / p75) over "
          f"{PAM_ROUNDS} interleaved requests each: " +
          ", ".join(f"{k} " + " / ".join(f"{q * 1000:.1f}" for q in quartiles[k])
                    for k in cases))
    base = quartiles["wrong_password"]
    for kind in ("unknown_user", "locked_user"):
        for q, (theirs, ours) in enumerate(zip(quartiles[kind], base)):
            # Unpadded, an unknown name or a locked account answers ~30x faster.
            assert 0.5 < theirs / ours < 2.0, (kind, q, quartiles)
    lines = daemon.decisions(5 + 3 * PAM_ROUNDS)
    assert sum("reason=bad_password" in x for x in lines) == 5 + 2 * PAM_ROUNDS
    assert sum("reason=locked" in x for x in lines) == PAM_ROUNDS
