"""Admin commands and PAM logins while the daemon is under RADIUS load, all on one database file:
every command succeeds and no "database is locked" reaches anyone (the CLI, pamtester, the log).
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import pyotp
import pytest
from pam_support import SUCCESS, pamtester
from reliability_helpers import FullServer, Load, enroll_many, require_root_and

from mfa_radius.otp import time_step

LOCKED = "database is locked"


@pytest.fixture
def server():
    require_root_and()
    s = FullServer(extra_toml="[policy]\nlockout_failures = 100000\n")
    yield s
    s.close()


def csv_file(server, lines: int, prefix: str) -> str:
    path = server.dir / f"{prefix}.csv"
    path.write_text("".join(f"{prefix}-{i}, {secrets.token_hex(20)}, totp, 6, 30\n"
                            for i in range(lines)))
    return str(path)


def ok(proc) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert LOCKED not in out and "Traceback" not in out, out
    return out


def test_admin_commands_under_radius_load(server):
    keys = enroll_many(server, 200)
    server.start()
    step = time_step(time.time(), 30)
    # Valid codes (one accept each, then replays) and wrong codes: every request writes.
    work = [(u, k.code(step)) for u, k in keys.items()] + [(u, "000000") for u in keys]
    with Load(server, work, pace=0.0003) as load:
        load.wait_accepts(20)
        for rnd in range(3):
            info = json.loads(ok(server.cli("device", "create-virtual", f"V{rnd}", "--json")))
            totp = pyotp.TOTP(info["secret"])
            now = time.time()
            ok(server.cli("device", "enable", f"admin{rnd}", f"V{rnd}", totp.at(now - 30),
                          totp.at(now)))
            out = ok(server.cli("device", "import", csv_file(server, 2000, f"bulk{rnd}"),
                                "--format", "csv"))
            assert "imported 2000 device(s)" in out
            ok(server.cli("report", "--json"))
            ok(server.cli("user", "show", "u1"))
            ok(server.cli("audit", "--limit", "10"))
        sent = load.sent
    print(f"contention: {sent} RADIUS requests during the admin commands, {load.replies}")
    assert load.replies["accept"] >= 20 and load.replies["reject"] > 100
    log = server.stop()
    assert LOCKED not in log and "Traceback" not in log
    assert len(server.devices.list()) == 200 + 3 + 6000


def test_pam_logins_during_bulk_import(server):
    # totp_window = 4 gives each user four fresh codes: enough users for the whole import.
    users = {f"carol{i}": server.enroll(f"carol{i}") for i in range(8)}
    codes = [(u, server.next_code(t)) for _ in range(4) for u, t in users.items()]
    svc = server.service()
    server.start()
    results = []
    done = threading.Event()

    def logins():
        for user, code in codes:
            if done.is_set():
                return
            results.append(pamtester(svc, user, code))

    t = threading.Thread(target=logins)
    t.start()
    try:
        for rnd in range(2):
            ok(server.cli("device", "import", csv_file(server, 2000, f"imp{rnd}"),
                          "--format", "csv"))
    finally:
        done.set()
        t.join(60)
    print(f"contention: {len(results)} PAM logins during two imports of 2,000 tokens")
    assert len(results) >= 3
    for out in results:
        assert SUCCESS in out and LOCKED not in out, out
    assert LOCKED not in server.stop()
