"""`password_backend = "ldap"`: the [ldap] settings as check-config and serve see them, and the
escaping of user names into filters and bind names (RFC 4515, RFC 4514)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli, write_config
from mfa_radius.config.schema import DEFAULT_USER_FILTER
from mfa_radius.directory.ldap import Directory, bind_name, group_name, user_filter


@pytest.mark.parametrize("name, escaped", [
    ("*)(uid=*", r"\2a\29\28uid=\2a"),
    ("alice)(|(objectClass=*", r"alice\29\28|\28objectClass=\2a"),
    ("a\\b", r"a\5cb"),
    ("nul\x00", r"nul\00"),
    ("alice", "alice"),
])
def test_user_names_are_escaped_in_the_filter(name, escaped):
    flt = user_filter(DEFAULT_USER_FILTER, name)
    assert flt.count(escaped) == 3  # uid, sAMAccountName, userPrincipalName
    assert flt.count("(") == flt.count(")") == DEFAULT_USER_FILTER.count("(")


def test_bind_format_escapes_a_dn_but_not_a_upn():
    assert bind_name("{user}@example.com", "alice") == "alice@example.com"
    assert bind_name("EXAMPLE\\{user}", "alice") == "EXAMPLE\\alice"
    assert bind_name("uid={user},ou=people,dc=example,dc=com", "a,uid=root") == \
        "uid=a\\,uid\\=root,ou=people,dc=example,dc=com"


def test_group_name_is_the_first_rdn_value():
    assert group_name("cn=VPN Users,ou=groups,dc=example,dc=com") == "VPN Users"
    assert group_name("not a dn") == "not a dn"


def test_an_empty_password_never_reaches_a_bind():
    class Settings:
        servers = ["ldaps://192.0.2.1"]  # never asked: an empty password returns first
        ca_file = ""
        connect_timeout = 0.1
        timeout = 0.1
        pool_size = 1
        bind_dn = "cn=search"
        starttls = False

    directory = Directory(Settings())
    assert directory.authenticate("alice", "") is None
    assert directory.authenticate("alice", "pw\x00") is None


def ldap_config(tmp_path: Path, ldap: str, radius: str = 'password_backend = "ldap"\n') -> Path:
    return write_config(tmp_path, f"\n[radius]\n{radius}\n[ldap]\n{ldap}")


def secret_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "bind.pw"
    path.write_text("pw\n")
    os.chmod(path, mode)
    return path


SEARCH = 'bind_dn = "cn=search,dc=example,dc=com"\nbase_dn = "dc=example,dc=com"\n'


@pytest.mark.parametrize("ldap, message", [
    ("", "needs 'ldap.servers'"),
    ('servers = ["ldap://dc1.example.com"]\n' + SEARCH, "without TLS would send passwords in "
     "clear"),
    ('servers = ["http://dc1"]\n', "is not ldap://HOST[:PORT] or ldaps://HOST[:PORT]"),
    ('servers = ["ldaps://dc1"]\n', "exactly one of 'bind_dn'"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\n' + SEARCH, "exactly one of"),
    ('servers = ["ldaps://dc1"]\nbind_dn = "cn=s"\nbase_dn = "dc=x"\n',
     "needs 'ldap.bind_password_file'"),
    ('servers = ["ldaps://dc1"]\nbind_format = "alice@x"\n', "must contain {user}"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\nuser_filter = "(uid=alice)"\n',
     "holding {user}"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\nuser_filter = "(uid={user})(x=1)"\n',
     "one parenthesised LDAP filter"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\nrequired_groups = ["vpn"]\n',
     "set 'ldap.base_dn'"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\nbase_dn = "dc=x"\n'
     'group_filter = "(member=x)"\n', "holding {dn}"),
    ('servers = ["ldaps://dc1"]\nbind_format = "{user}@x"\nbogus = 1\n', "unknown key"),
])
def test_check_config_refuses_bad_ldap_settings(tmp_path, ldap, message):
    result = run_cli(ldap_config(tmp_path, ldap), "check-config")
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert f"{tmp_path}/mfa-radius.toml:" in result.stderr  # file and line
    assert len(result.stderr.strip().splitlines()) == 1


def test_ldap_section_without_the_ldap_backend_is_refused(tmp_path):
    result = run_cli(ldap_config(tmp_path, 'servers = ["ldaps://dc1"]\n', radius=""),
                     "check-config")
    assert result.returncode == 2
    assert "only used with [radius] password_backend" in result.stderr


def test_bind_password_file_must_be_private(tmp_path):
    pw = secret_file(tmp_path, 0o644)
    result = run_cli(ldap_config(tmp_path, f'servers = ["ldaps://dc1"]\n{SEARCH}'
                                 f'bind_password_file = "{pw}"\n'), "check-config")
    assert result.returncode == 2
    assert "mode 0644 lets others read it" in result.stderr


def test_ca_file_must_hold_a_certificate(tmp_path):
    pw = secret_file(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    result = run_cli(ldap_config(tmp_path, f'servers = ["ldaps://dc1"]\n{SEARCH}'
                                 f'bind_password_file = "{pw}"\nca_file = "{ca}"\n'),
                     "check-config")
    assert result.returncode == 2
    assert "no PEM certificate" in result.stderr


def test_good_ldap_settings_pass_and_plaintext_is_warned_about(tmp_path):
    pw = secret_file(tmp_path)
    result = run_cli(ldap_config(tmp_path, f'servers = ["ldaps://dc1", "ldap://dc2"]\n{SEARCH}'
                                 f'bind_password_file = "{pw}"\nallow_plaintext = true\n'),
                     "check-config")
    assert result.returncode == 0, result.stderr
    assert "ldap://dc2 without TLS" in result.stderr
    assert "ldaps://dc1 without TLS" not in result.stderr
    result = run_cli(ldap_config(tmp_path, f'servers = ["ldap://dc2"]\nstarttls = true\n'
                                 f'{SEARCH}bind_password_file = "{pw}"\n'), "check-config")
    assert result.returncode == 0, result.stderr
    assert "without TLS" not in result.stderr


def test_probe_without_the_ldap_backend_says_so(tmp_path):
    result = run_cli(write_config(tmp_path), "check-config", "--probe")
    assert result.returncode != 0
    assert "nothing to probe" in result.stderr
