"""The wire format, and the PAM module's own copy of it (it may not import mfa_radius)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa_radius import pam_protocol as proto

MODULE_DIR = Path(__file__).resolve().parents[1] / "pam_module"
MODULE_PATH = MODULE_DIR / "pam_mfa.py"
IMPL_PATH = MODULE_DIR / "pam_mfa_impl.py"


def load_module():
    spec = importlib.util.spec_from_file_location("pam_mfa_under_test", IMPL_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pam_mfa = load_module()
keys = st.sampled_from(sorted(proto.FIELDS | {"status", "result", "reason", "message"}))
values = st.text(max_size=40)


@given(st.sampled_from(proto.OPS + ("ok", "error")), st.dictionaries(keys, values, max_size=6))
def test_round_trip_and_both_copies_agree(head, fields):
    line = proto.encode(head, fields)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert pam_mfa.encode(head, fields) == line
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:  # lone surrogates: refused by both decoders alike
        with pytest.raises(UnicodeDecodeError):
            proto.decode(line)
        with pytest.raises(UnicodeDecodeError):
            pam_mfa.decode(line)
        return
    assert proto.decode(line) == (head, fields)
    assert pam_mfa.decode(line) == (head, fields)


@pytest.mark.parametrize("line", [b"", b"status", b"status\tuser=a", b"status\tuser\n",
                                  b"status\tuser=a\tuser=b\n", b"a\nb\n", b"s\t=x\n"])
def test_malformed_lines_are_refused(line):
    with pytest.raises(ValueError):
        proto.decode(line)
    with pytest.raises(ValueError):
        pam_mfa.decode(line)


def test_module_imports_nothing_heavy():
    """The normal path may not pull in json, tomllib, sqlite3, cryptography or mfa_radius."""
    code = (f"import sys; before = set(sys.modules); "
            f"exec(compile(open({str(MODULE_PATH)!r}).read(), 'pam_mfa', 'exec'), "
            f"{{'__file__': {str(MODULE_PATH)!r}, '__name__': 'pam_mfa'}}); "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run(["/usr/bin/python3", "-S", "-c", code], capture_output=True,
                         text=True, check=True).stdout.split()
    assert set(out) <= {"_socket", "pam_mfa_impl"}, out


def test_the_loaded_file_stays_small():
    """pam_python compiles it from source at every login: keep the code in pam_mfa_impl.py."""
    text = MODULE_PATH.read_text()
    assert len(text.splitlines()) < 50 and text.count("def ") == 0


@pytest.mark.parametrize("text, digits, expected", [
    ("secret123456", [6], ("secret", "123456")),
    ("secret12345678", [8], ("secret", "12345678")),
    ("secret12345678", [6, 8], ("secret12", "345678")),
    ("pw12345-67890", [6], ("pw", "12345-67890")),
    ("123456", [6], ("", "123456")),
    ("secret", [6], None),
    ("12345", [6], None),
    ("pass١٢٣٤٥٦", [6], None),  # non-ASCII digits are not a code
])
def test_split_code(text, digits, expected):
    assert pam_mfa.split_code(text, digits) == expected


# The PAM module has no Python API: pam_python calls its pam_sm_* hooks with a PAM handle. Its
# option parser and venv look-up are pure functions, tested here directly and fast; the same
# options are also checked end to end through pamtester (tests/integration/test_pam_pamtester.py:
# prompt=, echo_verification_code, fallback=maybe).
@pytest.mark.parametrize("argv, key, value", [
    (["m"], "fallback", "local"),
    (["m", "fallback=deny"], "fallback", "deny"),
    (["m", "prompt=Token_code:_"], "prompt", "Token code: "),
    (["m", "nullok", "debug"], "nullok", True),
    (["m", "socket=/x/y.sock"], "socket", "/x/y.sock"),
])
def test_options(argv, key, value):
    assert pam_mfa._options(argv)[key] == value


@pytest.mark.parametrize("argv", [["m", "nulok"], ["m", "fallback=maybe"], ["m", "debug=1"]])
def test_bad_options_are_refused(argv):
    with pytest.raises(pam_mfa._Misconfigured):
        pam_mfa._options(argv)


def test_default_venv_is_next_to_the_module_directory():
    assert pam_mfa._default_venvs("/work/main/pam_module/pam_mfa.py") == [
        "/work/main/.venv", "/work/main"]
    assert pam_mfa._default_venvs("/opt/mfa-radius/pam_module/pam_mfa.py")[1] == "/opt/mfa-radius"

