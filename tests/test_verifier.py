"""The verification rules: windows, replay, drift, HOTP look-ahead, devices, policy, lockout,
recovery codes, audit, group commit, cache invalidation and failing closed."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import replace

import pytest

from mfa_radius import config as config_mod
from mfa_radius.accounts import StaticAccounts
from mfa_radius.errors import DeviceError, KeyFileError, StoreError
from mfa_radius.sealing import create_key_file
from mfa_radius.sms.issuer import issue_code
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

from mfa_helpers import NOW, STEP, assign, make_config, totp_at, verify


class World:
    """A config, a Devices admin connection and verifiers, all on one temporary database."""

    def __init__(self, tmp_path, extra="", accounts=None, backend=None):
        self.cfg = make_config(tmp_path, extra, backend=backend)
        self.devices = open_devices(self.cfg)
        self.accounts = accounts
        self._verifiers = []
        self.v = self.verifier()

    def verifier(self, cfg=None) -> Verifier:
        v = Verifier.open(cfg or self.cfg, accounts=self.accounts)
        self._verifiers.append(v)
        return v

    def user_row(self, name):
        return self.devices.store.user_row(name)

    def device_row(self, serial):
        return self.devices.store.device(serial)

    def audit(self, user=None):
        return self.devices.store.audit_events(user=user)

    def close(self):
        for v in self._verifiers:
            try:
                v.store.close()
            except Exception:
                pass
        self.devices.store.close()


@pytest.fixture
def make_world(tmp_path):
    made = []

    def make(extra="", accounts=None, sub=None):
        path = tmp_path / sub if sub else tmp_path
        path.mkdir(exist_ok=True)
        world = World(path, extra, accounts)
        made.append(world)
        return world

    yield make
    for w in made:
        w.close()


@pytest.fixture
def world(make_world):
    return make_world()


@pytest.fixture
def any_world(tmp_path, backend):
    """A World on each backend (SQLite, PostgreSQL): for the tests of what the store decides
    (consumes, replays, lockouts, recovery codes, others' commits)."""
    world = World(tmp_path, backend=backend)
    yield world
    world.close()


# ---- TOTP window --------------------------------------------------------------------------------

@pytest.mark.parametrize("offset,accepted", [(-2, False), (-1, True), (0, True), (1, True),
                                             (2, False)])
def test_totp_default_window_is_one_step_either_side(world, offset, accepted):
    key = assign(world.devices, "alice", "T1")
    d = verify(world.v, "alice", totp_at(key, NOW, offset))
    assert d.accepted is accepted
    assert d.reason == ("ok" if accepted else "bad_code")
    if accepted:
        assert (d.method, d.serial) == ("totp", "T1")


@pytest.mark.parametrize("window", [0, 3])
def test_totp_window_is_configurable(make_world, window):
    w = make_world(f"[otp]\ntotp_window = {window}\n")
    for offset in range(-window - 1, window + 2):
        key = assign(w.devices, f"u{offset}", f"S{offset}")
        d = verify(w.v, f"u{offset}", totp_at(key, NOW, offset))
        assert d.accepted is (abs(offset) <= window), offset


def test_totp_step_boundaries_follow_the_clock(world):
    key = assign(world.devices, "alice", "T1")
    step_start = STEP * 30
    # The last second of a step and the first of the next are different steps.
    assert verify(world.v, "alice", key.code(STEP), now=step_start + 29.9).accepted
    assert verify(world.v, "alice", key.code(STEP + 2), now=step_start + 30).accepted
    assert not verify(world.v, "alice", key.code(STEP + 4), now=step_start + 59.9).accepted


def test_totp_period_of_the_device_is_used(world):
    key = assign(world.devices, "alice", "P60", period=60)
    assert verify(world.v, "alice", totp_at(key, NOW, 1, period=60)).accepted
    key2 = assign(world.devices, "bob", "P60b", period=60)
    assert not verify(world.v, "bob", totp_at(key2, NOW, 2, period=60)).accepted


@pytest.mark.parametrize("digits,algorithm", [(8, "SHA1"), (6, "SHA256"), (8, "SHA512")])
def test_totp_digits_and_algorithms(world, digits, algorithm):
    key = assign(world.devices, "alice", "X", digits=digits, algorithm=algorithm)
    code = totp_at(key, NOW)
    assert len(code) == digits
    # A 6-digit prefix or suffix of an 8-digit code is not the code.
    assert not verify(world.v, "alice", code[:-1]).accepted
    assert verify(world.v, "alice", code).accepted


def test_codes_are_stripped_of_surrounding_blanks(world):
    key = assign(world.devices, "alice", "T1")
    assert verify(world.v, "alice", f" {totp_at(key, NOW)}\n").accepted


# ---- replay -------------------------------------------------------------------------------------

def test_totp_code_is_accepted_once(any_world):
    world = any_world
    key = assign(world.devices, "alice", "T1")
    code = totp_at(key, NOW)
    assert verify(world.v, "alice", code).accepted
    d = verify(world.v, "alice", code)
    assert (d.accepted, d.reason, d.method, d.serial) == (False, "replay", "totp", "T1")
    # Later in the same step, and in the next step (still inside the window): still a replay.
    assert verify(world.v, "alice", code, now=NOW + 14).reason == "replay"
    assert verify(world.v, "alice", code, now=NOW + 30).reason == "replay"


def test_totp_steps_before_the_accepted_one_are_replays(any_world):
    world = any_world
    key = assign(world.devices, "alice", "T1")
    assert verify(world.v, "alice", totp_at(key, NOW, 0)).accepted
    assert verify(world.v, "alice", totp_at(key, NOW, -1)).reason == "replay"
    # Half a minute later the accepted step is the previous one: still refused.
    assert verify(world.v, "alice", totp_at(key, NOW + 30, -1), now=NOW + 30).reason == "replay"
    assert verify(world.v, "alice", totp_at(key, NOW + 30, -2), now=NOW + 30).reason == "bad_code"
    assert verify(world.v, "alice", totp_at(key, NOW + 30, 0), now=NOW + 30).accepted


def test_replay_is_seen_by_another_verifier(any_world):
    world = any_world
    key = assign(world.devices, "alice", "T1")
    code = totp_at(key, NOW)
    other = world.verifier()
    assert verify(world.v, "alice", "000000" if code != "000000" else "111111").reason == "bad_code"
    assert verify(other, "alice", code).accepted
    # world.v cached alice before `other` consumed the step.
    assert verify(world.v, "alice", code).reason == "replay"


def test_replays_do_not_count_towards_the_lockout(any_world):
    world = any_world
    key = assign(world.devices, "alice", "T1")
    code = totp_at(key, NOW)
    assert verify(world.v, "alice", code).accepted
    for i in range(3 * world.cfg.policy.lockout_failures):
        assert verify(world.v, "alice", code, now=NOW + i * 0.1).reason == "replay"
    assert world.user_row("alice")["failures"] == 0
    assert verify(world.v, "alice", totp_at(key, NOW + 30)).accepted


# ---- drift --------------------------------------------------------------------------------------

def test_drift_is_stored_and_centres_the_window(any_world):
    world = any_world
    key = assign(world.devices, "alice", "T1")
    control = assign(world.devices, "bob", "T2")
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).accepted
    assert world.device_row("T1")["drift"] == 1
    later = NOW + 10 * 30
    # Window at `later` is now steps +0..+2 from the clock, not -1..+1.
    assert verify(world.v, "alice", totp_at(key, later, -1), now=later).reason == "bad_code"
    assert verify(world.v, "alice", totp_at(key, later, 2), now=later).accepted
    assert world.device_row("T1")["drift"] == 2
    # Without drift, +2 is outside the window.
    assert verify(world.v, "bob", totp_at(control, later, 2), now=later).reason == "bad_code"


def test_drift_can_be_negative_and_returns_to_zero(world):
    key = assign(world.devices, "alice", "T1")
    assert verify(world.v, "alice", totp_at(key, NOW, -1)).accepted
    assert world.device_row("T1")["drift"] == -1
    later = NOW + 300
    assert verify(world.v, "alice", totp_at(key, later, 0), now=later).accepted
    assert world.device_row("T1")["drift"] == 0


def test_drift_survives_a_new_verifier(world):
    key = assign(world.devices, "alice", "T1")
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).accepted
    fresh = world.verifier()
    assert verify(fresh, "alice", totp_at(key, NOW + 300, 2), now=NOW + 300).accepted


# ---- HOTP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("counter,accepted", [(0, True), (5, True), (9, True), (10, False),
                                              (50, False)])
def test_hotp_look_ahead_window_default_10(world, counter, accepted):
    key = assign(world.devices, "alice", "H1", kind="hotp")
    d = verify(world.v, "alice", key.code(counter))
    assert (d.accepted, d.reason) == (accepted, "ok" if accepted else "bad_code")
    if accepted:
        assert d.method == "hotp"
        assert world.device_row("H1")["counter"] == counter + 1


def test_hotp_counter_moves_past_the_match(any_world):
    world = any_world
    key = assign(world.devices, "alice", "H1", kind="hotp", counter=100)
    assert verify(world.v, "alice", key.code(104)).accepted
    for used in (104, 103, 100):
        assert verify(world.v, "alice", key.code(used)).reason == "replay"
    assert world.user_row("alice") is None or world.user_row("alice")["failures"] == 0
    assert verify(world.v, "alice", key.code(105)).accepted
    # The window now starts at 106 and is 10 counters wide.
    assert verify(world.v, "alice", key.code(116)).reason == "bad_code"
    assert verify(world.v, "alice", key.code(115)).accepted


def test_hotp_window_is_configurable(make_world):
    w = make_world("[otp]\nhotp_window = 3\n")
    key = assign(w.devices, "alice", "H1", kind="hotp")
    assert not verify(w.v, "alice", key.code(3)).accepted
    assert verify(w.v, "alice", key.code(2)).accepted


def test_hotp_time_does_not_matter(world):
    key = assign(world.devices, "alice", "H1", kind="hotp")
    assert verify(world.v, "alice", key.code(0), now=NOW).accepted
    assert verify(world.v, "alice", key.code(1), now=NOW + 10 ** 6).accepted
    assert verify(world.v, "alice", key.code(2), now=NOW - 10 ** 6).accepted


# ---- several devices, other users ---------------------------------------------------------------

def test_a_code_from_any_of_the_users_devices_works(world):
    keys = [assign(world.devices, "alice", f"D{i}") for i in range(8)]
    # Each device has its own last step: the same instant works once per device.
    for i in (7, 0, 3):
        d = verify(world.v, "alice", totp_at(keys[i], NOW))
        assert (d.accepted, d.serial) == (True, f"D{i}")
    assert verify(world.v, "alice", totp_at(keys[3], NOW)).reason == "replay"


def test_mixed_totp_and_hotp_devices(world):
    totp = assign(world.devices, "alice", "T1")
    hotp = assign(world.devices, "alice", "H1", kind="hotp")
    assert verify(world.v, "alice", hotp.code(0)).method == "hotp"
    assert verify(world.v, "alice", totp_at(totp, NOW)).method == "totp"


def test_ninth_device_is_refused(world):
    for i in range(8):
        assign(world.devices, "alice", f"D{i}")
    ninth = assign(world.devices, None, "D8")
    with pytest.raises(DeviceError, match="8"):
        world.devices.enable("alice", "D8", totp_at(ninth, NOW, -1), totp_at(ninth, NOW), now=NOW)
    with pytest.raises(DeviceError, match="more than 8"):
        assign(world.devices, "alice", "D9")
    assert len(world.devices.list(user="alice")) == 8


def test_max_devices_is_configurable(make_world):
    w = make_world("[policy]\nmax_devices = 2\n")
    assign(w.devices, "alice", "D0")
    assign(w.devices, "alice", "D1")
    key = assign(w.devices, None, "D2")
    with pytest.raises(DeviceError):
        w.devices.enable("alice", "D2", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)


def test_another_users_device_never_authenticates(world):
    assign(world.devices, "alice", "A1")
    bob_key = assign(world.devices, "bob", "B1")
    code = totp_at(bob_key, NOW)
    d = verify(world.v, "alice", code)
    assert (d.accepted, d.reason, d.serial) == (False, "bad_code", None)
    # Bob's code was not consumed by the attempt on alice.
    assert verify(world.v, "bob", code).accepted


def test_unassigned_device_never_authenticates(world):
    assign(world.devices, "alice", "A1")
    loose = assign(world.devices, None, "L1")
    assert verify(world.v, "alice", totp_at(loose, NOW)).reason == "bad_code"


# ---- users without devices, policy --------------------------------------------------------------

def test_unknown_user_and_user_without_device_look_alike(world):
    key = assign(world.devices, "gone", "G1")
    world.devices.deactivate("gone", "G1")
    for user in ("nobody-here", "gone"):
        d = verify(world.v, user, totp_at(key, NOW))
        assert (d.accepted, d.reason, d.method, d.serial) == (False, "no_device", None, None)


def test_nullok_lets_unenrolled_users_through_but_not_enrolled_ones(make_world):
    w = make_world("[policy]\nnullok = true\n", accounts=StaticAccounts({}))
    d = verify(w.v, "carol", "123456")
    assert (d.accepted, d.reason) == (True, "no_device_allowed")
    key = assign(w.devices, "alice", "A1")
    assert verify(w.v, "alice", "x" + totp_at(key, NOW)).reason == "bad_code"
    assert verify(w.v, "alice", totp_at(key, NOW)).reason == "ok"


def test_nullok_never_applies_to_privileged_users(make_world):
    accounts = StaticAccounts({"admin": {"sudo"}, "wheely": {"wheel", "staff"},
                               "ops": {"ops"}, "plain": {"staff"}})
    w = make_world("[policy]\nnullok = true\nprivileged_users = [\"root\", \"ops\"]\n",
                   accounts=accounts)
    for user in ("root", "ops", "admin", "wheely"):
        assert verify(w.v, user, "123456").reason == "no_device", user
        assert w.v.status(user).privileged
        assert not w.v.status(user).allowed_without_device
    assert verify(w.v, "plain", "123456").reason == "no_device_allowed"


def test_root_is_privileged_even_if_not_listed(make_world):
    w = make_world("[policy]\nnullok = true\nprivileged_users = []\nprivileged_groups = []\n",
                   accounts=StaticAccounts({}))
    assert verify(w.v, "root", "123456").reason == "no_device"
    assert verify(w.v, "someone", "123456").reason == "no_device_allowed"


def test_nullok_groups(make_world):
    accounts = StaticAccounts({"temp": {"contractors"}, "boss": {"contractors", "wheel"},
                               "staff": {"users"}})
    w = make_world('[policy]\nnullok_groups = ["contractors"]\n', accounts=accounts)
    assert verify(w.v, "temp", "123456").reason == "no_device_allowed"
    assert verify(w.v, "staff", "123456").reason == "no_device"
    assert verify(w.v, "boss", "123456").reason == "no_device"  # privileged wins


def test_exempt_users_pass_without_a_code_check(make_world):
    w = make_world('[policy]\nexempt_users = ["svc-backup"]\n', accounts=StaticAccounts({}))
    d = verify(w.v, "svc-backup", "anything")
    assert (d.accepted, d.reason) == (True, "exempt")
    assert w.v.status("svc-backup").exempt
    assert not w.v.status("alice").exempt


def test_policy_changes_apply_after_reconfigure(make_world, tmp_path):
    w = make_world(accounts=StaticAccounts({}))
    assert verify(w.v, "carol", "123456").reason == "no_device"
    path = tmp_path / "mfa-radius.toml"
    path.write_text(path.read_text() + "[policy]\nnullok = true\n")
    w.v.reconfigure(config_mod.load(str(path)))
    assert verify(w.v, "carol", "123456").reason == "no_device_allowed"


def test_status(world):
    world.v.accounts = StaticAccounts({})
    assert world.v.status("alice").enrolled is False
    assign(world.devices, "alice", "A1")
    status = world.v.status("alice", now=NOW)
    assert (status.enrolled, status.exempt, status.privileged, status.locked_for) == \
        (True, False, False, 0.0)
    world.devices.issue_recovery_codes("rita", count=1)
    assert world.v.status("rita").enrolled is True


@pytest.mark.parametrize("user,code", [("", "123456"), ("alice", ""), ("alice", "   "),
                                       ("x" * 257, "123456"), ("alice", "1" * 65)])
def test_malformed_attempts(world, user, code):
    assign(world.devices, "alice", "A1")
    d = verify(world.v, user, code)
    assert (d.accepted, d.reason) == (False, "malformed")
    assert world.user_row("alice")["failures"] == 0


def test_wrong_shape_codes_are_bad_codes(world):
    key = assign(world.devices, "alice", "A1")
    code = totp_at(key, NOW)
    for wrong in (code[:-1], code + "1", code[:3] + "a" + code[4:], "١٢٣٤٥٦"):
        assert verify(world.v, "alice", wrong).reason == "bad_code"


# ---- lockout ------------------------------------------------------------------------------------

def _wrong(key, now=NOW):
    """A 6-digit code that is none of the codes near `now` (and unlike any timestamp digits)."""
    window = {totp_at(key, now, o) for o in range(-3, 4)}
    return next(c for c in ("418273", "527384", "636495", "745506") if c not in window)


def test_lockout_after_consecutive_failures(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    n = world.cfg.policy.lockout_failures
    assert n == 5
    for i in range(n):
        assert verify(world.v, "alice", _wrong(key), now=NOW + i).reason == "bad_code"
    t = NOW + n
    d = verify(world.v, "alice", totp_at(key, t), now=t)
    assert (d.accepted, d.reason) == (False, "locked")
    assert 0 < d.retry_after <= 30
    assert world.v.status("alice", now=t).locked_for > 0
    # The right code stays usable once the lock runs out: it was not consumed.
    unlock = NOW + (n - 1) + 30
    assert verify(world.v, "alice", _wrong(key), now=unlock - 0.5).reason == "locked"
    assert verify(world.v, "alice", totp_at(key, unlock), now=unlock).accepted
    assert world.user_row("alice")["failures"] == 0


def test_locked_attempts_do_not_extend_the_lock(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    for i in range(5):
        verify(world.v, "alice", _wrong(key), now=NOW)
    for i in range(20):
        assert verify(world.v, "alice", _wrong(key), now=NOW + i).reason == "locked"
    d = verify(world.v, "alice", _wrong(key), now=NOW + 29)
    assert d.reason == "locked" and d.retry_after == pytest.approx(1)
    assert world.user_row("alice")["failures"] == 5


def test_lock_delay_doubles_and_is_capped(make_world):
    w = make_world("[policy]\nlockout_failures = 3\nlockout_delay = 10\nlockout_max_delay = 50\n")
    key = assign(w.devices, "alice", "A1", kind="hotp")
    bad = "000000" if all(key.code(c) != "000000" for c in range(40)) else "999999"
    t = NOW
    for _ in range(2):
        assert verify(w.v, "alice", bad, now=t).reason == "bad_code"
    delays = []
    for _ in range(5):
        assert verify(w.v, "alice", bad, now=t).reason == "bad_code"
        locked = verify(w.v, "alice", bad, now=t + 0.001)
        assert locked.reason == "locked"
        delays.append(round(locked.retry_after))
        t += locked.retry_after + 0.001
    assert delays == [10, 20, 40, 50, 50]
    # Self-recovery, and a success resets the count.
    assert verify(w.v, "alice", key.code(0), now=t + 1).accepted
    assert verify(w.v, "alice", bad, now=t + 2).reason == "bad_code"
    assert verify(w.v, "alice", bad, now=t + 3).reason == "bad_code"
    assert verify(w.v, "alice", key.code(1), now=t + 4).accepted


def test_success_resets_the_failure_count(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    for _ in range(4):
        verify(world.v, "alice", _wrong(key))
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted
    for _ in range(4):
        assert verify(world.v, "alice", _wrong(key)).reason == "bad_code"
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).accepted


def test_lockout_is_per_user_and_shared_between_processes(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    bob = assign(world.devices, "bob", "B1")
    for _ in range(5):
        verify(world.v, "alice", _wrong(key))
    assert verify(world.verifier(), "alice", totp_at(key, NOW)).reason == "locked"
    assert verify(world.verifier(), "bob", totp_at(bob, NOW)).accepted


def test_unlock_clears_the_lock(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    for _ in range(5):
        verify(world.v, "alice", _wrong(key))
    assert verify(world.v, "alice", totp_at(key, NOW)).reason == "locked"
    with world.devices.store.transaction():
        assert world.devices.store.unlock_user("alice")
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted


def test_unknown_users_are_not_locked_and_leave_no_row(any_world):
    world = any_world
    for _ in range(10):
        assert verify(world.v, "ghost", "123456").reason == "no_device"
    assert world.user_row("ghost") is None


# ---- recovery codes -----------------------------------------------------------------------------

def test_recovery_codes_shape(world):
    codes = world.devices.issue_recovery_codes("alice")
    assert len(codes) == world.cfg.policy.recovery_codes == 10
    assert len(set(codes)) == 10
    assert all(re.fullmatch(r"\d{5}-\d{5}", c) for c in codes)
    assert len(world.devices.issue_recovery_codes("alice", count=3)) == 3
    with pytest.raises(DeviceError):
        world.devices.issue_recovery_codes("alice", count=0)


def test_recovery_code_is_single_use_and_dash_optional(any_world):
    world = any_world
    assign(world.devices, "alice", "A1")
    codes = world.devices.issue_recovery_codes("alice", count=3)
    d = verify(world.v, "alice", codes[0])
    assert (d.accepted, d.reason, d.method, d.serial) == (True, "ok", "recovery", None)
    assert not verify(world.v, "alice", codes[0]).accepted
    assert verify(world.v, "alice", codes[1].replace("-", "")).accepted
    assert verify(world.v, "alice", codes[2].replace("-", " ")).accepted
    assert world.devices.store.user_summary("alice")["recovery_codes_left"] == 0


def test_recovery_codes_alone_enrol_a_user(any_world):
    world = any_world
    codes = world.devices.issue_recovery_codes("alice", count=2)
    assert verify(world.v, "alice", "0000000000").reason == "bad_code"
    assert verify(world.v, "alice", codes[1]).accepted
    assert verify(world.v, "alice", codes[0]).accepted
    # All used: the user is now unenrolled.
    assert verify(world.v, "alice", codes[0]).reason == "no_device"


def test_new_recovery_codes_replace_the_old_ones(any_world):
    world = any_world
    old = world.devices.issue_recovery_codes("alice", count=3)
    new = world.devices.issue_recovery_codes("alice", count=3)
    for code in old:
        if code not in new:
            assert not verify(world.v, "alice", code).accepted
    assert verify(world.v, "alice", new[0]).accepted


def test_recovery_codes_of_one_user_do_not_open_another(world):
    a = world.devices.issue_recovery_codes("alice", count=1)
    world.devices.issue_recovery_codes("bob", count=1)
    assert verify(world.v, "bob", a[0]).reason == "bad_code"


def _db_bytes(cfg) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        path = cfg.storage.database + suffix
        if os.path.exists(path):
            with open(path, "rb") as fh:
                data += fh.read()
    return data


def test_recovery_codes_are_stored_only_as_hashes(world):
    codes = world.devices.issue_recovery_codes("alice", count=10)
    raw = _db_bytes(world.cfg)
    for code in codes:
        assert code.encode() not in raw
        assert code.replace("-", "").encode() not in raw
    rows = world.devices.store.conn.execute("SELECT salt, hash FROM recovery_codes").fetchall()
    assert len(rows) == 10 and all(len(h) == 32 for _, h in rows)
    # The hashes are scrypt (a slow, memory-hard KDF), salted, of the digits without the dash.
    expected = {hashlib.scrypt(c.replace("-", "").encode(), salt=rows[0][0], n=2 ** 14, r=8, p=1,
                               dklen=32) for c in codes}
    assert {h for _, h in rows} == expected
    assert len(rows[0][0]) >= 16


# ---- audit --------------------------------------------------------------------------------------

def test_every_decision_is_audited_without_the_code(make_world):
    w = make_world('[policy]\nexempt_users = ["svc"]\n', accounts=StaticAccounts({}))
    key = assign(w.devices, "alice", "A1")
    recov = w.devices.issue_recovery_codes("alice", count=1)
    good = totp_at(key, NOW)
    wrong = _wrong(key)
    attempts = [("alice", good, "ok", "accept", "totp", "A1"),
                ("alice", good, "replay", "reject", "totp", "A1"),
                ("alice", wrong, "bad_code", "reject", None, None),
                ("alice", recov[0], "ok", "accept", "recovery", None),
                ("nobody", "654321", "no_device", "reject", None, None),
                ("svc", "whatever", "exempt", "accept", None, None),
                ("alice", "", "malformed", "reject", None, None)]
    for i, (user, code, *_rest) in enumerate(attempts):
        w.v.verify(Attempt(user, code, f"radius:vpn{i} nas=10.0.0.{i}", NOW + i))
    events = w.audit()
    assert len(events) == len(attempts)
    for i, (event, (user, code, reason, result, method, serial)) in enumerate(
            zip(events, attempts)):
        assert event == {"time": NOW + i, "user": user, "method": method, "serial": serial,
                         "source": f"radius:vpn{i} nas=10.0.0.{i}", "result": result,
                         "reason": reason}
    dump = repr(w.devices.store.conn.execute("SELECT * FROM audit").fetchall())
    for secret in (good, wrong, recov[0], recov[0].replace("-", ""), "654321", "whatever"):
        assert secret not in dump


def test_locked_decisions_are_audited(world):
    key = assign(world.devices, "alice", "A1")
    for _ in range(6):
        verify(world.v, "alice", _wrong(key))
    reasons = [e["reason"] for e in world.audit("alice")]
    assert reasons == ["bad_code"] * 5 + ["locked"]


# ---- group commit -------------------------------------------------------------------------------

def test_a_batch_is_one_transaction(world):
    keys = {f"u{i}": assign(world.devices, f"u{i}", f"S{i}") for i in range(10)}
    statements = []
    world.v.store.conn.set_trace_callback(statements.append)
    batch = [Attempt(u, totp_at(k, NOW), "radius:vpn", NOW) for u, k in keys.items()]
    batch += [Attempt(u, _wrong(k), "radius:vpn", NOW) for u, k in keys.items()]
    decisions = world.v.verify_batch(batch)
    world.v.store.conn.set_trace_callback(None)
    assert [d.accepted for d in decisions] == [True] * 10 + [False] * 10
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sum(s.startswith("COMMIT") for s in statements) == 1
    assert len(world.audit()) == 20


def test_the_same_code_twice_in_one_batch_is_accepted_once(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    hkey = assign(world.devices, "bob", "H1", kind="hotp")
    code, hcode = totp_at(key, NOW), hkey.code(3)
    decisions = world.v.verify_batch([Attempt("alice", code, "a", NOW),
                                      Attempt("bob", hcode, "a", NOW),
                                      Attempt("alice", code, "b", NOW),
                                      Attempt("bob", hcode, "b", NOW)])
    assert [(d.accepted, d.reason) for d in decisions] == [
        (True, "ok"), (True, "ok"), (False, "replay"), (False, "replay")]


def test_a_batch_sees_its_own_failures_in_order(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    batch = [Attempt("alice", _wrong(key), "x", NOW)] * 5 + [Attempt("alice", totp_at(key, NOW),
                                                                     "x", NOW)]
    decisions = world.v.verify_batch(batch)
    assert [d.reason for d in decisions] == ["bad_code"] * 5 + ["locked"]
    assert world.user_row("alice")["failures"] == 5


def test_empty_batch(world):
    assert world.v.verify_batch([]) == []


# ---- cache invalidation -------------------------------------------------------------------------

def test_device_enabled_by_another_connection_is_seen(any_world):
    world = any_world
    v = world.v
    assert verify(v, "alice", "123456").reason == "no_device"  # alice is now cached, empty
    other = open_devices(world.cfg)
    try:
        key = assign(other, None, "A1")
        other.enable("alice", "A1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)
        assert verify(v, "alice", totp_at(key, NOW, 1)).accepted
        other.deactivate("alice", "A1")
        assert verify(v, "alice", totp_at(key, NOW + 60)).reason == "no_device"
    finally:
        other.store.close()


def test_recovery_codes_issued_by_another_connection_are_seen(any_world):
    world = any_world
    assert verify(world.v, "alice", "1234567890").reason == "no_device"
    codes = world.devices.issue_recovery_codes("alice", count=1)
    assert verify(world.v, "alice", codes[0]).accepted


def test_resync_by_another_connection_is_seen(any_world):
    world = any_world
    key = assign(world.devices, "alice", "H1", kind="hotp")
    assert verify(world.v, "alice", key.code(0)).accepted
    world.devices.resync("alice", "H1", key.code(300), key.code(301), now=NOW)
    assert verify(world.v, "alice", key.code(302)).accepted
    assert verify(world.v, "alice", key.code(1)).reason == "bad_code"


def test_unlock_by_another_connection_is_seen(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    for _ in range(5):
        verify(world.v, "alice", _wrong(key))
    other = world.verifier()
    with other.store.transaction():
        other.store.unlock_user("alice")
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted


def _reads(monkeypatch, verifier) -> list[str]:
    """The users `verifier` reads from the database from now on (Storage.load_user calls)."""
    names: list[str] = []
    load = verifier.store.load_user

    def counted(name):
        names.append(name)
        return load(name)

    monkeypatch.setattr(verifier.store, "load_user", counted)
    return names


def test_another_connections_commit_drops_only_the_users_it_touched(world, monkeypatch):
    alice = assign(world.devices, "alice", "A1")
    bob = assign(world.devices, "bob", "B1")
    assert verify(world.v, "alice", totp_at(alice, NOW)).accepted
    assert verify(world.v, "bob", totp_at(bob, NOW)).accepted
    reads = _reads(monkeypatch, world.v)
    world.devices.deactivate("alice", "A1")  # another connection
    assert verify(world.v, "alice", totp_at(alice, NOW, 1)).reason == "no_device"
    assert verify(world.v, "bob", totp_at(bob, NOW, 1)).accepted
    assert reads == ["alice"]  # bob was not read again


def test_a_write_from_the_sqlite3_shell_is_seen_too(world):
    """The triggers record changes whoever writes, not only mfa-radius's own code."""
    key = assign(world.devices, "alice", "A1")
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted
    shell = sqlite3.connect(world.cfg.storage.database, isolation_level=None)
    try:
        shell.execute("UPDATE devices SET user = NULL WHERE serial = 'A1'")
    finally:
        shell.close()
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).reason == "no_device"


def test_a_step_used_by_another_process_is_a_replay_for_a_stale_cache(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    assert verify(world.v, "alice", totp_at(key, NOW, -1)).accepted  # alice cached, step -1
    other = world.verifier()
    assert verify(other, "alice", totp_at(key, NOW)).accepted  # fires no trigger
    assert verify(world.v, "alice", totp_at(key, NOW)).reason == "replay"
    # Refused, never accepted twice, and the user is read afresh afterwards.
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).accepted
    assert world.user_row("alice") is None or world.user_row("alice")["failures"] == 0


def test_a_mass_change_drops_the_whole_cache(make_world, monkeypatch):
    world = make_world("cache_users = 100\n", sub="small")
    key = assign(world.devices, "alice", "A1")
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted
    reads = _reads(monkeypatch, world.v)
    from mfa_radius.devices import DeviceSpec
    world.devices.add([DeviceSpec(f"M{i}", os.urandom(20), user=f"m{i}") for i in range(30)])
    assert verify(world.v, "alice", totp_at(key, NOW, 1)).accepted
    assert reads == ["alice"]  # more than cache_users/4 changed: all dropped, alice read again


def test_preload_fills_the_cache_so_first_verifies_read_nothing(world, monkeypatch):
    keys = {f"u{i}": assign(world.devices, f"u{i}", f"S{i}") for i in range(5)}
    world.devices.issue_recovery_codes("u0", count=1)
    v = world.verifier()
    assert v.preload() == 5

    def no_reads(name):
        raise AssertionError(f"{name} read from the database")

    monkeypatch.setattr(v.store, "load_user", no_reads)
    assert v.status("u0").recovery and not v.status("u1").recovery
    for name, key in keys.items():
        assert verify(v, name, totp_at(key, NOW)).accepted


def test_preload_stops_at_cache_users(make_world):
    world = make_world("cache_users = 100\n", sub="cap")
    from mfa_radius.devices import DeviceSpec
    world.devices.add([DeviceSpec(f"S{i}", os.urandom(20), user=f"u{i:03d}")
                       for i in range(150)])
    v = world.verifier()
    assert v.preload() == 100
    assert len(v.cache) == 100


def test_preload_over_the_limit_takes_the_most_recently_active_users(make_world):
    world = make_world("cache_users = 100\n", sub="recent")
    from mfa_radius.devices import DeviceSpec
    seeds = {f"u{i:03d}": os.urandom(20) for i in range(150)}
    world.devices.add([DeviceSpec(f"S{i}", seed, user=name)
                       for i, (name, seed) in enumerate(seeds.items())])
    # The last ten users alphabetically signed in a moment ago.
    from mfa_radius.otp import OtpKey
    recent = [f"u{i:03d}" for i in range(140, 150)]
    for name in recent:
        assert verify(world.v, name, totp_at(OtpKey(seeds[name]), NOW)).accepted
    v = world.verifier()
    assert v.preload() == 100
    assert all(name in v.cache for name in recent)


def test_housekeeping_keeps_a_bounded_tail_of_changes(world, monkeypatch):
    from mfa_radius.store import sqlite_audit
    monkeypatch.setattr(sqlite_audit, "CHANGES_KEPT", 3)
    for i in range(6):
        assign(world.devices, f"u{i}", f"S{i}")
    store = world.devices.store
    assert store.conn.execute("SELECT count(*) FROM changes").fetchone()[0] >= 6
    done = store.prune_expired(NOW, idle_before=0)
    assert done["changes"] >= 3
    assert store.conn.execute("SELECT count(*) FROM changes").fetchone()[0] == 3
    # A verifier that fell behind the pruned rows drops everything instead of missing one.
    key = assign(world.devices, "late", "L1")
    assert verify(world.v, "late", totp_at(key, NOW)).accepted


def test_totp_accepts_never_rewrite_the_device_rows(world):
    """White-box (the statements run): a device row is wide (its sealed seed), and a TOTP accept
    must not rewrite it, which nothing outside the database shows. Each accept is one
    conditional write to the step log; the batch's audit rows are one INSERT."""
    alice = assign(world.devices, "alice", "A1")
    bob = assign(world.devices, "bob", "B1")
    v = world.v
    assert verify(v, "alice", totp_at(alice, NOW, -1)).accepted
    statements = []
    v.store.conn.set_trace_callback(statements.append)
    batch = [Attempt("alice", totp_at(alice, NOW), "t", NOW),
             Attempt("bob", totp_at(bob, NOW), "t", NOW),
             Attempt("bob", totp_at(bob, NOW), "t", NOW)]  # the same code twice: one replay
    assert [d.reason for d in v.verify_batch(batch)] == ["ok", "ok", "replay"]
    v.store.conn.set_trace_callback(None)
    assert not [q for q in statements if q.startswith("UPDATE devices")]
    inserts = [q for q in statements if q.startswith("INSERT")]
    assert sum(q.startswith("INSERT INTO recent_steps") for q in inserts) == 2
    # One INSERT for the batch's audit rows (traced once per row).
    assert sum(q.startswith("INSERT INTO audit") for q in inserts) == 3
    assert len(inserts) == 5
    assert world.device_row("B1")["last_step"] == STEP
    assert world.devices.store.steps.waiting() == 2


def test_a_step_used_by_another_process_is_a_replay_here(world):
    key = assign(world.devices, "alice", "A1")
    daemon, other = world.v, world.verifier()
    daemon.preload()
    assert verify(daemon, "alice", totp_at(key, NOW, -1)).accepted
    assert verify(other, "alice", totp_at(key, NOW)).accepted  # e.g. the PAM fallback
    assert verify(daemon, "alice", totp_at(key, NOW)).reason == "replay"
    assert verify(other, "alice", totp_at(key, NOW, -1)).reason == "replay"
    # The daemon holds the log's rows for users it reads from disk later.
    daemon.forget("alice")
    assert verify(daemon, "alice", totp_at(key, NOW)).reason == "replay"


def test_a_step_used_elsewhere_and_folded_before_the_daemon_looked_is_a_replay(world):
    key = assign(world.devices, "alice", "A1")
    daemon, other = world.v, world.verifier()
    daemon.preload()
    assert verify(daemon, "alice", totp_at(key, NOW, -1)).accepted
    assert verify(other, "alice", totp_at(key, NOW)).accepted
    # Housekeeping in a third process folds the step before the daemon looked at it.
    with world.devices.store.transaction():
        world.devices.store.steps.fold()
    assert world.devices.store.steps.waiting() == 0
    assert verify(daemon, "alice", totp_at(key, NOW)).reason == "replay"
    assert verify(daemon, "alice", totp_at(key, NOW, 1)).accepted


def test_the_daemon_folds_when_idle_and_keeps_refusing_used_codes(world):
    keys = {u: assign(world.devices, u, f"S-{u}") for u in ("alice", "bob")}
    v = world.v
    v.preload()
    for u, k in keys.items():
        assert verify(v, u, totp_at(k, NOW)).accepted
    assert not v.fold_due(v.cache.last_active + 0.1)  # busy
    assert v.fold_due(v.cache.last_active + 1.5)  # idle: steps wait
    assert v.fold() == 2
    assert not v.fold_due(v.cache.last_active + 5)
    assert world.devices.store.steps.waiting() == 0
    row = world.devices.store.device("S-alice")
    assert (row["last_step"], row["last_used_at"]) == (STEP, NOW)
    assert verify(v, "alice", totp_at(keys["alice"], NOW)).reason == "replay"
    fresh = world.verifier()
    assert verify(fresh, "bob", totp_at(keys["bob"], NOW)).reason == "replay"
    assert verify(fresh, "bob", totp_at(keys["bob"], NOW, 1)).accepted


def test_a_rolled_back_batch_leaves_no_used_step(world):
    key = assign(world.devices, "alice", "A1")
    admin = world.devices.store.conn
    world.v.preload()
    admin.execute("ALTER TABLE audit RENAME TO audit_away")
    try:
        assert verify(world.v, "alice", totp_at(key, NOW)).reason == "error"
    finally:
        admin.execute("ALTER TABLE audit_away RENAME TO audit")
    assert world.devices.store.steps.waiting() == 0
    assert world.device_row("A1")["last_step"] == -1
    assert verify(world.v, "alice", totp_at(key, NOW)).accepted


# ---- failing closed -----------------------------------------------------------------------------

def test_closed_connection_refuses_everything(world, caplog):
    key = assign(world.devices, "alice", "A1")
    world.v.store.conn.close()
    decisions = world.v.verify_batch([Attempt("alice", totp_at(key, NOW), "x", NOW),
                                      Attempt("nobody", "123456", "x", NOW)])
    assert [(d.accepted, d.reason) for d in decisions] == [(False, "error")] * 2
    # The code was not consumed: a working verifier still accepts it.
    assert verify(world.verifier(), "alice", totp_at(key, NOW)).accepted


def test_failed_commit_rolls_back_the_accept(world):
    key = assign(world.devices, "alice", "A1")
    hkey = assign(world.devices, "bob", "H1", kind="hotp")
    good = [Attempt("alice", totp_at(key, NOW), "x", NOW), Attempt("bob", hkey.code(0), "x", NOW)]
    admin = world.devices.store.conn
    admin.execute("ALTER TABLE audit RENAME TO audit_away")
    try:
        assert [d.reason for d in world.v.verify_batch(good)] == ["error", "error"]
    finally:
        admin.execute("ALTER TABLE audit_away RENAME TO audit")
    assert world.device_row("A1")["last_step"] == -1
    assert world.device_row("H1")["counter"] == 0
    assert [d.accepted for d in world.v.verify_batch(good)] == [True, True]


def test_dropped_table_refuses_everything(world):
    key = assign(world.devices, "alice", "A1")
    world.devices.store.conn.execute("DROP TABLE recovery_codes")
    d = verify(world.v, "alice", totp_at(key, NOW))
    assert (d.accepted, d.reason) == (False, "error")


def test_wrong_key_file_is_refused_at_open(make_world, tmp_path):
    w = make_world()
    key = assign(w.devices, "alice", "A1")
    other_key = tmp_path / "other.key"
    create_key_file(str(other_key))
    path = tmp_path / "mfa-radius.toml"
    path.write_text(path.read_text().replace("secret.key", "other.key"))
    with pytest.raises(KeyFileError, match=r"key file .*other.key does not match database "):
        w.verifier(config_mod.load(str(path)))
    assert verify(w.v, "alice", totp_at(key, NOW)).accepted


def test_a_database_locked_beyond_the_busy_timeout_refuses(make_world):
    w = make_world()
    key = assign(w.devices, "alice", "A1")
    cfg = replace(w.cfg, storage=replace(w.cfg.storage, busy_timeout=0.1))
    v = w.verifier(cfg)
    blocker = sqlite3.connect(w.cfg.storage.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        d = verify(v, "alice", totp_at(key, NOW))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (d.accepted, d.reason) == (False, "error")
    assert verify(v, "alice", totp_at(key, NOW)).accepted


# ---- codes from an independent implementation ---------------------------------------------------

@pytest.mark.skipif(shutil.which("oathtool") is None, reason="oathtool not installed")
@pytest.mark.parametrize("kind,digits,algorithm", [("totp", 6, "SHA1"), ("totp", 8, "SHA256"),
                                                   ("totp", 8, "SHA512"), ("hotp", 6, "SHA1")])
def test_codes_from_oathtool_are_accepted(world, kind, digits, algorithm):
    info = world.devices.create_virtual("O1", kind=kind, digits=digits, algorithm=algorithm)

    def oath(*args):
        return subprocess.run(["oathtool", "-b", "-d", str(digits), *args, info["secret"]],
                              capture_output=True, text=True, check=True).stdout.split()

    if kind == "totp":
        mode = f"--totp={algorithm.lower()}"
        c1, c2 = oath(mode, "-N", f"@{int(NOW) - 30}", "-w", "1")
        world.devices.enable("alice", "O1", c1, c2, now=NOW)
        (code,) = oath(mode, "-N", f"@{int(NOW) + 30}")
        assert verify(world.v, "alice", code, now=NOW + 30).accepted
    else:
        c1, c2, c3 = oath("--hotp", "-c", "0", "-w", "2")
        world.devices.enable("alice", "O1", c1, c2, now=NOW)
        assert verify(world.v, "alice", c3).accepted
        assert verify(world.v, "alice", c2).reason == "replay"


def test_a_failing_commit_refuses_and_releases_the_write_lock(make_world):
    # A deferred foreign key fails at COMMIT time, as a full disk can: SQLite then keeps the
    # transaction (and the write lock) open unless the store rolls it back.
    w = make_world()
    key = assign(w.devices, "alice", "A1")
    admin = w.devices.store.conn
    admin.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    admin.execute("CREATE TABLE child (pid INTEGER REFERENCES parent(id) "
                  "DEFERRABLE INITIALLY DEFERRED)")
    admin.execute("CREATE TRIGGER poison AFTER INSERT ON audit BEGIN "
                  "INSERT INTO child VALUES (42); END")
    d = verify(w.v, "alice", totp_at(key, NOW))
    assert (d.accepted, d.reason) == (False, "error")
    assert not w.v.store.conn.in_transaction
    admin.execute("DROP TRIGGER poison")  # would wait on a lock still held
    assert w.device_row("A1")["last_step"] == -1
    assert verify(w.v, "alice", totp_at(key, NOW)).accepted


def test_open_refuses_a_missing_database_or_a_too_open_key(make_world):
    w = make_world()
    os.chmod(w.cfg.storage.key_file, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Verifier.open(w.cfg)
    os.chmod(w.cfg.storage.key_file, 0o600)
    moved = replace(w.cfg, storage=replace(w.cfg.storage,
                                           database=w.cfg.storage.database + ".missing"))
    with pytest.raises(StoreError, match="mfa-radius init"):
        Verifier.open(moved)
    assert not os.path.exists(moved.storage.database)


def test_a_code_already_accepted_is_refused_even_when_a_fresh_step_gives_the_same_digits(
        tmp_path):
    """RFC 6238 5.2: the same OTP is never accepted twice. Steps 56188870 and 56188871 of the
    RFC 4226 seed both give 617002 (found by search)."""
    from mfa_radius.devices import DeviceSpec
    from mfa_radius.otp import OtpKey

    seed, step = b"12345678901234567890", 56188870
    key = OtpKey(seed)
    assert key.code(step) == key.code(step + 1) == "617002"
    cfg = make_config(tmp_path)
    devices = open_devices(cfg)
    devices.add([DeviceSpec("T1", seed)])
    devices.enable("alice", "T1", key.code(step - 2), key.code(step - 1), now=(step - 1) * 30)
    verifier = Verifier.open(cfg)
    first = verify(verifier, "alice", "617002", now=step * 30 + 1)
    assert first.accepted and first.reason == "ok"
    # Sent again in the next step: it is also step+1's code, but step (used) is in the window:
    # refused as the reuse of an accepted code, named apart from a replay of the same step.
    second = verify(verifier, "alice", "617002", now=(step + 1) * 30 + 1)
    assert not second.accepted and second.reason == "reused_code"
    # The next code works; a replay is not a failure.
    assert verify(verifier, "alice", key.code(step + 2), now=(step + 1) * 30 + 2).accepted
    assert verifier.store.user_row("alice") is None or \
        verifier.store.user_row("alice")["failures"] == 0


def test_debug_log_says_why_a_code_was_refused_without_the_code(tmp_path, caplog):
    import logging

    cfg = make_config(tmp_path)
    key = assign(open_devices(cfg), "alice", "phone-9")
    verifier = Verifier.open(cfg)
    assert verify(verifier, "alice", totp_at(key, NOW)).accepted
    wrong = next(c for c in ("987654", "876543")
                 if c not in (totp_at(key, NOW, o) for o in (-1, 0, 1)))
    with caplog.at_level(logging.DEBUG, logger="mfa_radius.verifier"):
        verify(verifier, "alice", wrong, source="radius:vpn1")
        verify(verifier, "alice", totp_at(key, NOW), source="radius:vpn1")
        verify(verifier, "mallory", wrong, source="pam:sshd")
    text = caplog.text
    assert f"phone-9 (totp, 6 digits): steps {STEP - 1}..{STEP + 1}" in text
    assert "failure 1 of 5" in text
    assert "already used" in text
    assert "no device, recovery code or usable phone" in text
    assert wrong not in text and totp_at(key, NOW) not in text


def test_a_reload_that_folds_case_renames_the_stored_names_first(tmp_path):
    """An exact-case host turning to "fold": Alice's device must not be left where no request
    can reach it (where nullok would let "Alice", now alice, through without a code)."""
    cfg = make_config(tmp_path, '[policy]\nnullok = true\nusername_case = "exact"\n')
    devices = open_devices(cfg)
    key = assign(devices, "Alice", "A-1")
    v = Verifier.open(cfg)
    assert verify(v, "alice", "000000").reason == "no_device_allowed"  # another user, here
    folded = config_mod.from_dict({"storage": {"database": cfg.storage.database,
                                               "key_file": cfg.storage.key_file},
                                   "policy": {"nullok": True}})
    v.reconfigure(folded)
    assert verify(v, "alice", "000000").reason == "bad_code"
    assert verify(v, "ALICE", totp_at(key, NOW)).reason == "ok"
    assert devices.store.device("A-1")["user"] == "alice"


def test_the_verifier_canonicalises_what_it_is_given(tmp_path):
    cfg = make_config(tmp_path, "[policy]\nnullok = true\n")
    key = assign(open_devices(cfg), "alice", "A-1")
    v = Verifier.open(cfg)
    assert verify(v, "EXAMPLE\\ALICE", totp_at(key, NOW)).reason == "ok"
    assert verify(v, "alice\u200b", "000000").reason == "malformed"
    assert v.status("Alice").enrolled and v.status("EXAMPLE\\ALICE").digits == (6,)
    assert issue_code(v, "alice ").reason == "malformed"


# ---- a batch decides as its attempts would one by one --------------------------------------------
# (On PostgreSQL a batch reserves the TOTP steps it will consume in one statement: these pin that
# the reservation changes no decision, whoever used a step first.)

def _mixed_batch(world):
    keys = {u: assign(world.devices, u, f"{u.upper()}-1") for u in ("alice", "bob", "carol")}
    two = assign(world.devices, "frank", "FRANK-1"), assign(world.devices, "frank", "FRANK-2")
    hkey = assign(world.devices, "gina", "GINA-1", kind="hotp")
    lkey = assign(world.devices, "lena", "LENA-1")
    for _ in range(5):  # lena locked
        verify(world.v, "lena", _wrong(lkey))
    other = world.verifier()
    # world.v caches carol, then another node uses her step: her code is a replay in the batch.
    assert verify(world.v, "carol", _wrong(keys["carol"])).reason == "bad_code"
    assert verify(other, "carol", totp_at(keys["carol"], NOW)).accepted
    return [Attempt("alice", totp_at(keys["alice"], NOW), "x", NOW),
            Attempt("bob", _wrong(keys["bob"]), "x", NOW),
            Attempt("carol", totp_at(keys["carol"], NOW), "x", NOW),
            Attempt("frank", totp_at(two[1], NOW, 1), "x", NOW),
            Attempt("gina", hkey.code(0), "x", NOW),
            Attempt("lena", totp_at(lkey, NOW), "x", NOW),
            Attempt("nobody", "123456", "x", NOW),
            Attempt("ALICE\u200b", "123456", "x", NOW),
            Attempt("bob", totp_at(keys["bob"], NOW), "x", NOW)]


EXPECTED_MIXED = [(True, "ok"), (False, "bad_code"), (False, "replay"), (True, "ok"),
                  (True, "ok"), (False, "locked"), (False, "no_device"), (False, "malformed"),
                  (True, "ok")]


def test_a_mixed_batch_is_decided_as_its_attempts_one_by_one(any_world):
    batch = _mixed_batch(any_world)
    decisions = any_world.v.verify_batch(batch)
    assert [(d.accepted, d.reason) for d in decisions] == EXPECTED_MIXED
    # The TOTP steps the batch used are used: each of those codes again is a replay, on
    # another verifier too.
    again = [Attempt(a.user, a.code, "y", NOW) for a, d in zip(batch, decisions)
             if d.accepted and d.method == "totp"]
    assert len(again) == 3
    assert [d.reason for d in any_world.verifier().verify_batch(again)] == ["replay"] * 3
    # The locked user's code was not used up by the batch: once unlocked, it works.
    lena = next(a for a in batch if a.user == "lena")
    assert any_world.devices.store.unlock_user("lena")
    assert verify(any_world.verifier(), "lena", lena.code).accepted


def test_a_batch_in_which_one_user_comes_twice_uses_the_step_once(any_world):
    world = any_world
    key = assign(world.devices, "alice", "A1")
    others = [assign(world.devices, f"u{i}", f"U{i}") for i in range(5)]
    batch = ([Attempt(f"u{i}", totp_at(k, NOW), "x", NOW) for i, k in enumerate(others)]
             + [Attempt("alice", _wrong(key), "x", NOW), Attempt("alice", totp_at(key, NOW), "x", NOW),
                Attempt("alice", totp_at(key, NOW), "x", NOW)])
    decisions = world.v.verify_batch(batch)
    assert [d.reason for d in decisions] == ["ok"] * 5 + ["bad_code", "ok", "replay"]
    assert world.user_row("alice")["failures"] == 0
