"""SMS codes in the verifier: enrolment, issue, accepted by verify/verify_batch, single use, expiry,
one live code, rate limits, lockout, privileged users, and no code at rest or in the logs."""

from __future__ import annotations

import logging
import re
import sqlite3

import pytest

from mfa_radius.accounts import StaticAccounts
from mfa_radius.rules.sms import should_send
from mfa_radius.sms.issuer import issue_code
from mfa_radius.sms.service import SmsError, SmsService
from mfa_radius.state import open_devices
from mfa_radius.verifier import Attempt, Verifier

from mfa_helpers import NOW, assign, make_config, totp_at, verify

PHONE = "+15550001111"


class SmsWorld:
    def __init__(self, tmp_path, extra=""):
        self.log = tmp_path / "sms.log"
        self.cfg = make_config(tmp_path, f"""
[policy]
privileged_users = ["root", "admin"]
privileged_groups = ["sudo"]
lockout_failures = 3
{extra}
[[sms.gateways]]
type = "file"
path = "{self.log}"
""")
        self.accounts = StaticAccounts({"bob": {"sudo"}, "alice": {"staff"}})
        self.verifier = Verifier.open(self.cfg, self.accounts)
        self.service = SmsService(self.verifier)
        self.closers = [self.verifier.store.close]

    def send(self, user="alice", now=NOW):
        return self.service.request_code(user, "test", now)

    def last_code(self) -> str:
        return re.findall(r"code is (\d{6})$", self.log.read_text(), re.MULTILINE)[-1]

    def verify(self, code, user="alice", now=NOW):
        return verify(self.verifier, user, code, now)


@pytest.fixture
def w(tmp_path):
    world = SmsWorld(tmp_path)
    yield world
    for close in world.closers:
        close()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** 6:06d}"


# ---- enrolment --------------------------------------------------------------------------------

def test_enable_validates_e164(w):
    for bad in ("5550001111", "+05550001111", "+1555", "+1555000111122223", "+1555abc1111",
                "00155500011"):
        with pytest.raises(SmsError, match="E.164"):
            w.service.enable("alice", bad)
    info = w.service.enable("alice", "+1 555-000 1111")
    assert info == {"user": "alice", "phone": PHONE, "hint": "ending 1111", "changed": True}
    assert w.service.enable("alice", PHONE)["changed"] is False


@pytest.mark.parametrize("user", ["root", "admin", "bob"])
def test_enable_is_refused_for_privileged_users(w, user):
    with pytest.raises(SmsError, match="privileged"):
        w.service.enable(user, PHONE)
    assert w.verifier.store.sms_users() == []


def test_disable_and_the_users_list(w):
    w.service.enable("alice", PHONE)
    w.service.enable("carol", "+4930123456789")
    assert [(u["user"], u["hint"]) for u in w.service.users()] == [
        ("alice", "ending 1111"), ("carol", "ending 6789")]
    assert w.send().sent
    assert w.service.disable("alice") is True
    assert w.service.disable("alice") is False
    assert [u["user"] for u in w.service.users()] == ["carol"]
    assert w.verifier.store.sms_code("alice") is None


# ---- status and the send decision --------------------------------------------------------------

def test_status_tells_the_fronts_about_sms(w):
    status = w.verifier.status("alice")
    assert (status.enrolled, status.sms, status.sms_only, status.phone_hint) == (
        False, False, False, "")
    w.service.enable("alice", PHONE)
    status = w.verifier.status("alice")
    assert (status.enrolled, status.sms, status.sms_only, status.phone_hint) == (
        True, True, True, "ending 1111")
    assert should_send(status, None) and should_send(status, "") and should_send(status, " SMS ")
    assert not should_send(status, "123456")
    assign(_devices(w), "alice", "T1")
    status = w.verifier.status("alice")
    assert status.sms and not status.sms_only
    assert not should_send(status, None) and should_send(status, "sms")


def _devices(w):
    devices = open_devices(w.cfg)
    w.closers.append(devices.store.close)
    return devices


def test_status_without_gateways_has_no_sms_but_stays_enrolled(tmp_path):
    cfg = make_config(tmp_path, "[policy]\nnullok = true\n")
    v = Verifier.open(cfg, StaticAccounts({}))
    SmsService(v).enable("alice", PHONE)
    status = v.status("alice")
    assert status.enrolled and not status.sms and not should_send(status, "sms")
    # nullok must not let a user with a phone through on any code.
    assert verify(v, "alice", "000000").reason == "bad_code"
    ticket = issue_code(v, "alice", now=NOW)
    assert (ticket.ok, ticket.reason) == (False, "not_configured")
    assert "not configured" in ticket.explain()


def test_privileged_user_with_a_phone_from_an_older_policy(w):
    w.service.enable("dave", PHONE)
    w.verifier.accounts = StaticAccounts({"dave": {"sudo"}})
    status = w.verifier.status("dave")
    assert status.privileged and not status.sms and status.phone_hint == ""
    outcome = w.send("dave")
    assert not outcome.sent and outcome.reason == "privileged"
    assert not w.log.exists()
    # Even a code stored before the policy changed is not accepted.
    w.verifier.accounts = StaticAccounts({})
    assert w.send("dave").sent
    code = w.last_code()
    w.verifier.accounts = StaticAccounts({"dave": {"sudo"}})
    assert not w.verify(code, "dave").accepted


# ---- codes ------------------------------------------------------------------------------------

def test_a_sent_code_is_accepted_once(w):
    w.service.enable("alice", PHONE)
    outcome = w.send()
    assert outcome.sent and outcome.explain() == "A code was sent to your phone ending 1111"
    code = w.last_code()
    assert w.log.read_text().split()[1] == PHONE
    decision = w.verify(code)
    assert (decision.accepted, decision.reason, decision.method) == (True, "ok", "sms")
    again = w.verify(code, now=NOW + 1)
    assert (again.accepted, again.reason) == (False, "bad_code")
    assert w.verifier.store.audit_events("alice")[0]["method"] == "sms"


def test_code_accepted_through_verify_batch_and_by_another_process(w):
    w.service.enable("alice", PHONE)
    w.send()
    code = w.last_code()
    other = Verifier.open(w.cfg, w.accounts)
    try:
        first, second = other.verify_batch([Attempt("alice", code, "t", NOW),
                                            Attempt("alice", code, "t", NOW)])
        assert first.accepted and first.method == "sms" and not second.accepted
    finally:
        other.store.close()
    assert not w.verify(code).accepted


def test_code_expires_after_code_ttl(w):
    w.service.enable("alice", PHONE)
    w.send(now=NOW)
    code = w.last_code()
    assert not w.verify(code, now=NOW + 300).accepted
    w.send(now=NOW + 301)
    code = w.last_code()
    assert w.verify(code, now=NOW + 301 + 299).accepted


def test_a_new_send_replaces_the_live_code(w):
    w.service.enable("alice", PHONE)
    w.send(now=NOW)
    first = w.last_code()
    w.send(now=NOW + 10)
    second = w.last_code()
    if first == second:
        pytest.skip("the same code was drawn twice (1 in a million)")
    assert not w.verify(first, now=NOW + 11).accepted
    assert w.verify(second, now=NOW + 12).accepted


def test_device_codes_keep_working_for_sms_users(w):
    key = assign(_devices(w), "alice", "T1")
    w.service.enable("alice", PHONE)
    w.send()
    decision = w.verify(totp_at(key, NOW))
    assert decision.accepted and decision.method == "totp"
    assert w.verify(w.last_code(), now=NOW + 1).method == "sms"


def test_wrong_sms_codes_count_towards_the_lockout(w):
    w.service.enable("alice", PHONE)
    w.send()
    code = w.last_code()
    for i in range(3):
        assert w.verify(wrong(code), now=NOW + i).reason == "bad_code"
    locked = w.verify(code, now=NOW + 3)
    assert locked.reason == "locked" and locked.retry_after > 0
    ticket = issue_code(w.verifier, "alice", now=NOW + 4)
    assert ticket.reason == "locked" and "too many failed attempts" in ticket.explain()


def test_a_success_resets_the_failures(w):
    w.service.enable("alice", PHONE)
    w.send()
    code = w.last_code()
    w.verify(wrong(code))
    assert w.verify(code, now=NOW + 1).accepted
    assert w.verifier.store.user_row("alice")["failures"] == 0


# ---- rate limits ------------------------------------------------------------------------------

def test_per_user_send_limit(w):
    w.service.enable("alice", PHONE)
    for i in range(3):
        assert w.send(now=NOW + i * 60).sent
    refused = w.send(now=NOW + 200)
    assert refused.reason == "rate_limited"
    # The first send leaves the 600 s window at NOW + 600.
    assert refused.ticket.retry_after == pytest.approx(400)
    assert refused.explain() == "too many codes sent; try again in 7 min"
    assert len(w.log.read_text().splitlines()) == 3
    assert w.send(now=NOW + 601).sent
    assert w.send(now=NOW + 602).reason == "rate_limited"


def test_global_cap_per_minute(tmp_path):
    world = SmsWorld(tmp_path, "[sms]\nglobal_limit_per_minute = 2\n")
    for user in ("u1", "u2", "u3"):
        world.service.enable(user, PHONE)
    assert world.send("u1", NOW).sent
    assert world.send("u2", NOW + 10).sent
    refused = world.send("u3", NOW + 20)
    assert refused.reason == "busy" and refused.ticket.retry_after == pytest.approx(40)
    assert "too many codes are being sent right now" in refused.explain()
    assert world.send("u3", NOW + 61).sent


def test_users_without_a_phone_and_bad_names(w):
    assert w.send("nobody").reason == "no_phone"
    assert issue_code(w.verifier, "", now=NOW).reason == "malformed"
    assert issue_code(w.verifier, "x" * 300, now=NOW).reason == "malformed"


def test_a_failed_send_says_could_not_send(tmp_path):
    cfg = make_config(tmp_path, f"""
[[sms.gateways]]
type = "file"
path = "{tmp_path}/missing/sms.log"
""")
    v = Verifier.open(cfg, StaticAccounts({}))
    service = SmsService(v)
    service.enable("alice", PHONE)
    outcome = service.request_code("alice", "t", NOW)
    assert not outcome.sent and outcome.reason == "send_failed"
    assert outcome.explain() == "could not send code"
    assert "cannot open" in outcome.result.error


# ---- secrecy ----------------------------------------------------------------------------------

def test_no_code_or_message_in_logs_or_database(w, caplog):
    caplog.set_level(logging.DEBUG)
    w.service.enable("alice", PHONE)
    codes = []
    for i in range(3):
        assert w.send(now=NOW + i).sent
        codes.append(w.last_code())
    w.verify(wrong(codes[-1]), now=NOW + 5)
    assert w.verify(codes[-1], now=NOW + 6).accepted
    w.verifier.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = b"".join(p.read_bytes() for p in w.log.parent.glob("mfa.db*"))
    for code in codes:
        assert code not in caplog.text
        assert code.encode() not in blob
    assert "login code" not in caplog.text and b"login code" not in blob
    assert PHONE not in caplog.text
    assert "SMS code issued for user alice to +*******1111" in caplog.text
    # The stored hash is an HMAC under the key file, not a bare hash of the code.
    digest = w.verifier.store.conn.execute("SELECT hash FROM sms_codes").fetchall()
    assert digest == []  # used up
    conn = sqlite3.connect(w.cfg.storage.database)
    assert conn.execute("SELECT count(*) FROM sms_sends").fetchone()[0] == 3
    conn.close()


def test_a_privileged_user_with_only_a_stale_phone_has_no_second_factor(w):
    w.service.enable("erin", PHONE)
    w.verifier.accounts = StaticAccounts({"erin": {"sudo"}})
    status = w.verifier.status("erin")
    assert not status.enrolled and status.privileged and not status.allowed_without_device
    assert w.verify("123456", "erin").reason == "no_device"
