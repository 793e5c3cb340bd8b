"""RFC 5080 2.2.2 duplicate detection: a retransmit gets the same reply, never a second decision.

Keyed by (client address, client port, ID, Request Authenticator), as the RFC defines a duplicate,
plus the request's bytes up to its Length field: a different packet that reuses those four (a
buggy client, or a forgery from a spoofed address) is decided afresh, on its own merits, and never
gets another packet's reply. While a request is being decided its entry holds no reply and
duplicates are dropped; once answered, duplicates get the cached reply again for `ttl` seconds. A
retransmit therefore never burns a one-time code or counts as a failure. Only requests that passed
every check (shared secret, Message-Authenticator) get an entry, so a forged packet cannot claim a
key.
"""

from __future__ import annotations

from collections import OrderedDict

IN_PROGRESS = "in_progress"
NEW = "new"

Key = tuple[str, int, int, bytes, bytes]  # address, port, ID, authenticator, packet


class DuplicateCache:
    def __init__(self, ttl: float = 30.0, max_entries: int = 65536):
        self.ttl = ttl
        self.max_entries = max_entries
        # key -> (expires, reply or None); insertion order is expiry order. Tuples of floats and
        # bytes, not lists: the garbage collector stops tracking them, so tens of thousands of
        # cached replies do not make each full collection a stall of the loop that shows in the
        # p99 latency.
        self._entries: OrderedDict[Key, tuple[float, bytes | None]] = OrderedDict()

    def lookup(self, key: Key, now: float) -> bytes | str:
        """NEW, IN_PROGRESS, or the cached reply."""
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            return NEW
        return IN_PROGRESS if entry[1] is None else entry[1]

    def claim(self, key: Key, now: float) -> bytes | str:
        """lookup(), and start() when the answer is NEW."""
        cached = self.lookup(key, now)
        if cached is NEW:
            self.start(key, now)
        return cached

    def start(self, key: Key, now: float) -> None:
        """A new entry for a key that lookup() called NEW (so it goes to the end)."""
        if len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (now + self.ttl, None)

    def finish(self, key: Key, reply: bytes, now: float) -> None:
        """Remember the reply; the entry lives `ttl` seconds from now. It keeps its place (the
        order requests started in): one slow decision only delays the expiry of those behind
        it, which live `ttl` seconds at least either way."""
        entries = self._entries
        if key in entries:
            entries[key] = (now + self.ttl, reply)

    def abandon(self, key: Key) -> None:
        """Forget a request that got no reply (dropped), so that a retransmit is processed."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key = next(iter(entries))
            entry = entries[key]
            if entry[0] > now:
                break
            if entry[1] is None:
                # Still being decided (a slow PAM check): finish() or abandon() removes it.
                entries[key] = (now + self.ttl, None)
                entries.move_to_end(key)
                continue
            del entries[key]

    def __len__(self) -> int:
        return len(self._entries)
