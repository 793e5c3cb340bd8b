"""kill -9 of `mfa-radius serve` in the middle of a load, then a restart.

An Accept leaves the server only after the transaction recording its code as used has
committed (group commit), so after the crash: the database passes `PRAGMA integrity_check`, no
device is lost, and no code that got an Access-Accept before the crash is accepted again.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from reliability_helpers import FullServer, Load, enroll_many, require_root_and

from mfa_radius.otp import time_step
from mfa_radius.radius import codec

USERS = 300


@pytest.fixture
def server():
    require_root_and()
    s = FullServer(extra_toml="[policy]\nlockout_failures = 1000\n")
    yield s
    s.close()


@pytest.mark.parametrize("round_", range(2))
def test_kill_9_under_load_then_restart(server, round_):
    keys = enroll_many(server, USERS)
    devices_before = sorted(d["serial"] for d in server.devices.list())
    server.start()
    step = time_step(time.time(), 30)
    work = [(user, key.code(step)) for user, key in keys.items()]
    with Load(server, work, pace=0.0002) as load:
        # Kill somewhere in the middle: after a varying number of accepts.
        load.wait_accepts(40 + 80 * round_)
        assert load.accepted, server.log()
        server.kill9()
        time.sleep(0.3)  # replies already on their way are still received
    accepted = list(load.accepted)
    print(f"crash: {load.sent} sent, {len(accepted)} accepted before kill -9")
    assert len(set(accepted)) == len(accepted), "one code accepted twice before the crash"
    assert 0 < len(accepted) < USERS

    db = sqlite3.connect(server.dir / "mfa.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert sorted(d["serial"] for d in server.devices.list()) == devices_before

    server.start()
    assert "Traceback" not in server.log()
    for user, code in accepted:
        assert server.ask(user, code) == codec.ACCESS_REJECT, f"{user}'s code accepted again"
    # The server still works: a user whose code was not accepted before the crash can log in
    # with the next step's code.
    fresh = next(u for u in keys if u not in {a[0] for a in accepted})
    assert server.ask(fresh, keys[fresh].code(time_step(time.time(), 30) + 1)) == \
        codec.ACCESS_ACCEPT
    log = server.stop()
    assert "database is locked" not in log
