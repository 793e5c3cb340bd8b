"""Issuing an SMS code: checks, send limits, the stored hash, the message; no gateway yet.

Cheap and local (one short transaction): the daemon calls it on its event-loop thread and hands
the ticket to `SmsSender.send_code` on a worker thread (sms/service.py). The rules are
rules.sms; the user's state is the verifier's (the same cache the decision reads).
"""

from __future__ import annotations

import logging
import time

from ..errors import KeyFileError, StoreError
from ..logsetup import RateLimitedLog, safe
from ..rules import names
from ..rules import sms as rules
from ..rules.sms import SmsTicket
from ..verifier import Verifier

log = logging.getLogger("mfa_radius.verifier")
# Refusals are what a flood of "sms" answers produces: a few lines a minute per user and reason,
# then a count of the rest.
_refusals = RateLimitedLog(log)


def issue_code(verifier: Verifier, user: str, source: str = "cli",
               now: float | None = None) -> SmsTicket:
    """Make a new SMS code for `user` and record it (only its hash), or say why not.

    A new code replaces the user's live one. Refused for privileged users, users without a
    phone, a locked user, and past the per-user and global send limits; a refusal never raises.
    """
    now = time.time() if now is None else now
    try:
        user = verifier.canonical(user)
    except names.UserNameError:
        return SmsTicket(False, "malformed")
    store = verifier.store
    try:
        with store.errors("issuing an SMS code"), store.transaction():
            ticket = _issue(verifier, verifier.current_user(user), source, now)
    except (StoreError, KeyFileError) as exc:
        log.error("no SMS code for user %s: %s", safe(user), exc)
        return SmsTicket(False, "error", user)
    except Exception:  # noqa: BLE001 - a bug must not take the loop down
        log.exception("no SMS code for user %s: internal error", safe(user))
        verifier.discard_cache()
        return SmsTicket(False, "error", user)
    if ticket.ok:
        log.info("SMS code issued for user %s to %s (%s)", safe(user),
                 rules.mask_phone(ticket.phone), safe(source))
    else:
        level = logging.WARNING if ticket.reason in ("privileged", "busy") else logging.INFO
        _refusals.log(level, f"no SMS code {ticket.reason} {user[:64]}",
                      "no SMS code for user %s (%s): %s", safe(user), safe(source),
                      rules.explain(ticket.reason, ticket.retry_after))
    return ticket


def _issue(verifier: Verifier, state, source: str, now: float) -> SmsTicket:
    user, sms, store = state.name, verifier.config.sms, verifier.store
    if state.ambiguous:  # two stored names fold to this one: no phone of either is used
        return SmsTicket(False, "no_phone", user)
    refusal = rules.issue_refusal(
        phone=state.phone, privileged=bool(state.phone) and verifier.is_privileged(user),
        configured=bool(sms.gateways), locked_until=state.locked_until, now=now)
    if refusal is None:
        refusal = rules.check_limits(
            store.sms_sends_since(user, now - sms.send_window), *store.sms_sends_total(now - 60.0),
            now=now, send_limit=sms.send_limit, send_window=sms.send_window,
            global_limit=sms.global_limit_per_minute)
    if refusal is not None:
        return SmsTicket(False, refusal.reason, user, retry_after=refusal.retry_after)
    code = rules.new_code()
    expires_at = now + sms.code_ttl
    store.replace_sms_code(user, rules.code_hash(verifier.sms_key, user, code), now, expires_at)
    store.add_sms_send(user, now, source[:512])
    message = rules.render_message(sms.message, code, user, sms.host_name())
    return SmsTicket(True, "ok", user, state.phone, message, expires_at)
