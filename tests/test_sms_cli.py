"""`mfa-radius sms ...` through click (attached to the main group as the lead will), and the
split a daemon uses: issue on the event loop, send on a worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import time

import pytest
from click.testing import CliRunner

from mfa_radius.accounts import StaticAccounts
from mfa_radius.cli import main
from mfa_radius.sms.commands import sms
from mfa_radius.sms.gateways import SmsSender
from mfa_radius.rules.sms import should_send
from mfa_radius.sms.issuer import issue_code
from mfa_radius.verifier import Attempt, Verifier

from conftest import write_config
from mfa_helpers import make_config
from sms_helpers import Peer

if "sms" not in main.commands:
    main.add_command(sms)


@pytest.fixture
def setup(tmp_path):
    log = tmp_path / "sms.log"
    path = write_config(tmp_path, f"""
[policy]
privileged_users = ["root", "ops"]
[[sms.gateways]]
type = "file"
path = "{log}"
""")
    from mfa_radius import config as config_mod
    from mfa_radius.state import init

    init(config_mod.load(str(path)))
    return path, log


def run(path, *args):
    return CliRunner().invoke(main, ["--config", str(path), *args])


def test_enable_send_list_disable(setup):
    path, log = setup
    result = run(path, "sms", "enable", "alice", "+15550001111")
    assert result.exit_code == 0 and result.output == "SMS codes for alice go to +15550001111\n"
    result = run(path, "sms", "send", "alice")
    assert result.exit_code == 0, result.output
    assert result.output == "code sent to alice's phone ending 1111 via file-1\n"
    assert re.search(r" \+15550001111 Your login code is \d{6}$", log.read_text())
    result = run(path, "sms", "list", "--json")
    assert [r["user"] for r in json.loads(result.output)] == ["alice"]
    assert run(path, "sms", "disable", "alice").output == "SMS disabled for alice\n"
    result = run(path, "sms", "send", "alice")
    assert result.exit_code == 1
    assert "no code sent to alice: no phone number is registered" in result.output


def test_refusals_are_one_line(setup):
    path, _ = setup
    result = run(path, "sms", "enable", "alice", "555-0001")
    assert result.exit_code == 1 and "is not a phone number in E.164 form" in result.output
    assert "Traceback" not in result.output
    result = run(path, "sms", "enable", "ops", "+15550001111")
    assert result.exit_code == 1 and "privileged" in result.output
    run(path, "sms", "enable", "alice", "+15550001111")
    for _ in range(3):
        assert run(path, "sms", "send", "alice").exit_code == 0
    result = run(path, "sms", "send", "alice", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["sent"] is False and data["reason"] == "rate_limited" and data["retry_after"] > 0


def test_the_daemon_split_never_blocks_the_loop(tmp_path):
    """Issue on the loop thread, send on a worker: the loop keeps ticking while a slow gateway
    takes its time, and the code then works through the same verifier."""
    peer = Peer(delay=0.6).start()
    try:
        cfg = make_config(tmp_path, f"""
[[sms.gateways]]
type = "http"
url = "{peer.url}/send"
json = {{ to = "{{phone}}", text = "{{message}}" }}
timeout = 3
""")
        verifier = Verifier.open(cfg, StaticAccounts({}))
        from mfa_radius.sms.service import SmsService

        SmsService(verifier).enable("alice", "+15550001111")
        sender = SmsSender.from_config(cfg)
        pool = concurrent.futures.ThreadPoolExecutor(2)

        async def front():
            loop = asyncio.get_running_loop()
            status = verifier.status("alice")
            assert should_send(status, None)  # SMS is alice's only method
            ticket = issue_code(verifier, "alice", "radius:vpn1")
            assert ticket.ok and ticket.hint == "ending 1111"
            ticks = 0
            future = loop.run_in_executor(pool, sender.send_code, ticket)
            while not future.done():
                ticks += 1
                await asyncio.sleep(0.01)
            return ticks, await future

        ticks, result = asyncio.run(front())
        assert result.ok and ticks > 20
        code = peer.requests[0].json["text"].rsplit(" ", 1)[1]
        assert verifier.verify(Attempt("alice", code, "radius:vpn1", time.time())).accepted
        pool.shutdown()
        verifier.store.close()
    finally:
        peer.stop()


def test_the_dispatcher_waits_or_queues(tmp_path):
    from mfa_radius.sms.service import SmsDispatcher, SmsService

    peer = Peer(delay=0.5).start()
    try:
        cfg = make_config(tmp_path, f"""
[[sms.gateways]]
type = "twilio"
account_sid = "AC1"
auth_token_file = "{tmp_path}/token"
from_number = "+15557770000"
api_url = "{peer.url}"
""".replace("{tmp_path}/token", _token(tmp_path)))
        peer.status = 201
        verifier = Verifier.open(cfg, StaticAccounts({}))
        SmsService(verifier, SmsSender([])).enable("alice", "+15550001111")
        dispatcher = SmsDispatcher(verifier, SmsSender.from_config(cfg))

        async def front():
            start = time.monotonic()
            queued = await dispatcher.request("alice", "radius:vpn1", wait=False)
            quick = time.monotonic() - start
            waited = await dispatcher.request("alice", "pam:sshd")
            nobody = await dispatcher.request("nobody", "pam:sshd")
            return quick, queued, waited, nobody

        quick, queued, waited, nobody = asyncio.run(front())
        assert quick < 0.3 and queued.reason == "queued" and not queued.sent
        assert queued.explain() == "A code was sent to your phone ending 1111"
        assert waited.sent and waited.result.gateway == "twilio-1"
        assert nobody.reason == "no_phone" and "no phone number" in nobody.explain()
        dispatcher.close()
        for _ in range(100):
            if len(peer.requests) == 2:
                break
            time.sleep(0.02)
        assert [r.path for r in peer.requests] == ["/2010-04-01/Accounts/AC1/Messages.json"] * 2
        codes = [r.form["Body"].rsplit(" ", 1)[1] for r in peer.requests]
        # Only the newest code is live: the queued one was replaced by the waited one.
        accepted = [verifier.verify(Attempt("alice", c, "pam:sshd", time.time())).accepted
                    for c in codes]
        assert sorted(accepted) == [False, True]
        verifier.store.close()
    finally:
        peer.stop()


def _token(tmp_path):
    path = tmp_path / "token"
    path.write_text("tok\n")
    path.chmod(0o600)
    return str(path)
