"""The TOML configuration: defaults, unknown keys, types, bounds, errors naming file:line:key."""

from __future__ import annotations

import pytest

from mfa_radius import config as config_mod
from mfa_radius.config import (Config, OtpConfig, PamConfig, PolicyConfig, RadiusConfig,
                               StorageConfig, describe, load, resolve_path)
from mfa_radius.errors import ConfigError

MINIMAL = '[storage]\ndatabase = "/tmp/x/mfa.db"\nkey_file = "/tmp/x/secret.key"\n'


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "mfa-radius.toml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert info.value.exit_code == 2
    return message


# ---- defaults ------------------------------------------------------------------------------------

def test_two_keys_are_enough(write):
    cfg = load(write(MINIMAL))
    assert cfg.storage.database == "/tmp/x/mfa.db"
    assert cfg.storage.key_file == "/tmp/x/secret.key"
    assert cfg.otp == OtpConfig() and cfg.policy == PolicyConfig()
    assert cfg.radius == RadiusConfig() and cfg.pam == PamConfig()


def test_an_empty_file_is_all_defaults(write):
    path = write("")
    cfg = load(path)
    assert cfg == Config(path=path)
    assert cfg.storage == StorageConfig()


def test_storage_defaults():
    s = StorageConfig()
    assert (s.database, s.key_file, s.synchronous, s.busy_timeout) == (
        "/var/lib/mfa-radius/mfa.db", "/etc/mfa-radius/secret.key", "normal", 10.0)


def test_otp_defaults():
    o = OtpConfig()
    assert (o.totp_window, o.hotp_window, o.resync_window, o.issuer) == (1, 10, 1000, "mfa-radius")


def test_policy_defaults():
    p = PolicyConfig()
    assert (p.lockout_failures, p.lockout_delay, p.lockout_max_delay) == (5, 30.0, 3600.0)
    assert p.nullok is False and p.nullok_groups == [] and p.exempt_users == []
    assert p.privileged_users == ["root"] and p.privileged_groups == ["sudo", "wheel"]
    assert (p.max_devices, p.recovery_codes) == (8, 10)


def test_radius_defaults():
    r = RadiusConfig()
    assert r.listen == ["127.0.0.1:1812"]
    assert (r.password_backend, r.pam_service, r.pam_workers) == ("pam", "mfa-radius", 4)
    assert r.require_message_authenticator is True
    assert (r.password_split, r.delimiter) == ("suffix", ",")
    assert r.clients == [] and r.replies == []


def test_pam_defaults():
    p = PamConfig()
    assert (p.socket, p.unprivileged_callers) == ("/run/mfa-radius/pam.sock", "self")


def test_defaults_are_not_shared_between_instances():
    a, b = PolicyConfig(), PolicyConfig()
    assert a.privileged_groups is not b.privileged_groups


def test_values_are_read(write):
    cfg = load(write(MINIMAL + '\n[otp]\ntotp_window = 2\nissuer = "ACME"\n'
                     '[policy]\nnullok = true\nexempt_users = ["svc"]\nlockout_delay = 60\n'))
    assert cfg.otp.totp_window == 2 and cfg.otp.issuer == "ACME"
    assert cfg.policy.nullok is True and cfg.policy.exempt_users == ["svc"]
    # An integer is fine where a number is expected, and becomes a float.
    assert cfg.policy.lockout_delay == 60.0 and isinstance(cfg.policy.lockout_delay, float)


def test_config_is_frozen(write):
    cfg = load(write(MINIMAL))
    with pytest.raises(Exception):
        cfg.policy.nullok = True  # type: ignore[misc]


# ---- unknown sections and keys -----------------------------------------------------------------

def test_unknown_section_names_file_line_and_section(write):
    path = write(MINIMAL + "\n[polcy]\nnullok = true\n")
    message = error_of(path)
    assert message.startswith(f"{path}:5: ")
    assert "unknown section [polcy]" in message


def test_unknown_key_names_file_line_and_key(write):
    path = write(MINIMAL + "\n[policy]\nnullok = true\nnul_ok_groups = []\n")
    message = error_of(path)
    assert message.startswith(f"{path}:7: ")
    assert "'policy.nul_ok_groups'" in message
    assert "known:" in message and "nullok_groups" in message


def test_unknown_key_in_storage(write):
    path = write("[storage]\n\ndatabse = '/x'\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: ") and "'storage.databse'" in message


def test_unknown_top_level_key(write):
    path = write('database = "/x"\n' + MINIMAL)
    message = error_of(path)
    assert message.startswith(f"{path}:") and "database" in message


def test_unknown_key_in_a_client_table(write):
    path = write(MINIMAL + '\n[[radius.clients]]\nname = "vpn"\naddress = "10.0.0.1"\n'
                 'secret = "s3cret-s3cret"\nshared_secret = "x"\n')
    message = error_of(path)
    assert message.startswith(f"{path}:9: ")
    assert "'radius.clients[0].shared_secret'" in message


def test_same_key_name_in_a_later_section_gets_its_own_line(write):
    path = write(MINIMAL + "\n[otp]\nissuer = 'x'\n[pam]\nissuer = 'y'\n")
    message = error_of(path)
    assert message.startswith(f"{path}:8: ") and "'pam.issuer'" in message


def test_a_section_that_is_not_a_table(write):
    path = write('storage = "x"\n')
    assert "[storage] must be a table" in error_of(path)


# ---- types -------------------------------------------------------------------------------------

@pytest.mark.parametrize("section,line,expected", [
    ("otp", "totp_window = true", "an integer"),
    ("otp", "totp_window = 1.5", "an integer"),
    ("otp", 'totp_window = "1"', "an integer"),
    ("policy", 'nullok = "yes"', "true or false"),
    ("policy", "nullok = 1", "true or false"),
    ("policy", 'lockout_delay = "30s"', "a finite number"),
    ("policy", "lockout_delay = false", "a finite number"),
    # nan passes every bound check (a nan delay would disable the lockout); inf overflows.
    ("policy", "lockout_delay = nan", "a finite number"),
    ("policy", "lockout_max_delay = inf", "a finite number"),
    ("storage", "busy_timeout = inf", "a finite number"),
    ("radius", "challenge_timeout = -nan", "a finite number"),
    ("policy", 'exempt_users = "svc"', "a list"),
    ("policy", "exempt_users = [1, 2]", "a list of strings"),
    ("otp", "issuer = 5", "a string"),
    ("radius", 'clients = ["vpn"]', "a list of tables"),
    ("radius", "listen = '127.0.0.1:1812'", "a list"),
])
def test_wrong_types(write, section, line, expected):
    path = write(MINIMAL + f"\n[{section}]\n{line}\n" if section != "storage" else
                 MINIMAL + f"{line}\n")
    message = error_of(path)
    key = line.split(" =")[0]
    assert message.startswith(f"{path}:{4 if section == 'storage' else 6}: ")
    assert f"'{section}.{key}' must be {expected}" in message


def test_wrong_type_of_a_reply_table(write):
    path = write(MINIMAL + '\n[[radius.replies]]\nuser = "alice"\nattributes = "Class=x"\n')
    assert "must be a table" in error_of(path)


# ---- choices and bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("section,line,message", [
    ("storage", 'synchronous = "off"', "'storage.synchronous' must be one of full, normal"),
    ("radius", 'password_backend = "kerberos"', "must be one of pam, none"),
    ("radius", 'password_split = "prefix"', "must be one of suffix, delimiter"),
    ("pam", 'unprivileged_callers = "all"', "must be one of self, none"),
    ("otp", "totp_window = -1", "'otp.totp_window' must be at least 0"),
    ("otp", "hotp_window = 0", "'otp.hotp_window' must be at least 1"),
    ("otp", "resync_window = 0", "must be at least 1"),
    ("storage", "busy_timeout = 0", "'storage.busy_timeout' must be at least 0.1"),
    ("policy", "lockout_failures = 0", "must be at least 1"),
    ("policy", "lockout_delay = 0.5", "must be at least 1"),
    ("policy", "max_devices = 0", "must be at least 1"),
    ("policy", "recovery_codes = 0", "must be at least 1"),
    ("radius", "pam_workers = 0", "must be at least 1"),
    ("radius", "duplicate_ttl = 1", "must be at least 5"),
])
def test_choices_and_bounds(write, section, line, message):
    path = write(MINIMAL + f"\n[{section}]\n{line}\n" if section != "storage" else
                 MINIMAL + f"{line}\n")
    text = error_of(path)
    assert text.startswith(f"{path}:")
    assert message in text


@pytest.mark.parametrize("line", ["totp_window = 0", "hotp_window = 1", "resync_window = 1"])
def test_bounds_are_inclusive(write, line):
    load(write(MINIMAL + f"\n[otp]\n{line}\n"))


def test_lockout_max_delay_below_the_delay(write):
    path = write(MINIMAL + "\n[policy]\nlockout_delay = 60\nlockout_max_delay = 30\n")
    message = error_of(path)
    assert message.startswith(f"{path}:7: ") and "lockout_max_delay" in message


# ---- broken files --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[storage\n", "[storage]\ndatabase = \n", "a = 'x\n",
                                  "[storage]\ndatabase = '/x'\ndatabase = '/y'\n",
                                  "[storage]\n[storage]\n"])
def test_toml_syntax_error(write, text):
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: TOML syntax error")


def test_toml_syntax_error_says_where(write):
    path = write(MINIMAL + "\n[otp]\ntotp_window = = 2\n")
    assert "line 6" in error_of(path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    message = error_of(path)
    assert message.startswith(f"{path}: config file not found")
    assert "--config" in message and "MFA_RADIUS_CONFIG" in message


def test_not_utf8(write, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[otp]\nissuer = "Société"\n'.encode("latin-1"))
    assert "UTF-8" in error_of(str(path))


def test_a_directory(tmp_path):
    assert "cannot read config file" in error_of(str(tmp_path))


# ---- RADIUS clients and replies ----------------------------------------------------------------

def client(**fields) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items())
    return "\n[[radius.clients]]\n" + body


def test_client_with_secret(write):
    cfg = load(write(MINIMAL + client(name="vpn", address="10.0.0.0/24", secret="s3cret")))
    (c,) = cfg.radius.clients
    assert (c.name, c.address, c.secret, c.secret_file) == ("vpn", "10.0.0.0/24", "s3cret", "")
    assert c.require_message_authenticator is None


def test_client_with_secret_file_and_override(write):
    text = MINIMAL + client(name="vpn", address="10.0.0.1", secret_file="/etc/x") + \
        "require_message_authenticator = false\n"
    (c,) = load(write(text)).radius.clients
    assert c.secret_file == "/etc/x" and c.require_message_authenticator is False


@pytest.mark.parametrize("fields", [
    {"name": "vpn", "address": "10.0.0.1"},
    {"name": "vpn", "address": "10.0.0.1", "secret": "a", "secret_file": "/etc/x"},
    {"name": "vpn", "address": "10.0.0.1", "secret": ""},
])
def test_client_needs_exactly_one_of_secret_or_secret_file(write, fields):
    path = write(MINIMAL + client(**fields))
    message = error_of(path)
    assert "exactly one of 'secret' or 'secret_file'" in message
    assert message.startswith(f"{path}:")


@pytest.mark.parametrize("missing", ["name", "address"])
def test_client_required_keys(write, missing):
    fields = {"name": "vpn", "address": "10.0.0.1", "secret": "x"}
    del fields[missing]
    message = error_of(write(MINIMAL + client(**fields)))
    assert f"missing required key '{missing}'" in message


def test_duplicate_client_names(write):
    text = MINIMAL + client(name="vpn", address="10.0.0.1", secret="x") + \
        client(name="vpn", address="10.0.0.2", secret="y")
    assert "duplicate RADIUS client name 'vpn'" in error_of(write(text))


def test_client_override_must_be_a_bool(write):
    text = MINIMAL + client(name="vpn", address="10.0.0.1", secret="x") + \
        'require_message_authenticator = "no"\n'
    assert "true or false" in error_of(write(text))


@pytest.mark.parametrize("extra", ['', 'user = "a"\ngroup = "b"\n'])
def test_reply_needs_exactly_one_of_user_or_group(write, extra):
    text = MINIMAL + "\n[[radius.replies]]\n" + extra + '[radius.replies.attributes]\nClass = "x"\n'
    assert "exactly one of 'user' or 'group'" in error_of(write(text))


def test_replies_are_read(write):
    text = MINIMAL + '\n[[radius.replies]]\ngroup = "admins"\n' \
        '[radius.replies.attributes]\nClass = "admin"\nSession-Timeout = 3600\n'
    (reply,) = load(write(text)).radius.replies
    assert reply.group == "admins" and reply.attributes == {"Class": "admin",
                                                            "Session-Timeout": 3600}


def test_describe_masks_client_secrets(write):
    cfg = load(write(MINIMAL + client(name="vpn", address="10.0.0.1", secret="s3cret-value")))
    data = describe(cfg)
    assert data["radius"]["clients"][0]["secret"] == "********"
    assert "s3cret-value" not in repr(data)
    assert data["storage"]["database"] == "/tmp/x/mfa.db"


# ---- which file ---------------------------------------------------------------------------------

def test_resolve_path(monkeypatch):
    monkeypatch.delenv(config_mod.ENV_VAR, raising=False)
    assert resolve_path(None) == "/etc/mfa-radius/mfa-radius.toml"
    monkeypatch.setenv("MFA_RADIUS_CONFIG", "/srv/env.toml")
    assert resolve_path(None) == "/srv/env.toml"
    assert resolve_path("/srv/flag.toml") == "/srv/flag.toml"


# ---- lines inside [[arrays of tables]] ---------------------------------------------------------

TWO_CLIENTS = MINIMAL + '''
[[radius.clients]]
name = "a"
address = "10.0.0.1"
secret = "x"

[[radius.clients]]
name = "b"
address = "10.0.0.2"
'''  # the second client starts on line 10


def test_wrong_type_in_the_second_client_names_its_line(write):
    path = write(TWO_CLIENTS + "secret = 5\n")
    message = error_of(path)
    assert message.startswith(f"{path}:13: ") and "'radius.clients[1].secret'" in message


def test_unknown_key_in_the_second_client_names_its_line(write):
    path = write(TWO_CLIENTS + 'secret = "y"\nsecert = "y"\n')
    assert error_of(path).startswith(f"{path}:14: ")


def test_missing_secret_in_the_second_client_names_its_table(write):
    path = write(TWO_CLIENTS)
    message = error_of(path)
    assert message.startswith(f"{path}:10: ") and "'b' needs exactly one of" in message


def test_duplicate_client_name_names_the_second_one(write):
    path = write(TWO_CLIENTS.replace('name = "b"', 'name = "a"') + 'secret = "y"\n')
    assert error_of(path).startswith(f"{path}:11: ")


def test_reply_error_names_its_table(write):
    text = MINIMAL + '\n[[radius.replies]]\nuser = "alice"\n[radius.replies.attributes]\n' \
        'Class = "x"\n\n[[radius.replies]]\nuser = "bob"\ngroup = "admins"\n'
    path = write(text)
    assert error_of(path).startswith(f"{path}:10: ")


@pytest.mark.parametrize("key,value", [("otp.totp_window", 11), ("otp.hotp_window", 101),
                                       ("otp.resync_window", 100001),
                                       ("policy.recovery_codes", 101)])
def test_search_windows_and_counts_have_upper_bounds(tmp_path, key, value):
    section, name = key.split(".")
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError, match=f"'{key}' must be at most"):
        config_mod.load(str(path))
