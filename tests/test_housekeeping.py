"""Housekeeping: audit retention, expired SMS codes, idle user rows; the periodic task."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pyotp
import pytest

from mfa_radius import config as config_mod
from mfa_radius import housekeeping
from mfa_radius.state import open_store
from mfa_radius.verifier import Verifier

DAY = 86400.0
NOW = 1_800_000_000.0


def add_audit(store, times):
    with store.transaction():
        store.add_audit((t, "alice", "totp", "S1", "test", "accept", "ok", None, None, None) for t in times)


def audit_times(store):
    return sorted(r[0] for r in store.conn.execute("SELECT time FROM audit"))


def with_retention(cfg, days):
    return dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage,
                                                                audit_retention_days=days))


def test_audit_older_than_the_retention_is_pruned(cfg):
    store = open_store(cfg)
    add_audit(store, [NOW - 400 * DAY, NOW - 366 * DAY, NOW - 364 * DAY, NOW - 1])
    done = housekeeping.prune(store, cfg, NOW)
    assert done["audit"] == 2
    assert audit_times(store) == [NOW - 364 * DAY, NOW - 1]
    assert housekeeping.prune(store, cfg, NOW)["audit"] == 0
    store.close()


def test_retention_zero_keeps_everything(cfg):
    store = open_store(cfg)
    add_audit(store, [NOW - 4000 * DAY])
    assert housekeeping.prune(store, with_retention(cfg, 0), NOW)["audit"] == 0
    assert audit_times(store) == [NOW - 4000 * DAY]
    store.close()


def test_prune_deletes_in_batches(cfg):
    store = open_store(cfg)
    add_audit(store, [NOW - 10 * DAY - i for i in range(23)])
    assert store.prune_audit(NOW - DAY, batch=5) == 22
    # The newest row stays: audit ids never go back.
    assert audit_times(store) == [NOW - 10 * DAY - 22]
    store.close()


def test_idle_user_rows_without_devices_go_locked_and_enrolled_ones_stay(cfg, devices):
    info = devices.create_virtual("S1")
    totp = pyotp.TOTP(info["secret"])
    t = time.time()
    devices.enable("alice", "S1", totp.at(t - 30), totp.at(t))
    verifier = Verifier.open(cfg)
    old = NOW - 40 * DAY
    store = verifier.store
    with store.transaction():
        store.set_user_state("sprayed1", 1, 0.0, failure_at=old)
        store.set_user_state("sprayed2", 1, 0.0, failure_at=old)
        store.set_user_state("recent", 1, 0.0, failure_at=NOW - DAY)
        store.set_user_state("locked", 9, NOW + 3600, failure_at=old)
        store.set_user_state("alice", 3, 0.0, failure_at=old)
    done = housekeeping.prune(store, cfg, NOW)
    assert done["users"] == 2
    assert store.user_names() == ["alice", "locked", "recent"]
    verifier.store.close()


def test_expired_sms_codes_are_pruned(cfg):
    store = open_store(cfg)
    if not hasattr(store, "replace_sms_code"):
        pytest.skip("this tree has no SMS codes table yet")
    with store.transaction():
        store.ensure_user("a", NOW)
        store.ensure_user("b", NOW)
        store.replace_sms_code("a", b"x" * 32, NOW - 600, NOW - 300)
        store.replace_sms_code("b", b"y" * 32, NOW - 60, NOW + 240)
    assert housekeeping.prune(store, cfg, NOW)["sms_codes"] == 1
    assert store.sms_code("a") is None and store.sms_code("b") is not None
    store.close()


def test_run_once_opens_its_own_connection_and_describes(cfg, caplog):
    store = open_store(cfg)
    add_audit(store, [time.time() - 500 * DAY, time.time() - 499 * DAY])
    store.close()
    caplog.set_level("INFO")
    done = housekeeping.run_once(cfg)
    assert done["audit"] == 1
    assert "deleted 1 audit rows (older than 365 days)" in caplog.text
    assert housekeeping.describe(done, with_retention(cfg, 0)).startswith(
        "deleted 1 audit rows (none: audit_retention_days = 0 keeps all)")


def test_periodic_runs_with_the_live_config_and_survives_errors(cfg, tmp_path, caplog):
    store = open_store(cfg)
    add_audit(store, [time.time() - 500 * DAY, time.time() - 499 * DAY])
    store.close()
    broken = config_mod.from_dict({"storage": {"database": str(tmp_path / "missing.db"),
                                               "key_file": cfg.storage.key_file}})
    configs = [broken, cfg, cfg]

    def get_config():
        return configs.pop(0) if len(configs) > 1 else configs[0]

    async def main():
        task = asyncio.create_task(housekeeping.periodic(get_config, interval=0.05,
                                                         first_delay=0))
        for _ in range(100):
            await asyncio.sleep(0.05)
            s = open_store(cfg)
            left = s.conn.execute("SELECT count(*) FROM audit").fetchone()[0]
            s.close()
            if left == 1:  # the newest row stays
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return left

    assert asyncio.run(main()) == 1
    assert "housekeeping failed" in caplog.text and "database not found" in caplog.text


def _accept_codes(cfg, devices, users, first_seed=1):
    """Each user gets a TOTP device and signs in once, through its own verifier; the seeds."""
    from mfa_radius.devices import DeviceSpec
    from mfa_radius.otp import OtpKey, time_step
    from mfa_radius.verifier import Attempt

    seeds = {u: bytes([i + first_seed]) * 20 for i, u in enumerate(users)}
    devices.add([DeviceSpec(f"S-{u}", seed, user=u) for u, seed in seeds.items()])
    v = Verifier.open(cfg)
    now = time.time()
    for u, seed in seeds.items():
        code = OtpKey(seed).code(time_step(now, 30))
        assert v.verify(Attempt(u, code, "test", now)).accepted
    return v, seeds


def test_run_once_folds_the_step_log(cfg, devices):
    v, _ = _accept_codes(cfg, devices, ["alice", "bob"])
    assert devices.store.steps.waiting() == 2
    done = housekeeping.run_once(cfg)
    assert done["used"] == 2
    assert devices.store.steps.waiting() == 0
    steps = {d["user"]: d["last_step"] for d in devices.store.list_devices()}
    assert steps["alice"] == steps["bob"] == int(time.time()) // 30
    assert "used TOTP steps of 2 devices" in housekeeping.describe(done, cfg)
    v.store.close()


def test_pruning_everything_it_may_never_reopens_a_used_code(cfg, devices):
    """Retention holds no replay state: with every audit row it may delete gone (and all the
    rest housekeeping prunes, the step log folded or not), a used code is still refused."""
    from mfa_radius.otp import OtpKey, time_step
    from mfa_radius.verifier import Attempt

    v, seeds = _accept_codes(cfg, devices, ["alice", "bob"])
    now = time.time()
    assert v.verify(Attempt("alice", OtpKey(seeds["alice"]).code(time_step(now, 30) + 1),
                            "test", now)).accepted  # alice's newest step: not folded yet
    later = now + 1000 * DAY
    store = open_store(cfg)
    assert store.prune_audit(later, batch=1) >= 2
    done = housekeeping.prune(store, with_retention(cfg, 1), later)
    store.close()
    assert done["used"] == 2
    assert len(devices.store.audit_events()) == 1  # the newest row only
    for verifier in (v, Verifier.open(cfg)):  # the daemon's cache, and a fresh read
        for user, steps in (("alice", (0, 1)), ("bob", (0,))):
            for step in steps:
                code = OtpKey(seeds[user]).code(time_step(now, 30) + step)
                assert verifier.verify(Attempt(user, code, "test", now)).reason == "replay"
        verifier.store.close()


def test_the_daemon_task_folds_once_nobody_signs_in(cfg, devices, monkeypatch):
    from mfa_radius import usercache

    monkeypatch.setattr(usercache, "FOLD_IDLE", 0.2)
    monkeypatch.setattr(usercache, "FOLD_IDLE_CHUNK", 1)  # one device a transaction
    v, _ = _accept_codes(cfg, devices, ["alice", "bob", "carol"])
    v.preload()  # the daemon's verifier: preload folds what waits
    assert devices.store.steps.waiting() == 0
    now = time.time()
    from mfa_radius.otp import OtpKey, time_step
    from mfa_radius.verifier import Attempt
    for i, u in enumerate(["alice", "bob", "carol"]):
        code = OtpKey(bytes([i + 1]) * 20).code(time_step(now, 30) + 1)
        assert v.verify(Attempt(u, code, "test", now)).accepted
    assert devices.store.steps.waiting() == 3

    async def main():
        task = asyncio.create_task(housekeeping.fold_when_idle(v, interval=0.05))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not devices.store.steps.waiting():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert devices.store.steps.waiting() == 0
    assert not v.fold_due()
    v.store.close()


def test_fold_due_past_the_threshold_even_while_busy(cfg, devices, monkeypatch):
    from mfa_radius import usercache

    monkeypatch.setattr(usercache, "FOLD_AT", 2)
    v, _ = _accept_codes(cfg, devices, ["alice"])
    v.preload()
    from mfa_radius.otp import OtpKey, time_step
    from mfa_radius.verifier import Attempt
    now = time.time()
    code = OtpKey(bytes([1]) * 20).code(time_step(now, 30) + 1)
    assert v.verify(Attempt("alice", code, "test", now)).accepted
    assert v.fold_due(v.cache.last_active) == 0  # one device waits, the server is busy
    v2, _ = _accept_codes(cfg, devices, ["bob"], first_seed=2)  # another process's step counts
    assert v.fold_due(v.cache.last_active) == usercache.FOLD_CHUNK
    assert v.fold_due(v.cache.last_active + 2) == usercache.FOLD_IDLE_CHUNK
    v.store.close()
    v2.store.close()
