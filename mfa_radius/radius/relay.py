"""The RADIUS front's side of an upstream password server (upstream.py): the reply attributes of
its Access-Accept kept for ours, its Access-Challenge relayed to the client, the client's answer
sent back to it; and the accept of a client that needs the password alone.

A part of RadiusServer (mixed into it), like steps.py. An upstream challenge is relayed with a
State of ours (the ChallengeStore's: random, single use, bound to user and client, expiring)
that maps to the upstream's State and server; the code typed with the first password, if any,
travels with it (not on a shared store, which would keep it in the database: the code is then
asked for), so that the upstream's accept is followed by the code step as usual.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import MfaError
from .challenge import Challenge
from .job import Job
from .parts import ServerParts
from .passwords import Overloaded
from .upstream import Outcome, UpstreamBusy, UpstreamUnavailable

log = logging.getLogger("mfa_radius.radius")

RELAY_PROMPT = "Enter the response: "


class UpstreamSteps(ServerParts):
    """The upstream-password steps of RadiusServer, which provides what is declared here."""

    if TYPE_CHECKING:
        async def _password_right(self, job: Job, status) -> None: ...

    async def _check_password(self, passwords, job: Job, password: bytes,
                              code: bytes | None) -> bool | None:
        """Whether `password` is right; None when an upstream challenged and the challenge was
        relayed (answered). `code`: what was typed after the password, verified once the
        upstream accepts."""
        if not getattr(passwords, "relays", False):
            return await passwords.check(job.user, password)
        outcome = await passwords.ask(job.user, password, job.request)
        if outcome.challenged:
            self._relay(job, outcome, code)
            return None
        if outcome.accepted:
            job.extra = outcome.attrs
        return outcome.accepted

    def _relay(self, job: Job, outcome: Outcome, code: bytes | None) -> None:
        if self.ledger is not None:
            # A shared store keeps the State's data in the database: never a code there. The
            # code is asked for again once the upstream accepts.
            code = None
        data = {"state": (outcome.state or b"").hex(), "server": outcome.server,
                "code": code.hex() if code is not None else None}
        # Without a Reply-Message of its own, not ours (which asks for the code): a neutral one.
        self._challenge(job, outcome.message or RELAY_PROMPT, kind="relay",
                        reason="upstream_challenge", data=data)

    async def _relay_answer(self, job: Job, answer: bytes, challenge: Challenge) -> None:
        """The client's answer to a relayed challenge: to the upstream that asked, then the
        code step (or another relayed challenge)."""
        passwords = self._backends[job.client.password_backend]
        data = challenge.data
        code = bytes.fromhex(data["code"]) if data.get("code") is not None else None
        try:
            outcome = await passwords.ask(job.user, answer, job.request,
                                          state=bytes.fromhex(data["state"]),
                                          server=int(data["server"]))
            if outcome.challenged:
                return self._relay(job, outcome, code)
            if not outcome.accepted:
                return self._reject(job, "bad_password")
            job.extra = outcome.attrs
            if code is not None and job.client.code_required:
                return self._verify(job, code)
            try:
                status = self.verifier.status(job.user)
            except MfaError as exc:
                log.error("status of a user failed: %s", exc)
                return self._reject(job, "error")
            if status.locked_for > 0:
                return self._reject(job, "locked")
            await self._password_right(job, status)
        except (Overloaded, UpstreamBusy) as exc:
            self.dedup.abandon(job.key)
            self.drops.drop(job.addr[0], "overloaded", str(exc), "overload")
        except UpstreamUnavailable:
            self._reject(job, "upstream_unavailable")
        except asyncio.CancelledError:
            self.dedup.abandon(job.key)
            raise
        except Exception:  # fail closed
            log.exception("upstream answer failed for client %s", job.client.name)
            self._reject(job, "error")

    def _password_only(self, job: Job) -> None:
        """Accept on the password alone (the client is set `code_required = false`): through
        the verifier's batch, which records it in the audit log (and refuses a user locked
        meanwhile)."""
        self._verify(job, b"-", password_only=True)
