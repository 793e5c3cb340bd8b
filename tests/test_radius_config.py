"""Client table, secret files, reply attributes, listen addresses and password+code splitting."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import write_config

from mfa_radius import config as config_mod
from mfa_radius import hostport
from mfa_radius.accounts import StaticAccounts
from mfa_radius.errors import ConfigError
from mfa_radius.radius import codec
from mfa_radius.radius.clients import ClientTable
from mfa_radius.radius.replies import ReplyTable
from mfa_radius.radius.steps import split_password


def load(tmp_path, extra):
    return config_mod.load(str(write_config(tmp_path, extra)))


CLIENTS = """
[[radius.clients]]
name = "office"
address = "10.0.0.0/8"
secret = "s-office"
[[radius.clients]]
name = "vpn1"
address = "10.1.2.3"
secret = "s-vpn1"
require_message_authenticator = false
[[radius.clients]]
name = "branch"
address = "10.1.0.0/16"
secret = "s-branch"
[[radius.clients]]
name = "v6"
address = "2001:db8::/64"
secret = "s-v6"
"""


def test_most_specific_client_wins(tmp_path):
    table = ClientTable.from_config(load(tmp_path, CLIENTS))
    assert table.lookup("10.1.2.3").name == "vpn1"
    assert table.lookup("10.1.9.9").name == "branch"
    assert table.lookup("10.200.0.1").name == "office"
    assert table.lookup("2001:db8::5").name == "v6"
    assert table.lookup("192.0.2.1") is None
    assert table.lookup("2001:db9::1") is None
    assert table.lookup("not an ip") is None


def test_message_authenticator_default_and_override(tmp_path):
    table = ClientTable.from_config(load(tmp_path, CLIENTS))
    assert table.lookup("10.1.9.9").require_ma is True
    assert table.lookup("10.1.2.3").require_ma is False
    table = ClientTable.from_config(load(tmp_path, "[radius]\nrequire_message_authenticator = false\n"
                                         + CLIENTS))
    assert table.lookup("10.1.9.9").require_ma is False


def test_bad_client_address(tmp_path):
    with pytest.raises(ConfigError, match=r"mfa-radius.toml:7: .*not an IP address"):
        load(tmp_path, '[[radius.clients]]\nname = "x"\naddress = "10.0.0.300"\nsecret = "s"\n')


def secret_file_cfg(tmp_path, mode):
    path = tmp_path / "vpn.secret"
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return load(tmp_path, f'[[radius.clients]]\nname = "x"\naddress = "127.0.0.1"\n'
                          f'secret_file = "{path}"\n')


def test_secret_file_read_and_stripped(tmp_path):
    table = ClientTable.from_config(secret_file_cfg(tmp_path, 0o600))
    assert table.lookup("127.0.0.1").secret.raw == b"s3cret"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_secret_file_readable_by_others_refused(tmp_path, mode):
    with pytest.raises(ConfigError, match="chmod 600"):
        ClientTable.from_config(secret_file_cfg(tmp_path, mode))


def test_secret_file_missing(tmp_path):
    cfg = load(tmp_path, '[[radius.clients]]\nname = "x"\naddress = "127.0.0.1"\n'
                         f'secret_file = "{tmp_path}/nope"\n')
    with pytest.raises(ConfigError, match="cannot read secret_file"):
        ClientTable.from_config(cfg)


def test_reply_attributes_encoded(tmp_path):
    cfg = load(tmp_path, """
[[radius.replies]]
user = "alice"
attributes = { Class = "admins", Session-Timeout = 3600, Service-Type = "Framed-User" }
[[radius.replies]]
group = "vpn"
attributes = { Filter-Id = ["a", "b"], Framed-IP-Address = "10.9.9.9" }
""")
    table = ReplyTable.from_config(cfg)
    accounts = StaticAccounts({"alice": {"vpn"}, "bob": set()})
    attrs = table.for_user("alice", accounts)
    fake = b"\x02\x00" + (20 + len(attrs)).to_bytes(2, "big") + b"\x00" * 16 + attrs
    assert codec.parse_attrs(fake) == [
        (25, b"admins"), (27, (3600).to_bytes(4, "big")), (6, (2).to_bytes(4, "big")),
        (11, b"a"), (11, b"b"), (8, bytes([10, 9, 9, 9]))]
    assert table.for_user("bob", accounts) == b""


def test_vendor_attribute_matches_pyrad(tmp_path):
    from pyrad.dictionary import Dictionary
    from pyrad.packet import Packet

    from mfa_radius.radius.replies import DICTIONARY

    cfg = load(tmp_path, '[[radius.replies]]\ngroup = "g"\n'
                         'attributes = { Fortinet-Group-Name = "admins" }\n')
    attrs = ReplyTable.from_config(cfg).for_user("u", StaticAccounts({"u": {"g"}}))
    pkt = Packet(dict=Dictionary(DICTIONARY), secret=b"x")
    pkt["Fortinet-Group-Name"] = "admins"
    assert attrs == pkt._PktEncodeAttributes()


@pytest.mark.parametrize("attrs,match", [
    ('{ Nonsense-Attr = "x" }', "unknown RADIUS attribute"),
    ('{ State = "x" }', "set by the server"),
    ('{ Session-Timeout = "long" }', "bad value"),
    ('{ Framed-IP-Address = "nope" }', "bad value"),
])
def test_bad_reply_attributes(tmp_path, attrs, match):
    cfg = load(tmp_path, f'[[radius.replies]]\nuser = "a"\nattributes = {attrs}\n')
    with pytest.raises(ConfigError, match=match):
        ReplyTable.from_config(cfg)


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:1812", (socket.AF_INET, ("127.0.0.1", 1812))),
    ("0.0.0.0:1645", (socket.AF_INET, ("0.0.0.0", 1645))),
    ("[::1]:1812", (socket.AF_INET6, ("::1", 1812, 0, 0))),
])
def test_listen_addresses(text, expected):
    where = hostport.parse(text)
    assert (where.family, where.sockaddr) == expected


@pytest.mark.parametrize("text", ["1812", "::1:1812", "localhost:1812", "1.2.3.4:0",
                                  "1.2.3.4:70000", "[1.2.3.4]:x"])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        hostport.parse(text)


@pytest.fixture
def radius_for(tmp_path, cfg_path):
    """The [radius] section of the test config plus `extra`, as the server reads it."""
    return lambda extra: config_mod.load(str(write_config(tmp_path, extra))).radius


@pytest.mark.parametrize("typed,expected", [
    (b"hunter2123456", (b"hunter2", b"123456")),
    (b"pw12345678", (b"pw12", b"345678")),
    (b"123456", None),  # nothing left for a password
    (b"hunter2", None),
    (b"hunter2abcdef", None),
    (b"hunter2 123456", (b"hunter2 ", b"123456")),
])
def test_suffix_split(radius_for, typed, expected):
    assert split_password(typed, radius_for("")) == expected


@pytest.mark.parametrize("typed,expected", [
    (b"hunter2,123456", (b"hunter2", b"123456")),
    (b"a,b,123456", (b"a,b", b"123456")),
    (b"hunter2", None),
    (b",123456", None),
    (b"hunter2,", None),
])
def test_delimiter_split(radius_for, typed, expected):
    radius = radius_for('[radius]\npassword_split = "delimiter"\n')
    assert split_password(typed, radius) == expected


def test_eight_digit_codes(radius_for):
    radius = radius_for("[radius]\ncode_digits = 8\n")
    assert split_password(b"pw12345678", radius) == (b"pw", b"12345678")


def test_challenge_message_too_long(tmp_path, cfg_path):
    path = write_config(tmp_path, f'[radius]\nchallenge_message = "{"x" * 254}"\n')
    with pytest.raises(ConfigError, match=r"mfa-radius.toml:6: 'radius.challenge_message'"):
        config_mod.load(str(path))


@pytest.mark.parametrize("client,user,ms", [
    ("vpn1", "alice", 54.2), ("vpn 1", "alice", 1.0), ("vpn1", "al ice", 0.04),
    ("vpn1", 'a"b\\c', 12.345), ("vpn1", "bob\nINFO forged", 3.0), ("v", "x=y", 100.0),
    ("v", "é", 7.25)])
def test_decision_line_matches_logsetup_fields(client, user, ms):
    from mfa_radius.logsetup import decision_line, fields

    expected = fields(client=client, user=user, result="accept", reason="ok", ms=round(ms, 1))
    assert decision_line(client, user, "accept", "ok", ms) == expected
    assert "\n" not in decision_line(client, user, "accept", "ok", ms)
