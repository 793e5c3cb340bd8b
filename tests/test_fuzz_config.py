"""The config loader under malformed TOML: only ConfigError (one line, naming the file) escapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError

VALID = """\
[storage]
database = "/tmp/x/mfa.db"
key_file = "/tmp/x/secret.key"
[otp]
totp_window = 1
[policy]
lockout_failures = 5
privileged_users = ["root"]
[pam]
socket = "/tmp/x/pam.sock"
[radius]
listen = ["127.0.0.1:1812"]
password_backend = "none"
[[radius.clients]]
name = "vpn"
address = "10.0.0.1"
secret = "s3cret"
[[radius.replies]]
user = "alice"
attributes = { Class = "x", Session-Timeout = 60 }
"""
LINES = VALID.splitlines()
_DIR = Path(tempfile.mkdtemp(prefix="mfa-fuzz-config-"))

_fragment = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[", "]", "[[radius.clients]]", "= ", '"', "'''", "\\u0000", "{", "}",
                     "x = 1", "totp_window = -1", "totp_window = 1e999", "listen = 5",
                     "secret = []", "address = \"not an ip\"", "[storage]", "[radius]",
                     "lockout_failures = \"five\"", "attributes = 3", "Unknown-Attr = 1",
                     "database = 1979-05-27T07:32:00Z", "\ufeff", "\x00", "\r", "\\"]))


def _load(text: str) -> None:
    path = _DIR / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        config_mod.load(str(path))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        assert "Traceback" not in message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_raises_config_error(text):
    _load(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(LINES)), st.sampled_from(["insert", "replace",
                                                                       "delete"]), _fragment),
                min_size=1, max_size=4))
def test_mutated_valid_config_only_raises_config_error(edits):
    lines = list(LINES)
    for index, op, fragment in edits:
        index = min(index, len(lines))
        if op == "insert":
            lines.insert(index, fragment)
        elif lines and index < len(lines):
            if op == "replace":
                key = lines[index].split("=", 1)[0]
                lines[index] = f"{key}= {fragment}" if "=" in lines[index] else fragment
            else:
                del lines[index]
    _load("\n".join(lines) + "\n")


def test_invalid_utf8_and_binary():
    path = _DIR / "binary.toml"
    for data in (b"\xff\xfe[storage]\n", b"\x00" * 100, VALID.encode()[:57] + b"\xc3"):
        path.write_bytes(data)
        try:
            config_mod.load(str(path))
        except ConfigError:
            pass
