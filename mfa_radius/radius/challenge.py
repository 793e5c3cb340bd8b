"""State for Access-Challenge round trips: random, single use, bound to user and client, expiring.

A challenge is issued once the primary password is right; the next Access-Request carrying its
State has the code. `data` travels with the challenge so that a later step can know what was sent
(e.g. the SMS gateway records which code it texted) without another lookup.

Live States are bounded per user, per client and in all: a user's newest State evicts only that
user's oldest, and a full client (or a full store) gets no new State rather than taking another
user's: nobody can push a real user's pending challenge out by asking for many.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

STATE_BYTES = 18  # RFC 5080 asks for >= 16 random octets; FreeRADIUS sends 16
PER_USER = 4  # live States of one user (a few tabs or appliances asking at once)


@dataclass(slots=True)
class Challenge:
    user: str
    client: str
    expires: float
    kind: str = "code"  # "code": authenticator app/token; "sms" for a texted code
    data: dict = field(default_factory=dict)


class ChallengeStore:
    def __init__(self, timeout: float = 120.0, max_entries: int = 100000,
                 per_user: int = PER_USER, per_client: int | None = None):
        self.timeout = timeout
        self.max_entries = max_entries
        self.per_user = per_user
        # One client (a VPN concentrator) may front every user: by default it may hold half.
        self.per_client = per_client if per_client is not None else max(1, max_entries // 2)
        self._entries: OrderedDict[bytes, Challenge] = OrderedDict()
        self._by_user: dict[str, list[bytes]] = {}  # each user's live States, oldest first
        self._by_client: dict[str, int] = {}

    def issue(self, user: str, client: str, now: float, kind: str = "code",
              data: dict | None = None) -> bytes | None:
        """A new State value for `user` asking through `client`; None when `client` (or the
        store) holds as many live States as it may."""
        self._expire(now)
        mine = self._by_user.get(user)
        if mine is not None and len(mine) >= self.per_user:
            self._drop(mine[0])
        if (self._by_client.get(client, 0) >= self.per_client
                or len(self._entries) >= self.max_entries):
            return None
        state = secrets.token_bytes(STATE_BYTES)
        self._entries[state] = Challenge(user, client, now + self.timeout, kind, data or {})
        self._by_user.setdefault(user, []).append(state)
        self._by_client[client] = self._by_client.get(client, 0) + 1
        return state

    def take(self, state: bytes, user: str, client: str, now: float) -> Challenge | None:
        """The challenge for `state` if it belongs to this user and client and has not expired.

        Single use: the State is gone afterwards, whatever the outcome, so a State seen on the wire
        cannot be tried again with another code.
        """
        self._expire(now)
        challenge = self._drop(state)
        if challenge is None or challenge.expires <= now:
            return None
        if not (hmac.compare_digest(challenge.user.encode(), user.encode())
                and challenge.client == client):
            return None
        return challenge

    def live(self, user: str) -> int:
        """How many States of `user` are waiting for an answer."""
        return len(self._by_user.get(user, ()))

    def _drop(self, state: bytes) -> Challenge | None:
        challenge = self._entries.pop(state, None)
        if challenge is None:
            return None
        mine = self._by_user[challenge.user]
        mine.remove(state)
        if not mine:
            del self._by_user[challenge.user]
        left = self._by_client[challenge.client] - 1
        if left:
            self._by_client[challenge.client] = left
        else:
            del self._by_client[challenge.client]
        return challenge

    def _expire(self, now: float) -> None:
        entries = self._entries
        # Entries are in issue order with one timeout, so expiry order too (a changed timeout
        # only delays a sweep: take() checks each State's own expiry).
        while entries:
            state, challenge = next(iter(entries.items()))
            if challenge.expires > now:
                break
            self._drop(state)

    def __len__(self) -> int:
        return len(self._entries)
