"""docs/vpn.md's "Decision reasons" table lists exactly the reasons the code can log.

The reasons are read from the source (ast), where they are written: the verifier's Decision(...)
literals, the RADIUS server's rejects, challenges and replies, and the SMS refusals that become
`sms_<reason>` challenges. A reason added to the code without a row (or a row left behind by a
reason that is gone) fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mfa_radius"


def _tree(path: str) -> ast.Module:
    return ast.parse((PKG / path).read_text())


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def verifier_reasons() -> set[str]:
    out = set()
    for node in ast.walk(_tree("verifier.py")):
        if isinstance(node, ast.Call) and _call_name(node) == "Decision" and len(node.args) > 1:
            out.add(_const(node.args[1]))
    return out - {None}


RADIUS_FILES = ("radius/server.py", "radius/steps.py", "radius/relay.py")  # the packet loop, its slow steps


def server_reasons() -> set[str]:
    out = set()
    for node in (n for path in RADIUS_FILES for n in ast.walk(_tree(path))):
        if isinstance(node, ast.Call):
            name, args = _call_name(node), node.args
            if name == "_reject" and len(args) > 1:
                out.add(_const(args[1]))
            elif name == "_reply" and len(args) > 4:
                out.add(_const(args[4]))
            elif name == "decision_line" and len(args) > 3:
                out.add(_const(args[3]))
            out.update(_const(k.value) for k in node.keywords if k.arg == "reason")
        elif isinstance(node, ast.FunctionDef):
            # `reason` defaults (_challenge's "password_ok") and _no_password_reason's returns.
            names = [a.arg for a in node.args.args]
            defaults = dict(zip(names[len(names) - len(node.args.defaults):], node.args.defaults))
            if "reason" in defaults:
                out.add(_const(defaults["reason"]))
            if node.name == "_no_password_reason":
                out.update(_const(n.value) for n in ast.walk(node) if isinstance(n, ast.Return))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            # result, reason = "reject", "reply_too_long"
            names = [getattr(t, "id", "") for t in node.targets[0].elts]
            if "reason" in names and isinstance(node.value, ast.Tuple):
                out.add(_const(node.value.elts[names.index("reason")]))
    return out - {None}


def sms_refusals() -> set[str]:
    """The reasons of an SMS refused (SmsTicket(False, ...), the send limits)."""
    out = set()
    for path, call in (("sms/issuer.py", "SmsTicket"), ("rules/sms.py", "Refusal")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and _call_name(node) == call:
                args = node.args
                if call == "SmsTicket" and not (args and isinstance(args[0], ast.Constant)
                                                and args[0].value is False):
                    continue
                out.add(_const(args[1] if call == "SmsTicket" else args[0]))
    return out - {None}


def code_reasons() -> set[str]:
    server = server_reasons()
    # _send_sms: reason=f"sms_{outcome.reason}"; it does not wait for the gateway, so the
    # outcome is "queued" or the refusal.
    source = "".join((PKG / path).read_text() for path in RADIUS_FILES)
    assert 'reason=f"sms_{outcome.reason}"' in source and "wait=False" in source
    return verifier_reasons() | server | {f"sms_{r}" for r in sms_refusals() | {"queued"}}


def documented_reasons() -> set[str]:
    text = (ROOT / "docs/vpn.md").read_text()
    section = text.split("### Decision reasons", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}


def test_reasons_found_in_the_code():
    # The collector itself: it sees reasons of each kind of place they are written.
    reasons = code_reasons()
    assert {"ok", "replay", "bad_code", "unknown_state", "mschap_unsupported",
            "no_user_password", "reply_too_long", "password_ok", "status_server",
            "sms_queued", "sms_rate_limited", "sms_busy"} <= reasons


def test_decision_reasons_table_lists_every_reason():
    documented, emitted = documented_reasons(), code_reasons()
    assert sorted(emitted - documented) == [], "reasons missing from docs/vpn.md"
    assert sorted(documented - emitted) == [], "docs/vpn.md lists reasons the code never logs"
