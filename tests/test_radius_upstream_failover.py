"""The upstream password backend's failover (mfa_radius/radius/upstream.py): the next server
when one gives no verified reply, and back to the first once it has been skipped for a while.
Two in-process UDP servers that answer with properly signed replies stand in for NPS."""

from __future__ import annotations

import asyncio
import socket

from mfa_radius.radius import codec, upstream

SECRET = b"failover-secret-1234"


class Answering:
    """A UDP server answering Access-Accept to every request, while `up`; counts requests."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.up = True
        self.seen = 0

    def on_readable(self) -> None:
        data, addr = self.sock.recvfrom(4096)
        self.seen += 1
        if self.up:
            request = codec.parse_request(data, codec.Secret(SECRET), True)
            self.sock.sendto(codec.build_reply(codec.ACCESS_ACCEPT, request,
                                               codec.Secret(SECRET)), addr)


def server(address: str) -> upstream.Upstream:
    from mfa_radius import hostport

    return upstream.Upstream(address, hostport.parse(address), codec.Secret(SECRET), 0.2, 0)


def test_failover_to_the_next_server_and_back_to_the_first(monkeypatch):
    monkeypatch.setattr(upstream, "FAILBACK", 0.5)
    first, second = Answering(), Answering()

    async def scenario():
        loop = asyncio.get_running_loop()
        for s in (first, second):
            loop.add_reader(s.sock.fileno(), s.on_readable)
        backend = upstream.RadiusPasswords([server(first.address), server(second.address)])
        try:
            first.up = False
            assert await backend.check("alice", b"pw")  # the first silent: the second answers
            assert (first.seen, second.seen) == (1, 1)
            first.up = True
            assert await backend.check("alice", b"pw")  # the first is skipped for a while
            assert (first.seen, second.seen) == (1, 2)
            await asyncio.sleep(0.6)
            assert await backend.check("alice", b"pw")  # then tried first again
            assert (first.seen, second.seen) == (2, 2)
        finally:
            backend.close()
            for s in (first, second):
                loop.remove_reader(s.sock.fileno())
                s.sock.close()

    asyncio.run(scenario())
