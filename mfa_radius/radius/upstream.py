"""`password_backend = "radius"`: the primary password is checked by upstream RADIUS servers
(Microsoft NPS, FreeRADIUS), `[[radius.upstream]]`, tried in config order.

Each check is a PAP Access-Request signed with Message-Authenticator, carrying the client's
NAS-IP-Address, NAS-IPv6-Address, NAS-Identifier, Calling-Station-Id, Called-Station-Id and
NAS-Port-Type (what NPS network policies match on), sent from a socket of its own (its replies
cannot be confused with another check's) with asyncio: nothing waits on the packet loop. A reply
counts only when its Identifier, Response Authenticator and Message-Authenticator are right:
anything else is dropped, as if lost (a forged or misrouted reply must never decide a login), and
logged at most a few times a minute.

A server that answers nothing after `retries` more tries is skipped for FAILBACK seconds, then
tried first again. An upstream Access-Challenge (another OTP server, an expired password) comes
back as an Outcome with its State and Reply-Message, for the RADIUS front to relay (relay.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import struct
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import hostport
from ..errors import ConfigError, SettingError
from ..hmacprep import md5
from ..logsetup import RateLimitedLog
from . import codec
from .clients import entry_secret

if TYPE_CHECKING:  # annotations only: the config loader imports this module
    from ..config import Config, RadiusUpstream

log = logging.getLogger("mfa_radius.radius")

FAILBACK = 30.0  # seconds a server that did not answer is tried after the others
MAX_PENDING = 256  # upstream checks in flight before new ones are dropped (Overloaded)
# Attributes of the client's request that the upstream sees (its policies, its logs):
# NAS-IP-Address, NAS-Identifier, Calling-Station-Id, NAS-IPv6-Address, and the two NPS network
# policies often match on, Called-Station-Id and NAS-Port-Type.
PASSED_THROUGH = frozenset((4, 32, 31, 95, 30, 61))
# Attributes of an upstream Access-Accept merged into ours with pass_reply_attributes.
MERGED = (25, 11, codec.VENDOR_SPECIFIC)  # Class, Filter-Id, Vendor-Specific
TIMINGS_KEPT = 64


class UpstreamUnavailable(Exception):
    """No upstream server gave a reply that verified."""


class UpstreamBusy(Exception):
    """Too many upstream checks in flight: drop the request, the client will retransmit (as
    passwords.Overloaded)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    address: str  # as configured, for the logs
    where: hostport.HostPort
    secret: codec.Secret
    timeout: float
    retries: int


@dataclass(slots=True)
class Outcome:
    """An upstream's verified answer. `attrs`: the reply attributes to merge (encoded), when
    pass_reply_attributes; `state`/`message`: an Access-Challenge's; `server`: who answered."""

    code: int
    server: int
    attrs: bytes = b""
    state: bytes | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.code == codec.ACCESS_ACCEPT

    @property
    def challenged(self) -> bool:
        return self.code == codec.ACCESS_CHALLENGE


def upstream_entry(entry: RadiusUpstream) -> Upstream:
    """One `[[radius.upstream]]` entry, its secret_file read; SettingError when bad."""
    try:
        where = hostport.parse(entry.address)
    except ValueError as exc:
        raise SettingError("address", str(exc)) from None
    secret = entry_secret(entry.secret, entry.secret_file)
    return Upstream(entry.address, where, codec.Secret(secret), entry.timeout, entry.retries)


def verified_reply(reply: bytes, ident: int, authenticator: bytes, secret: codec.Secret
                   ) -> list[tuple[int, bytes]] | None:
    """The attributes of an upstream reply to our request, or None when it is not one: wrong
    code, Identifier or length, attributes that do not parse, no Message-Authenticator, or a
    Message-Authenticator or Response Authenticator that the shared secret does not give."""
    if len(reply) < codec.HEADER_LEN:
        return None
    code, got_ident, length = struct.unpack_from("!BBH", reply)
    if code not in (codec.ACCESS_ACCEPT, codec.ACCESS_REJECT, codec.ACCESS_CHALLENGE) \
            or got_ident != ident or length < codec.HEADER_LEN or length > len(reply):
        return None
    reply = reply[:length]
    expected = md5(reply[:4] + authenticator + reply[20:] + secret.raw).digest()
    if not secrets.compare_digest(expected, reply[4:20]):
        return None
    attrs, pos, ma_at = [], codec.HEADER_LEN, -1
    while pos < length:
        if pos + 2 > length or reply[pos + 1] < 2 or pos + reply[pos + 1] > length:
            return None
        attr_type, attr_len = reply[pos], reply[pos + 1]
        if attr_type == codec.MESSAGE_AUTHENTICATOR:
            if attr_len != 18 or ma_at >= 0:
                return None
            ma_at = pos + 2
        attrs.append((attr_type, reply[pos + 2:pos + attr_len]))
        pos += attr_len
    if ma_at < 0:
        return None
    check = reply[:4] + authenticator + reply[20:ma_at] + bytes(16) + reply[ma_at + 16:]
    if not secrets.compare_digest(secret.hmac_md5(check), reply[ma_at:ma_at + 16]):
        return None
    return attrs


class RadiusPasswords:
    """The password backend of `password_backend = "radius"` (passwords.py's interface, and
    `ask`, which relay.py uses for what a bool cannot say: challenges, reply attributes)."""

    needs_password = True
    relays = True  # its checks may end in an upstream Access-Challenge (relay.py)

    def __init__(self, servers: list[Upstream], pass_reply_attributes: bool = False,
                 workers: int = 2):
        if not servers:
            raise ConfigError('password_backend = "radius" needs at least one '
                              '[[radius.upstream]] server')
        self.servers = servers
        self.pass_reply_attributes = pass_reply_attributes
        self._down_until = [0.0] * len(servers)
        self._pending = 0
        self._timings: deque[float] = deque(maxlen=TIMINGS_KEPT)
        self._dropped = RateLimitedLog(log)
        # NSS look-ups (groups) only: the checks themselves are asyncio.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upstream")

    @classmethod
    def from_config(cls, cfg: Config) -> RadiusPasswords:
        servers = []
        for i, entry in enumerate(cfg.radius.upstream):
            try:
                servers.append(upstream_entry(entry))
            except SettingError as exc:
                raise ConfigError(f"{cfg.path}: [[radius.upstream]] #{i + 1} "
                                  f"({entry.address}): {exc}") from None
        return cls(servers, cfg.radius.pass_reply_attributes)

    async def check(self, user: str, password: bytes) -> bool:
        return (await self.ask(user, password)).accepted

    async def ask(self, user: str, password: bytes, request: codec.Request | None = None,
                  state: bytes | None = None, server: int | None = None) -> Outcome:
        """The upstream's answer to `user`'s `password` (with `state`: an answer to its
        challenge, sent to the `server` that asked); UpstreamUnavailable when none answers."""
        if self._pending >= MAX_PENDING:
            raise UpstreamBusy(f"{self._pending} upstream checks in flight")
        if not password or len(password) > 128:
            return Outcome(codec.ACCESS_REJECT, -1)  # User-Password cannot carry it
        attrs = [(codec.USER_NAME, user.encode("utf-8"))]
        if request is not None:
            attrs += [(t, v) for t, v in request.attrs if t in PASSED_THROUGH]
        if state is not None:
            attrs.append((codec.STATE, state))
        order = [server] if server is not None else self._order(time.monotonic())
        self._pending += 1
        started = time.monotonic()
        try:
            for index in order:
                outcome = await self._exchange(index, attrs, password)
                if outcome is not None:
                    self._down_until[index] = 0.0
                    self._timings.append(time.monotonic() - started)
                    return outcome
                self._down_until[index] = time.monotonic() + FAILBACK
                tries = self.servers[index].retries + 1
                log.warning("upstream RADIUS %s: no verified reply after %d %s%s",
                            self.servers[index].address, tries, "try" if tries == 1 else "tries",
                            "" if index == order[-1] else ", trying the next")
        finally:
            self._pending -= 1
        raise UpstreamUnavailable("no upstream RADIUS server answered")

    def _order(self, now: float) -> list[int]:
        """Config order, the servers that did not answer lately last."""
        up = [i for i, until in enumerate(self._down_until) if until <= now]
        return up + [i for i in range(len(self.servers)) if i not in up]

    async def _exchange(self, index: int, attrs: list, password: bytes) -> Outcome | None:
        """One request to server `index`, retransmitted `retries` times; None without a
        verified reply."""
        server = self.servers[index]
        authenticator = os.urandom(16)
        ident = secrets.randbelow(256)
        hidden = codec.encrypt_password(password, authenticator, server.secret)
        packet = codec.build_request(codec.ACCESS_REQUEST, ident, authenticator, server.secret,
                                     attrs[:1] + [(codec.USER_PASSWORD, hidden)] + attrs[1:])
        loop = asyncio.get_running_loop()
        with socket.socket(server.where.family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                sock.connect(server.where.sockaddr)
            except OSError as exc:
                log.warning("upstream RADIUS %s: %s", server.address, exc.strerror or exc)
                return None
            for _ in range(server.retries + 1):
                try:
                    sock.send(packet)
                except OSError:
                    pass  # e.g. ECONNREFUSED of an earlier try: wait out the timeout alike
                deadline = loop.time() + server.timeout
                while (left := deadline - loop.time()) > 0:
                    try:
                        reply = await asyncio.wait_for(loop.sock_recv(sock, codec.MAX_PACKET),
                                                       left)
                    except TimeoutError:
                        break
                    except OSError:
                        await asyncio.sleep(min(left, 0.05))  # ICMP unreachable: no reply
                        continue
                    parsed = verified_reply(reply, ident, authenticator, server.secret)
                    if parsed is None:
                        self._dropped.warning(
                            server.address, "upstream RADIUS %s: reply dropped: it does not "
                            "verify (wrong shared secret, or not a reply to our request)",
                            server.address)
                        continue
                    return self._outcome(reply[0], index, parsed)
        return None

    def _outcome(self, code: int, index: int, attrs: list[tuple[int, bytes]]) -> Outcome:
        message = b"".join(v for t, v in attrs if t == codec.REPLY_MESSAGE)
        outcome = Outcome(code, index, message=message.decode("utf-8", "replace"))
        if code == codec.ACCESS_CHALLENGE:
            outcome.state = next((v for t, v in attrs if t == codec.STATE), b"")
        elif code == codec.ACCESS_ACCEPT and self.pass_reply_attributes:
            outcome.attrs = b"".join(codec.encode_attr(t, v) for t, v in attrs if t in MERGED)
        return outcome

    async def pad(self) -> None:
        """As long as an upstream check (a locked user: its password is not sent)."""
        await asyncio.sleep(secrets.choice(self._timings) if self._timings else 0.05)

    async def run(self, fn, *args):
        """`fn(*args)` off the loop (NSS group look-ups may ask a directory)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

