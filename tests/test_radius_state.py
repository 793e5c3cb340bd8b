"""The duplicate cache (RFC 5080) and the challenge State store: pure data, explicit clocks."""

from __future__ import annotations

import gc

from mfa_radius.radius.challenge import STATE_BYTES, ChallengeStore
from mfa_radius.radius.dedup import IN_PROGRESS, NEW, DuplicateCache

KEY = ("127.0.0.1", 5000, 7, b"A" * 16, b"request bytes")


def test_duplicate_in_progress_then_cached_reply():
    cache = DuplicateCache(ttl=30)
    assert cache.lookup(KEY, 0) is NEW
    cache.start(KEY, 0)
    assert cache.lookup(KEY, 1) is IN_PROGRESS
    cache.finish(KEY, b"reply", 2)
    assert cache.lookup(KEY, 3) == b"reply"
    assert cache.lookup(KEY, 31.9) == b"reply"
    assert cache.lookup(KEY, 32.1) is NEW  # ttl counts from the reply


def test_other_port_id_or_authenticator_is_new():
    cache = DuplicateCache()
    cache.start(KEY, 0)
    cache.finish(KEY, b"reply", 0)
    for other in (("127.0.0.1", 5001, 7, b"A" * 16), ("127.0.0.1", 5000, 8, b"A" * 16),
                  ("127.0.0.1", 5000, 7, b"B" * 16), ("127.0.0.2", 5000, 7, b"A" * 16)):
        assert cache.lookup(other, 1) is NEW


def test_in_progress_entries_do_not_expire_by_time():
    cache = DuplicateCache(ttl=5)
    cache.start(KEY, 0)
    assert cache.lookup(KEY, 100) is IN_PROGRESS
    cache.abandon(KEY)
    assert cache.lookup(KEY, 100) is NEW


def test_a_reply_lives_ttl_after_a_slow_decision_and_none_expires_early():
    cache = DuplicateCache(ttl=30)
    slow, quick = ("h", 1, 1, b"a" * 16, b"r"), ("h", 1, 2, b"b" * 16, b"r")
    cache.start(slow, 0)
    cache.start(quick, 1)
    cache.finish(quick, b"q", 1)
    cache.finish(slow, b"s", 20)  # a password check that took 20 s
    assert cache.lookup(slow, 49) == b"s"
    # Behind the slow entry the quick one may live a little longer (entries keep the order
    # requests started in), never shorter than its ttl.
    assert cache.lookup(quick, 30) == b"q" and cache.lookup(quick, 45) == b"q"
    assert cache.lookup(slow, 51) is NEW and cache.lookup(quick, 51) is NEW
    assert len(cache) == 0


def test_cap_evicts_oldest():
    cache = DuplicateCache(ttl=30, max_entries=3)
    keys = [("h", 1, i, b"x" * 16) for i in range(5)]
    for k in keys:
        cache.start(k, 0)
        cache.finish(k, b"reply", 0)
    assert len(cache) == 3
    assert cache.lookup(keys[0], 1) is NEW
    assert cache.lookup(keys[4], 1) == b"reply"


def test_cached_replies_leave_the_garbage_collector_nothing_to_walk():
    # A busy server holds up to 65,536 of them: as GC-tracked objects they made every full
    # collection a stall of the event loop (docs/benchmarks.md). White-box (the cache's
    # entries): whether the collector tracks them cannot be seen from outside but as latency.
    cache = DuplicateCache(ttl=30)
    keys = [("10.0.0.1", 1000 + i, i % 256, bytes([i % 256]) * 16, b"request") for i in range(100)]
    for i, k in enumerate(keys):
        cache.start(k, 0)
        if i % 2:
            cache.finish(k, b"reply", 0)
    cache.lookup(keys[0], 40)  # expiry re-dates the in-progress entries
    gc.collect()
    assert not [v for v in cache._entries.values() if gc.is_tracked(v)]
    assert not [k for k in cache._entries if gc.is_tracked(k)]


def test_challenge_single_use_and_bound():
    store = ChallengeStore(timeout=120)
    state = store.issue("alice", "vpn", now=0)
    assert len(state) == STATE_BYTES >= 16
    assert store.take(state, "alice", "vpn", now=1) is not None
    assert store.take(state, "alice", "vpn", now=2) is None  # single use


def test_challenge_wrong_user_or_client_burns_it():
    store = ChallengeStore()
    for user, client in (("bob", "vpn"), ("alice", "wifi")):
        state = store.issue("alice", "vpn", now=0)
        assert store.take(state, user, client, now=1) is None
        assert store.take(state, "alice", "vpn", now=1) is None


def test_challenge_expires():
    store = ChallengeStore(timeout=120)
    state = store.issue("alice", "vpn", now=0)
    assert store.take(state, "alice", "vpn", now=120.5) is None
    store.issue("alice", "vpn", now=0)
    store.issue("alice", "vpn", now=200)
    assert len(store) == 1  # expired ones are swept on use


def test_challenge_cap_and_randomness():
    store = ChallengeStore(max_entries=10, per_client=10)
    states = {store.issue(f"u{i}", "c", now=0) for i in range(50)}
    assert None in states and len(states - {None}) == 10  # full: no State, nobody evicted
    assert len(store) == 10


def test_challenge_states_per_user_are_bounded_and_evict_only_that_users_oldest():
    store = ChallengeStore(per_user=4)
    alice = store.issue("alice", "vpn", now=0)
    first = [store.issue("mallory", "vpn", now=0) for _ in range(4)]
    later = [store.issue("mallory", "vpn", now=1) for _ in range(1000)]
    assert len(store) == 5 and store.live("mallory") == 4
    assert all(store.take(s, "mallory", "vpn", now=2) is None for s in first)
    assert store.take(later[-1], "mallory", "vpn", now=2) is not None
    assert store.take(alice, "alice", "vpn", now=2) is not None  # never another user's
    assert store.live("mallory") == 3 and store.live("alice") == 0


def test_a_full_client_gets_no_state_and_other_clients_and_users_keep_theirs():
    store = ChallengeStore(per_client=3)
    kept = [store.issue(f"user{i}", "vpn", now=0) for i in range(3)]
    assert store.issue("user9", "vpn", now=0) is None
    other = store.issue("user9", "wifi", now=0)
    assert other is not None
    assert all(store.take(s, f"user{i}", "vpn", now=1) for i, s in enumerate(kept))
    assert store.issue("user9", "vpn", now=1) is not None  # room again once answered
    store.issue("user9", "vpn", now=200)  # the others expired meanwhile
    assert len(store) == 1


def test_challenge_carries_data_for_later_steps():
    store = ChallengeStore()
    state = store.issue("alice", "vpn", now=0, kind="sms", data={"sent": "+4912345"})
    challenge = store.take(state, "alice", "vpn", now=1)
    assert challenge.kind == "sms" and challenge.data == {"sent": "+4912345"}


def test_a_different_packet_reusing_id_and_authenticator_is_not_a_duplicate():
    cache = DuplicateCache(ttl=30)
    cache.start(KEY, 0)
    cache.finish(KEY, b"accept for the first packet", 1)
    other = KEY[:4] + (b"other request bytes",)
    assert cache.lookup(other, 2) is NEW
    assert cache.lookup(KEY, 2) == b"accept for the first packet"
