"""OATH CSV seed files: parsing, every error, importing through Devices.add into a real database.

Codes of imported tokens are checked against the real `oathtool` binary.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa_radius.devices import DeviceSpec
from mfa_radius.errors import DeviceError, ImportFormatError
from mfa_radius.importers import parse_csv, parse_csv_file
from mfa_radius.verifier import Attempt, Verifier

RFC_SEED = "3132333435363738393031323334353637383930"  # "12345678901234567890", RFC 4226/6238
SEED2 = "3132333435363738393031323334353637383931"


def oathtool(*args: str) -> str:
    if shutil.which("oathtool") is None:
        pytest.skip("oathtool not installed (apt-get install oathtool)")
    return subprocess.run(["oathtool", *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


# ---- parsing ----------------------------------------------------------------------------------

def test_defaults_and_every_column():
    specs = parse_csv(
        "# serial, seed, type, digits, period/counter, user\n"
        "\n"
        f"HW1, {RFC_SEED}, totp\n"
        f"  HW2 ,{SEED2.upper()},  HOTP , 8 , 42 , alice  \n"
        f'"HW3","{"ab" * 20}","Totp","6","60",""\n'
        "   # an indented comment\n", "tokens.csv")
    assert specs == [
        DeviceSpec("HW1", bytes.fromhex(RFC_SEED), "totp", 6, "SHA1", 30, 0, None, False),
        DeviceSpec("HW2", bytes.fromhex(SEED2), "hotp", 8, "SHA1", 30, 42, "alice", False),
        DeviceSpec("HW3", b"\xab" * 20, "totp", 6, "SHA1", 60, 0, None, False),
    ]


def test_empty_optional_columns_take_defaults():
    [spec] = parse_csv(f"HW1,{RFC_SEED},hotp,,,\n")
    assert (spec.digits, spec.counter, spec.user) == (6, 0, None)


def test_crlf_and_no_final_newline():
    specs = parse_csv(f"A1,{RFC_SEED},totp\r\nA2,{SEED2},hotp")
    assert [s.serial for s in specs] == ["A1", "A2"]


def test_hardware_tokens_are_not_virtual():
    [spec] = parse_csv(f"A1,{RFC_SEED},totp\n")
    assert spec.virtual is False


BAD_LINES = [
    (f"X1,{RFC_SEED[:-1]}z,totp", "not hexadecimal"),
    (f"X1,{RFC_SEED}0,totp", "odd number of hex digits"),
    ("X1,,totp", "empty seed"),
    ("X1,31323334,totp", "too short (32 bits"),
    (f"X1,{'00' * 200},totp", "too long"),
    (f"X1,{RFC_SEED},ocra", "unknown type 'ocra'"),
    (f"X1,{RFC_SEED},totp,7", "digits must be 6 or 8, not 7"),
    (f"X1,{RFC_SEED},totp,six", "digits must be a whole number"),
    (f"X1,{RFC_SEED},totp,6,3x", "period must be a whole number"),
    (f"X1,{RFC_SEED},totp,6,-30", "period must be a whole number"),
    (f"X1,{RFC_SEED},totp,6,0", "period must be 1-3600 seconds, not 0"),
    (f"X1,{RFC_SEED},totp,6,3601", "period must be 1-3600 seconds"),
    (f"X1,{RFC_SEED},hotp,6,1_000", "start counter must be a whole number"),
    (f"X1,{RFC_SEED},hotp,6,{'9' * 30}", "start counter is out of range"),
    (f"X1,{RFC_SEED},hotp,6,{2 ** 63}", "start counter"),
    (f"X1,{RFC_SEED},totp,6,30,bob,extra", "too many columns (7"),
    (f"X1,{RFC_SEED}", "too few columns (2"),
    (f" ,{RFC_SEED},totp", "empty serial"),
    (f"bad serial!,{RFC_SEED},totp", "invalid serial"),
    (f"{'s' * 257},{RFC_SEED},totp", "invalid serial"),
    (f"X1,{RFC_SEED},totp,6,30,bad\x01user", "invalid user name"),
    (f'X1,"{RFC_SEED},totp', "quoted field is not closed"),
]


@pytest.mark.parametrize("line,expected", BAD_LINES)
def test_each_error_names_file_line_and_problem(line, expected):
    text = f"# header\nOK1,{SEED2},totp\n{line}\nOK2,{'cd' * 20},totp\n"
    with pytest.raises(ImportFormatError) as info:
        parse_csv(text, "vendor.csv")
    message = str(info.value)
    assert message.startswith("vendor.csv:3: "), message
    assert expected in message
    assert "\n" not in message
    for secret in (RFC_SEED, RFC_SEED.lower(), SEED2, "12345678901234567890"):
        assert secret not in message


def test_duplicate_serial_within_the_file():
    with pytest.raises(ImportFormatError, match=r"t.csv:4: serial A1 already appears on line 2"):
        parse_csv(f"#\nA1,{RFC_SEED},totp\nA2,{SEED2},totp\nA1,{'ef' * 20},hotp\n", "t.csv")


def test_duplicate_seed_within_the_file():
    with pytest.raises(ImportFormatError, match=r"t.csv:2: device A2 has the same seed as line 1"):
        parse_csv(f"A1,{RFC_SEED},totp\nA2,{RFC_SEED.upper()},hotp\n", "t.csv")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "  \n# x\n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(ImportFormatError, match="no tokens found"):
        parse_csv(text, "empty.csv")


def test_nul_byte_is_a_clear_error():
    with pytest.raises(ImportFormatError, match=r"^x.csv:1: "):
        parse_csv(f"A1,{RFC_SEED},to\x00tp\n", "x.csv")


def test_default_source_name():
    with pytest.raises(ImportFormatError, match=r"^<csv>:1: "):
        parse_csv("A1,zz,totp\n")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab01,; \t\"'#\n\r\x00x9é-")), max_size=200))
def test_garbage_raises_only_import_format_error(text):
    try:
        specs = parse_csv(text, "fuzz.csv")
    except ImportFormatError as exc:
        assert str(exc).startswith("fuzz.csv")
    else:
        assert all(isinstance(s, DeviceSpec) for s in specs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12),
                          st.text(alphabet="0123456789abcdefXg ", max_size=48),
                          st.sampled_from(["totp", "HOTP", "x", ""]),
                          st.text(alphabet="0123456789-+ ", max_size=4),
                          st.text(alphabet="0123456789 ", max_size=6), st.text(max_size=8)),
                min_size=1, max_size=5))
def test_structured_garbage_raises_only_import_format_error(rows):
    text = "\n".join(",".join(row) for row in rows)
    try:
        parse_csv(text, "fuzz.csv")
    except ImportFormatError:
        pass


# ---- importing into a real database -----------------------------------------------------------

def test_imported_hotp_token_verifies_oathtool_codes(cfg, devices):
    devices.add(parse_csv(f"HOTP1,{RFC_SEED},hotp,8,5,alice\n"))
    verifier = Verifier.open(cfg)
    try:
        # Counter 5 is the start: oathtool's codes for 5 and 6 are accepted, in order, once each.
        code5 = oathtool("--hotp", "-d", "8", "-c", "5", RFC_SEED)
        code6 = oathtool("--hotp", "-d", "8", "-c", "6", RFC_SEED)
        assert verifier.verify(Attempt("alice", code5)).reason == "ok"
        assert verifier.verify(Attempt("alice", code5)).accepted is False
        decision = verifier.verify(Attempt("alice", code6))
        assert (decision.accepted, decision.method, decision.serial) == (True, "hotp", "HOTP1")
    finally:
        verifier.store.close()


def test_imported_totp_token_verifies_oathtool_codes(cfg, devices):
    devices.add(parse_csv(f"TOTP1,{SEED2},totp,8,60,bob\n"))
    now = 1_700_000_000
    code = oathtool("--totp", "-d", "8", "-s", "60", "--now", f"@{now}", SEED2)
    verifier = Verifier.open(cfg)
    try:
        assert verifier.verify(Attempt("bob", code, now=now)).reason == "ok"
        assert verifier.verify(Attempt("bob", code, now=now)).accepted is False
    finally:
        verifier.store.close()


def test_import_lists_devices_assigned_or_not(devices):
    assert devices.add(parse_csv(f"U1,{RFC_SEED},totp\nA1,{SEED2},hotp,6,0,carol\n")) == 2
    listed = {d["serial"]: d for d in devices.list()}
    assert listed["U1"]["status"] == "unassigned" and listed["U1"]["virtual"] is False
    assert listed["A1"]["user"] == "carol" and listed["A1"]["type"] == "hotp"


def test_unassigned_import_then_enable_with_two_oathtool_codes(devices):
    devices.add(parse_csv(f"H9,{RFC_SEED},hotp\n"))
    codes = [oathtool("--hotp", "-c", str(c), RFC_SEED) for c in (3, 4)]
    assert devices.enable("dave", "H9", *codes)["status"] == "assigned"


def test_one_bad_line_imports_nothing(devices):
    good = "\n".join(f"G{i},{secrets.token_hex(20)},totp" for i in range(50))
    with pytest.raises(ImportFormatError, match=":51: "):
        devices.add(parse_csv(good + "\nBAD,nothex,totp\n", "f.csv"))
    assert devices.list() == []


def test_clash_with_the_database_imports_nothing(devices):
    devices.add(parse_csv(f"OLD,{RFC_SEED},totp\n"))
    batch = "\n".join(f"N{i},{secrets.token_hex(20)},totp" for i in range(20)) + "\nOLD,"
    with pytest.raises(DeviceError, match="serial OLD already exists"):
        devices.add(parse_csv(batch + f"{SEED2},totp\n"))
    assert [d["serial"] for d in devices.list()] == ["OLD"]


def test_seed_already_held_by_another_device_is_refused(devices):
    devices.add(parse_csv(f"FIRST,{RFC_SEED},totp\n"))
    with pytest.raises(DeviceError, match="SECOND: its seed is already held") as info:
        devices.add(parse_csv(f"OTHER,{SEED2},hotp\nSECOND,{RFC_SEED.upper()},hotp\n"))
    assert RFC_SEED not in str(info.value)
    assert [d["serial"] for d in devices.list()] == ["FIRST"]


def test_assignment_column_respects_max_devices(devices):
    # The default cap is 8 devices a user; 9 lines for one user import nothing.
    lines = [f"E{i},{secrets.token_hex(20)},totp,6,30,erin" for i in range(9)]
    with pytest.raises(DeviceError, match="erin would hold more than 8 devices"):
        devices.add(parse_csv("\n".join(lines)))
    assert devices.list() == []
    devices.add(parse_csv("\n".join(lines[:8])))
    assert len(devices.list(user="erin")) == 8
    with pytest.raises(DeviceError, match="more than 8"):
        devices.add(parse_csv(f"E99,{secrets.token_hex(20)},totp,6,30,erin\n"))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list("AB12,\n #") + ["hotp", "totp", RFC_SEED, SEED2,
                                                       "alice", ",8", ",6"]), max_size=40))
def test_garbage_through_devices_add_raises_only_our_errors(devices, tokens):
    text = "".join(tokens)
    try:
        devices.add(parse_csv(text, "fuzz.csv"))
    except (ImportFormatError, DeviceError):
        pass


def test_ten_thousand_lines_import_in_seconds(devices):
    n = 10_000
    text = "\n".join(f"P{i:06d},{secrets.token_hex(20)},{'totp' if i % 2 else 'hotp'}"
                     for i in range(n))
    start = time.perf_counter()
    specs = parse_csv(text, "bulk.csv")
    parsed = time.perf_counter() - start
    assert devices.add(specs) == n
    total = time.perf_counter() - start
    # Measured here: ~0.1 s to parse and ~0.3 s to add; the bound leaves room for a busy CI.
    assert parsed < 3 and total < 10, (parsed, total)


def test_the_documented_example_parses():
    doc = (Path(__file__).parent.parent / "docs" / "hardware-tokens.md").read_text()
    example = next(block for block in doc.split("```") if "HW-1001," in block)
    specs = parse_csv(example, "hardware-tokens.md")
    assert [(s.serial, s.kind, s.digits, s.period, s.counter, s.user) for s in specs] == [
        ("HW-1001", "totp", 6, 30, 0, None), ("HW-1002", "totp", 8, 60, 0, None),
        ("HW-2001", "hotp", 6, 30, 0, None), ("HW-2002", "hotp", 6, 30, 0, "alice")]


def test_byte_order_mark_and_header_hint(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"A1,{RFC_SEED},totp\r\n".encode())
    assert [s.serial for s in parse_csv_file(path)] == ["A1"]
    assert [s.serial for s in parse_csv(path.read_text(encoding="utf-8"))] == ["A1"]
    with pytest.raises(ImportFormatError, match=r"h.csv:1: seed is not hexadecimal .*"
                                                r"\(a header line must start with #\)"):
        parse_csv(f"serial,seed,type\nA1,{RFC_SEED},totp\n", "h.csv")


def test_csv_file_errors(tmp_path):
    with pytest.raises(ImportFormatError, match="missing.csv: cannot read file"):
        parse_csv_file(tmp_path / "missing.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"A1,{RFC_SEED},totp,6,30,jos\xe9\n".encode("latin-1"))
    with pytest.raises(ImportFormatError, match="latin1.csv: not UTF-8 text"):
        parse_csv_file(latin1)


def test_the_cli_reports_every_bad_line_up_to_a_cap_and_imports_nothing(cfg_path, tmp_path):
    from conftest import run_cli

    good = "G1, " + secrets.token_hex(20) + ", totp\n"
    bad = [f"B{i}, nothex{i}, totp\n" for i in range(25)]
    path = tmp_path / "tokens.csv"
    path.write_text("# serial, seed, type\n" + good + "".join(bad[:3]) + "X, " +
                    secrets.token_hex(20) + ", qotp\n" + "".join(bad[3:]))
    result = run_cli(cfg_path, "device", "import", str(path), "--format", "csv")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"mfa-radius: {path}: 26 bad lines, nothing imported:"
    assert [ln.split(":")[1] for ln in lines[1:21]] == [str(n) for n in (3, 4, 5, 6, *range(7, 23))]
    assert "unknown type 'qotp'" in lines[4]
    assert lines[21:] == ["  ... and 6 more"]
    listed = run_cli(cfg_path, "device", "list")
    assert listed.returncode == 0 and "G1" not in listed.stdout
