"""The benchmark's own RADIUS client and code generator must be right, or its numbers mean nothing."""

from __future__ import annotations

import os
import sys

import pyotp
import pyrad.packet
from pyrad.dictionary import Dictionary

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import latency  # noqa: E402
import tokens  # noqa: E402
from mfa_radius.radius import codec  # noqa: E402

SECRET = b"testing123"


def test_access_request_is_signed_and_hidden_as_the_rfcs_say():
    for password in ("", "123456", "a" * 16, "password-and-123456-code"):
        data, auth = latency.access_request(7, "alice", password, SECRET)
        request = codec.parse_request(data, codec.Secret(SECRET), True)  # checks the MA
        assert request.id == 7 and request.authenticator == auth and request.has_ma
        assert request.get(codec.USER_NAME) == b"alice"
        assert data[20] == 80, "Message-Authenticator first"
        assert codec.decrypt_password(request.get(codec.USER_PASSWORD), auth,
                                      codec.Secret(SECRET)) == password.encode()
        # pyrad agrees on the hiding
        packet = pyrad.packet.AuthPacket(secret=SECRET, authenticator=auth, dict=Dictionary())
        assert packet.PwDecrypt(request.get(codec.USER_PASSWORD)) == password


def test_status_server_is_signed():
    data, _ = latency.status_server(3, SECRET)
    request = codec.parse_request(data, codec.Secret(SECRET), True)
    assert request.code == 12


def test_codes_match_pyotp():
    seed = tokens.seed_for(42, b"salt")
    totp = pyotp.TOTP(tokens.b32(seed) + "=" * (-len(tokens.b32(seed)) % 8))
    for step in (0, 1, 59860990, 59860991):
        assert tokens.totp(seed, step) == totp.at(step * 30)


def test_reply_check_accepts_a_real_reply_and_refuses_a_forged_one():
    import hashlib

    data, auth = latency.access_request(9, "bob", "123456", SECRET)
    request = codec.parse_request(data, codec.Secret(SECRET), True)
    reply = codec.build_reply(codec.ACCESS_ACCEPT, request, codec.Secret(SECRET))
    assert hashlib.md5(reply[:4] + auth + reply[20:] + SECRET).digest() == reply[4:20]
    forged = reply[:4] + bytes(16) + reply[20:]
    assert hashlib.md5(forged[:4] + auth + forged[20:] + SECRET).digest() != forged[4:20]


def test_procstats_sees_this_process():
    import procstats

    assert procstats.peak_rss_kib(os.getpid()) > 0
    assert os.getpid() in procstats.descendants(os.getpid())
    meter = procstats.CpuMeter(os.getpid()).start()
    sum(i * i for i in range(300_000))
    assert meter.stop().ns > 0


def test_cpu_meter_over_several_trees_is_their_sum():
    """The PostgreSQL part charges a server AND the postmaster's tree with one meter."""
    import subprocess

    import procstats

    # Each child is idle while the meters start and stop: busy only between "go" and "done".
    work = ("import sys; print('ready', flush=True); sys.stdin.readline(); "
            "sum(i * i for i in range(2_000_000)); print('done', flush=True); sys.stdin.read()")
    procs = [subprocess.Popen([sys.executable, "-c", work], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        meters = [procstats.CpuMeter([p.pid for p in procs]).start()] + \
            [procstats.CpuMeter(p.pid).start() for p in procs]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout.readline().strip() == "done"  # busy part over, now idle
        both, a, b = (m.stop() for m in meters)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert a.ns > 0 and b.ns > 0
    assert abs(both.ns - (a.ns + b.ns)) <= 0.05 * both.ns
