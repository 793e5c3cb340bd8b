"""Why a decision went the way it did, for --debug (as radiusd -X tells): windows, steps,
counters, policy; never a code.

A function of the decision, the user's state as the verifier had it cached, and the config; the
verifier calls it only when DEBUG is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .rules.lockout import LOCKED_RECOVERY_PER_HOUR

if TYPE_CHECKING:  # annotations only: the verifier imports this module
    from .config import Config
    from .verifier import Decision

_FIXED = {
    "exempt": "user is in [policy] exempt_users: no code asked",
    "malformed": "user name refused by the name rule (empty, over-long, surrounding space, "
                 "control or format characters), or an empty or over-long code",
    "ambiguous_user": "two stored user names fold to this one: refused until one is renamed "
                      "(mfa-radius user rename)",
    "error": "the database or key file failed: refused (fail closed)",
}


def explain(decision: Decision, state, unopenable: frozenset[str], config: Config,
            now: float) -> str:
    """One line saying why.

    `state`: the user as cached (devices with their steps and counters, failures), None when
    not cached; `unopenable`: serials of the user's devices whose seeds do not open.
    """
    reason = decision.reason
    if reason == "ok":
        return f"{decision.method} code accepted" + (
            f" from device {decision.serial}" if decision.serial else "")
    if reason == "error" and unopenable:
        return (f"the seeds of device(s) {', '.join(sorted(unopenable))} do not open with this "
                "key file, and the user has no other method: refused")
    if reason in _FIXED:
        return _FIXED[reason]
    if state is None:
        return reason
    if reason == "replay" and decision.method == "recovery":
        return "a recovery code already used (each works once); not counted as a guess"
    if reason == "locked" and decision.method == "recovery":
        return (f"recovery code checked while locked: not one of the user's (at most "
                f"{LOCKED_RECOVERY_PER_HOUR} an hour while locked)")
    if reason == "locked":
        return (f"locked for {decision.retry_after:.0f} s more after {state.failures} "
                f"consecutive failures ([policy] lockout_*; 'mfa-radius user unlock')")
    if reason in ("no_device", "no_device_allowed"):
        rule = ("lets it through ([policy] nullok / nullok_groups)" if reason ==
                "no_device_allowed" else "refuses it (privileged, or nullok off)")
        return f"no device, recovery code or usable phone; policy {rule}"
    parts = [f"{d.serial} ({d.kind}, {d.digits} digits): {d.key.describe(d, now, config.otp)}"
             for d in state.devices]
    what = {"replay": "the code belongs to a step or counter already used (a code works once)",
            "reused_code": "a fresh step gives the digits of the step last accepted, still in "
                           "the window: the same code is never accepted twice (the next code "
                           "works)",
            "bad_code": f"the code matches no device, recovery code or SMS code (failure "
                        f"{state.failures} of {config.policy.lockout_failures} before a "
                        "lockout)"}.get(reason, reason)
    return what + "; searched " + ("; ".join(parts) or "no device")
