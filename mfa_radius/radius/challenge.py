"""State for Access-Challenge round trips: random, single use, bound to user and client, expiring.

A challenge is issued once the primary password is right; the next Access-Request carrying its
State has the code. `data` travels with the challenge so that a later step can know what was sent
(e.g. the SMS gateway records which code it texted) without another lookup.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

STATE_BYTES = 18  # RFC 5080 asks for >= 16 random octets; FreeRADIUS sends 16


@dataclass(slots=True)
class Challenge:
    user: str
    client: str
    expires: float
    kind: str = "code"  # "code": authenticator app/token; "sms" for a texted code
    data: dict = field(default_factory=dict)


class ChallengeStore:
    def __init__(self, timeout: float = 120.0, max_entries: int = 100000):
        self.timeout = timeout
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Challenge] = OrderedDict()

    def issue(self, user: str, client: str, now: float, kind: str = "code",
              data: dict | None = None) -> bytes:
        """A new State value for `user` asking through `client`."""
        self._expire(now)
        if len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        state = secrets.token_bytes(STATE_BYTES)
        self._entries[state] = Challenge(user, client, now + self.timeout, kind, data or {})
        return state

    def take(self, state: bytes, user: str, client: str, now: float) -> Challenge | None:
        """The challenge for `state` if it belongs to this user and client and has not expired.

        Single use: the State is gone afterwards, whatever the outcome, so a State seen on the wire
        cannot be tried again with another code.
        """
        self._expire(now)
        challenge = self._entries.pop(state, None)
        if challenge is None or challenge.expires <= now:
            return None
        if not (hmac.compare_digest(challenge.user.encode(), user.encode())
                and challenge.client == client):
            return None
        return challenge

    def _expire(self, now: float) -> None:
        entries = self._entries
        # Entries are in issue order with one timeout, so expiry order too.
        while entries:
            state, challenge = next(iter(entries.items()))
            if challenge.expires > now:
                break
            del entries[state]

    def __len__(self) -> int:
        return len(self._entries)
