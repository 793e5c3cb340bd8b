"""One code, three front doors at the same instant: `mfa-radius verify` (CLI, its own process and
database connection), pamtester through the daemon's PAM socket, and a RADIUS request to the same
daemon. Exactly one of them may accept, every round. And two RADIUS packets (different IDs, so
not retransmissions) carrying one code, sent back to back: one Access-Accept.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time

import pytest
from pam_support import SUCCESS, pamtester
from reliability_helpers import S, FullServer, require_root_and

from mfa_radius.radius import codec


@pytest.fixture
def server():
    require_root_and()
    s = FullServer(extra_toml="[policy]\nlockout_failures = 1000\n")
    s.start()
    yield s
    s.close()


def test_cli_pam_and_radius_race_for_one_code(server):
    totp = server.enroll("alice")
    svc = server.service()
    rng = random.Random(8)
    rounds = 4  # totp_window = 4: four fresh future steps
    for rnd in range(rounds):
        code = server.next_code(totp)
        results: dict[str, bool] = {}
        go = threading.Event()

        def cli():
            go.wait()
            proc = server.cli("verify", "alice", code)
            assert "Traceback" not in proc.stderr, proc.stderr
            results["cli"] = proc.returncode == 0

        def pam():
            go.wait()
            results["pam"] = SUCCESS in pamtester(svc, "alice", code)

        def radius():
            go.wait()
            # The CLI and pamtester take 50-300 ms to start: vary where RADIUS lands among them.
            time.sleep(rng.choice([0.0, 0.05, 0.15, 0.3]))
            results["radius"] = server.ask("alice", code) == codec.ACCESS_ACCEPT

        threads = [threading.Thread(target=f) for f in (cli, pam, radius)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(60)
        assert len(results) == 3, results
        assert sum(results.values()) == 1, f"round {rnd}: {results}"
    assert "database is locked" not in server.log()
    assert "Traceback" not in server.log()


def test_two_radius_packets_with_different_ids_one_accept(server):
    totp = server.enroll("bob")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for rnd in range(4):
            code = server.next_code(totp)
            p1, auth1 = server.request("bob", code, ident=10 + rnd)
            p2, auth2 = server.request("bob", code, ident=50 + rnd)
            # Same socket back to back (one batch, one transaction), then two sockets.
            pairs = [(a, p1, auth1), (a if rnd % 2 == 0 else b, p2, auth2)]
            for sock, packet, _ in pairs:
                sock.sendto(packet, ("127.0.0.1", server.port))
            codes = []
            for sock, _, auth in pairs:
                sock.settimeout(3)
                reply = sock.recv(4096)
                assert codec.verify_reply(reply, auth, S)
                codes.append(reply[0])
            assert sorted(codes) == [codec.ACCESS_ACCEPT, codec.ACCESS_REJECT], (rnd, codes)
    deadline = time.monotonic() + 5
    while True:  # a reply can reach the client a moment before its log line is written
        lines = [line for line in server.log().splitlines() if "user=bob" in line]
        if len(lines) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum("result=accept" in line for line in lines) == 4
    assert sum("reason=replay" in line for line in lines) == 4
