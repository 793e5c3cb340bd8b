"""Each SMS gateway against a real local peer: a file, an HTTP server, Twilio's API shape served
locally, a script; the chain's failover, failure and time bounds; nothing secret in the logs."""

from __future__ import annotations

import logging
import os
import stat
import sys
import time

import pytest

from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError
from mfa_radius.sms.gateways import (CommandGateway, FileGateway, GatewayError, HttpGateway,
                                     SmsSender, TwilioGateway)
from mfa_radius.rules.sms import SmsTicket

from sms_helpers import Peer

PHONE = "+15550001111"
MESSAGE = "Your login code is 424242"


@pytest.fixture
def peer():
    p = Peer().start()
    yield p
    p.stop()


def secret(tmp_path, name, value, mode=0o600):
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(mode)
    return str(path)


def script(tmp_path, body, name="send-sms"):
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + body)
    path.chmod(0o700)
    return str(path)


# ---- file --------------------------------------------------------------------------------------

def test_file_gateway_appends_time_phone_message_lines(tmp_path):
    path = tmp_path / "sms.log"
    gw = FileGateway("file", str(path))
    gw.send(PHONE, MESSAGE)
    gw.send("+4930123456789", "second\nline")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    stamp, phone, text = lines[0].split(" ", 2)
    assert stamp.endswith("+00:00") and phone == PHONE and text == MESSAGE
    assert lines[1].endswith("+4930123456789 second line")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_file_gateway_unwritable_is_a_gateway_error(tmp_path):
    with pytest.raises(GatewayError, match="cannot open"):
        FileGateway("file", str(tmp_path / "missing-dir" / "sms.log")).send(PHONE, MESSAGE)


# ---- http --------------------------------------------------------------------------------------

def test_http_gateway_posts_json_with_bearer_token_and_headers(peer):
    gw = HttpGateway("http", url=peer.url + "/v1/sms", headers={"X-Tenant": "acme"},
                     json={"to": "{phone}", "text": "{message}", "meta": {"kind": "otp"}},
                     auth="tok-123")
    gw.send(PHONE, MESSAGE)
    (req,) = peer.requests
    assert req.method == "POST" and req.path == "/v1/sms"
    assert req.headers["authorization"] == "Bearer tok-123"
    assert req.headers["x-tenant"] == "acme"
    assert req.headers["content-type"] == "application/json"
    assert req.json == {"to": PHONE, "text": MESSAGE, "meta": {"kind": "otp"}}


def test_http_gateway_form_with_basic_auth(peer):
    gw = HttpGateway("http", url=peer.url + "/send", form={"dest": "{phone}", "msg": "{message}"},
                     auth=("acct", "pw:with:colons"))
    gw.send(PHONE, MESSAGE)
    (req,) = peer.requests
    assert req.basic_auth() == ("acct", "pw:with:colons")
    assert req.form == {"dest": PHONE, "msg": MESSAGE}


def test_http_gateway_get_with_params(peer):
    gw = HttpGateway("http", url=peer.url + "/api", method="GET",
                     params={"number": "{phone}", "text": "{message}", "key": "k"})
    gw.send(PHONE, MESSAGE)
    (req,) = peer.requests
    assert req.method == "GET" and req.query == {"number": PHONE, "text": MESSAGE, "key": "k"}


def test_http_gateway_unexpected_status_is_an_error(peer):
    peer.status = 500
    gw = HttpGateway("http", url=peer.url, json={"to": "{phone}", "m": "{message}"})
    with pytest.raises(GatewayError, match="HTTP status 500"):
        gw.send(PHONE, MESSAGE)
    peer.status = 500
    HttpGateway("http", url=peer.url, json={"to": "{phone}", "m": "{message}"},
                success_codes=[500]).send(PHONE, MESSAGE)


def test_http_gateway_times_out(peer):
    peer.delay = 3.0
    gw = HttpGateway("http", url=peer.url, json={"to": "{phone}", "m": "{message}"}, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(GatewayError, match="no answer within 0.5 s"):
        gw.send(PHONE, MESSAGE)
    assert time.monotonic() - start < 2.0


def test_http_gateway_connection_refused_does_not_quote_the_url(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = HttpGateway("http", url=f"http://127.0.0.1:{port}/x", method="GET",
                     params={"to": "{phone}", "m": "{message}"}, timeout=2)
    with pytest.raises(GatewayError) as info:
        gw.send(PHONE, MESSAGE)
    assert "424242" not in str(info.value) and PHONE not in str(info.value)


# ---- twilio ------------------------------------------------------------------------------------

def test_twilio_gateway_speaks_the_messages_api(peer):
    peer.status = 201
    gw = TwilioGateway("twilio", account_sid="AC123", auth_token="tok", from_number="+15557770000",
                       api_url=peer.url)
    gw.send(PHONE, MESSAGE)
    (req,) = peer.requests
    assert req.method == "POST"
    assert req.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert req.basic_auth() == ("AC123", "tok")
    assert req.form == {"To": PHONE, "From": "+15557770000", "Body": MESSAGE}


def test_twilio_messaging_service_and_error_code(peer):
    peer.status = 400
    peer.body = b'{"code": 21211, "message": "The To number is not valid", "status": 400}'
    gw = TwilioGateway("twilio", account_sid="AC9", auth_token="t", messaging_service_sid="MG1",
                       api_url=peer.url + "/")
    with pytest.raises(GatewayError, match="HTTP status 400, Twilio error 21211"):
        gw.send(PHONE, MESSAGE)
    assert peer.requests[0].form["MessagingServiceSid"] == "MG1"
    assert "From" not in peer.requests[0].form


# ---- command -----------------------------------------------------------------------------------

def test_command_gateway_passes_phone_and_message_as_arguments(tmp_path):
    out = tmp_path / "out"
    argv0 = script(tmp_path, f"import sys\nopen({str(out)!r}, 'w').write(repr(sys.argv[1:]))\n")
    CommandGateway("cmd", [argv0, "--flag"]).send(PHONE, "it's $(rm -rf /); `x`")
    assert out.read_text() == repr(["--flag", PHONE, "it's $(rm -rf /); `x`"])
    CommandGateway("cmd", [argv0, "-t", "{phone}", "-m", "{message}"]).send(PHONE, MESSAGE)
    assert out.read_text() == repr(["-t", PHONE, "-m", MESSAGE])


def test_command_gateway_runs_with_a_fixed_environment_not_the_callers(tmp_path, monkeypatch):
    # In the PAM fallback under su/sudo the environment is the invoking user's.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "evil"))
    monkeypatch.setenv("LD_PRELOAD", str(tmp_path / "evil.so"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv0 = script(tmp_path, "import os, sys\n"
                   f"open({str(out)!r}, 'w').write(repr((dict(os.environ), os.getcwd())))\n")
    CommandGateway("cmd", [argv0]).send(PHONE, MESSAGE)
    env, cwd = eval(out.read_text())  # noqa: S307 - our own script's repr
    assert cwd == "/"
    assert set(env) <= {"PATH", "LANG", "LC_CTYPE"}  # the interpreter may add LC_CTYPE
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_command_gateway_failure_hides_the_code(tmp_path):
    argv0 = script(tmp_path, "import sys\nprint('modem said no to', sys.argv[1], sys.argv[2],"
                             " file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(GatewayError) as info:
        CommandGateway("cmd", [argv0]).send(PHONE, MESSAGE)
    text = str(info.value)
    assert "status 3" in text and "modem said no to [phone] [message]" in text
    assert "424242" not in text and PHONE not in text


def test_command_gateway_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    argv0 = script(tmp_path, "import subprocess, time\n"
                             f"p = subprocess.Popen(['sleep', '30'])\n"
                             f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
                             "time.sleep(30)\n")
    start = time.monotonic()
    with pytest.raises(GatewayError, match="did not finish within 0.5 s"):
        CommandGateway("cmd", [argv0], timeout=0.5).send(PHONE, MESSAGE)
    assert time.monotonic() - start < 3
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the script's child outlived the timeout")


def test_command_gateway_missing_program(tmp_path):
    with pytest.raises(GatewayError, match="cannot run"):
        CommandGateway("cmd", [str(tmp_path / "nope")]).send(PHONE, MESSAGE)


# ---- the chain ---------------------------------------------------------------------------------

def ticket(message=MESSAGE):
    return SmsTicket(True, "ok", "alice", PHONE, message, time.time() + 300)


def test_chain_fails_over_to_the_next_gateway(tmp_path, peer, caplog):
    caplog.set_level(logging.DEBUG)
    peer.status = 503
    path = tmp_path / "sms.log"
    events = []
    sender = SmsSender([HttpGateway("primary", url=peer.url, json={"t": "{phone}",
                                                                   "m": "{message}"}),
                        FileGateway("backup", str(path))],
                       on_event=lambda event, gw: events.append((event, gw)))
    result = sender.send_code(ticket())
    assert result.ok and result.gateway == "backup"
    assert MESSAGE in path.read_text()
    assert len(peer.requests) == 1
    assert sender.stats["sent"] == 1 and sender.stats["gateway_errors"] == 1
    assert events == [("gateway_error", "primary"), ("sent", "backup")]
    assert "primary failed" in caplog.text and "HTTP status 503" in caplog.text
    assert "424242" not in caplog.text and PHONE not in caplog.text
    assert "+*******1111" in caplog.text


def test_chain_with_every_gateway_failing_says_why(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    bad = script(tmp_path, "import sys\nsys.exit(1)\n")
    sender = SmsSender([FileGateway("f", str(tmp_path / "no" / "dir")),
                        CommandGateway("c", [bad])])
    result = sender.send_code(ticket())
    assert not result.ok and result.explain() == "could not send code"
    assert "f: cannot open" in result.error and "c: " in result.error and "status 1" in result.error
    assert sender.stats["failed"] == 1
    assert "could not send code to user alice at +*******1111" in caplog.text
    assert "424242" not in caplog.text


def test_chain_total_time_is_bounded(tmp_path, peer):
    peer.delay = 5
    slow = script(tmp_path, "import time\ntime.sleep(30)\n")
    sender = SmsSender([HttpGateway("h", url=peer.url, json={"p": "{phone}", "m": "{message}"},
                                    timeout=0.5),
                        CommandGateway("c", [slow], timeout=0.5)])
    start = time.monotonic()
    assert not sender.send_code(ticket()).ok
    assert time.monotonic() - start < 3


def test_chain_survives_a_buggy_gateway(tmp_path):
    class Broken:
        name = "broken"

        def send(self, phone, message):
            raise RuntimeError(f"oops {message}")

    result = SmsSender([Broken()]).send_code(ticket())
    assert not result.ok and result.error == "broken: internal error (RuntimeError)"


def test_chain_without_gateways_and_refused_tickets():
    assert SmsSender([]).send_code(ticket()).error == "no gateway configured"
    refused = SmsTicket(False, "rate_limited", "alice")
    assert not SmsSender([]).send_code(refused).ok


def test_http_logs_never_show_the_message(peer, caplog):
    caplog.set_level(logging.DEBUG)
    sender = SmsSender([HttpGateway("h", url=peer.url, method="GET",
                                    params={"p": "{phone}", "m": "{message}"})])
    assert sender.send_code(ticket()).ok
    assert "424242" not in caplog.text and "login+code" not in caplog.text


# ---- from the config ---------------------------------------------------------------------------

def load(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config_mod.load(str(path))


def test_sender_from_config_reads_secret_files(tmp_path, peer):
    token = secret(tmp_path, "twilio.token", "tw-secret")
    password = secret(tmp_path, "http.pw", "pw")
    cfg = load(tmp_path, f"""
[sms]
[[sms.gateways]]
type = "twilio"
account_sid = "AC1"
auth_token_file = "{token}"
from_number = "+15557770000"
api_url = "{peer.url}"
timeout = 2
[[sms.gateways]]
type = "http"
name = "backup"
url = "{peer.url}/sms"
auth = "basic"
username = "me"
secret_file = "{password}"
form = {{ to = "{{phone}}", text = "{{message}}" }}
[[sms.gateways]]
type = "file"
path = "{tmp_path}/sms.log"
""")
    sender = SmsSender.from_config(cfg)
    assert [g.name for g in sender.gateways] == ["twilio-1", "backup", "file-3"]
    peer.status = 201
    assert sender.send_code(ticket()).gateway == "twilio-1"
    assert peer.requests[0].basic_auth() == ("AC1", "tw-secret")


def test_secret_file_readable_by_others_is_refused(tmp_path):
    token = secret(tmp_path, "token", "x", mode=0o644)
    cfg = load(tmp_path, f"""
[[sms.gateways]]
type = "http"
url = "https://sms.example/send"
auth = "bearer"
secret_file = "{token}"
json = {{ to = "{{phone}}", text = "{{message}}" }}
""")
    with pytest.raises(ConfigError, match="readable or writable by group or others.*chmod 600"):
        SmsSender.from_config(cfg)


def test_missing_secret_file_is_a_config_error(tmp_path):
    cfg = load(tmp_path, f"""
[[sms.gateways]]
type = "twilio"
account_sid = "AC1"
auth_token_file = "{tmp_path}/nope"
messaging_service_sid = "MG1"
""")
    with pytest.raises(ConfigError, match="SMS gateway 'twilio-1': cannot read secret file"):
        SmsSender.from_config(cfg)
