"""The step log: the one place a TOTP device's last used step is, its conditional consume, its
fold, and what enable, resync, deactivate and delete do to it."""

from __future__ import annotations

import pytest

from mfa_radius.state import open_devices
from mfa_radius.store import open_store

from mfa_helpers import assign, make_config


@pytest.fixture
def alice(tmp_path, backend):
    """(devices, store, device id) with alice's TOTP device S1 assigned, on each backend (the
    PostgreSQL step log has no fold: waiting() is 0 and fold() moves nothing)."""
    d = open_devices(make_config(tmp_path, backend=backend))
    assign(d, "alice", "S1")
    yield d, d.store, d.store.device("S1")["id"]
    d.store.close()


def _consume(store, device: int, step: int, drift: int = 0, when: float = 1.0) -> bool:
    with store.transaction():
        return store.consume_step(device, step, drift, when)


def test_a_step_is_consumed_once_and_never_one_behind_it(alice):
    _, s, a = alice
    assert _consume(s, a, 100)
    assert not _consume(s, a, 100)  # the same code again
    assert not _consume(s, a, 99)  # an older code, unused, once a later one was
    assert _consume(s, a, 101)
    with s.transaction():
        s.steps.fold()
    assert not _consume(s, a, 101) and not _consume(s, a, 100)  # folded: still used
    assert _consume(s, a, 102)


def test_a_second_connection_cannot_consume_the_step_the_first_did(alice, tmp_path):
    """The consume is decided in the database: a connection that read the device before the
    other's accept (a stale cache) is refused all the same."""
    d, s, a = alice
    other = open_store(d.config.storage)
    try:
        assert s.device("S1")["last_step"] == other.device("S1")["last_step"] == -1
        assert _consume(s, a, 100)
        assert not _consume(other, a, 100)
        assert not _consume(other, a, 99)
        assert _consume(other, a, 101)
        assert not _consume(s, a, 101)
    finally:
        other.close()


def test_a_used_step_is_the_devices_last_step_before_and_after_its_fold(alice):
    d, s, a = alice
    assign(d, "bob", "S2")
    b = s.device("S2")["id"]
    assert _consume(s, a, 100, 0, 5.0) and _consume(s, b, 7, -1, 6.0)
    assert _consume(s, a, 101, 1, 7.0)
    assert s.steps.waiting() == (0 if s.shared else 2)  # devices, not steps
    row = s.device("S1")
    assert (row["last_step"], row["drift"], row["last_used_at"]) == (101, 1, 7.0)
    assert [r["last_step"] for r in s.list_devices()] == [101, 7]
    assert s.steps.position(b) == (7, -1)
    with s.transaction():
        assert s.steps.fold(1) == (0 if s.shared else 1)  # one device a chunk
    assert s.steps.waiting() == (0 if s.shared else 1)
    for _ in range(2):  # what the verifier and the admin read, folded or not
        (name, _, devices, _), *_ = s.preload_users(10)
        assert (name, devices[0]["last_step"], devices[0]["drift"]) == ("alice", 101, 1)
        _, devices, _, _ = s.load_user("bob")
        assert (devices[0]["last_step"], devices[0]["drift"]) == (7, -1)
        assert s.user_devices("alice")[0]["last_used_at"] == 7.0
        with s.transaction():
            s.steps.fold()
    assert s.steps.waiting() == 0
    with s.transaction():
        assert s.steps.fold() == 0


def test_a_resync_ahead_stays_and_a_fold_never_moves_a_step_back(alice):
    _, s, a = alice
    assert _consume(s, a, 100, 2, 5.0)
    with s.transaction():
        s.resync_device(a, last_step=200, drift=3)
    assert s.steps.position(a) == (200, 3)
    assert not _consume(s, a, 150)
    with s.transaction():
        s.steps.fold()
    row = s.device("S1")
    assert (row["last_step"], row["drift"], row["last_used_at"]) == (200, 3, 5.0)
    # A resync behind the used step keeps the used step (and its drift).
    assert _consume(s, a, 201, 1, 6.0)
    with s.transaction():
        s.resync_device(a, last_step=190, drift=-4)
    assert s.steps.position(a) == (201, 1)


def test_deactivating_resets_the_drift_and_keeps_the_step(alice):
    d, s, a = alice
    assert _consume(s, a, 100, 2, 5.0)
    with s.transaction():
        s.steps.fold()
    assert _consume(s, a, 101, 3, 6.0)  # one folded, one not
    d.deactivate("alice", "S1")
    row = s.device("S1")
    assert (row["user"], row["last_step"], row["drift"]) == (None, 101, 0)
    with s.transaction():
        s.steps.fold()
    assert s.steps.position(a) == (101, 0)


def test_a_new_device_never_inherits_a_deleted_devices_steps(alice):
    d, s, _ = alice
    for serial in ("V1", "V2"):
        d.create_virtual(serial)
    v1, v2 = s.device("V1")["id"], s.device("V2")["id"]
    assert _consume(s, v1, 50) and _consume(s, v2, 60)
    with s.transaction():
        s.steps.fold(1)  # V1's folded, V2's not
    d.delete("V1")
    d.delete("V2")
    assert s.steps.position(v1) == s.steps.position(v2) == (-1, 0)
    assert s.steps.waiting() == 0
