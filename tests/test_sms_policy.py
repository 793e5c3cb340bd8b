"""The SMS rules as plain functions: phone numbers, the message, codes, limits, sending."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, strategies as st

from mfa_radius.rules import sms as policy


@pytest.mark.parametrize("phone", ["+15550001111", "+4930123456", "+861391234567812"])
def test_e164_accepts(phone):
    assert policy.phone_problem(phone) is None


@pytest.mark.parametrize("phone", ["15550001111", "+0155500011", "+1555000", "+1234567890123456",
                                   "+1 555 000 1111", "+1555abc1111", "", "+", "+١٢٣٤٥٦٧٨٩"])
def test_e164_refuses_with_an_example(phone):
    assert "E.164" in policy.phone_problem(phone) and "+15550001111" in policy.phone_problem(phone)


def test_normalise_hint_and_mask():
    assert policy.normalise_phone(" +1 (555) 000-11.11 ") == "+15550001111"
    assert policy.phone_hint("+15550001111") == "ending 1111"
    assert policy.mask_phone("+15550001111") == "+*******1111"
    assert policy.mask_phone("") == "-"


def test_codes_are_six_digits_and_vary():
    codes = {policy.new_code() for _ in range(200)}
    assert all(policy.looks_like_code(c) for c in codes) and len(codes) > 190


def test_hash_is_keyed_and_bound_to_the_user():
    h = policy.code_hash(b"k" * 32, "alice", "123456")
    assert h == policy.code_hash(b"k" * 32, "alice", "123456")
    assert h != policy.code_hash(b"j" * 32, "alice", "123456")
    assert h != policy.code_hash(b"k" * 32, "bob", "123456")
    assert len(h) == 32


def test_render_message_cuts_and_cleans_user_and_host():
    text = policy.render_message("{host}: {code} for {user}", "012345", "ü" * 40 + "\u2603",
                                 "vpn\n1")
    assert text == "vpn?1: 012345 for " + "ü" * 32
    assert policy.template_problem("{host}: {code} for {user}", "vpn") is None
    assert policy.gsm_length("a{b}") == 6


@given(user=st.text(max_size=80), host=st.text(alphabet="abcdefghij.-", max_size=30))
def test_a_valid_template_always_renders_one_sms(user, host):
    template = "Login code for {user} on {host}: {code}. It expires in 5 minutes."
    if policy.template_problem(template, host) is None:
        text = policy.render_message(template, policy.new_code(), user, host)
        assert policy.gsm_length(text) <= policy.SMS_MAX


def test_limits():
    kw = dict(now=1000.0, send_limit=3, send_window=600, global_limit=10)
    assert policy.check_limits([500, 600], 2, 950, **kw) is None
    limit = policy.check_limits([450, 500, 600], 3, 950, **kw)
    assert limit.reason == "rate_limited" and limit.retry_after == pytest.approx(50)
    assert policy.check_limits([450, 500, 600, 700], 3, 950, **kw).retry_after == pytest.approx(
        100)
    assert policy.check_limits([300, 500], 10, 955, **kw) == policy.Refusal("busy", 15.0)
    # Sends older than the window are ignored even if passed in.
    assert policy.check_limits([1, 2, 3, 600], 1, 950, **kw) is None


@given(sends=st.lists(st.floats(0, 1000), max_size=10), limit=st.integers(1, 5))
def test_a_refusal_always_says_when_a_send_will_work(sends, limit):
    kw = dict(send_limit=limit, send_window=600, global_limit=100)
    refused = policy.check_limits(sends, 0, None, now=1000.0, **kw)
    if refused:
        later = 1000.0 + refused.retry_after
        assert policy.check_limits(sends, 0, None, now=later + 1e-6, **kw) is None


@dataclass
class Status:
    sms: bool = True
    sms_only: bool = False
    exempt: bool = False


def test_should_send():
    assert policy.should_send(Status(sms_only=True), None)
    assert not policy.should_send(Status(), None)
    assert policy.should_send(Status(), "") and policy.should_send(Status(), "SMS")
    assert not policy.should_send(Status(), "123456")
    assert not policy.should_send(Status(sms=False), "sms")
    assert not policy.should_send(Status(sms_only=True, exempt=True), None)


def test_explain_durations():
    assert policy.explain("rate_limited", 30) == "too many codes sent; try again in 30 s"
    assert policy.explain("rate_limited", 400) == "too many codes sent; try again in 7 min"
    assert policy.explain("whatever") == "could not send code"
    ticket = policy.SmsTicket(True, "ok", "alice", "+15550001111", "Your code is 123456")
    assert "123456" not in repr(ticket) and "+1555" not in repr(ticket)


@given(st.text())
def test_sms_request_is_one_rule_for_text_and_wire_bytes(answer):
    # The RADIUS front checks the User-Password bytes, the PAM fronts the typed text.
    assert policy.is_sms_request(answer.encode("utf-8")) == policy.is_sms_request(answer)


def test_sms_request_words():
    for answer in ("", "  ", "sms", " SMS ", "Sms\t", b"", b" sms", b"SMS\r\n", b"\x1f",
                   "\u00a0sms"):
        assert policy.is_sms_request(answer), answer
    for answer in ("123456", "smss", "s ms", b"123456", b"sms1"):
        assert not policy.is_sms_request(answer), answer


def test_issue_refusals_in_order():
    ok = {"phone": "+15550001111", "privileged": False, "configured": True,
          "locked_until": 0.0, "now": 100.0}
    assert policy.issue_refusal(**ok) is None
    assert policy.issue_refusal(**{**ok, "phone": None}) == policy.Refusal("no_phone")
    assert policy.issue_refusal(**{**ok, "phone": None, "privileged": True}).reason == "no_phone"
    assert policy.issue_refusal(**{**ok, "privileged": True}).reason == "privileged"
    assert policy.issue_refusal(**{**ok, "configured": False}).reason == "not_configured"
    assert policy.issue_refusal(**{**ok, "locked_until": 130.0}) == policy.Refusal("locked", 30.0)
