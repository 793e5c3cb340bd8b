"""SMS codes as plain functions: phone numbers, codes and their hashes, the message, who may get
a code, the limits.

No I/O here (sms/issuer.py and the gateways do that), so every rule can be tested on plain data.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, field

CODE_DIGITS = 6
# The longest user name that `{user}` is checked against when the config is loaded (useradd's
# limit); longer names are cut to this length in the message.
MAX_USER_IN_MESSAGE = 32
SMS_MAX = 160  # GSM 03.38 septets in one SMS

_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_FIELDS = {"code", "user", "host"}

# GSM 03.38 basic character set (one septet each) and its extension table (two septets each).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXT = set("^{}\\[~]|€\f")


def normalise_phone(text: str) -> str:
    """Drop the spaces, dashes, dots and brackets people type inside a number."""
    return re.sub(r"[\s\-.()]", "", text.strip())


def phone_problem(phone: str) -> str | None:
    """Why `phone` is not an E.164 number ("+" then 8 to 15 digits, no leading 0), or None."""
    if _E164.match(phone):
        return None
    return (f"{phone!r} is not a phone number in E.164 form: '+', the country code and the "
            "number, 8 to 15 digits, no leading 0 and no spaces (e.g. +15550001111)")


def phone_hint(phone: str) -> str:
    """What a user is told about where the code went: "ending 1234"."""
    return f"ending {phone[-4:]}" if phone else ""


def mask_phone(phone: str) -> str:
    """A phone number as it may appear in a log line: only the last four digits."""
    if not phone:
        return "-"
    return "+" + "*" * max(0, len(phone) - 5) + phone[-4:]


def new_code() -> str:
    """A fresh six-digit code from the system's CSPRNG."""
    return str(secrets.randbelow(10 ** CODE_DIGITS)).zfill(CODE_DIGITS)


def code_hash(key: bytes, user: str, code: str) -> bytes:
    """HMAC-SHA256 of user and code: a database without the key file does not give codes away,
    and the same code for two users stores as two different hashes."""
    return hmac.digest(key, user.encode("utf-8") + b"\0" + code.encode("ascii", "replace"),
                       hashlib.sha256)


def looks_like_code(text: str) -> bool:
    return len(text) == CODE_DIGITS and text.isascii() and text.isdigit()


# What a user types at a code prompt to ask for an SMS instead: nothing, or the word "sms".
SMS_REQUESTS = ("", "sms")


def is_sms_request(answer: str | bytes) -> bool:
    """True when what the user typed asks for an SMS (SMS_REQUESTS, any case, surrounding
    whitespace ignored). Bytes (a RADIUS User-Password as it arrives) are read as UTF-8 first,
    so the RADIUS and PAM fronts apply the same rule."""
    if isinstance(answer, bytes):
        answer = answer.decode("utf-8", "replace")
    return answer.strip().lower() in SMS_REQUESTS


def should_send(status, answer: str | None = None) -> bool:
    """Should a front send an SMS code now?

    `status` is the verifier's UserStatus. Before the first prompt pass `answer=None`: the code
    is sent only when SMS is the user's only method. At a prompt, pass what the user typed: an
    empty answer or "sms" asks for a code. A device code is never intercepted.
    """
    if not getattr(status, "sms", False) or status.exempt:
        return False
    if answer is None:
        return bool(status.sms_only)
    return is_sms_request(answer)


# ---- the message ------------------------------------------------------------------------------

def template_problem(template: str, host: str) -> str | None:
    """Why the message template is unusable (fields, characters, length), or None."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid template ({exc}); write literal braces as {{{{ and }}}}"
    names = set()
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in _FIELDS or spec or conv:
            return (f"has an unknown field {{{name}}}: use only {{code}}, {{user}} and {{host}}, "
                    "without format specs")
        names.add(name)
    if "code" not in names:
        return "must contain {code}"
    sample = template.format(code="0" * CODE_DIGITS, user="u" * MAX_USER_IN_MESSAGE,
                             host=gsm_safe(host))
    bad = sorted({c for c in sample if c not in _GSM_BASIC and c not in _GSM_EXT})
    if bad:
        return (f"has characters outside the GSM 7-bit alphabet ({''.join(bad)!r}): such an SMS "
                "is sent as UCS-2 and holds only 70 characters")
    length = gsm_length(sample)
    if length > SMS_MAX:
        return (f"is {length} GSM characters long with a {MAX_USER_IN_MESSAGE}-character user and "
                f"the host name {host!r}: at most {SMS_MAX} fit in one SMS")
    return None


def render_message(template: str, code: str, user: str, host: str) -> str:
    """The text to send; user and host are cut and cleaned so that it stays one GSM SMS."""
    return template.format(code=code, user=gsm_safe(user[:MAX_USER_IN_MESSAGE]),
                           host=gsm_safe(host))


def gsm_safe(text: str) -> str:
    """`text` with characters outside the GSM basic set (and line breaks) replaced by '?'."""
    return "".join(c if c in _GSM_BASIC and c not in "\r\n" else "?" for c in text)


def gsm_length(text: str) -> int:
    return sum(2 if c in _GSM_EXT else 1 for c in text)


# ---- who may get a code, and how often -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Refusal:
    """A code not issued: why (the reason a ticket and a decision line carry), and when to try
    again (seconds, 0 when waiting does not help)."""

    reason: str
    retry_after: float = 0.0


def issue_refusal(*, phone: str | None, privileged: bool, configured: bool,
                  locked_until: float, now: float) -> Refusal | None:
    """Why this user gets no code at all, before the send limits are counted, or None.

    No phone registered; a privileged user (never by SMS, whatever is registered); no gateway
    configured; locked out (until `locked_until`, Unix time).
    """
    if not phone:
        return Refusal("no_phone")
    if privileged:
        return Refusal("privileged")
    if not configured:
        return Refusal("not_configured")
    if locked_until > now:
        return Refusal("locked", locked_until - now)
    return None


def check_limits(user_sends: list[float], global_sends: int, global_oldest: float | None, *,
                 now: float, send_limit: int, send_window: float,
                 global_limit: int) -> Refusal | None:
    """Refuse a send when the user had `send_limit` sends within `send_window` seconds, or when
    `global_limit` codes went out in the last minute (against SMS pumping and toll fraud).

    `user_sends`: times of the user's sends within the window; `global_sends`: how many sends
    in the last 60 s, the oldest at `global_oldest`.
    """
    recent = sorted(t for t in user_sends if t > now - send_window)
    if len(recent) >= send_limit:
        # The window frees up when the oldest send that still counts falls out of it.
        oldest = recent[len(recent) - send_limit]
        return Refusal("rate_limited", max(1.0, oldest + send_window - now))
    if global_sends >= global_limit:
        return Refusal("busy", max(1.0, (global_oldest or now) + 60.0 - now))
    return None


def explain(reason: str, retry_after: float = 0.0) -> str:
    """One line for the user (and the admin) saying why no code was sent and when to retry."""
    wait = _duration(retry_after)
    return {
        "ok": "code sent",
        "no_phone": "no phone number is registered for SMS codes",
        "privileged": "SMS codes are not allowed for privileged accounts",
        "not_configured": "SMS codes are not configured on this server",
        "locked": f"too many failed attempts; try again in {wait}",
        "rate_limited": f"too many codes sent; try again in {wait}",
        "busy": f"too many codes are being sent right now; try again in {wait}",
        "malformed": "invalid user name",
        "error": "could not send code",
        "send_failed": "could not send code",
    }.get(reason, "could not send code")


def _duration(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    if seconds < 120:
        return f"{seconds} s"
    return f"{(seconds + 59) // 60} min"


@dataclass(frozen=True, slots=True)
class SmsTicket:
    """The answer to "send this user a code" (sms/issuer.py): a refusal (why, when to retry), or
    the phone and the text to send, for a gateway, off the event loop (SmsSender.send_code).

    The message holds the code: it is kept out of repr() and must never be logged.
    """

    ok: bool
    reason: str  # ok, no_phone, privileged, not_configured, locked, rate_limited, busy, malformed,
    #              error
    user: str = ""
    phone: str = field(default="", repr=False)
    message: str = field(default="", repr=False)
    expires_at: float = 0.0
    retry_after: float = 0.0

    @property
    def hint(self) -> str:
        """Where the code goes, for the prompt: "ending 1234"."""
        return phone_hint(self.phone)

    def explain(self) -> str:
        """One line for the user: where the code went, or why none was sent."""
        if self.ok:
            return f"A code was sent to your phone {self.hint}"
        return explain(self.reason, self.retry_after)
