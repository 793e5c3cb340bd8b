"""HOTP/TOTP codes checked against the RFC appendices, pyotp and the real `oathtool` binary."""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import shutil
import subprocess
import time

import pyotp
import pytest
from hypothesis import given, settings, strategies as st

from mfa_radius.otp import OtpKey, TotpKey, is_code, time_step

RFC4226_SEED = b"12345678901234567890"
# RFC 4226 Appendix D: HOTP values for counters 0-9.
RFC4226_HOTP = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]

# RFC 6238 Appendix B: the seed for each mode is "1234567890" repeated to the hash's length.
RFC6238_SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238_TOTP = [  # (time, SHA1, SHA256, SHA512), 8 digits, 30 s steps
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

OATHTOOL = shutil.which("oathtool")
needs_oathtool = pytest.mark.skipif(OATHTOOL is None,
                                    reason="oathtool not installed (apt-get install oathtool)")


def oathtool(*args: str) -> list[str]:
    out = subprocess.run([OATHTOOL, *args], capture_output=True, text=True, check=True, timeout=10)
    return out.stdout.split()


# ---- RFC vectors --------------------------------------------------------------------------------

@pytest.mark.parametrize("counter", range(10))
def test_rfc4226_appendix_d_hotp(counter):
    assert OtpKey(RFC4226_SEED).code(counter) == RFC4226_HOTP[counter]


@pytest.mark.parametrize("row", RFC6238_TOTP, ids=lambda r: str(r[0]))
@pytest.mark.parametrize("index,algorithm", [(1, "SHA1"), (2, "SHA256"), (3, "SHA512")])
def test_rfc6238_appendix_b_totp(row, index, algorithm):
    key = OtpKey(RFC6238_SEEDS[algorithm], algorithm, digits=8)
    assert key.code(time_step(row[0], 30)) == row[index]


def test_rfc6238_time_steps():
    # T = floor((now - T0) / X), T0 = 0: the appendix lists T in hex.
    assert time_step(59, 30) == 1
    assert time_step(1111111109, 30) == 0x23523EC
    assert time_step(1111111111, 30) == 0x23523ED
    assert time_step(20000000000, 30) == 0x27BC86AA
    assert time_step(59.999, 30) == 1
    assert time_step(60, 30) == 2
    assert time_step(119, 60) == 1


def test_six_digit_code_is_the_low_digits_of_the_eight_digit_one():
    key6, key8 = OtpKey(RFC4226_SEED, digits=6), OtpKey(RFC4226_SEED, digits=8)
    for counter in range(50):
        assert key8.code(counter)[-6:] == key6.code(counter)


def test_codes_are_zero_padded():
    # Appendix B's 1111111109 SHA1 code starts with a zero.
    code = OtpKey(RFC6238_SEEDS["SHA1"], digits=8).code(0x23523EC)
    assert code == "07081804" and len(code) == 8


def test_key_is_reusable_across_codes():
    # The prepared HMAC is copied per code: computing one code must not disturb the next.
    key = OtpKey(RFC4226_SEED)
    assert [key.code(c) for c in range(10)] == RFC4226_HOTP
    assert [key.code(c) for c in reversed(range(10))] == RFC4226_HOTP[::-1]


# ---- pyotp --------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=14, max_size=64), counter=st.integers(0, 2 ** 63 - 1),
       algorithm=st.sampled_from(["SHA1", "SHA256", "SHA512"]), digits=st.sampled_from([6, 8]))
def test_matches_pyotp_hotp(seed, counter, algorithm, digits):
    secret = base64.b32encode(seed).decode()
    expected = pyotp.HOTP(secret, digits=digits,
                          digest=getattr(hashlib, algorithm.lower())).at(counter)
    assert OtpKey(seed, algorithm, digits).code(counter) == expected


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=14, max_size=64), now=st.integers(0, 2 ** 34),
       period=st.sampled_from([15, 30, 60]),
       algorithm=st.sampled_from(["SHA1", "SHA256", "SHA512"]))
def test_matches_pyotp_totp(seed, now, period, algorithm):
    secret = base64.b32encode(seed).decode()
    totp = pyotp.TOTP(secret, interval=period, digest=getattr(hashlib, algorithm.lower()))
    assert OtpKey(seed, algorithm).code(time_step(now, period)) == totp.at(now)
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    assert time_step(now, period) == totp.timecode(when)


# ---- oathtool (an independent C implementation) -------------------------------------------------

@needs_oathtool
@pytest.mark.parametrize("seed_len,start", [(20, 0), (20, 123456), (32, 2 ** 32 - 5), (16, 7)])
def test_matches_oathtool_hotp(seed_len, start):
    seed = bytes(range(seed_len)) if start == 0 else secrets.token_bytes(seed_len)
    codes = oathtool("--hotp", "-c", str(start), "-w", "25", seed.hex())
    key = OtpKey(seed)
    assert codes == [key.code(start + i) for i in range(26)]


@needs_oathtool
@pytest.mark.parametrize("algorithm,seed_len", [("SHA1", 20), ("SHA256", 32), ("SHA512", 64),
                                                ("SHA1", 32)])
@pytest.mark.parametrize("digits", [6, 8])
def test_matches_oathtool_totp(algorithm, seed_len, digits):
    seed = secrets.token_bytes(seed_len)
    now = 1_700_000_000 + secrets.randbelow(10 ** 8)
    codes = oathtool(f"--totp={algorithm.lower()}", "-d", str(digits), "-N", f"@{now}",
                     "-w", "4", seed.hex())
    key = OtpKey(seed, algorithm, digits)
    step = time_step(now, 30)
    assert codes == [key.code(step + i) for i in range(5)]


@needs_oathtool
def test_matches_oathtool_totp_other_period_and_base32():
    seed = secrets.token_bytes(20)
    secret = base64.b32encode(seed).decode().rstrip("=")
    now = 1_234_567_890
    codes = oathtool("--totp", "-b", "-s", "60", "-N", f"@{now}", secret)
    assert codes == [OtpKey(seed).code(time_step(now, 60))]


@needs_oathtool
def test_matches_oathtool_now():
    seed = secrets.token_bytes(20)
    before = time.time()
    (code,) = oathtool("--totp", "--now", "now", seed.hex())
    after = time.time()
    key = OtpKey(seed)
    assert code in {key.code(time_step(before, 30)), key.code(time_step(after, 30))}


# ---- find / find_pair ---------------------------------------------------------------------------

def test_find_returns_the_matching_counter_of_the_given_ones():
    key = OtpKey(RFC4226_SEED)
    assert key.find(RFC4226_HOTP[5], range(0, 10)) == 5
    assert key.find(RFC4226_HOTP[5], range(5, 6)) == 5
    assert key.find(RFC4226_HOTP[0], range(0, 1)) == 0
    assert key.find(RFC4226_HOTP[9], range(0, 10)) == 9


def test_find_outside_the_range_is_none():
    key = OtpKey(RFC4226_SEED)
    assert key.find(RFC4226_HOTP[5], range(0, 5)) is None
    assert key.find(RFC4226_HOTP[5], range(6, 10)) is None
    assert key.find(RFC4226_HOTP[5], range(9, 1)) is None  # empty range
    assert key.find("000000", range(0, 10)) is None


def test_find_rejects_codes_that_differ_in_form():
    key = OtpKey(RFC4226_SEED)
    assert key.find(RFC4226_HOTP[1][:-1], range(0, 10)) is None
    assert key.find(RFC4226_HOTP[1] + "0", range(0, 10)) is None
    assert key.find("0" + RFC4226_HOTP[1], range(0, 10)) is None
    assert key.find("", range(0, 10)) is None


def test_find_returns_the_first_of_two_equal_codes():
    # Any 6-digit key repeats codes; the earliest match is the one to consume.
    key = OtpKey(RFC4226_SEED)
    seen: dict[str, int] = {}
    for counter in range(20000):
        code = key.code(counter)
        if code in seen:
            break
        seen[code] = counter
    else:
        pytest.skip("no repeated code in the first 20000 counters")
    assert key.find(code, range(0, counter + 1)) == seen[code]
    assert key.find(code, range(seen[code] + 1, counter + 1)) == counter
    # The order given is the order tried (the verifier tries the nearest steps first).
    assert key.find(code, [counter, seen[code]]) == counter


def test_find_agrees_with_code_for_every_algorithm_and_length():
    for algorithm in ("SHA1", "SHA256", "SHA512"):
        for digits in (6, 8):
            key = OtpKey(RFC4226_SEED * 3, algorithm, digits)
            for counter in (0, 1, 59, 2**33 + 7):
                assert key.find(key.code(counter), [counter - 1, counter]) == counter


def test_find_pair_requires_consecutive_codes():
    key = OtpKey(RFC4226_SEED)
    assert key.find_pair(RFC4226_HOTP[3], RFC4226_HOTP[4], 0, 9) == 3
    assert key.find_pair(RFC4226_HOTP[0], RFC4226_HOTP[1], 0, 9) == 0
    assert key.find_pair(RFC4226_HOTP[3], RFC4226_HOTP[5], 0, 9) is None  # gap
    assert key.find_pair(RFC4226_HOTP[4], RFC4226_HOTP[3], 0, 9) is None  # reversed
    assert key.find_pair(RFC4226_HOTP[3], RFC4226_HOTP[3], 0, 9) is None  # same twice


def test_find_pair_range_bounds_the_first_code():
    key = OtpKey(RFC4226_SEED)
    # The first code must sit in [first, last]; the second may be last + 1.
    assert key.find_pair(RFC4226_HOTP[8], RFC4226_HOTP[9], 0, 8) == 8
    assert key.find_pair(RFC4226_HOTP[8], RFC4226_HOTP[9], 0, 7) is None
    assert key.find_pair(RFC4226_HOTP[2], RFC4226_HOTP[3], 3, 9) is None


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=20, max_size=20), start=st.integers(0, 10 ** 6),
       offset=st.integers(0, 40))
def test_find_pair_locates_any_pair_in_the_window(seed, start, offset):
    key = OtpKey(seed, digits=8)
    at = start + offset
    assert key.find_pair(key.code(at), key.code(at + 1), start, start + 40) == at


def test_is_code():
    assert is_code("123456", 6)
    assert is_code("00000000", 8)
    assert not is_code("12345", 6)
    assert not is_code("1234567", 6)
    assert not is_code("12345a", 6)
    assert not is_code("12 456", 6)
    assert not is_code("", 6)
    assert not is_code("١٢٣٤٥٦", 6)  # Arabic-Indic digits are not ASCII digits


def test_find_step_prefers_the_nearest_fresh_step_and_reports_used_ones():
    key = TotpKey(RFC4226_SEED)
    order = (0, -1, 1)
    centre = 100
    assert key.find_step(key.code(101), centre, order, 50) == (101, None)
    assert key.find_step(key.code(99), centre, order, 50) == (99, None)
    # Step 99 already used (last_used 99): its code is a replay, never a match.
    assert key.find_step(key.code(99), centre, order, 99) == (None, "replay")
    assert key.find_step(key.code(100), centre, order, 100) == (None, "replay")
    assert key.find_step(key.code(101), centre, order, 100) == (101, None)
    # Outside the window: neither.
    assert key.find_step(key.code(103), centre, order, 50) == (None, None)
    # Steps before the epoch are skipped, not an error.
    assert key.find_step(key.code(0), 0, order, -1) == (0, None)


def test_find_step_refuses_the_digits_of_a_used_step_in_the_window_even_if_fresh_too():
    key = TotpKey(b"12345678901234567890")
    step = 56188870  # steps 56188870 and 56188871 both give 617002
    assert key.code(step) == key.code(step + 1)
    assert key.find_step("617002", step + 1, (0, -1, 1), step) == (None, "reused_code")
    assert key.find_step("617002", step + 1, (0, -1, 1), step - 5) == (step + 1, None)
    # Once the used step has left the window, step+1's code is just a fresh code.
    assert key.find_step("617002", step + 2, (0, -1, 1), step) == (step + 1, None)


def test_find_step_accepts_the_digits_of_a_skipped_step_from_a_fresh_step():
    """Steps 56295193 and 56295195 of the RFC 4226 seed both give 769717 (found by search):
    with 56295194 accepted, 56295193 was skipped, its digits never accepted."""
    key = TotpKey(b"12345678901234567890")
    skipped = 56295193
    assert key.code(skipped) == key.code(skipped + 2) == "769717" != key.code(skipped + 1)
    assert key.find_step("769717", skipped + 1, (0, -1, 1), skipped + 1) == (skipped + 2, None)
    # Had the skipped step been the accepted one, its digits stay refused while in the window.
    assert key.find_step("769717", skipped + 1, (0, -1, 1), skipped) == (None, "reused_code")
