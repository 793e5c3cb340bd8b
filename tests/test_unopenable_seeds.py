"""A device whose seed does not open (sealed under another key, or a sealed seed copied from
another device's row) is left out with one log line; it never takes others down, and each
attempt of a batch is decided on its own."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from mfa_radius.accounts import Accounts
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier
from mfa_helpers import NOW, assign, foreign_device, make_config, totp_at, verify
from conftest import run_cli

@pytest.fixture
def world(tmp_path):
    (tmp_path / "main").mkdir()
    cfg = make_config(tmp_path / "main")
    devices = open_devices(cfg)
    yield cfg, devices
    devices.store.close()


def test_a_foreign_seed_is_skipped_and_logged_once_naming_device_and_user(world, tmp_path,
                                                                         caplog):
    cfg, devices = world
    good = assign(devices, "alice", "ALICE-GOOD")
    bad = foreign_device(tmp_path, cfg, "alice", "ALICE-FOREIGN")
    bob = assign(devices, "bob", "BOB-1")
    caplog.set_level(logging.ERROR, "mfa_radius")
    v = Verifier.open(cfg)  # the daemon's start-up load must not raise
    assert v.preload() == 2
    assert v.unopenable_devices == 1
    d = verify(v, "alice", totp_at(bad, NOW))
    assert (d.accepted, d.reason) == (False, "bad_code")
    assert verify(v, "alice", totp_at(good, NOW)).accepted
    assert verify(v, "bob", totp_at(bob, NOW)).accepted
    lines = [r.getMessage() for r in caplog.records if "ALICE-FOREIGN" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "user alice" in lines[0] and "skipped" in lines[0]
    v.store.close()


def test_batch_with_an_unopenable_user_still_accepts_the_other(world, tmp_path):
    cfg, devices = world
    bad = foreign_device(tmp_path, cfg, "alice", "ALICE-FOREIGN")
    bob = assign(devices, "bob", "BOB-1")
    v = Verifier.open(cfg)
    alice_d, bob_d = v.verify_batch([Attempt("alice", totp_at(bad, NOW), "test", NOW),
                                     Attempt("bob", totp_at(bob, NOW), "test", NOW)])
    assert (bob_d.accepted, bob_d.reason, bob_d.serial) == (True, "ok", "BOB-1")
    assert (alice_d.accepted, alice_d.reason) == (False, "error")
    v.store.close()


def test_a_seed_copied_from_another_row_does_not_open(world):
    cfg, devices = world
    assign(devices, "alice", "ALICE-1")
    bob = assign(devices, "bob", "BOB-1")
    con = sqlite3.connect(cfg.storage.database)
    con.execute("UPDATE devices SET seed = (SELECT seed FROM devices WHERE serial = 'BOB-1') "
                "WHERE serial = 'ALICE-1'")
    con.commit()
    con.close()
    v = Verifier.open(cfg)
    v.preload()
    assert v.unopenable_devices == 1
    # Bob's code does not become Alice's through the copied blob (the seal binds the serial).
    d = verify(v, "alice", totp_at(bob, NOW))
    assert (d.accepted, d.reason) == (False, "error")
    assert verify(v, "bob", totp_at(bob, NOW)).accepted
    v.store.close()


def test_only_an_unopenable_device_is_enrolled_not_nullok_and_no_lockout(tmp_path):
    (tmp_path / "main").mkdir()
    cfg = make_config(tmp_path / "main", "[policy]\nnullok = true\nlockout_failures = 2\n")
    bad = foreign_device(tmp_path, cfg, "alice", "ALICE-FOREIGN")
    v = Verifier.open(cfg)
    assert v.status("alice", NOW).enrolled is True
    for _ in range(4):
        d = verify(v, "alice", "000000")
        assert (d.accepted, d.reason) == (False, "error")  # never no_device_allowed
    assert verify(v, "alice", totp_at(bad, NOW)).reason == "error"
    assert v.status("alice", NOW).locked_for == 0  # no code could pass: not counted as guesses
    v.store.close()


class _BrokenNss(Accounts):
    """An NSS look-up that fails for one user (an LDAP outage, a bug): raises."""

    def groups(self, user):
        if user == "mallory":
            raise RuntimeError("nss lookup failed")
        return frozenset()


def test_an_exception_deciding_one_attempt_refuses_only_that_attempt(world):
    cfg, devices = world
    bob = assign(devices, "bob", "BOB-1")
    v = Verifier.open(cfg, accounts=_BrokenNss())
    out = v.verify_batch([Attempt("mallory", "123456", "test", NOW),
                          Attempt("bob", totp_at(bob, NOW), "test", NOW)])
    assert [(d.accepted, d.reason) for d in out] == [(False, "error"), (True, "ok")]
    # Both are in the committed audit log, the failed one as an error.
    rows = {r["user"]: (r["result"], r["reason"]) for r in devices.store.audit_events()}
    assert rows == {"mallory": ("reject", "error"), "bob": ("accept", "ok")}
    # Bob's step was recorded as used by that commit.
    assert verify(v, "bob", totp_at(bob, NOW)).reason == "replay"
    v.store.close()


def test_a_failed_savepoint_undoes_only_its_own_writes(world):
    cfg, devices = world
    store = devices.store
    with store.transaction():
        store.set_user_state("kept", 1, 0.0, failure_at=NOW)
        with pytest.raises(RuntimeError), store.savepoint():
            store.set_user_state("undone", 1, 0.0, failure_at=NOW)
            raise RuntimeError("boom")
        store.set_user_state("after", 1, 0.0, failure_at=NOW)
    assert store.user_row("kept") and store.user_row("after")
    assert store.user_row("undone") is None


def test_device_list_marks_an_unopenable_device(world, tmp_path):
    cfg, devices = world
    assign(devices, "bob", "BOB-1")
    foreign_device(tmp_path, cfg, "alice", "ALICE-FOREIGN")
    result = run_cli(cfg.path, "device", "list")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("ALICE-FOREIGN"))
    assert "seed does not open" in line
    assert "does not open" not in next(x for x in result.stdout.splitlines()
                                       if x.startswith("BOB-1"))
    as_json = run_cli(cfg.path, "device", "list", "--json")
    flags = {d["serial"]: d["seed_opens"] for d in json.loads(as_json.stdout)}
    assert flags == {"ALICE-FOREIGN": False, "BOB-1": True}
    shown = run_cli(cfg.path, "user", "show", "alice")
    assert shown.returncode == 0, shown.stderr

