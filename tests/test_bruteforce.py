"""The guessing rate README promises: an attacker at full speed gets at most 34 guesses on day one."""

from __future__ import annotations

import base64

import pyotp

from mfa_radius.devices import DeviceSpec

from mfa_radius.verifier import Attempt, Verifier

DAY = 86400


def guesses_reaching_the_code_check(verifier: Verifier, start: float, seconds: float) -> int:
    """Guess a wrong code whenever the user is not locked (the attacker's best strategy)."""
    now, checked = start, 0
    while now < start + seconds:
        decision = verifier.verify(Attempt("alice", "000000", source="attacker", now=now))
        if decision.reason == "locked":
            now += decision.retry_after
            continue
        assert decision.reason == "bad_code"
        checked += 1
        now += 0.001
    return checked


def test_guessing_rate_per_day_is_bounded_as_documented(devices, cfg):
    # A fixed seed and start time make the run deterministic ("000000" is never a valid code here).
    seed = b"12345678901234567890"
    devices.add([DeviceSpec("p1", seed)])
    t = pyotp.TOTP(base64.b32encode(seed).decode())
    start = 1_800_000_000.0
    devices.enable("alice", "p1", t.at(start - 30), t.at(start), now=start)
    verifier = Verifier.open(cfg)
    first_day = guesses_reaching_the_code_check(verifier, start + 60, DAY)
    second_day = guesses_reaching_the_code_check(verifier, start + 60 + DAY, DAY)
    assert first_day == 34
    assert second_day == 24
