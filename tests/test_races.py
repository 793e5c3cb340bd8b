"""Several processes verifying the same code at the same instant against one database (a SQLite
file, or a PostgreSQL database as the nodes of a cluster share it).

Each round, N processes wait on a barrier and then verify the same code: exactly one must accept.
One process keeps a long-lived Verifier (with its in-memory cache, as the daemon does), the others
open a fresh one per round (as the PAM fallback and the CLI do).
"""

from __future__ import annotations

import multiprocessing
import secrets

import pytest

from mfa_radius import config as config_mod
from mfa_radius.devices import DeviceSpec
from mfa_radius.otp import OtpKey, time_step
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

from mfa_helpers import NOW, make_config

PROCESSES = 4
ROUNDS = 20
# fork: the children start in milliseconds; none of them inherits an open SQLite connection,
# because the parent closes its own before starting them.
CTX = multiprocessing.get_context("fork")


def _worker(index, cfg_path, user, codes_by_round, barrier, results, batch):
    cfg = config_mod.load(cfg_path)
    long_lived = Verifier.open(cfg) if index == 0 else None
    try:
        for rnd, (code, now) in enumerate(codes_by_round):
            verifier = long_lived or Verifier.open(cfg)
            try:
                barrier.wait(timeout=30)
                # The long-lived one decides `batch` copies of the attempt in one group commit,
                # as the daemon does with retransmissions that arrive in the same tick.
                attempts = [Attempt(user, code, f"proc{index}", now)] * (batch if long_lived
                                                                           else 1)
                decisions = verifier.verify_batch(attempts)
            finally:
                if verifier is not long_lived:
                    verifier.store.close()
            for decision in decisions:
                results.put((rnd, index, decision.reason))
    except Exception as exc:  # report, so that the parent fails with a reason, not a timeout
        results.put((-1, index, f"{type(exc).__name__}: {exc}"))
        barrier.abort()
    finally:
        if long_lived:
            long_lived.store.close()


def race(cfg, user, codes_by_round, processes=PROCESSES, batch=1):
    """Run the rounds in `processes` processes; return {round: sorted reasons}."""
    barrier = CTX.Barrier(processes)
    results = CTX.Queue()
    procs = [CTX.Process(target=_worker, args=(i, cfg.path, user, codes_by_round, barrier,
                                               results, batch)) for i in range(processes)]
    for p in procs:
        p.start()
    outcome: dict[int, list[str]] = {}
    try:
        for _ in range((processes - 1 + batch) * len(codes_by_round)):
            rnd, index, reason = results.get(timeout=60)
            assert rnd >= 0, f"worker {index} failed: {reason}"
            outcome.setdefault(rnd, []).append(reason)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs)
    return {r: sorted(v) for r, v in outcome.items()}


@pytest.fixture
def cfg(tmp_path, backend):
    """On each backend: SQLite (processes on one file) and PostgreSQL (processes as the nodes
    of a cluster, each with its own connections to the shared database)."""
    return make_config(tmp_path, "[policy]\nlockout_failures = 1000\n", backend=backend)


def add(cfg, spec):
    devices = open_devices(cfg)
    try:
        devices.add([spec])
    finally:
        devices.store.close()


def test_totp_code_is_accepted_exactly_once_across_processes(cfg):
    seed = secrets.token_bytes(20)
    add(cfg, DeviceSpec("T1", seed, user="alice"))
    key = OtpKey(seed)
    # A new step each round, so that every round has one fresh code to fight over.
    rounds = [(key.code(time_step(NOW + 30 * r, 30)), NOW + 30 * r) for r in range(ROUNDS)]
    outcome = race(cfg, "alice", rounds)
    assert len(outcome) == ROUNDS
    for rnd, reasons in outcome.items():
        assert reasons == ["ok"] + ["replay"] * (PROCESSES - 1), rnd
    check_audit(cfg, "alice", accepts=ROUNDS, total=ROUNDS * PROCESSES)


def test_group_commit_against_single_attempts_in_other_processes(cfg):
    seed = secrets.token_bytes(20)
    add(cfg, DeviceSpec("T1", seed, user="erin"))
    key = OtpKey(seed)
    rounds = [(key.code(time_step(NOW + 30 * r, 30)), NOW + 30 * r) for r in range(ROUNDS)]
    outcome = race(cfg, "erin", rounds, batch=3)
    for rnd, reasons in outcome.items():
        assert reasons == ["ok"] + ["replay"] * (PROCESSES - 1 + 2), rnd


def test_hotp_code_is_accepted_exactly_once_across_processes(cfg):
    seed = secrets.token_bytes(20)
    add(cfg, DeviceSpec("H1", seed, kind="hotp", user="bob"))
    key = OtpKey(seed)
    rounds = [(key.code(r), NOW + r) for r in range(ROUNDS)]
    outcome = race(cfg, "bob", rounds)
    for rnd, reasons in outcome.items():
        assert reasons == ["ok"] + ["replay"] * (PROCESSES - 1), rnd
    check_audit(cfg, "bob", accepts=ROUNDS, total=ROUNDS * PROCESSES)


def test_recovery_code_is_accepted_exactly_once_across_processes(cfg):
    devices = open_devices(cfg)
    try:
        codes = devices.issue_recovery_codes("carol", count=4)
    finally:
        devices.store.close()
    # One code stays unused, so that carol stays enrolled throughout.
    outcome = race(cfg, "carol", [(c, NOW + i) for i, c in enumerate(codes[:3])])
    for rnd, reasons in outcome.items():
        # The others find it used: a replay (not a guess), like a used TOTP step.
        assert reasons == ["ok"] + ["replay"] * (PROCESSES - 1), rnd


def test_concurrent_failures_are_all_counted(cfg):
    seed = secrets.token_bytes(20)
    add(cfg, DeviceSpec("D1", seed, user="dave"))
    key = OtpKey(seed)
    window = {key.code(time_step(NOW, 30) + o) for o in range(-2, 3)}
    wrong = next(c for c in ("418273", "527384", "636495") if c not in window)
    outcome = race(cfg, "dave", [(wrong, NOW)] * 5)
    assert all(r == ["bad_code"] * PROCESSES for r in outcome.values())
    devices = open_devices(cfg)
    try:
        # No lost update: every process saw the others' failures under the write lock.
        assert devices.store.user_row("dave")["failures"] == 5 * PROCESSES
    finally:
        devices.store.close()


def check_audit(cfg, user, accepts, total):
    devices = open_devices(cfg)
    try:
        events = devices.store.audit_events(user=user, limit=10 * total)
    finally:
        devices.store.close()
    assert len(events) == total
    assert sum(e["result"] == "accept" for e in events) == accepts


def _enable_in_child(cfg_path, serial, code1, code2, now):
    devices = open_devices(config_mod.load(cfg_path))
    try:
        devices.enable("frank", serial, code1, code2, now=now)
    finally:
        devices.store.close()


def _deactivate_in_child(cfg_path, serial):
    devices = open_devices(config_mod.load(cfg_path))
    try:
        devices.deactivate("frank", serial)
    finally:
        devices.store.close()


def test_a_long_lived_verifier_sees_changes_made_by_other_processes(cfg):
    seed = secrets.token_bytes(20)
    add(cfg, DeviceSpec("F1", seed))
    key = OtpKey(seed)
    step = time_step(NOW, 30)
    verifier = Verifier.open(cfg)
    try:
        assert verifier.verify(Attempt("frank", "123456", "t", NOW)).reason == "no_device"
        child = CTX.Process(target=_enable_in_child,
                            args=(cfg.path, "F1", key.code(step - 1), key.code(step), NOW))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
        assert verifier.verify(Attempt("frank", key.code(step + 1), "t", NOW)).accepted
        child = CTX.Process(target=_deactivate_in_child, args=(cfg.path, "F1"))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
        later = NOW + 90
        decision = verifier.verify(Attempt("frank", key.code(step + 3), "t", later))
        assert decision.reason == "no_device"
    finally:
        verifier.store.close()
