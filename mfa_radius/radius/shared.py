"""What the RADIUS server shares with the other nodes of one database (a store whose `shared` is
True: PostgreSQL): the Access-Challenge States it issues and the replies it sent.

A VPN appliance configured with two RADIUS servers may send the answer to node A's challenge to
node B (A went down between the two packets), and may retransmit a request to B after A's reply
was lost. With one SQLite file per node B knows neither the State nor the reply: the answer is
refused as `unknown_state`, and the retransmit of a code A accepted is refused as a replay.

SharedChallenges keeps each State in the store too: any node can take it, exactly once (the
store deletes it as it returns it), so a State seen on the wire is still good for one try only.
The bounds per user and per client stay this node's (ChallengeStore), as they guard this node's
memory and its clients.

ReplyLedger records every reply to an Access-Request for the duplicate window, keyed by a digest
of what RFC 5080 calls a duplicate (client, source address and port, Identifier, Request
Authenticator) and the packet itself, so a different packet reusing those is decided on its own.
A node that has not seen a request looks it up before deciding it and sends the recorded reply
instead. The reply is recorded before it is sent: by the time the client can retransmit, every
node can answer it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from ..errors import MfaError
from ..logsetup import RateLimitedLog
from ..store import Storage
from .challenge import Challenge, ChallengeStore

log = logging.getLogger("mfa_radius.radius")


class SharedChallenges:
    """A ChallengeStore whose States every node of the database can take (once)."""

    def __init__(self, store: Storage, local: ChallengeStore):
        self.store = store
        self.local = local

    @property
    def timeout(self) -> float:
        return self.local.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.local.timeout = value

    def issue(self, user: str, client: str, now: float, kind: str = "code",
              data: dict | None = None) -> bytes | None:
        """As ChallengeStore.issue, and stored for the other nodes (MfaError when the store
        cannot take it: no State is handed out that only this node knows)."""
        state = self.local.issue(user, client, now, kind, data)
        if state is None:
            return None
        try:
            with self.store.errors("storing a challenge State"):
                self.store.put_challenge(state, user, client, now + self.local.timeout, kind,
                                         data or {})
        except MfaError:
            self.local.take(state, user, client, now)
            raise
        return state

    def take(self, state: bytes, user: str, client: str, now: float) -> Challenge | None:
        """The challenge if it belongs to this user and client and no node has taken it yet."""
        self.local.take(state, user, client, now)  # this node's bounds: gone either way
        with self.store.errors("taking a challenge State"):
            row = self.store.take_challenge(state, now)
        if row is None:
            return None
        owner, asked_by, expires, kind, data = row
        if expires <= now or not (hmac.compare_digest(owner.encode(), user.encode())
                                  and asked_by == client):
            return None
        return Challenge(owner, asked_by, expires, kind, data)

    def live(self, user: str) -> int:
        return self.local.live(user)

    def __len__(self) -> int:
        return len(self.local)


def request_digest(client: str, key: tuple) -> bytes:
    """The digest a reply is recorded under: the client's name and the duplicate key (address,
    port, Identifier, Request Authenticator, the packet up to its Length)."""
    host, port, ident, authenticator, raw = key
    h = hashlib.sha256()
    for part in (client.encode(), host.encode(), str(port).encode(), bytes([ident])):
        h.update(len(part).to_bytes(2, "big") + part)
    h.update(authenticator)
    h.update(raw)
    return h.digest()


class ReplyLedger:
    """Replies sent by any node of the database, for the duplicate window."""

    def __init__(self, store: Storage, ttl: float):
        self.store = store
        self.ttl = ttl
        self._errors = RateLimitedLog(log, per_seconds=60.0, burst=1)

    def recorded(self, digests: list[bytes]) -> dict[bytes, bytes]:
        """The replies some node recorded for these requests. When the store cannot tell, {}:
        the requests are decided here, and a replay is refused as usual (fail closed)."""
        if not digests:
            return {}
        try:
            with self.store.errors("looking up replies of other nodes"):
                return self.store.replies_for(digests, time.time())
        except MfaError as exc:
            self._errors.warning("lookup", "cannot look up replies of other nodes: %s", exc)
            return {}

    def record(self, rows: list[tuple[bytes, bytes]]) -> None:
        """Record (digest, reply) pairs before they are sent. A failure is logged (a retransmit
        to another node is then decided there: a used code is refused as a replay)."""
        if not rows:
            return
        expires = time.time() + self.ttl
        try:
            with self.store.errors("recording replies for other nodes"):
                self.store.put_replies([(digest, reply, expires) for digest, reply in rows])
        except MfaError as exc:
            self._errors.warning("record", "cannot record replies for other nodes: %s", exc)
