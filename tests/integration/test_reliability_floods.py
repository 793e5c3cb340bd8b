"""Floods against the running `mfa-radius serve`: random States, distinct retransmit keys, an
unknown source address, wrong-secret packets, and the malformed-packet corpus.

For each: the server's resident memory stays bounded (the duplicate cache, the challenge store
and the drop log's keys all have caps and expiry), a valid client keeps being answered during and
after, and the drop log stays a few lines (rate limited per source and reason).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from reliability_helpers import S, FullServer, require_root_and

from mfa_radius.radius import codec

CORPUS = Path(__file__).resolve().parents[1] / "data" / "radius-corpus"
FLOOD_SECONDS = 1.5
DROP_LINE = "dropped request from"
SIGNED_RATE = 5000.0


@pytest.fixture(scope="module")
def server():
    require_root_and()
    # The shortest duplicate TTL the config allows, so that the flood outlives it: expiry works.
    s = FullServer(radius_toml="duplicate_ttl = 5\n",
                   extra_toml="[policy]\nlockout_failures = 1000000\n")
    s.enroll("alice")
    s.start()
    yield s
    s.close()


class Prober:
    """A well-behaved appliance: a Status-Server every 20 ms, retransmitted up to 3 times (0.3 s
    apart) as appliances do, counting the answered ones."""

    def __init__(self, server):
        self.server = server
        self.sent = self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            ident = 0
            while not self._stop.is_set():
                ident = (ident + 1) % 256
                auth = os.urandom(16)
                packet = codec.build_request(codec.STATUS_SERVER, ident, auth, S, [])
                self.sent += 1
                if self._exchange(sock, packet, ident, auth):
                    self.answered += 1
                time.sleep(0.02)

    def _exchange(self, sock, packet, ident, auth) -> bool:
        for _ in range(3):
            sock.sendto(packet, ("127.0.0.1", self.server.port))
            try:
                while True:
                    reply = sock.recv(4096)
                    if reply[1] == ident and codec.verify_reply(reply, auth, S):
                        return True
            except TimeoutError:
                continue
        return False


def flood(server, make_packet, source: str = "127.0.0.1", seconds: float = FLOOD_SECONDS,
          rate: float | None = None):
    """Send make_packet(i) as fast as the socket takes them (or at `rate` a second); return the
    count sent."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sock.sendto(make_packet(sent), ("127.0.0.1", server.port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.0005)
            try:
                while sock.recv(4096):
                    pass
            except BlockingIOError:
                pass
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - (deadline - seconds))
                if ahead > 0:
                    time.sleep(ahead)
            elif sent % 64 == 0:
                time.sleep(0.001)  # keep the kernel's socket buffer from dropping everything
    return sent


def drop_lines(server, needle: str) -> int:
    return sum(DROP_LINE in line and needle in line for line in server.log().splitlines())


def still_logs_in(server) -> None:
    """A freshly enrolled user (the daemon sees other processes' commits) logs in."""
    user = f"check{len(server._steps)}"
    totp = server.enroll(user)
    assert server.ask(user, server.next_code(totp)) == codec.ACCESS_ACCEPT, server.log()[-2000:]


FLOODS = {
    "random_states": lambda s: lambda i: s.request("alice", "123456", ident=i % 256,
                                                   state=os.urandom(16))[0],
    "distinct_retransmit_keys": lambda s: lambda i: s.request(f"ghost{i % 50}", "000000",
                                                              ident=i % 256)[0],
}
RESULTS: dict[str, tuple] = {}


@pytest.mark.parametrize("kind", ["random_states", "distinct_retransmit_keys",
                                  "unknown_address", "wrong_secret"])
def test_flood(server, kind):
    if kind == "unknown_address":
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("cannot use 127.0.0.2 as a source address here")
    # A warm-up flood of the same kind first: the steady state is what must stay bounded.
    make = {
        "unknown_address": lambda i: server.request("alice", "123456", ident=i % 256)[0],
        "wrong_secret": lambda i: server.request("alice", "123456", ident=i % 256,
                                                 secret=codec.Secret(b"not-the-secret"))[0],
    }.get(kind) or FLOODS[kind](server)
    source = "127.0.0.2" if kind == "unknown_address" else "127.0.0.1"
    # Signed requests from the real client cost a decision each (an audit row): the flood runs
    # at a rate near what this server decides, not beyond (past it, UDP drops hit everyone alike,
    # the prober included). Drops before any crypto (unknown source, wrong secret) go flat out.
    rate = SIGNED_RATE if kind in FLOODS else None
    flood(server, make, source, seconds=0.5, rate=rate)
    rss_before = server.rss_kb()
    with Prober(server) as probe:
        sent = flood(server, make, source, rate=rate)
        sent += flood(server, make, source, rate=rate)
    rss_after = server.rss_kb()
    still_logs_in(server)
    assert server.proc.poll() is None
    RESULTS[kind] = (sent, rss_before, rss_after, probe.answered, probe.sent)
    print(f"\nflood {kind}: {sent} packets in {2 * FLOOD_SECONDS:.0f} s, server RSS "
          f"{rss_before} -> {rss_after} kB, prober answered {probe.answered}/{probe.sent}")
    assert probe.sent >= 20 and probe.answered >= 0.8 * probe.sent, (probe.answered, probe.sent)
    assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
    if kind == "unknown_address":
        # Rate limited: a handful of lines (and a "suppressed" count later), not one per packet.
        assert 1 <= drop_lines(server, "127.0.0.2") <= 10
    if kind == "wrong_secret":
        assert 1 <= drop_lines(server, "Message-Authenticator") <= 10
    assert "Traceback" not in server.log()


def test_corpus_of_malformed_packets_is_dropped_silently(server):
    files = sorted(CORPUS.glob("*.hex"))
    assert files
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for path in files:
            sock.sendto(bytes.fromhex("".join(path.read_text().split())),
                        ("127.0.0.1", server.port))
        sock.settimeout(0.5)
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            reply = None
        assert reply is None, f"a corpus packet got an answer: {reply.hex()}"
    assert server.proc.poll() is None
    still_logs_in(server)
    assert "Traceback" not in server.log() and "internal error" not in server.log()
