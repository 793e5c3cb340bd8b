"""What the fronts and the CLI call for SMS codes.

Two steps, so that a daemon's event loop never waits for a gateway:

    ticket = issue_code(verifier, user, source)    # loop thread: checks, limits, stores the hash
    if ticket.ok:
        result = await loop.run_in_executor(pool, sender.send_code, ticket)   # worker thread
    prompt = ticket.explain() if result.ok else result.explain()

`SmsService.request_code` does both in a row, for the CLI and the PAM in-process fallback.
`should_send(status, answer)` (rules.sms) tells a front when to send at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field

from ..config import Config
from ..errors import MfaError
from ..rules.sms import (SmsTicket, explain, is_sms_request, mask_phone, normalise_phone,
                         phone_hint, phone_problem, should_send)
from ..verifier import Verifier
from .gateways import SendResult, SmsSender
from .issuer import issue_code

log = logging.getLogger("mfa_radius.sms")

__all__ = ["SmsService", "SmsDispatcher", "SmsOutcome", "SmsSender", "SmsTicket", "SendResult",
           "should_send", "is_sms_request", "issue_code", "sms_users"]


class SmsError(MfaError):
    """An SMS enrolment or send was refused; the text says why (and when to retry)."""


@dataclass(frozen=True, slots=True)
class SmsOutcome:
    """Issue and send together: `sent` is True only when a gateway took the message; `queued`
    when the send goes on in the background (SmsDispatcher.request with wait=False)."""

    ticket: SmsTicket = field(repr=False)
    result: SendResult | None = None
    queued: bool = False

    @property
    def sent(self) -> bool:
        return self.ticket.ok and self.result is not None and self.result.ok

    @property
    def reason(self) -> str:
        if not self.ticket.ok:
            return self.ticket.reason
        if self.queued:
            return "queued"
        return "ok" if self.sent else "send_failed"

    def explain(self) -> str:
        """One line for the user: "A code was sent to your phone ending 1234", or why not."""
        if self.sent or self.queued:
            return self.ticket.explain()
        return explain(self.reason, self.ticket.retry_after)


class SmsDispatcher:
    """For the daemon: issue codes on the event-loop thread (the verifier is not thread-safe),
    send them on a small worker pool, so the loop never waits for a gateway.

    The pool's queue stays short: the global send cap bounds how many sends can be waiting.
    """

    def __init__(self, verifier: Verifier, sender: SmsSender, workers: int = 2):
        self.verifier = verifier
        self.sender = sender
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sms")

    async def request(self, user: str, source: str, *, wait: bool = True) -> SmsOutcome:
        """Issue a code for `user` and send it. With `wait` (PAM: the prompt can say "could not
        send code"), return once a gateway answered; without (RADIUS: answer the challenge at
        once), return as soon as the send is queued."""
        ticket = issue_code(self.verifier, user, source)
        if not ticket.ok:
            return SmsOutcome(ticket)
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.sender.send_code,
                                                            ticket)
        if not wait:
            return SmsOutcome(ticket, queued=True)
        return SmsOutcome(ticket, await future)

    def reconfigure(self, config: Config) -> None:
        """Build the gateways of a new config (ConfigError, keeping the old ones, if a secret
        file is bad): call it before swapping the config in."""
        self.sender = SmsSender.from_config(config, self.sender.on_event)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SmsService:
    """Enrolment (enable/disable a phone), the report's list, and sending a code now."""

    def __init__(self, verifier: Verifier, sender: SmsSender | None = None):
        self.verifier = verifier
        self.store = verifier.store
        self.sender = sender if sender is not None else SmsSender.from_config(verifier.config)

    @classmethod
    def open(cls, config: Config, accounts=None) -> SmsService:
        return cls(Verifier.open(config, accounts))

    def enable(self, user: str, phone: str, now: float | None = None) -> dict:
        """Register `phone` (E.164) for `user`'s SMS codes; refused for privileged users."""
        now = time.time() if now is None else now
        phone = normalise_phone(phone)
        problem = phone_problem(phone)
        if problem:
            raise SmsError(problem)
        user = self.verifier.canonical(user)
        if self.verifier.is_privileged(user):
            raise SmsError(f"user {user} is privileged (root, [policy] privileged_users or a "
                           "member of privileged_groups): SMS codes are not allowed for "
                           "privileged accounts; give them a token device")
        with self.store.errors("enabling SMS"), self.store.transaction():
            changed = self.store.set_phone(user, phone, now)
        self.verifier.forget(user)
        log.info("SMS enabled for user %s at %s", user, mask_phone(phone))
        return {"user": user, "phone": phone, "hint": phone_hint(phone), "changed": changed}

    def disable(self, user: str) -> bool:
        """Remove the user's phone (and any live code); False if none was registered."""
        user = self.verifier.canonical(user)
        with self.store.errors("disabling SMS"), self.store.transaction():
            changed = self.store.set_phone(user, None, time.time())
        self.verifier.forget(user)
        if changed:
            log.info("SMS disabled for user %s", user)
        return changed

    def users(self) -> list[dict]:
        """Phone-enabled users (for `report` and `sms list`); privileged ones are flagged
        because their phone is never used."""
        return sms_users(self.store, self.verifier.is_privileged)

    def request_code(self, user: str, source: str = "cli", now: float | None = None) -> SmsOutcome:
        """Issue a code and send it, waiting for the gateways (bounded by their timeouts).

        For the CLI and the PAM in-process fallback; a daemon splits the two steps (see the
        module docstring) so that its loop never waits.
        """
        ticket = issue_code(self.verifier, user, source, now)
        if not ticket.ok:
            return SmsOutcome(ticket)
        return SmsOutcome(ticket, self.sender.send_code(ticket))


def sms_users(store, is_privileged=None) -> list[dict]:
    """Phone-enabled users from the store: user, phone, hint, enabled_at, privileged."""
    with store.errors("reading SMS users"):
        rows = store.sms_users()
    for row in rows:
        row["hint"] = phone_hint(row["phone"])
        row["privileged"] = bool(is_privileged and is_privileged(row["user"]))
    return rows
