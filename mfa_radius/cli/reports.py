"""The credential report's rows (`report`, `user list`, `user show`): what each known user can
sign in with under the current policy."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import config as config_mod
from .common import Context, iso

if TYPE_CHECKING:
    from ..verifier import Verifier


def report_rows(ctx: Context) -> list[dict]:
    """The report row of every user the database knows."""
    from ..state import open_store

    store = open_store(ctx.config)
    now = time.time()
    privileged = Privilege(ctx.config)
    with store.errors("reading users"):
        rows = (user_report(store, name, now, privileged) for name in store.user_names())
        return [r for r in rows if r is not None]


class Privilege:
    """Who may use which second factor under the config's policy: the verifier's own rule."""

    def __init__(self, cfg: config_mod.Config):
        self.cfg = cfg
        # Opened when first needed (only for users with a phone).
        self._verifier: Verifier | None = None

    def sms_usable(self, name: str, phone: str | None) -> bool:
        """A code can reach `name` by SMS: a phone, a gateway, and not privileged."""
        if not phone or not self.cfg.sms.gateways:
            return False
        if self._verifier is None:
            from ..verifier import Verifier

            self._verifier = Verifier.open(self.cfg)
        return not self._verifier.is_privileged(name)


def user_report(store, name: str, now: float, privilege: Privilege) -> dict | None:
    """The report row of `name`; None when the database knows nothing of that user."""
    with store.errors("reading user"):
        row = store.user_row(name)
        s = store.user_summary(name)
        last_used = [d["last_used_at"] for d in store.user_devices(name) if d["last_used_at"]]
    if row is None and not s["devices"] and not s["recovery_codes_left"]:
        return None
    last = max([t for t in [s["last_success"], *last_used] if t], default=None)
    # mfa_active: the user can sign in with a second factor under the current policy: a device,
    # or SMS where the policy lets a code reach them (never for privileged users).
    return {"user": name,
            "mfa_active": bool(s["devices"]) or privilege.sms_usable(name, s.get("phone")),
            "devices": s["devices"],
            "sms": bool(s.get("phone")), "recovery_codes_left": s["recovery_codes_left"],
            "last_success": iso(last), "failures": s["failures"],
            "locked": s["locked_until"] > now,
            "locked_until": iso(s["locked_until"]) if s["locked_until"] > now else None}
