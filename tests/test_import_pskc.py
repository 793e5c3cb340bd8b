"""PSKC (RFC 6030) seed files: the RFC's own figures, files written by python-pskc (plain,
pre-shared key, PBKDF2), every refusal, hostile XML, and importing into a real database.

Codes of imported tokens are checked against the real `oathtool` binary.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pskc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa_radius.devices import DeviceSpec
from mfa_radius.errors import DeviceError, ImportFormatError
from mfa_radius.importers import parse_pskc, without_users
from mfa_radius.verifier import Attempt, Verifier

DATA = Path(__file__).parent / "data" / "pskc"
RFC_SECRET = b"12345678901234567890"  # the RFC 4226 / 6238 test seed, used by RFC 6030 too
RFC_PSK = bytes.fromhex("12345678901234567890123456789012")  # RFC 6030 figure 6
HOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"
TOTP = "urn:ietf:params:xml:ns:keyprov:pskc:totp"
SECRET_A = bytes(range(1, 21))
SECRET_B = bytes(range(101, 133))


def oathtool(*args: str) -> str:
    if shutil.which("oathtool") is None:
        pytest.skip("oathtool not installed (apt-get install oathtool)")
    return subprocess.run(["oathtool", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def written(container: pskc.PSKC) -> bytes:
    out = io.BytesIO()
    container.write(out)
    return out.getvalue()


def assert_no_secret(message: str, *secrets: bytes) -> None:
    for secret in secrets:
        assert secret.hex() not in message.lower()
        assert secret.decode("latin-1") not in message


# ---- the RFC 6030 figures ---------------------------------------------------------------------

RFC_HOTP = DeviceSpec("987654321", RFC_SECRET, "hotp", 8, "SHA1", 30, 0, None, False)


def test_figure5_plain_hotp_and_its_pin_key_is_skipped():
    assert parse_pskc(str(DATA / "rfc6030-figure5.pskcxml")) == [RFC_HOTP]


def test_figure6_pre_shared_key():
    assert parse_pskc(DATA / "rfc6030-figure6.pskcxml", key=RFC_PSK) == [RFC_HOTP]


def test_figure7_password_pbkdf2():
    assert parse_pskc(DATA / "rfc6030-figure7.pskcxml", password="qwerty") == [RFC_HOTP]


def test_figure2_secret_is_too_short_to_import():
    # Figure 2's secret is "1234": 32 bits, below RFC 4226's 128-bit minimum and our 80-bit floor.
    with pytest.raises(ImportFormatError, match=r"figure2.pskcxml: key 12345678: seed is too short "
                                                r"\(32 bits"):
        parse_pskc(DATA / "rfc6030-figure2.pskcxml")


def test_figure10_bulk_file_with_shared_secret_is_refused():
    with pytest.raises(ImportFormatError, match="have the same seed"):
        parse_pskc(DATA / "rfc6030-figure10.pskcxml")


def test_figure6_without_key_says_which_key_is_needed():
    with pytest.raises(ImportFormatError, match="encrypted with a key named 'Pre-shared-key'; "
                                                "give the pre-shared key"):
        parse_pskc(DATA / "rfc6030-figure6.pskcxml")


def test_figure6_wrong_key():
    with pytest.raises(ImportFormatError, match="cannot decrypt .*wrong pre-shared"):
        parse_pskc(DATA / "rfc6030-figure6.pskcxml", key=bytes(16))


def test_figure6_key_of_the_wrong_length():
    with pytest.raises(ImportFormatError, match="Invalid key length"):
        parse_pskc(DATA / "rfc6030-figure6.pskcxml", key=RFC_PSK + RFC_PSK)


def test_figure7_wrong_or_missing_password():
    with pytest.raises(ImportFormatError, match="cannot decrypt"):
        parse_pskc(DATA / "rfc6030-figure7.pskcxml", password="azerty")
    with pytest.raises(ImportFormatError, match="give a password"):
        parse_pskc(DATA / "rfc6030-figure7.pskcxml")


def test_key_and_password_together_are_refused():
    with pytest.raises(ImportFormatError, match="not both"):
        parse_pskc(DATA / "rfc6030-figure7.pskcxml", key=RFC_PSK, password="qwerty")


def test_figure6_codes_match_oathtool(cfg, devices):
    devices.add(parse_pskc(DATA / "rfc6030-figure6.pskcxml", key=RFC_PSK))
    codes = [oathtool("--hotp", "-d", "8", "-c", str(c), RFC_SECRET.hex()) for c in (0, 1)]
    devices.enable("alice", "987654321", *codes)
    verifier = Verifier.open(cfg)
    try:
        code2 = oathtool("--hotp", "-d", "8", "-c", "2", RFC_SECRET.hex())
        assert verifier.verify(Attempt("alice", code2)).reason == "ok"
        assert verifier.verify(Attempt("alice", code2)).reason != "ok"
    finally:
        verifier.store.close()


# ---- files written by python-pskc -------------------------------------------------------------

def two_token_container() -> pskc.PSKC:
    container = pskc.PSKC()
    device = container.add_device(serial="TOK-A", manufacturer="Acme", device_userid="alice")
    device.add_key(id="ka", algorithm=HOTP, secret=SECRET_A, counter=7, response_length=6)
    container.add_key(id="kb", serial="TOK-B", algorithm=TOTP, secret=SECRET_B,
                      algorithm_suite="HMAC-SHA256", response_length=8, time_interval=60,
                      key_userid="bob")
    return container


EXPECTED = [DeviceSpec("TOK-A", SECRET_A, "hotp", 6, "SHA1", 30, 7, "alice", False),
            DeviceSpec("TOK-B", SECRET_B, "totp", 8, "SHA256", 60, 0, "bob", False)]


def test_plain_file_written_by_python_pskc(tmp_path):
    path = tmp_path / "plain.pskcxml"
    two_token_container().write(str(path))
    assert parse_pskc(str(path)) == EXPECTED
    assert parse_pskc(path.read_bytes()) == EXPECTED


@pytest.mark.parametrize("algorithm,key_len", [("aes128-cbc", 16), ("aes192-cbc", 24),
                                               ("aes256-cbc", 32), ("kw-aes128", 16)])
def test_pre_shared_key_files(algorithm, key_len):
    container = two_token_container()
    psk = os.urandom(key_len)
    container.encryption.setup_preshared_key(key=psk, algorithm=algorithm,
                                             key_name="Pre-shared-key")
    data = written(container)
    assert SECRET_A.hex() not in data.decode()
    assert parse_pskc(data, key=psk) == EXPECTED
    with pytest.raises(ImportFormatError) as info:
        parse_pskc(data)
    assert "give the pre-shared key" in str(info.value)


def test_pre_shared_key_file_encrypting_every_field():
    container = two_token_container()
    psk = os.urandom(16)
    container.encryption.setup_preshared_key(key=psk, fields=["secret", "counter",
                                                              "time_interval"])
    assert parse_pskc(written(container), key=psk) == EXPECTED


def test_password_file():
    container = two_token_container()
    container.encryption.setup_pbkdf2("correct horse", iterations=2000)
    data = written(container)
    assert parse_pskc(data, password="correct horse") == EXPECTED
    with pytest.raises(ImportFormatError, match="give a password"):
        parse_pskc(data)
    with pytest.raises(ImportFormatError, match="cannot decrypt") as info:
        parse_pskc(data, password="wrong horse")
    assert_no_secret(str(info.value), SECRET_A, SECRET_B)


def test_tampered_mac_is_refused():
    container = two_token_container()
    psk = os.urandom(16)
    container.encryption.setup_preshared_key(key=psk)
    data = written(container).decode()
    start = data.index("<pskc:ValueMAC>") + len("<pskc:ValueMAC>")
    mac = data[start:data.index("</pskc:ValueMAC>")]
    tampered = data[:start] + ("A" if mac[0] != "A" else "B") + mac[1:] + data[start + len(mac):]
    with pytest.raises(ImportFormatError, match="MAC value does not match"):
        parse_pskc(tampered.encode(), key=psk)


def test_totp_codes_match_oathtool_sha256_8_digits(cfg, devices):
    devices.add(parse_pskc(written(two_token_container())))
    now = 1_700_000_000
    code = oathtool("--totp=sha256", "-d", "8", "-s", "60", "--now", f"@{now}", SECRET_B.hex())
    hotp = oathtool("--hotp", "-c", "7", SECRET_A.hex())
    verifier = Verifier.open(cfg)
    try:
        assert verifier.verify(Attempt("bob", code, now=now)).reason == "ok"
        assert verifier.verify(Attempt("alice", hotp)).reason == "ok"
        assert verifier.verify(Attempt("alice", code[:6])).accepted is False
    finally:
        verifier.store.close()


@pytest.mark.parametrize("suite,expected", [("HMAC-SHA512", "SHA512"), ("hmac-sha1", "SHA1"),
                                            ("SHA256", "SHA256"), (None, "SHA1")])
def test_algorithm_suites(suite, expected):
    container = pskc.PSKC()
    container.add_key(serial="S", algorithm=TOTP, secret=SECRET_B, algorithm_suite=suite)
    assert parse_pskc(written(container))[0].algorithm == expected


def test_serial_falls_back_to_key_id():
    container = pskc.PSKC()
    container.add_key(id="KEY-ID-1", algorithm=HOTP, secret=SECRET_A)
    assert parse_pskc(written(container))[0].serial == "KEY-ID-1"


def test_older_algorithm_uri_spelling_is_understood():
    container = pskc.PSKC()
    container.add_key(serial="S", algorithm="urn:ietf:params:xml:ns:keyprov:pskc#totp",
                      secret=SECRET_B)
    assert parse_pskc(written(container))[0].kind == "totp"


def refusal(**key) -> str:
    container = pskc.PSKC()
    container.add_key(**{"serial": "S1", "id": "k1", "algorithm": HOTP, "secret": SECRET_A,
                         **key})
    with pytest.raises(ImportFormatError) as info:
        parse_pskc(written(container))
    message = str(info.value)
    assert "\n" not in message
    assert_no_secret(message, SECRET_A)
    return message


@pytest.mark.parametrize("key,expected", [
    ({"algorithm": "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08"},
     "unsupported algorithm"),
    ({"algorithm": "http://www.yubico.com/#yubikey-aes"}, "unsupported algorithm"),
    ({"algorithm": None}, "unsupported algorithm 'none'"),
    ({"secret": None}, "no secret"),
    ({"response_length": 7}, "response length must be 6 or 8, not 7"),
    ({"response_encoding": "HEXADECIMAL"}, "response encoding 'HEXADECIMAL' is not supported"),
    ({"response_check": True, "response_length": 6}, "check digit"),
    ({"algorithm_suite": "HMAC-MD5"}, "algorithm suite 'HMAC-MD5' is not supported"),
    ({"algorithm": TOTP, "time_interval": 7200}, "time interval must be 1-3600"),
    ({"serial": "bad serial"}, "invalid serial"),
    ({"serial": None, "id": None}, "neither a serial number nor an Id"),
    ({"secret": b"short"}, "seed is too short (40 bits"),
    ({"key_userid": "u" * 300}, "invalid user name"),
    ({"key_userid": "bad\x01user"}, "not well-formed XML"),
])
def test_refusals_name_the_key_and_the_problem(key, expected):
    assert expected in refusal(**key)


def test_duplicate_serial_in_one_file():
    container = pskc.PSKC()
    container.add_key(serial="DUP", algorithm=HOTP, secret=SECRET_A)
    container.add_key(serial="DUP", algorithm=TOTP, secret=SECRET_B)
    with pytest.raises(ImportFormatError, match="serial DUP appears twice"):
        parse_pskc(written(container))


# ---- malformed and hostile files --------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage>
<DeviceInfo><SerialNo>&lol9;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage>
<DeviceInfo><SerialNo>&e;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>
"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_entity_tricks_are_refused_quickly(data):
    start = time.perf_counter()
    with pytest.raises(ImportFormatError, match="declares XML entities"):
        parse_pskc(data)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("data,expected", [
    (b"", "empty file"),
    (b"   \n", "empty file"),
    (b"\x00\xff\xfe garbage \x89PNG", "not well-formed XML"),
    (b"serial,seed,totp\n", "not well-formed XML"),
    (b"<KeyContainer", "not well-formed XML"),
    (b"<html><body/></html>", "not a PSKC file (Missing KeyContainer)"),
    (b'<KeyContainer Version="2.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
     "Unsupported version"),
    (b'<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
     "no HOTP or TOTP keys"),
    (b'<?xml version="1.0" encoding="x-nonsense"?><a/>', "not well-formed XML"),
])
def test_malformed_files(data, expected):
    with pytest.raises(ImportFormatError) as info:
        parse_pskc(data)
    assert expected in str(info.value)
    assert str(info.value).startswith("<pskc>: ")


def test_truncated_file_at_every_tag_boundary():
    data = (DATA / "rfc6030-figure6.pskcxml").read_bytes()
    for cut in range(0, len(data) - 20, 7):
        with pytest.raises(ImportFormatError):
            parse_pskc(data[:cut], key=RFC_PSK)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImportFormatError, match="nope.xml: cannot read file"):
        parse_pskc(str(tmp_path / "nope.xml"))
    with pytest.raises(ImportFormatError, match="cannot read file"):
        parse_pskc(str(tmp_path))


def test_bad_base64_and_bad_integers():
    good = written(two_token_container()).decode()
    bad_b64 = good.replace(good[good.index("<pskc:PlainValue>"):].split("</pskc:PlainValue>")[0],
                           "<pskc:PlainValue>!!!not base64", 1)
    with pytest.raises(ImportFormatError):
        parse_pskc(bad_b64.encode())
    bad_int = good.replace('Length="8"', 'Length="eight"')
    with pytest.raises(ImportFormatError):
        parse_pskc(bad_int.encode())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_import_format_error(data):
    with pytest.raises(ImportFormatError):
        parse_pskc(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_valid_file_raises_only_import_format_error(data):
    original = bytearray(written(two_token_container()))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    try:
        specs = parse_pskc(bytes(original))
    except ImportFormatError as exc:
        assert_no_secret(str(exc), SECRET_A, SECRET_B)
    else:
        assert all(isinstance(s, DeviceSpec) for s in specs)


# ---- importing into a real database -----------------------------------------------------------

def test_import_assigns_users_unless_dropped(devices):
    specs = parse_pskc(written(two_token_container()))
    devices.add(without_users(specs[:1]))
    devices.add(specs[1:])
    listed = {d["serial"]: d for d in devices.list()}
    assert listed["TOK-A"]["user"] is None and listed["TOK-B"]["user"] == "bob"
    assert listed["TOK-B"]["algorithm"] == "SHA256" and listed["TOK-B"]["period"] == 60


def test_seed_already_in_the_database_is_refused(devices):
    devices.add(parse_pskc(DATA / "rfc6030-figure5.pskcxml"))
    container = pskc.PSKC()
    container.add_key(serial="NEW-1", algorithm=HOTP, secret=SECRET_A)
    container.add_key(serial="NEW-2", algorithm=HOTP, secret=RFC_SECRET)
    with pytest.raises(DeviceError, match="NEW-2: its seed is already held"):
        devices.add(parse_pskc(written(container)))
    assert [d["serial"] for d in devices.list()] == ["987654321"]


def test_bulk_pskc_file_imports_in_one_go(devices):
    container = pskc.PSKC()
    for i in range(500):
        container.add_key(serial=f"B{i:04d}", algorithm=TOTP, secret=os.urandom(20))
    container.encryption.setup_pbkdf2("pw", iterations=1000)
    specs = parse_pskc(written(container), password="pw")
    assert devices.add(specs) == 500


def test_deep_nesting_is_refused_before_python_pskc_sees_it():
    # python-pskc deep-copies the parsed tree: at ~150,000 levels that crashed the interpreter.
    depth = 200_000
    data = (b'<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">'
            + b"<a>" * depth + b"</a>" * depth + b"</KeyContainer>")
    with pytest.raises(ImportFormatError, match="nested more than 64 levels"):
        parse_pskc(data)
