"""The device lifecycle: create-virtual, add, enable, resync, deactivate, delete, list."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse

import pyotp
import pytest

from mfa_radius.devices import DeviceSpec, check_serial
from mfa_radius.errors import DeviceError
from mfa_radius.otp import OtpKey, time_step
from mfa_radius.state import open_devices
from mfa_radius.verifier import Verifier

from mfa_helpers import NOW, STEP, make_config, totp_at, verify


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def devices(cfg):
    d = open_devices(cfg)
    yield d
    d.store.close()


@pytest.fixture
def verifier(cfg):
    v = Verifier.open(cfg)
    yield v
    v.store.close()


def key_of(info: dict, algorithm: str = "SHA1") -> OtpKey:
    secret = info["secret"]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return OtpKey(seed, algorithm, info["digits"])


# ---- create-virtual -----------------------------------------------------------------------------

def test_create_virtual_defaults(devices):
    info = devices.create_virtual("alice-phone")
    assert info["serial"] == "alice-phone"
    assert (info["type"], info["digits"], info["algorithm"], info["period"]) == \
        ("totp", 6, "SHA1", 30)
    seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
    assert len(seed) * 8 >= 160
    assert "=" not in info["secret"]
    (row,) = devices.list()
    assert row["serial"] == "alice-phone" and row["status"] == "unassigned" and row["virtual"]
    assert row["user"] is None
    assert "seed" not in row and "fingerprint" not in row


def test_create_virtual_seeds_are_fresh(devices):
    secrets_seen = {devices.create_virtual(f"S{i}")["secret"] for i in range(20)}
    assert len(secrets_seen) == 20


def test_otpauth_uri_parses_and_gives_the_same_codes(devices):
    info = devices.create_virtual("alice@example.org", issuer="ACME VPN")
    uri = info["otpauth_uri"]
    assert uri.startswith("otpauth://totp/")
    otp = pyotp.parse_uri(uri)
    assert isinstance(otp, pyotp.TOTP)
    assert otp.secret == info["secret"]
    assert otp.issuer == "ACME VPN"
    assert otp.name == "alice@example.org"
    key = key_of(info)
    for t in (NOW, NOW + 30, NOW + 12345):
        assert otp.at(t) == totp_at(key, t)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    assert query["issuer"] == ["ACME VPN"]


def test_otpauth_uri_uses_the_configured_issuer(tmp_path):
    cfg = make_config(tmp_path, '[otp]\nissuer = "Example Corp"\n')
    d = open_devices(cfg)
    try:
        assert pyotp.parse_uri(d.create_virtual("S1")["otpauth_uri"]).issuer == "Example Corp"
    finally:
        d.store.close()


@pytest.mark.parametrize("digits,algorithm,period", [(8, "SHA256", 60), (6, "SHA512", 30),
                                                     (8, "SHA1", 30)])
def test_otpauth_uri_carries_digits_algorithm_period(devices, digits, algorithm, period):
    info = devices.create_virtual("S1", digits=digits, algorithm=algorithm, period=period)
    otp = pyotp.parse_uri(info["otpauth_uri"])
    assert otp.digits == digits and otp.interval == period
    assert otp.digest == getattr(hashlib, algorithm.lower())
    key = key_of(info, algorithm)
    assert otp.at(NOW) == totp_at(key, NOW, period=period)


def test_hotp_virtual_device_uri(devices):
    info = devices.create_virtual("H1", kind="hotp")
    otp = pyotp.parse_uri(info["otpauth_uri"])
    assert isinstance(otp, pyotp.HOTP)
    assert info["period"] is None
    key = key_of(info)
    assert [otp.at(c) for c in range(5)] == [key.code(c) for c in range(5)]


@pytest.mark.parametrize("kwargs", [{"kind": "motp"}, {"digits": 7}, {"algorithm": "MD5"},
                                    {"period": 0}, {"period": 3601}])
def test_create_virtual_refuses_bad_parameters(devices, kwargs):
    with pytest.raises(DeviceError):
        devices.create_virtual("S1", **kwargs)
    assert devices.list() == []


def test_create_virtual_refuses_an_existing_serial(devices):
    devices.create_virtual("S1")
    with pytest.raises(DeviceError, match="already exists"):
        devices.create_virtual("S1")


# ---- serials ------------------------------------------------------------------------------------

@pytest.mark.parametrize("serial", ["a", "x" * 256, "GAKT000123", "arn:aws:iam::1:mfa/bob",
                                    "a+b=c,d.e@f-g_h", "alice@example.org", "0"])
def test_valid_serials(devices, serial):
    assert check_serial(serial) == serial
    devices.create_virtual(serial)
    assert devices.list()[0]["serial"] == serial


@pytest.mark.parametrize("serial", ["", "x" * 257, "a b", "a;b", "a\tb", "a'b", 'a"b', "a\\b",
                                    "a*", "a#b", "abc\n", "\nabc", "a\x00b", "é"])
def test_invalid_serials(devices, serial):
    with pytest.raises(DeviceError, match="serial"):
        check_serial(serial)
    with pytest.raises(DeviceError):
        devices.create_virtual(serial)
    assert devices.list() == []


# ---- add: one seed one device, all or nothing ---------------------------------------------------

def spec(serial, seed=None, **kw):
    return DeviceSpec(serial, seed if seed is not None else secrets.token_bytes(20), **kw)


def test_one_seed_one_device(devices):
    seed = secrets.token_bytes(20)
    devices.add([spec("A", seed)])
    with pytest.raises(DeviceError, match="seed"):
        devices.add([spec("B", seed)])
    # The fingerprint does not care about the device's other parameters.
    with pytest.raises(DeviceError, match="seed"):
        devices.add([spec("C", seed, kind="hotp", digits=8)])
    assert [d["serial"] for d in devices.list()] == ["A"]


def test_one_seed_one_device_against_create_virtual(devices):
    info = devices.create_virtual("V1")
    seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
    with pytest.raises(DeviceError, match="seed"):
        devices.add([spec("V2", seed)])


def test_same_seed_twice_in_one_input_is_refused(devices):
    seed = secrets.token_bytes(20)
    with pytest.raises(DeviceError, match="same seed"):
        devices.add([spec("A", seed), spec("B", seed)])
    assert devices.list() == []


def test_same_serial_twice_in_one_input_is_refused(devices):
    with pytest.raises(DeviceError, match="twice"):
        devices.add([spec("A"), spec("A")])
    assert devices.list() == []


@pytest.mark.parametrize("bad", [
    spec("bad serial"), spec("EXISTING"), spec("S", b"short"), spec("S", kind="x"),
    spec("S", digits=9), spec("S", counter=-1), spec("S", user=" bob"),
])
def test_add_is_all_or_nothing(devices, bad):
    devices.add([spec("EXISTING")])
    batch = [spec(f"OK{i}") for i in range(50)]
    batch.insert(25, bad)
    with pytest.raises(DeviceError):
        devices.add(batch)
    assert [d["serial"] for d in devices.list()] == ["EXISTING"]


def test_add_is_all_or_nothing_on_a_seed_clash(devices):
    seed = secrets.token_bytes(20)
    devices.add([spec("OLD", seed)])
    with pytest.raises(DeviceError):
        devices.add([spec("N1"), spec("N2", seed), spec("N3")])
    assert [d["serial"] for d in devices.list()] == ["OLD"]


def test_add_can_assign_directly_up_to_the_limit(devices):
    devices.add([spec(f"D{i}", user="bob") for i in range(8)])
    assert len(devices.list(user="bob")) == 8
    with pytest.raises(DeviceError, match="more than 8"):
        devices.add([spec(f"E{i}", user="carol") for i in range(9)])
    assert devices.list(user="carol") == []


def test_add_a_thousand_devices_in_one_call(devices):
    assert devices.add([spec(f"T{i:05d}") for i in range(1000)]) == 1000
    assert len(devices.list()) == 1000


# ---- enable -------------------------------------------------------------------------------------

def test_enable_with_two_consecutive_codes(devices, verifier):
    key = key_of(devices.create_virtual("S1"))
    result = devices.enable("alice", "S1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)
    assert result == {"user": "alice", "serial": "S1", "status": "assigned"}
    (row,) = devices.list(user="alice")
    assert row["status"] == "assigned" and row["user"] == "alice" and row["enabled_at"] == NOW
    # The second code was consumed by enable; the next one works.
    assert verify(verifier, "alice", totp_at(key, NOW)).reason == "replay"
    assert verify(verifier, "alice", totp_at(key, NOW + 30), now=NOW + 30).accepted


def test_enable_hotp_moves_the_counter_past_both_codes(devices, verifier):
    key = key_of(devices.create_virtual("H1", kind="hotp"))
    devices.enable("alice", "H1", key.code(0), key.code(1), now=NOW)
    assert verify(verifier, "alice", key.code(1)).reason == "replay"
    assert verify(verifier, "alice", key.code(2)).accepted


@pytest.mark.parametrize("offsets", [(-1, 1), (0, -1), (0, 0), (1, 3)])
def test_enable_refuses_codes_that_are_not_consecutive(devices, offsets):
    key = key_of(devices.create_virtual("S1"))
    a, b = offsets
    with pytest.raises(DeviceError):
        devices.enable("alice", "S1", totp_at(key, NOW, a), totp_at(key, NOW, b), now=NOW)
    assert devices.list(user="alice") == []


def test_enable_refuses_codes_of_another_device(devices):
    devices.create_virtual("S1")
    other = key_of(devices.create_virtual("S2"))
    with pytest.raises(DeviceError, match="consecutive"):
        devices.enable("alice", "S1", totp_at(other, NOW, -1), totp_at(other, NOW), now=NOW)
    assert devices.list(status="assigned") == []


@pytest.mark.parametrize("code1,code2", [("12345", "123456"), ("abcdef", "123456"),
                                         ("123456", "1234567"), ("", "")])
def test_enable_refuses_malformed_codes(devices, code1, code2):
    devices.create_virtual("S1")
    with pytest.raises(DeviceError, match="digits"):
        devices.enable("alice", "S1", code1, code2, now=NOW)


def test_enable_refuses_an_assigned_device(devices):
    key = key_of(devices.create_virtual("S1"))
    devices.enable("alice", "S1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)
    later = NOW + 60
    for user in ("bob", "alice"):
        with pytest.raises(DeviceError, match="already assigned"):
            devices.enable(user, "S1", totp_at(key, later, -1), totp_at(key, later), now=later)
    assert devices.list(user="bob") == []


def test_enable_unknown_device_and_bad_user(devices):
    with pytest.raises(DeviceError, match="no device"):
        devices.enable("alice", "NOPE", "123456", "654321", now=NOW)
    key = key_of(devices.create_virtual("S1"))
    for user in ("", " alice", "alice\n", "a\x00b", "x" * 257):
        with pytest.raises(DeviceError, match="user"):
            devices.enable(user, "S1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)


def test_enable_accepts_a_drifted_clock_and_records_the_drift(devices, verifier):
    key = key_of(devices.create_virtual("S1"))
    devices.enable("alice", "S1", totp_at(key, NOW, 9), totp_at(key, NOW, 10), now=NOW)
    assert devices.list()[0]["drift_steps"] == 10
    later = NOW + 600
    assert verify(verifier, "alice", totp_at(key, later, 10), now=later).accepted


# ---- resync -------------------------------------------------------------------------------------

def enabled_totp(devices, serial="S1", user="alice", when=NOW):
    key = key_of(devices.create_virtual(serial))
    devices.enable(user, serial, totp_at(key, when, -1), totp_at(key, when), now=when)
    return key


def test_resync_a_drifted_totp(devices, verifier):
    key = enabled_totp(devices)
    ahead = NOW + 5000  # the token's clock runs 5000 s fast
    assert verify(verifier, "alice", totp_at(key, ahead)).reason == "bad_code"
    result = devices.resync("alice", "S1", totp_at(key, ahead), totp_at(key, ahead + 30), now=NOW)
    # The token shows the second code now: the drift is measured on it.
    assert result["drift_steps"] == time_step(ahead, 30) + 1 - STEP == 168
    later = NOW + 90
    assert verify(verifier, "alice", totp_at(key, later + 5000), now=later).accepted


def test_resync_a_slow_totp(devices, verifier):
    key = enabled_totp(devices, when=NOW - 10000)
    behind = NOW - 3000
    devices.resync("alice", "S1", totp_at(key, behind), totp_at(key, behind + 30), now=NOW)
    later = NOW + 300
    assert verify(verifier, "alice", totp_at(key, later - 3000 + 30), now=later).accepted


def test_resync_never_goes_back_to_used_steps(devices):
    key = enabled_totp(devices)
    with pytest.raises(DeviceError):
        devices.resync("alice", "S1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)
    # A token that has fallen behind the steps already used cannot be resynchronised there.
    with pytest.raises(DeviceError):
        devices.resync("alice", "S1", totp_at(key, NOW - 3000), totp_at(key, NOW - 2970),
                       now=NOW + 60)


def test_resync_and_reenable_see_steps_used_but_not_folded_yet(devices, verifier):
    key = enabled_totp(devices, when=NOW - 300)
    assert verify(verifier, "alice", totp_at(key, NOW, 1)).accepted  # in the used log only
    assert devices.store.steps.waiting() == 1
    with pytest.raises(DeviceError):  # would reopen the step just used
        devices.resync("alice", "S1", totp_at(key, NOW), totp_at(key, NOW, 1), now=NOW)
    devices.deactivate("alice", "S1")
    with pytest.raises(DeviceError):
        devices.enable("bob", "S1", totp_at(key, NOW), totp_at(key, NOW, 1), now=NOW)
    devices.enable("bob", "S1", totp_at(key, NOW, 2), totp_at(key, NOW, 3), now=NOW)
    assert verify(verifier, "bob", totp_at(key, NOW, 3)).reason == "replay"


def test_resync_a_hotp_counter_far_ahead(devices, verifier):
    key = key_of(devices.create_virtual("H1", kind="hotp"))
    devices.enable("alice", "H1", key.code(0), key.code(1), now=NOW)
    assert verify(verifier, "alice", key.code(502)).reason == "bad_code"
    result = devices.resync("alice", "H1", key.code(502), key.code(503), now=NOW)
    assert result["counter"] == 504
    assert verify(verifier, "alice", key.code(503)).reason == "replay"
    assert verify(verifier, "alice", key.code(504)).accepted


@pytest.mark.parametrize("offset,ok", [(48, True), (-50, True), (51, False), (-52, False)])
def test_resync_totp_window_bounds(tmp_path, offset, ok):
    cfg = make_config(tmp_path, "[otp]\nresync_window = 50\n")
    devices = open_devices(cfg)
    try:
        key = key_of(devices.create_virtual("S1"))
        devices.enable("alice", "S1", totp_at(key, NOW, -1), totp_at(key, NOW), now=NOW)
        later = NOW + 30 * 60  # well past the used steps
        codes = (totp_at(key, later, offset), totp_at(key, later, offset + 1))
        if ok:
            devices.resync("alice", "S1", *codes, now=later)
        else:
            with pytest.raises(DeviceError, match="consecutive"):
                devices.resync("alice", "S1", *codes, now=later)
    finally:
        devices.store.close()


@pytest.mark.parametrize("ahead,ok", [(998, True), (1001, False)])
def test_resync_hotp_window_bounds(devices, ahead, ok):
    key = key_of(devices.create_virtual("H1", kind="hotp"))
    devices.enable("alice", "H1", key.code(0), key.code(1), now=NOW)
    start = 2
    codes = (key.code(start + ahead), key.code(start + ahead + 1))
    if ok:
        devices.resync("alice", "H1", *codes, now=NOW)
    else:
        with pytest.raises(DeviceError, match="1000 counters"):
            devices.resync("alice", "H1", *codes, now=NOW)


def test_resync_needs_consecutive_codes_and_the_owner(devices):
    key = enabled_totp(devices)
    ahead = NOW + 600
    with pytest.raises(DeviceError):
        devices.resync("alice", "S1", totp_at(key, ahead), totp_at(key, ahead + 60), now=NOW)
    with pytest.raises(DeviceError):
        devices.resync("alice", "S1", totp_at(key, ahead), totp_at(key, ahead), now=NOW)
    with pytest.raises(DeviceError, match="not assigned to bob"):
        devices.resync("bob", "S1", totp_at(key, ahead), totp_at(key, ahead + 30), now=NOW)
    devices.create_virtual("S2")
    with pytest.raises(DeviceError, match="not assigned"):
        devices.resync("alice", "S2", "123456", "654321", now=NOW)


# ---- deactivate / delete / list -----------------------------------------------------------------

def test_deactivate_unassigns_and_codes_stop_working(devices, verifier):
    key = enabled_totp(devices)
    assert devices.deactivate("alice", "S1") == {"user": "alice", "serial": "S1",
                                                 "status": "unassigned"}
    assert devices.list()[0]["status"] == "unassigned"
    later = NOW + 60
    assert verify(verifier, "alice", totp_at(key, later), now=later).reason == "no_device"


def test_deactivate_refuses_the_wrong_user(devices):
    enabled_totp(devices)
    with pytest.raises(DeviceError, match="not assigned to bob"):
        devices.deactivate("bob", "S1")
    assert devices.list()[0]["user"] == "alice"
    devices.create_virtual("S2")
    with pytest.raises(DeviceError):
        devices.deactivate("alice", "S2")


def test_a_deactivated_device_can_be_enabled_for_someone_else(devices, verifier):
    key = enabled_totp(devices)
    devices.deactivate("alice", "S1")
    later = NOW + 300
    devices.enable("bob", "S1", totp_at(key, later, -1), totp_at(key, later), now=later)
    assert verify(verifier, "bob", totp_at(key, later, 1), now=later).accepted
    # Steps used under alice stay used.
    assert verify(verifier, "bob", totp_at(key, later), now=later).reason == "replay"


def test_delete_rules(devices):
    enabled_totp(devices)
    with pytest.raises(DeviceError, match="deactivate it before deleting"):
        devices.delete("S1")
    devices.deactivate("alice", "S1")
    assert devices.delete("S1") == {"serial": "S1", "status": "deleted"}
    assert devices.list() == []
    with pytest.raises(DeviceError, match="no device"):
        devices.delete("S1")


def test_a_deleted_seed_can_be_imported_again(devices):
    seed = secrets.token_bytes(20)
    devices.add([spec("A", seed)])
    devices.delete("A")
    devices.add([spec("B", seed)])


def test_list_filters(devices):
    enabled_totp(devices, "S1", "alice")
    enabled_totp(devices, "S2", "bob")
    devices.create_virtual("S3")
    assert [d["serial"] for d in devices.list()] == ["S1", "S2", "S3"]
    assert [d["serial"] for d in devices.list(status="assigned")] == ["S1", "S2"]
    assert [d["serial"] for d in devices.list(status="unassigned")] == ["S3"]
    assert [d["serial"] for d in devices.list(user="bob")] == ["S2"]
    assert devices.list(user="carol") == []
    row = devices.list(user="alice")[0]
    assert set(row) >= {"serial", "type", "user", "status"}
    assert row["type"] == "totp" and row["counter"] is None and row["period"] == 30


def test_re_enabling_a_device_never_reopens_used_steps(devices, verifier):
    key = enabled_totp(devices)  # enable consumed the step at NOW
    later = NOW + 300
    assert verify(verifier, "alice", totp_at(key, later), now=later).accepted
    devices.deactivate("alice", "S1")
    # Two consecutive codes that were shown (and possibly seen) before the last use.
    with pytest.raises(DeviceError):
        devices.enable("bob", "S1", totp_at(key, later, -3), totp_at(key, later, -2), now=later)
    assert verify(verifier, "bob", totp_at(key, later, -1), now=later).reason == "no_device"
    devices.enable("bob", "S1", totp_at(key, later, 1), totp_at(key, later, 2), now=later)
    for offset in (-1, 0, 2):
        assert not verify(verifier, "bob", totp_at(key, later, offset), now=later).accepted
    # Enabled with the codes one and two steps ahead: a drift of 2 was recorded.
    assert verify(verifier, "bob", totp_at(key, later + 90, 2), now=later + 90).accepted


def test_enable_hotp_never_goes_back_to_used_counters(devices, verifier):
    key = key_of(devices.create_virtual("H1", kind="hotp"))
    devices.enable("alice", "H1", key.code(0), key.code(1), now=NOW)
    assert verify(verifier, "alice", key.code(5)).accepted
    devices.deactivate("alice", "H1")
    with pytest.raises(DeviceError):
        devices.enable("bob", "H1", key.code(2), key.code(3), now=NOW)
    devices.enable("bob", "H1", key.code(6), key.code(7), now=NOW)
    assert verify(verifier, "bob", key.code(8)).accepted


@pytest.mark.parametrize("serial", ["arn:aws:iam::123456789012:mfa/bob", "a+b=c,d.e@f-g_h", "a/b",
                                    "x" * 256])
@pytest.mark.parametrize("issuer", ["mfa-radius", "ACME: VPN & Co", "Société"])
def test_otpauth_uri_round_trips_any_valid_serial(devices, serial, issuer):
    info = devices.create_virtual(serial, issuer=issuer)
    otp = pyotp.parse_uri(info["otpauth_uri"])
    assert (otp.name, otp.issuer, otp.secret) == (serial, issuer, info["secret"])
