"""Enumeration: an unknown user, a user without a device and a wrong code get the same reply on
the wire (code, attribute types and lengths), and their response times are measured and printed
(docs/SECURITY.md quotes them). No timing bound is asserted beyond a generous sanity check: speed
is measured by the benchmark, not asserted in timed tests.
"""

from __future__ import annotations

import os
import socket
import statistics
import time

import pytest
from reliability_helpers import S, FullServer, require_root_and

from mfa_radius.radius import codec

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
