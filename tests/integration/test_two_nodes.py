"""Two `mfa-radius serve` processes (two ports) on one real PostgreSQL database: every guarantee
of one node holds across both (docs/ha.md).

The PostgreSQL cluster is the suite's own throw-away one (tests/pg_support.py); each test gets a
fresh database. Codes are sent as raw Access-Requests (radius_helpers.access_request) so that two
nodes can be asked at the same instant, and one packet can be sent to both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from mfa_helpers import assign
from radius_helpers import MFA, SECRET, Daemon, access_request, free_port, now_code

from mfa_radius.otp import time_step
from mfa_radius.radius import codec
from mfa_radius.sms.service import SmsService
from mfa_radius.state import open_devices
from mfa_radius.verifier import Verifier

ACCEPT, REJECT, CHALLENGE = codec.ACCESS_ACCEPT, codec.ACCESS_REJECT, codec.ACCESS_CHALLENGE


def storage_lines(database, key_file) -> str:
    return database.storage_toml() + f'key_file = "{key_file}"\n'


class Pair:
    """Nodes A and B: one config each (own port, log, PAM socket), one database, one key file."""

    def __init__(self, tmp_path, database, extra: str = "", radius: str = "", extra_a: str = ""):
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        key = tmp_path / "secret.key"
        radius = 'password_backend = "none"\n' + radius
        self.a = Daemon(tmp_path / "a", radius=radius, extra=extra + extra_a,
                        storage=storage_lines(database, key))
        self.b = Daemon(tmp_path / "b", radius=radius, extra=extra,
                        storage=storage_lines(database, key))
        self.cfg = self.a.cfg

    def enroll(self, user: str, serial: str, **kw):
        devices = open_devices(self.cfg)
        try:
            return assign(devices, user, serial, **kw)
        finally:
            devices.store.close()

    def start(self) -> Pair:
        self.a.start()
        self.b.start()
        return self

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


@pytest.fixture
def pair(tmp_path, pg_database):
    p = Pair(tmp_path, pg_database)
    yield p
    p.stop()


def reply_code(reply: bytes | None) -> int | None:
    return reply[0] if reply else None


def ask(node: Daemon, user: str, password: str, state: bytes | None = None,
        timeout: float = 3.0) -> bytes | None:
    packet, _ = access_request(user, password.encode(), state=state)
    return node.raw(packet, timeout=timeout)


def both_at_once(a: Daemon, b: Daemon, user: str, code: str) -> list[int | None]:
    """The same code sent to both nodes at the same instant (two requests, as two appliances or
    a client trying both servers would send); the two reply codes."""
    packets = [access_request(user, code.encode(), ident=i)[0] for i in (1, 2)]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in (a, b)]
    try:
        for sock, node, packet in zip(socks, (a, b), packets):
            sock.settimeout(5)
            sock.sendto(packet, ("127.0.0.1", node.port))
        return [reply_code(sock.recv(4096)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def state_of(reply: bytes) -> bytes:
    for attr_type, value in codec.parse_attrs(reply):
        if attr_type == codec.STATE:
            return value
    raise AssertionError("no State in the reply")


def test_a_code_accepted_on_one_node_is_refused_on_the_other(pair):
    key = pair.enroll("alice", "ALICE-1")
    pair.start()
    code = now_code(key)
    assert reply_code(ask(pair.a, "alice", code)) == ACCEPT
    assert reply_code(ask(pair.b, "alice", code)) == REJECT
    assert "reason=replay" in pair.b.decisions(1)[-1]  # B's first line


def test_the_same_code_raced_to_both_nodes_is_accepted_exactly_once(pair):
    keys = {f"racer{i}": pair.enroll(f"racer{i}", f"RACE-{i}") for i in range(24)}
    pair.start()
    # Both nodes have seen every user (cached), so the race is decided by the database alone.
    for user in keys:
        assert reply_code(ask(pair.a, user, "000000")) == REJECT
        assert reply_code(ask(pair.b, user, "000000")) == REJECT
    step = time_step(time.time(), 30)
    outcomes = []
    for user, key in keys.items():
        outcomes.append(sorted(both_at_once(pair.a, pair.b, user, key.code(step)),
                               key=lambda c: c or 0))
    assert outcomes == [[ACCEPT, REJECT]] * len(keys), outcomes


def test_an_hotp_counter_raced_to_both_nodes_is_used_once_and_never_moves_back(pair):
    key = pair.enroll("henry", "HOTP-1", kind="hotp")
    pair.start()
    for counter in range(20):
        replies = both_at_once(pair.a, pair.b, "henry", key.code(counter))
        assert sorted(r or 0 for r in replies) == [ACCEPT, REJECT], (counter, replies)
    # An earlier counter is refused on both nodes: the counter only moves forwards.
    for node in (pair.a, pair.b):
        assert reply_code(ask(node, "henry", key.code(5))) == REJECT


def test_wrong_codes_spread_over_both_nodes_lock_the_user_on_both(pair):
    key = pair.enroll("mallory", "MAL-1")
    pair.start()
    for i in range(5):  # lockout_failures = 5 by default
        node = (pair.a, pair.b)[i % 2]
        assert reply_code(ask(node, "mallory", "000000")) == REJECT
    for node, lines in ((pair.a, 4), (pair.b, 3)):  # A had three wrong codes, B two
        assert reply_code(ask(node, "mallory", now_code(key))) == REJECT
        assert "reason=locked" in node.decisions(lines)[-1]


def test_an_sms_code_sent_through_one_node_is_accepted_once_on_the_other(tmp_path, pg_database):
    p = Pair(tmp_path, pg_database, extra=f'[sms]\n[[sms.gateways]]\ntype = "file"\n'
                                     f'path = "{tmp_path}/outbox"\n')
    verifier = Verifier.open(p.cfg)
    try:
        SmsService(verifier).enable("carol", "+15550001111")
    finally:
        verifier.store.close()
    p.start()
    try:
        reply = ask(p.a, "carol", "sms")
        assert reply_code(reply) == CHALLENGE
        state = state_of(reply)
        code = _texted_code(tmp_path / "outbox")
        # A's challenge answered on B, with the code A sent: once.
        assert reply_code(ask(p.b, "carol", code, state=state)) == ACCEPT
        assert reply_code(ask(p.a, "carol", code, state=state)) == REJECT
        assert "reason=unknown_state" in p.a.decisions(2)[-1]  # after A's challenge
        # The texted code is used up on both nodes, whichever State it comes with.
        reply = ask(p.a, "carol", "sms")
        assert reply_code(ask(p.a, "carol", code, state=state_of(reply))) == REJECT
    finally:
        p.stop()


def _texted_code(path, timeout: float = 5.0) -> str:
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return re.findall(r"\b(\d{6})\b", path.read_text().splitlines()[-1])[-1]
        time.sleep(0.05)
    raise AssertionError("no SMS in the outbox")


def test_a_retransmit_to_the_other_node_gets_the_first_nodes_accept(pair):
    key = pair.enroll("rita", "RITA-1")
    pair.start()
    packet, _ = access_request("rita", now_code(key).encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        first = pair.a.raw(packet, sock=sock)
        assert reply_code(first) == ACCEPT
        # A's reply "was lost": the client retransmits the same packet, from the same port, to B.
        again = pair.b.raw(packet, sock=sock)
    assert again == first  # the very reply A sent, not a replay reject
    assert not [line for line in pair.b.decisions(0, timeout=0.5) if "user=rita" in line]
    # A new request with the same code is still a replay on B.
    assert reply_code(ask(pair.b, "rita", now_code(key))) == REJECT


def test_a_device_deactivated_through_the_cli_is_refused_on_both_nodes_within_a_second(pair):
    key = pair.enroll("dave", "DAVE-1")
    pair.start()
    step = time_step(time.time(), 30)
    # Both nodes cache dave (a wrong code each), then the admin deactivates his device.
    assert reply_code(ask(pair.a, "dave", "000000")) == REJECT
    assert reply_code(ask(pair.b, "dave", "000000")) == REJECT
    out = subprocess.run([MFA, "--config", str(pair.a.path), "device", "deactivate", "dave", "DAVE-1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    time.sleep(1.0)
    assert reply_code(ask(pair.a, "dave", key.code(step))) == REJECT
    assert reply_code(ask(pair.b, "dave", key.code(step + 1))) == REJECT


def test_postgresql_stopped_under_load_fails_closed_then_service_resumes(tmp_path, pg_database):
    cluster = pg_database.cluster
    metrics_port = free_port()
    p = Pair(tmp_path, pg_database, extra_a=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    keys = {f"load{i}": p.enroll(f"load{i}", f"LOAD-{i}") for i in range(30)}
    # Not in the load of wrong codes (which lock its users): olga's code is tried while the
    # database is down, pia's once it is back (olga's request may be decided once the database
    # answers again, its reply lost to a closed socket: her code is then used, as recorded).
    down_key = p.enroll("olga", "OLGA-1")
    key = p.enroll("pia", "PIA-1")
    p.start()
    stopped = False
    try:
        replies: list[tuple[float, int | None]] = []
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                user = f"load{i % 30}"
                reply = ask(p.a, user, "000000", timeout=0.5)
                replies.append((time.monotonic(), reply_code(reply)))
                i += 1

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(0.5)
        cluster.stop()
        stopped = True
        down_at = time.monotonic()
        time.sleep(2.0)
        # While the database is down nothing is accepted: no reply at all (docs/ha.md).
        down = [code for at, code in replies if at > down_at + 0.5]
        assert down and set(down) == {None}, down
        assert ask(p.a, "olga", now_code(down_key), timeout=1.0) is None
        assert ask(p.b, "olga", now_code(down_key), timeout=1.0) is None
        dropped = 'mfa_radius_dropped_total{cause="store_unavailable",front="radius"}'
        deadline = time.monotonic() + 15  # the first request waits connect_timeout
        while dropped not in (scraped := _metrics(metrics_port)):
            assert time.monotonic() < deadline, scraped
            time.sleep(0.5)
        assert "mfa_radius_database_up 0.0" in scraped
        user = "pia"
        cluster.restart()
        stopped = False
        deadline = time.monotonic() + 15
        # Back by itself: a wrong code is answered again, then pia's code is accepted.
        while reply_code(ask(p.a, "load0", "000000", timeout=0.5)) is None:
            if time.monotonic() > deadline:
                lines = [x for x in p.a.log().splitlines() if "reason=" not in x]
                raise AssertionError("no reply after PostgreSQL came back:\n" + "\n".join(lines))
        assert reply_code(ask(p.a, user, now_code(key))) == ACCEPT
        stop.set()
        worker.join()
        # Fail closed with a few lines, not one per request; then back by itself.
        log = p.a.log()
        noted = "\n".join(x for x in log.splitlines() if "reason=" not in x)
        assert 1 <= log.count("refusing") <= 3, noted
        assert "verification works again" in log
        assert "mfa_radius_database_up 1.0" in _metrics(metrics_port)
        assert reply_code(ask(p.b, user, now_code(key))) == REJECT  # A's accept counts on B
    finally:
        stop.set()
        p.stop()
        if stopped:  # the suite's cluster: the tests after this one need it
            cluster.restart()


def test_a_node_killed_mid_burst_loses_no_used_code_and_accepts_none_twice(pair):
    keys = {f"burst{i}": pair.enroll(f"burst{i}", f"BURST-{i}") for i in range(200)}
    pair.start()
    step = time_step(time.time(), 30)
    if time.time() % 30 > 20:  # the burst and its check must fall into one step
        time.sleep(31 - time.time() % 30)
        step = time_step(time.time(), 30)
    codes = {user: key.code(step) for user, key in keys.items()}
    users = list(codes)
    accepted_by_a = set()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)

    def take_replies():
        while True:
            try:
                reply = sock.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                return
            if reply[0] == ACCEPT:
                accepted_by_a.add(users[reply[1]])

    try:
        for i, user in enumerate(users):  # Identifier i names the user of a reply
            packet, _ = access_request(user, codes[user].encode(), ident=i)
            sock.sendto(packet, ("127.0.0.1", pair.a.port))
            if i == 99:
                take_replies()  # the first half answered
            if i == 130:
                os.kill(pair.a.proc.pid, signal.SIGKILL)  # in the middle of the second
                break
        take_replies()
    finally:
        sock.close()
    pair.a.proc.wait()
    # Every code again, as new requests to B: none that A accepted is accepted again.
    accepted_by_b = {user for user, code in codes.items()
                     if reply_code(ask(pair.b, user, code)) == ACCEPT}
    assert not accepted_by_a & accepted_by_b
    rows = _accepts(pair)
    assert len(rows) == len(set(rows)), "a code was accepted twice"
    # No accept A sent is missing from the database (committed before it was sent).
    assert accepted_by_a <= set(rows) and accepted_by_b <= set(rows)
    assert accepted_by_a, "A accepted nothing before it was killed"


def _metrics(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text


def _accepts(pair) -> list[str]:
    """The users of every accept in the shared audit log (CLI), one entry per accept."""
    out = subprocess.run([MFA, "--config", str(pair.b.path), "audit", "--limit", "10000",
                          "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    import json

    return [row["user"] for row in json.loads(out.stdout) if row["result"] == "accept"]


def test_both_nodes_answer_status_server_and_share_one_secret(pair):
    """Both nodes take the same clients: a reply recorded by one is valid from the other."""
    pair.start()
    for node in (pair.a, pair.b):
        packet = codec.build_request(codec.STATUS_SERVER, 7, os.urandom(16),
                                     codec.Secret(SECRET.encode()), [], sign=True)
        assert reply_code(node.raw(packet)) == ACCEPT
