"""`check-config` accepts exactly what `serve` accepts: the same refusals, naming file and line."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import MFA, run_cli, write_config
from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError

CLIENT = '\n[[radius.clients]]\nname = "vpn"\naddress = "{address}"\n{secret}\n'


def client(address="192.0.2.10", secret='secret = "s3cret"'):
    return CLIENT.format(address=address, secret=secret)


# (extra config, the line the error must name, a piece of the message)
BAD = {
    "listen localhost": ('\n[radius]\nlisten = ["localhost"]\n', 7, "not HOST:PORT"),
    "listen without port": ('\n[radius]\nlisten = ["1.2.3.4"]\n', 7, "not HOST:PORT"),
    "listen port too big": ('\n[radius]\nlisten = ["127.0.0.1:99999"]\n', 7, "1-65535"),
    "listen bare IPv6": ('\n[radius]\nlisten = ["::1:1812"]\n', 7, "[ADDR]:PORT"),
    "listen a word": ('\n[radius]\nlisten = ["not-an-address"]\n', 7, "not HOST:PORT"),
    "listen a name": ('\n[radius]\nlisten = ["localhost:1812"]\n', 7, "not an IP address"),
    "empty challenge message": ('\n[radius]\nchallenge_message = ""\n', 7, "1-253 octets"),
    "client address": (client(address="bogus"), 8, "'bogus' is not an IP address"),
    "unknown reply attribute": ('\n[[radius.replies]]\nuser = "alice"\n'
                                'attributes = { Nonsense-Attr = "x" }\n', 8,
                                "unknown RADIUS attribute 'Nonsense-Attr'"),
    "reserved reply attribute": ('\n[[radius.replies]]\ngroup = "vpn"\n'
                                 '[radius.replies.attributes]\nState = "x"\n', 8,
                                 "set by the server"),
    # As root, the trust check of the files serve reads comes first (it names the file itself).
    "missing secret file": (client(secret='secret_file = "/nonexistent/radius.secret"'),
                            None if os.geteuid() == 0 else 9,
                            "/nonexistent" if os.geteuid() == 0 else "no such file"),
    "metrics listen": ('\n[metrics]\nlisten = "localhost"\n', 7, "'metrics.listen' must be"),
    "metrics listen a name": ('\n[metrics]\nlisten = "localhost:9812"\n', 7,
                              "not an IP address (write 127.0.0.1 or [::1])"),
}


def serve(cfg_path) -> subprocess.CompletedProcess:
    return subprocess.run([MFA, "--config", str(cfg_path), "serve"], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_config_refuses_what_serve_refuses_with_file_and_line(cfg_path, name):
    extra, line, message = BAD[name]
    cfg = write_config(cfg_path.parent, extra)
    checked = run_cli(cfg, "check-config")
    served = serve(cfg)
    for result in (checked, served):
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert "Traceback" not in result.stderr
        where = f"{cfg}:{line}: " if line is not None else ""
        assert result.stderr.startswith(f"mfa-radius: {where}"), result.stderr
        assert message in result.stderr
    assert checked.stderr == served.stderr.splitlines(keepends=True)[-1]
    assert checked.stdout == ""


def test_check_config_reads_client_secret_files_as_serve_does(cfg_path, tmp_path):
    secret = tmp_path / "radius.secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    cfg = write_config(tmp_path, client(secret=f'secret_file = "{secret}"'))
    checked = run_cli(cfg, "check-config")
    assert checked.returncode == 2 and f"{cfg}:9: " in checked.stderr
    assert f"chmod 600 {secret}" in checked.stderr
    assert serve(cfg).stderr.splitlines()[-1] == checked.stderr.rstrip("\n")
    os.chmod(secret, 0o600)
    assert run_cli(cfg, "check-config").returncode == 0


def test_plain_load_skips_the_serving_checks_for_the_pam_fallback(tmp_path):
    """The PAM fallback loads the config in a login process: no RADIUS secret is read there."""
    cfg = write_config(tmp_path, client(secret='secret_file = "/nonexistent/radius.secret"'))
    assert config_mod.load(str(cfg)).radius.clients[0].name == "vpn"
    with pytest.raises(ConfigError, match="radius.secret"):
        config_mod.load(str(cfg), serving=True)


def test_check_config_accepts_good_listen_addresses(cfg_path):
    cfg = write_config(cfg_path.parent, '\n[radius]\nlisten = ["127.0.0.1:1812", "[::1]:1812"]\n'
                       '\n[metrics]\nlisten = ":9812"\n')
    result = run_cli(cfg, "check-config")
    assert result.returncode == 0, result.stderr


def test_check_config_shows_a_gateway_with_its_own_keys_and_effective_name(cfg_path, tmp_path):
    cfg = write_config(tmp_path, f'\n[[sms.gateways]]\ntype = "file"\npath = "{tmp_path}/sms"\n')
    data = json.loads(run_cli(cfg, "check-config", "--json").stdout)
    assert data["sms"]["gateways"] == [{"type": "file", "name": "file-1",
                                        "path": f"{tmp_path}/sms"}]
    text = run_cli(cfg, "check-config").stdout
    line = next(x for x in text.splitlines() if x.strip().startswith("gateways ="))
    assert '"name": "file-1"' in line and "account_sid" not in line and "url" not in line
