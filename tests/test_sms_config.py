"""The [sms] section: defaults, gateways per type, and load-time errors that name file and line."""

from __future__ import annotations

import pytest

from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError


def load(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config_mod.load(str(path))


def test_defaults(tmp_path):
    sms = load(tmp_path, "").sms
    assert (sms.code_ttl, sms.send_limit, sms.send_window, sms.global_limit_per_minute) == (
        300, 3, 600, 30)
    assert sms.message == "Your login code is {code}" and sms.gateways == []


def test_four_gateway_types(tmp_path):
    sms = load(tmp_path, """
[sms]
code_ttl = 120
message = "{host}: code {code} for {user}"
host = "vpn"
[[sms.gateways]]
type = "file"
path = "/var/log/sms.log"
[[sms.gateways]]
type = "http"
url = "https://api.example/sms"
method = "PUT"
headers = { X-Key = "abc" }
json = { to = "{phone}", body = "{message}", tags = ["otp"] }
success_codes = [200, 202]
timeout = 5
[[sms.gateways]]
type = "twilio"
account_sid = "AC1"
auth_token_file = "/etc/mfa-radius/twilio.token"
from_number = "+15557770000"
[[sms.gateways]]
type = "command"
name = "modem"
command = ["/usr/bin/gammu-smsd-inject", "TEXT", "{phone}", "-text", "{message}"]
""").sms
    assert [g.type for g in sms.gateways] == ["file", "http", "twilio", "command"]
    assert sms.gateways[1].json["tags"] == ["otp"] and sms.gateways[1].method == "PUT"
    assert sms.gateways[3].name == "modem" and sms.host_name() == "vpn"


@pytest.mark.parametrize("body, match", [
    ('[sms]\nsend_limt = 3\n', r"c.toml:2: unknown key 'sms.send_limt'"),
    ('[sms]\nmessage = "Your code"\n', r"c.toml:2: 'sms.message' must contain \{code\}"),
    ('[sms]\nmessage = "{code} {phone}"\n', r"unknown field \{phone\}"),
    ('[sms]\nmessage = "{code:>8}"\n', r"without format specs"),
    ('[sms]\nmessage = "Code {code} \u2713"\n', r"outside the GSM 7-bit alphabet"),
    ('[sms]\nmessage = "{code} ' + "x" * 160 + '"\n', r"at most 160 fit in one SMS"),
    ('[sms]\nmessage = "{code} {user} ' + "x" * 125 + '"\n', r"32-character user"),
    ('[sms]\ncode_ttl = 5\n', r"'sms.code_ttl' must be at least 30"),
    ('[[sms.gateways]]\ntype = "pigeon"\n', r"must be one of file, http, twilio, command"),
    ('[[sms.gateways]]\npath = "/x"\n', r"missing required key 'type'"),
    ('[[sms.gateways]]\ntype = "file"\npath = "/x"\nurl = "http://a"\n',
     r"c.toml:4: sms.gateways\[0\] \(file\): key 'url' does not apply to a file gateway"),
    ('[[sms.gateways]]\ntype = "file"\npath = "relative.log"\n', r"absolute file path"),
    ('[[sms.gateways]]\ntype = "file"\npath = "/a"\n[[sms.gateways]]\ntype = "file"\n'
     'name = "file-1"\npath = "/b"\n', r"duplicate gateway name 'file-1'"),
    ('[[sms.gateways]]\ntype = "command"\ncommand = "send-sms {phone}"\n', r"must be a list"),
    ('[[sms.gateways]]\ntype = "command"\ncommand = ["send-sms"]\n', r"absolute path"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "ftp://x"\n', r"must start with http"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "https://x"\njson = { to = "{phone}" }\n',
     r"must carry \{phone\} and \{message\}"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "https://x"\nmethod = "GET"\n'
     'form = { a = "{phone}", b = "{message}" }\n', r"GET request has no body"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "https://x/{phone}/{message}"\nauth = "basic"\n'
     'secret_file = "/s"\n', r"needs 'username'"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "https://x/{phone}/{message}"\nauth = "bearer"\n',
     r"needs 'secret_file'"),
    ('[[sms.gateways]]\ntype = "http"\nurl = "https://x/{phone}/{message}"\n'
     'success_codes = [200, 999]\n', r"list of HTTP status codes"),
    ('[[sms.gateways]]\ntype = "twilio"\naccount_sid = "AC1"\n', r"needs 'account_sid' and"),
    ('[[sms.gateways]]\ntype = "twilio"\naccount_sid = "AC1"\nauth_token_file = "/t"\n',
     r"exactly one of 'from_number' or 'messaging_service_sid'"),
    ('[[sms.gateways]]\ntype = "twilio"\naccount_sid = "AC1"\nauth_token_file = "/t"\n'
     'from_number = "555-1234"\n', r"'from_number' '555-1234' is not a phone number in E.164"),
])
def test_errors_name_the_problem(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, body)


def test_each_gateway_type_owns_its_keys():
    # sms/gateways.py: one class per type declares its keys; the entry's schema has no others.
    import dataclasses

    from mfa_radius.sms import gateways

    fields = {f.name for f in dataclasses.fields(gateways.SmsGateway)} - {"type", "name"}
    declared = set().union(*(cls.KEYS for cls in gateways.GATEWAYS.values()))
    assert declared == fields
    assert set(gateways.GATEWAYS) == set(
        dataclasses.fields(gateways.SmsGateway)[0].metadata["choices"]) == {
        "file", "http", "twilio", "command"}
    assert config_mod.SmsGateway is gateways.SmsGateway
