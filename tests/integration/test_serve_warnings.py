"""`mfa-radius serve` logs check-config's warnings at start, one WARNING line each, and serves."""

from __future__ import annotations

import re

from radius_helpers import Daemon


def test_serve_logs_a_short_secret_and_a_wide_range_at_start(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', clients=(
        '[[radius.clients]]\nname = "local"\naddress = "127.0.0.1"\nsecret = "testing123"\n'
        '[[radius.clients]]\nname = "anyone"\naddress = "0.0.0.0/0"\n'
        'secret = "0123456789abcdefXYZ"\nrequire_message_authenticator = false\n'))
    d.start()
    try:
        log = d.log()
    finally:
        assert d.stop() == 0
    warnings = re.findall(r"WARNING mfa_radius: (.*)", log)
    assert len(warnings) == 2, log
    assert warnings[0].startswith(f"{d.path}:") and "RADIUS client 'local': the shared secret " \
        "is 10 characters" in warnings[0]
    assert "RADIUS client 'anyone': address 0.0.0.0/0 admits every host" in warnings[1]
    assert "testing123" not in log
