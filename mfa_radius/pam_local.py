"""PAM decisions as wire fields: shared by the socket front and the module's in-process fallback.

`pam_module/pam_mfa.py` imports this lazily when the daemon's socket is unavailable and
`fallback=local`: `request(op, fields, config_path)` then answers exactly as the daemon would,
with the same verifier on the same database (SQLite's write lock keeps a code single-use across
the two). It costs a login tens of milliseconds more than the socket (imports, config parse, key
unseal) and needs the key file readable by the login process: root's sshd, login, su and sudo.
"""

from __future__ import annotations

import logging
import math
import os
import time

from .config import DEFAULT_PATH, Config
from .logsetup import fields as logfields
from .rules.names import UserNameError
from .verifier import Attempt, Verifier

log = logging.getLogger("mfa_radius.pam")


def status_fields(verifier: Verifier, user: str) -> dict:
    """The `status` reply: does this user need a code, and may they be let through without one?

    Of the canonical name (ALICE is alice); a name the rule refuses gets status "malformed",
    which the module refuses."""
    try:
        st = verifier.status(user)
    except UserNameError:
        return {"status": "malformed", "retry_after": 0, "digits": "", "sms": "",
                "sms_only": "", "phone_hint": ""}
    if st.exempt:
        status = "exempt"
    elif st.locked_for > 0:
        status = "locked"
    elif st.enrolled:
        status = "enrolled"
    elif st.allowed_without_device:
        status = "allowed_without_device"
    elif st.privileged:
        status = "required"
    else:
        status = "no_device"
    return {"status": status, "retry_after": math.ceil(st.locked_for),
            "digits": ",".join(map(str, st.digits)),
            # SMS: the module sends a code before the first prompt when sms_only, or
            # when the user answers the prompt with nothing or "sms".
            "sms": "1" if getattr(st, "sms", False) and not st.exempt else "",
            "sms_only": "1" if getattr(st, "sms_only", False) and not st.exempt else "",
            "phone_hint": getattr(st, "phone_hint", ""),
            # A locked user may still type a recovery code: the module offers it.
            "recovery": "1" if status == "locked" and st.recovery else ""}


def caller_fields(fields: dict, uid: int, user: str | None = None) -> dict:
    """The caller's kernel uid first, then the PAM items it sent, for logs and the audit record.

    From uid 0 (sshd, login, su) `service`, `rhost` and `tty` are the login program's own; any
    other uid (a screen locker, or anyone with a shell) sets them freely, so they are recorded as
    `claimed_service`, `claimed_rhost`, `claimed_tty`.
    """
    mark = "" if uid == 0 else "claimed_"
    return {"uid": uid, f"{mark}service": fields.get("service", "")[:64] or None, "user": user,
            f"{mark}rhost": fields.get("rhost", "")[:256] or None,
            f"{mark}tty": fields.get("tty", "")[:64] or None}


def source_of(fields: dict, uid: int) -> str:
    """Who asks, for the audit record: "pam uid=0 service=sshd rhost=10.0.0.9 tty=ssh"."""
    return "pam " + logfields(**caller_fields(fields, uid))


def _name(verifier: Verifier, fields: dict) -> str:
    """The canonical user name of a request (as sent when the rule refuses it), for log lines:
    the verifier canonicalises on its own."""
    try:
        return verifier.canonical(fields["user"])
    except UserNameError:
        return fields["user"]


def sms_fields(outcome, fields: dict, uid: int, log_decision: bool = True) -> dict:
    """The `sms` reply from an SmsOutcome: sent or not, why, and the line the user is shown."""
    if log_decision:
        log.info("pam sms %s", logfields(**caller_fields(fields, uid, fields["user"]),
                                         result="sent" if outcome.sent else "not_sent",
                                         reason=outcome.reason))
    return {"sent": "1" if outcome.sent else "", "reason": outcome.reason,
            "message": outcome.explain(),
            "retry_after": math.ceil(getattr(outcome.ticket, "retry_after", 0.0))}


def verify_fields(verifier: Verifier, fields: dict, uid: int, log_decision: bool = True) -> dict:
    """Verify one code and log one line (never the code); the `verify` reply.

    The in-process fallback passes log_decision=False: the PAM module logs that line itself.
    """
    user, code = _name(verifier, fields), fields.get("code", "")
    started = time.perf_counter()
    decision = verifier.verify(Attempt(user, code, source_of(fields, uid)))
    if log_decision:
        log.info("pam %s", logfields(
            **caller_fields(fields, uid, user), result=decision.result,
            reason=decision.reason,
            method=decision.method if decision.accepted and decision.method else None,
            ms=round((time.perf_counter() - started) * 1000, 1)))
    return {"result": decision.result, "reason": decision.reason,
            "message": user_message(decision.reason, decision.retry_after),
            "retry_after": math.ceil(decision.retry_after)}


def user_message(reason: str, retry_after: float) -> str:
    """What the person at the prompt is told: only what helps them, never why a code was wrong."""
    if reason == "locked":
        return f"Too many failed attempts: try again in {math.ceil(retry_after)} seconds."
    if reason == "error":
        return "Verification is unavailable, contact your administrator."
    return ""


# ---- the in-process fallback ----------------------------------------------------------------

_verifier: Verifier | None = None


_sink = None  # the PAM module's syslog writer (it logs to /dev/log without openlog)


class _SinkHandler(logging.Handler):
    """Log lines to the PAM module's syslog writer: in a login process stderr is the terminal."""

    _LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[0]:
                text += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
            if _sink is not None:
                _sink(self._LEVELS.get(record.levelno, 6), "(in-process) " + text)
        except Exception:  # noqa: BLE001 - logging must never break a login
            pass


def _open(config_path: str) -> Verifier:
    """The verifier for `config_path` (the PAM line's config=, else the fixed default).

    Never a path from the environment: in sudo and su the environment is the invoking user's. As
    root, the config and every file it names that root would read (key, database, secret files)
    must be root's alone (trusted_paths), or an unprivileged user could hand root their own
    policy, key or SMS command.
    """
    global _verifier
    if _verifier is None:
        from . import config as config_mod
        from .trusted_paths import check_root_files, check_trusted

        root = logging.getLogger("mfa_radius")
        if not any(isinstance(h, _SinkHandler) for h in root.handlers):
            root.addHandler(_SinkHandler())
            root.setLevel(logging.INFO)
            root.propagate = False
        path = config_path or DEFAULT_PATH
        as_root = os.geteuid() == 0
        if as_root:
            check_trusted(path, "config file")
        cfg: Config = config_mod.load(path)
        if as_root:
            check_root_files(cfg, database=True)
        _verifier = Verifier.open(cfg)
    return _verifier


def request(op: str, fields: dict, config_path: str = "", uid: int = 0, log=None) -> dict:
    """Answer one request in-process, as the socket would; raises MfaError if it cannot.

    `log(priority, line)` receives the log lines (syslog priorities), e.g. the module's writer.
    """
    global _sink
    _sink = log
    verifier = _open(config_path)
    if op == "status":
        return status_fields(verifier, fields["user"])
    if op == "verify":
        return verify_fields(verifier, fields, uid, log_decision=False)
    if op == "sms":
        from .sms.service import SmsService

        outcome = SmsService(verifier).request_code(fields["user"], source_of(fields, uid))
        return sms_fields(outcome, fields, uid, log_decision=False)
    raise ValueError(f"unsupported request {op!r}")
