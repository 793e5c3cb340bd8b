"""Property-based tests (hypothesis) of the window, replay and lockout rules.

Random sequences of (clock advance, which code is typed) run against the real verifier and a small
reference model of the rules. Besides agreeing with the model, every run checks the invariants
directly: a (device, step) is never accepted twice, an accepted step is always inside the window
around the clock (plus the drift learnt so far), and a fresh in-window code is always accepted when
the user is not locked. Runs are also cut into random batches: group commit must not change any
decision.
"""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

from mfa_helpers import assign, make_config

PERIOD = 30
CONFIGS = {
    "defaults": "",
    "wide": "[otp]\ntotp_window = 2\nhotp_window = 4\n"
            "[policy]\nlockout_failures = 3\nlockout_delay = 20\nlockout_max_delay = 70\n",
}
_serials = itertools.count()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def world(request, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp(request.param), CONFIGS[request.param])
    devices = open_devices(cfg)
    verifier = Verifier.open(cfg)
    yield cfg, devices, verifier
    verifier.store.close()
    devices.store.close()


class Lockout:
    """The lockout rule: N consecutive failures lock for delay, doubling, capped."""

    def __init__(self, policy):
        self.policy = policy
        self.failures = 0
        self.locked_until = 0.0

    def locked(self, now: float) -> bool:
        return self.locked_until > now

    def fail(self, now: float) -> None:
        self.failures += 1
        over = self.failures - self.policy.lockout_failures
        if over >= 0:
            self.locked_until = now + min(self.policy.lockout_delay * 2 ** over,
                                          self.policy.lockout_max_delay)

    def succeed(self) -> None:
        self.failures, self.locked_until = 0, 0.0


def wrong_code(key, avoid: set[str]) -> str:
    while True:
        code = str(secrets.randbelow(10 ** key.digits)).zfill(key.digits)
        if code not in avoid:
            return code


def run(verifier, user, attempts, cuts):
    """Verify `attempts` cut into batches at the positions in `cuts`."""
    decisions, start = [], 0
    for end in sorted(set(cuts) | {len(attempts)}):
        if end > start:
            decisions += verifier.verify_batch(attempts[start:end])
            start = end
    return decisions


# (seconds the clock moves, what is typed: ("step", offset from the clock) or ("wrong", 0))
totp_ops = st.lists(st.tuples(
    st.integers(0, 100),
    st.one_of(st.tuples(st.just("step"), st.integers(-4, 4)),
              st.tuples(st.just("step"), st.integers(-60, 60)),
              st.tuples(st.just("wrong"), st.just(0)))), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=totp_ops, start=st.integers(1_500_000_000, 2_500_000_000),
       cuts=st.lists(st.integers(0, 30), max_size=6))
def test_totp_window_replay_and_lockout(world, ops, start, cuts):
    cfg, devices, verifier = world
    w = cfg.otp.totp_window
    n = next(_serials)
    user = f"totp-user-{n}"
    key = assign(devices, user, f"TP{n}", digits=8)

    # Build the attempts and the model's expectations together.
    now = float(start)
    attempts, steps, expected = [], [], []
    last_step, drift, lock = -1, 0, Lockout(cfg.policy)
    accepted_steps: set[int] = set()
    for advance, (kind, offset) in ops:
        now += advance
        clock = int(now) // PERIOD
        centre = clock + drift
        window = range(centre - w, centre + w + 1)
        if kind == "step":
            step = clock + offset
            code = key.code(step)
        else:
            step = None
            code = wrong_code(key, {key.code(s) for s in range(centre - w - 1, centre + w + 2)})
        attempts.append(Attempt(user, code, "prop", now))
        steps.append((step, window))
        if lock.locked(now):
            expected.append("locked")
        elif step is not None and step in window and step > last_step:
            expected.append("ok")
            last_step, drift = step, step - clock
            lock.succeed()
        elif step is not None and step in window:
            expected.append("replay")
        else:
            expected.append("bad_code")
            lock.fail(now)

    decisions = run(verifier, user, attempts, cuts)

    for decision, (step, window), want in zip(decisions, steps, expected):
        if decision.accepted:
            # The invariants, independently of the model's bookkeeping:
            assert step is not None and step in window, "accepted a step outside the window"
            assert step not in accepted_steps, "accepted the same step twice"
            assert step > max(accepted_steps, default=-1), "accepted a step before a used one"
            accepted_steps.add(step)
        assert decision.reason == want, (decision, step, list(window))


hotp_ops = st.lists(st.tuples(
    st.integers(0, 100),
    st.one_of(st.tuples(st.just("counter"), st.integers(-12, 14)),
              st.tuples(st.just("wrong"), st.just(0)))), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=hotp_ops, first=st.integers(0, 10 ** 6), cuts=st.lists(st.integers(0, 30), max_size=6))
def test_hotp_look_ahead_replay_and_lockout(world, ops, first, cuts):
    cfg, devices, verifier = world
    w = cfg.otp.hotp_window
    n = next(_serials)
    user = f"hotp-user-{n}"
    key = assign(devices, user, f"HP{n}", kind="hotp", digits=8, counter=first)

    now = 1_800_000_000.0
    attempts, counters, expected = [], [], []
    nxt, lock = first, Lockout(cfg.policy)
    for advance, (kind, offset) in ops:
        now += advance
        counter = nxt + offset if kind == "counter" and nxt + offset >= 0 else None
        if counter is not None:
            code = key.code(counter)
        else:
            code = wrong_code(key, {key.code(c) for c in range(max(0, nxt - w), nxt + w + 1)})
        attempts.append(Attempt(user, code, "prop", now))
        counters.append((counter, nxt))
        if lock.locked(now):
            expected.append("locked")
        elif counter is not None and nxt <= counter < nxt + w:
            expected.append("ok")
            nxt = counter + 1
            lock.succeed()
        elif counter is not None and max(0, nxt - w) <= counter < nxt:
            expected.append("replay")
        else:
            expected.append("bad_code")
            lock.fail(now)

    decisions = run(verifier, user, attempts, cuts)

    accepted: list[int] = []
    for decision, (counter, expected_next), want in zip(decisions, counters, expected):
        if decision.accepted:
            assert counter is not None and expected_next <= counter < expected_next + w
            assert all(counter > c for c in accepted), "accepted a counter at or below a used one"
            accepted.append(counter)
        assert decision.reason == want, (decision, counter, expected_next)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offsets=st.lists(st.integers(-3, 3), min_size=2, max_size=12),
       start=st.integers(1_500_000_000, 2_500_000_000))
def test_a_batch_of_one_instant_accepts_each_step_at_most_once(world, offsets, start):
    """Many attempts with codes of a few steps, all in one batch at one instant."""
    cfg, devices, verifier = world
    n = next(_serials)
    user = f"batch-user-{n}"
    key = assign(devices, user, f"BP{n}", digits=8)
    clock = start // PERIOD
    now = float(start)
    decisions = verifier.verify_batch(
        [Attempt(user, key.code(clock + o), "prop", now) for o in offsets])
    accepted = [clock + o for o, d in zip(offsets, decisions) if d.accepted]
    assert len(accepted) == len(set(accepted))
    assert accepted == sorted(accepted)
    # Each accepted step lies within the window around the clock plus the drift learnt so far.
    drift = 0
    for step in accepted:
        assert abs(step - (clock + drift)) <= cfg.otp.totp_window
        drift = step - clock
    # The first in-window code is always fresh, hence accepted unless the codes before it locked
    # the user out.
    first_in = next((i for i, o in enumerate(offsets) if abs(o) <= cfg.otp.totp_window), None)
    if first_in is not None and first_in < cfg.policy.lockout_failures:
        assert decisions[first_in].accepted
        assert all(not d.accepted for d in decisions[:first_in])
