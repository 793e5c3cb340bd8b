"""Accepted settings that weaken security: `check-config` warns (one stderr line each, naming
file:line, and in --json), `serve` logs the same lines at start."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_config

GOOD_SECRET = "0123456789abcdefXYZ"  # 19 characters
CLIENT = '[[radius.clients]]\nname = "vpn"\naddress = "192.0.2.10"\nsecret = "' + GOOD_SECRET + '"\n'


def _warnings(tmp_path, extra: str) -> list[str]:
    path = write_config(tmp_path, extra)
    result = run_cli(path, "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK")
    lines = result.stderr.splitlines()
    assert all(line.startswith(f"warning: {path}:") for line in lines), lines
    as_json = json.loads(run_cli(path, "check-config", "--json").stdout)
    assert [f"warning: {w}" for w in as_json["warnings"]] == lines
    return lines


def _line_of(tmp_path, text: str) -> int:
    lines = (tmp_path / "mfa-radius.toml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(text))


def test_a_safe_config_has_no_warnings(tmp_path):
    assert _warnings(tmp_path, '[radius]\nlisten = ["127.0.0.1:1812"]\n' + CLIENT
                     + '[metrics]\nlisten = "127.0.0.1:9812"\n') == []


def test_short_client_secret_warns_naming_its_line(tmp_path):
    lines = _warnings(tmp_path, CLIENT.replace(GOOD_SECRET, "testing123"))
    line = _line_of(tmp_path, "secret = ")
    assert lines == [f"warning: {tmp_path}/mfa-radius.toml:{line}: RADIUS client 'vpn': the "
                     "shared secret is 10 characters; use at least 16 random ones (a short "
                     "secret can be guessed offline from one captured packet)"]
    assert "testing123" not in lines[0]


def test_short_secret_file_warns(tmp_path):
    secret = tmp_path / "vpn.secret"
    secret.write_text("Zq9x!\n")
    secret.chmod(0o600)
    lines = _warnings(tmp_path, '[[radius.clients]]\nname = "vpn"\naddress = "192.0.2.10"\n'
                      f'secret_file = "{secret}"\n')
    assert len(lines) == 1
    assert f":{_line_of(tmp_path, 'secret_file')}: RADIUS client 'vpn': the shared secret is 5 " \
           "characters" in lines[0]
    assert "Zq9x!" not in lines[0]


@pytest.mark.parametrize("address", ["0.0.0.0/0", "::/0", "10.0.0.0/7"])
def test_wide_client_range_without_message_authenticator_warns(tmp_path, address):
    extra = CLIENT.replace("192.0.2.10", address) + "require_message_authenticator = false\n"
    lines = _warnings(tmp_path, extra)
    assert len(lines) == 1
    assert f":{_line_of(tmp_path, 'address')}: RADIUS client 'vpn': address {address} admits" \
           in lines[0] and "Message-Authenticator is not required" in lines[0]


def test_wide_range_with_message_authenticator_or_narrow_range_is_quiet(tmp_path):
    assert _warnings(tmp_path, CLIENT.replace("192.0.2.10", "0.0.0.0/0")) == []
    assert _warnings(tmp_path, CLIENT.replace("192.0.2.10", "10.0.0.0/8")
                     + "require_message_authenticator = false\n") == []


def test_wide_range_with_the_global_default_off_warns(tmp_path):
    lines = _warnings(tmp_path, "[radius]\nrequire_message_authenticator = false\n"
                      + CLIENT.replace("192.0.2.10", "0.0.0.0/0"))
    assert len(lines) == 1 and "admits every host" in lines[0]


@pytest.mark.parametrize("exempt", ['["root"]', '["ops", "admin"]'])
def test_privileged_user_in_exempt_users_warns(tmp_path, exempt):
    lines = _warnings(tmp_path, f'[policy]\nprivileged_users = ["root", "admin"]\n'
                      f"exempt_users = {exempt}\n")
    who = "root" if "root" in exempt else "admin"
    assert lines == [f"warning: {tmp_path}/mfa-radius.toml:{_line_of(tmp_path, 'exempt_users')}: "
                     f"'policy.exempt_users' lists privileged user(s) {who}: they sign in with a "
                     "password alone"]


def test_lockout_failures_above_ten_warns(tmp_path):
    assert _warnings(tmp_path, "[policy]\nlockout_failures = 10\n") == []
    lines = _warnings(tmp_path, "[policy]\nlockout_failures = 11\n")
    assert len(lines) == 1 and "'policy.lockout_failures' = 11" in lines[0]
    assert f":{_line_of(tmp_path, 'lockout_failures')}:" in lines[0]


@pytest.mark.parametrize("listen,warned", [("127.0.0.1:9812", False), ("[::1]:9812", False),
                                           (":9812", True),
                                           ("0.0.0.0:9812", True), ("192.0.2.1:9812", True),
                                           ("[::]:9812", True)])
def test_metrics_on_a_non_loopback_address_warns(tmp_path, listen, warned):
    lines = _warnings(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert len(lines) == int(warned)
    if warned:
        assert "'metrics.listen'" in lines[0] and "reachable from other hosts" in lines[0]


def test_relative_pam_socket_warns(tmp_path):
    lines = _warnings(tmp_path, '[pam]\nsocket = "run/pam.sock"\n')
    assert len(lines) == 1 and "'pam.socket' = 'run/pam.sock' is a relative path" in lines[0]
    assert f":{_line_of(tmp_path, 'socket')}:" in lines[0]
