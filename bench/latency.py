"""A fixed-rate RADIUS client on raw UDP sockets: sends Access-Requests on a schedule and times
each reply (p50/p99), so latency is measured at a chosen load instead of as fast as possible.

Requests carry Message-Authenticator (first attribute, as BlastRADIUS advice wants) and a
User-Password hidden as RFC 2865 5.2 says; replies are checked against the Response Authenticator.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import struct
import time

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE, STATUS_SERVER = 1, 2, 3, 11, 12
USER_NAME, USER_PASSWORD, MESSAGE_AUTHENTICATOR = 1, 2, 80
SOCKETS = 8  # 8 x 256 identifiers in flight before one is reused


def _hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    padded = password + b"\x00" * (-len(password) % 16 or (16 if not password else 0))
    out, last = b"", authenticator
    for i in range(0, len(padded), 16):
        block = bytes(a ^ b for a, b in zip(padded[i:i + 16], hashlib.md5(secret + last).digest()))
        out += block
        last = block
    return out


def access_request(ident: int, user: str, password: str, secret: bytes) -> tuple[bytes, bytes]:
    """(packet, request authenticator)."""
    auth = os.urandom(16)
    name = user.encode()
    hidden = _hide_password(password.encode(), secret, auth)
    attrs = (bytes([MESSAGE_AUTHENTICATOR, 18]) + b"\x00" * 16
             + bytes([USER_NAME, 2 + len(name)]) + name
             + bytes([USER_PASSWORD, 2 + len(hidden)]) + hidden)
    header = struct.pack(">BBH", ACCESS_REQUEST, ident, 20 + len(attrs)) + auth
    mac = hmac.new(secret, header + attrs, "md5").digest()
    attrs = attrs[:2] + mac + attrs[18:]
    return header + attrs, auth


def status_server(ident: int, secret: bytes) -> tuple[bytes, bytes]:
    """RFC 5997 Status-Server (answered with Access-Accept): Message-Authenticator only."""
    auth = os.urandom(16)
    attrs = bytes([MESSAGE_AUTHENTICATOR, 18]) + b"\x00" * 16
    header = struct.pack(">BBH", STATUS_SERVER, ident, 20 + len(attrs)) + auth
    mac = hmac.new(secret, header + attrs, "md5").digest()
    return header + attrs[:2] + mac, auth


def run(port: int, requests: list[tuple[str, str]], rate: float, secret: str = "testing123",
        timeout: float = 3.0, source: str = "") -> dict:
    """Send `requests` (user, password) at `rate` per second; latency percentiles and counts.

    A request with user None is a Status-Server. `source`: the address to send from (another
    RADIUS client of the same server, e.g. 127.0.0.2)."""
    key = secret.encode()
    socks = []
    for _ in range(SOCKETS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if source:
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    by_fd = {sock.fileno(): k for k, sock in enumerate(socks)}
    packets = []
    for i, (user, password) in enumerate(requests):
        ident = (i // SOCKETS) % 256
        packet, auth = (status_server(ident, key) if user is None
                        else access_request(ident, user, password, key))
        packets.append((i % SOCKETS, ident, packet, auth))
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    n = len(packets)
    sent_at = [0.0] * n
    latency: list[float] = []
    pending: dict[tuple[int, int], int] = {}
    counts = {"accepted": 0, "rejected": 0, "lost": 0, "bad_reply": 0, "late_sends": 0}
    interval = 1.0 / rate
    start = time.perf_counter() + 0.02
    i = 0
    while True:
        now = time.perf_counter()
        while i < n and start + i * interval <= now:
            k, ident, packet, _ = packets[i]
            slot = (k, ident)
            if slot in pending:  # identifier still in flight after 2048 sends: call it lost
                pending.pop(slot)
                counts["lost"] += 1
            socks[k].send(packet)
            sent_at[i] = time.perf_counter()
            if sent_at[i] - (start + i * interval) > 0.001:
                counts["late_sends"] += 1
            pending[slot] = i
            i += 1
        if i >= n and (not pending or now > sent_at[-1] + timeout):
            break
        wait = (start + i * interval - now) if i < n else 0.05
        for fd, _ in poller.poll(max(wait, 0.0)):
            k = by_fd[fd]
            sock = socks[k]
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                got = time.perf_counter()
                if len(data) < 20:
                    counts["bad_reply"] += 1
                    continue
                idx = pending.pop((k, data[1]), None)
                if idx is None:
                    counts["bad_reply"] += 1
                    continue
                expected = hashlib.md5(data[:4] + packets[idx][3] + data[20:] + key).digest()
                if expected != data[4:20]:
                    counts["bad_reply"] += 1
                    continue
                latency.append(got - sent_at[idx])
                if data[0] == ACCESS_ACCEPT:
                    counts["accepted"] += 1
                elif data[0] == ACCESS_REJECT:
                    counts["rejected"] += 1
                elif data[0] == ACCESS_CHALLENGE:
                    counts["challenged"] = counts.get("challenged", 0) + 1
    counts["lost"] += len(pending)
    duration = (sent_at[-1] - sent_at[0]) if n > 1 else 0.0
    for sock in socks:
        sock.close()
    poller.close()
    latency.sort()

    def pct(p: float) -> float:
        return round(latency[min(len(latency) - 1, int(p * len(latency)))] * 1000, 3) \
            if latency else 0.0

    return {"requests": n, "target_rate": round(rate, 1),
            "achieved_rate": round((n - 1) / duration, 1) if duration else 0.0,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(latency[-1] * 1000, 3) if latency else 0.0, **counts}
