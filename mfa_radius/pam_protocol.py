"""The wire format between the PAM module and the daemon's Unix socket.

One request per connection, one line each way, UTF-8:

    request:  OP TAB key=value TAB key=value ... LF
    response: ok|error TAB key=value ... LF

Values escape `%`, TAB, CR and LF as %25, %09, %0D, %0A, so a line always splits on TAB with
`str.split` and nothing else: the PAM module parses it with no import at all (importing json
inside pam_python is a visible share of a login: docs/benchmarks.md). `pam_module/pam_mfa.py`
carries its own copy of `encode`/`decode`, because it must not import this package on its
normal path; tests/test_pam_protocol.py checks the two agree.

Requests (OP):
    status  user                               -> status=enrolled|exempt|required|no_device|
                                                  allowed_without_device|locked|malformed,
                                                  retry_after,
                                                  digits, sms, sms_only, phone_hint, recovery
                                                  (1: locked, but recovery codes are left)
    verify  user code service rhost tty        -> result=accept|reject, reason, message, retry_after
    sms     user service rhost tty             -> sent, reason, message, retry_after (the daemon
                                                  waits for the gateway before it answers)
Errors: error reason=denied|throttled|busy|malformed|unsupported|error, message.
"""

from __future__ import annotations

MAX_REQUEST = 4096
MAX_RESPONSE = 4096
OPS = ("status", "verify", "sms")
# Fields a request may carry; anything else is malformed (no silent ignoring).
FIELDS = {"user", "code", "service", "rhost", "tty", "ruser"}


def _escape(value: str) -> str:
    return (value.replace("%", "%25").replace("\t", "%09")
            .replace("\r", "%0D").replace("\n", "%0A"))


def _unescape(value: str) -> str:
    # Every % in an escaped value starts one of the four sequences, so %25 last is exact.
    return (value.replace("%09", "\t").replace("%0D", "\r")
            .replace("%0A", "\n").replace("%25", "%"))


def encode(head: str, fields: dict) -> bytes:
    """One line: HEAD TAB key=value ... LF."""
    parts = [head]
    for key, value in fields.items():
        parts.append(f"{key}={_escape(str(value))}")
    return ("\t".join(parts) + "\n").encode("utf-8", "surrogateescape")


def decode(line: bytes) -> tuple[str, dict[str, str]]:
    """(HEAD, fields) from one line; ValueError if it is not one well-formed line."""
    text = line.decode("utf-8")
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise ValueError("not one line")
    head, *parts = text[:-1].split("\t")
    fields = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key or key in fields:
            raise ValueError("bad field")
        fields[key] = _unescape(value)
    return head, fields
