"""`make run` demo state: created once under ./var, kept on re-runs, the printed code works."""

from __future__ import annotations

import base64
import time

from mfa_radius import config as config_mod
from mfa_radius import demo
from mfa_radius.otp import OtpKey, time_step
from mfa_radius.verifier import Attempt, Verifier


def test_demo_state_created_once_and_code_accepted(tmp_path, capsys):
    var = tmp_path / "var"
    path, info = demo.setup(str(var))
    again_path, again = demo.setup(str(var))
    assert (again_path, again) == (path, info)  # re-running keeps the state
    cfg = config_mod.load(path)
    assert cfg.radius.listen == ["127.0.0.1:1812"]
    assert cfg.radius.password_backend == "none"
    assert [(c.address, c.secret) for c in cfg.radius.clients] == [("127.0.0.1", "testing123")]
    assert cfg.storage.database.startswith(str(var))
    assert (var / "demo-device.json").stat().st_mode & 0o077 == 0

    seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
    code = OtpKey(seed).code(time_step(time.time(), 30))
    verifier = Verifier.open(cfg)
    try:
        decision = verifier.verify(Attempt("demo", code, "test"))
    finally:
        verifier.store.close()
    assert decision.accepted and decision.reason == "ok"

    demo.show(info)
    out = capsys.readouterr().out
    assert "radtest demo <code> 127.0.0.1 0 testing123" in out
    assert info["secret"] in out
