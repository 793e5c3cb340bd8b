"""Recovery codes through the CLI: a used one is a replay (not a guess), and a valid one opens a
locked account (with its own hourly limit), so that whoever keeps an account locked with wrong
codes cannot keep its owner out."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, write_config

from mfa_radius import config as config_mod
from mfa_radius.state import init
from mfa_radius.rules.lockout import LOCKED_RECOVERY_PER_HOUR


@pytest.fixture
def cfg_path(tmp_path, backend):
    """On each backend: the CLI over SQLite and over PostgreSQL."""
    path = write_config(tmp_path, "[policy]\nlockout_failures = 2\nlockout_delay = 3600\n"
                                  "lockout_max_delay = 86400\n", backend=backend)
    init(config_mod.load(str(path)))
    return path


def codes(cfg_path, user, count=3):
    result = run_cli(cfg_path, "user", "recovery-codes", user, "--count", str(count), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["codes"]


def show(cfg_path, user) -> dict:
    return json.loads(run_cli(cfg_path, "user", "show", user, "--json").stdout)


def verify(cfg_path, user, code):
    return run_cli(cfg_path, "verify", user, code)


def lock(cfg_path, user):
    for _ in range(2):
        assert "bad_code" in verify(cfg_path, user, "0000000000").stderr
    assert "locked" in verify(cfg_path, user, "0000000000").stderr
    assert show(cfg_path, user)["locked"]


def test_a_used_recovery_code_is_a_replay_and_does_not_count_towards_the_lockout(cfg_path):
    first, _, _ = codes(cfg_path, "rita")
    assert verify(cfg_path, "rita", first).returncode == 0
    for _ in range(5):
        again = verify(cfg_path, "rita", first)
        assert again.returncode == 1 and "refused: replay" in again.stderr, again.stderr
    info = show(cfg_path, "rita")
    assert info["failures"] == 0 and not info["locked"]
    audit = json.loads(run_cli(cfg_path, "audit", "--user", "rita", "--json").stdout)
    assert [(r["reason"], r["method"]) for r in audit] == [("ok", "recovery")] + [("replay", "recovery")] * 5


def test_a_valid_recovery_code_opens_a_locked_account(cfg_path):
    first, second, _ = codes(cfg_path, "root")
    lock(cfg_path, "root")
    result = verify(cfg_path, "root", second)
    assert result.returncode == 0 and "accepted (recovery)" in result.stdout, result.stderr
    info = show(cfg_path, "root")
    assert not info["locked"] and info["failures"] == 0 and info["recovery_codes_left"] == 2
    # A device-length code while locked is still refused without being checked.
    lock(cfg_path, "root")
    assert "refused: locked" in verify(cfg_path, "root", "123456").stderr
    assert verify(cfg_path, "root", first).returncode == 0


def test_recovery_codes_while_locked_are_limited_per_hour_and_do_not_lengthen_it(cfg_path):
    good = codes(cfg_path, "root", 1)[0]
    lock(cfg_path, "root")
    until = show(cfg_path, "root")["locked_until"]
    wrong = "1111111111" if good.replace("-", "") != "1111111111" else "2222222222"
    for _ in range(LOCKED_RECOVERY_PER_HOUR):
        assert "refused: locked" in verify(cfg_path, "root", wrong).stderr
    info = show(cfg_path, "root")
    assert info["locked_until"] == until and info["failures"] == 2
    # The hour's tries are spent: even the right code waits (and is not used up).
    assert "refused: locked" in verify(cfg_path, "root", good).stderr
    assert show(cfg_path, "root")["recovery_codes_left"] == 1
