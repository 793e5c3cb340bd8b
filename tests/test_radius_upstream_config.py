"""`password_backend = "radius"`'s `[[radius.upstream]]` servers and the per-client policy keys:
what `check-config` and `serve` accept and refuse (each error naming file and line)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import write_config

from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError
from mfa_radius.radius.clients import ClientTable

UPSTREAM = """
[[radius.upstream]]
address = "192.0.2.20:1812"
secret = "upstream-secret-xyz"
"""


def load(tmp_path, radius: str, rest: str = "", serving: bool = False):
    path = write_config(tmp_path, "[radius]\n" + radius + rest)
    return config_mod.load(str(path), serving=serving)


def client(extra: str = "", address: str = "192.0.2.10") -> str:
    return (f'[[radius.clients]]\nname = "c{address.rsplit(".", 1)[-1]}"\naddress = "{address}"\n'
            f'secret = "client-secret-123"\n{extra}')


def test_upstream_servers_and_policy_keys_are_read(tmp_path):
    cfg = load(tmp_path, 'password_backend = "radius"\npass_reply_attributes = true\n',
               UPSTREAM + client('password_backend = "none"\ngroups = ["vpn"]\nnullok = true\n')
               + client("code_required = false\n", "192.0.2.11"))
    assert cfg.radius.upstream[0].timeout == 3.0 and cfg.radius.upstream[0].retries == 1
    table = ClientTable.from_config(cfg)
    first, second = table.lookup("192.0.2.10"), table.lookup("192.0.2.11")
    assert (first.password_backend, first.groups, first.nullok, first.code_required) == \
        ("none", frozenset({"vpn"}), True, True)
    assert (second.password_backend, second.nullok, second.code_required) == \
        ("radius", None, False)
    assert config_mod.describe(cfg)["radius"]["upstream"][0]["secret"] == "********"


@pytest.mark.parametrize("radius, rest, message", [
    ('password_backend = "radius"\n', "", r'needs \[\[radius.upstream\]\] servers'),
    ("", client('password_backend = "radius"\n'), r"client 'c10'.*needs \[\[radius.upstream"),
    ('password_backend = "none"\n', client("code_required = false\n"),
     r"code_required = false needs a password backend"),
    ('password_backend = "radius"\n', '[[radius.upstream]]\naddress = "nps1:1812"\n'
     'secret = "s3cret-s3cret"\n', r"'nps1' is not an IP address"),
    ('password_backend = "radius"\n', '[[radius.upstream]]\naddress = "192.0.2.1:1812"\n',
     r"needs exactly one of 'secret' or 'secret_file'"),
    ('password_backend = "radius"\n', UPSTREAM + "port = 1812\n", r"unknown key"),
    ("", client('password_backend = "ldapx"\n'), r"must be one of"),
    ('password_backend = "radius"\n', UPSTREAM + "timeout = 0\n", r"at least 0.1"),
])
def test_bad_upstream_and_policy_settings_are_refused_with_the_line(tmp_path, radius, rest,
                                                                    message):
    with pytest.raises(ConfigError, match=message) as err:
        load(tmp_path, radius, rest)
    assert re.search(r"mfa-radius\.toml:\d+:", str(err.value)), str(err.value)


def test_upstream_secret_file_must_be_private(tmp_path):
    secret = tmp_path / "nps.secret"
    secret.write_text("from-a-file-secret\n")
    os.chmod(secret, 0o644)
    rest = f'[[radius.upstream]]\naddress = "192.0.2.20:1812"\nsecret_file = "{secret}"\n'
    with pytest.raises(ConfigError, match="upstream RADIUS server '192.0.2.20:1812'"):
        load(tmp_path, 'password_backend = "radius"\n', rest, serving=True)
    os.chmod(secret, 0o600)
    load(tmp_path, 'password_backend = "radius"\n', rest, serving=True)


def test_password_only_client_and_short_upstream_secret_warn(tmp_path):
    cfg = load(tmp_path, 'password_backend = "radius"\n',
               '[[radius.upstream]]\naddress = "192.0.2.20:1812"\nsecret = "short"\n'
               + client("code_required = false\n"))
    lines = config_mod.warnings(cfg)
    assert any("code_required = false: its users sign in with a password alone" in line
               for line in lines), lines
    assert any("upstream RADIUS server 192.0.2.20:1812: the shared secret is 5" in line
               for line in lines), lines
