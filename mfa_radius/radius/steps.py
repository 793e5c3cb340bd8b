"""The steps of an Access-Request that wait for something off the packet loop: the primary
password (PAM, on the password backend's threads) and an SMS send.

A part of RadiusServer (mixed into it), apart from the packet loop in server.py: a code-only
request, the usual case, never comes here. Every step ends in the server's `_verify` (the code
joins the next verifier batch), `_challenge` or `_reject`, and fails closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..config import Config, RadiusConfig
from ..errors import MfaError
from ..logsetup import RateLimitedLog
from ..rules.sms import should_send
from .job import Job
from .parts import ServerParts
from .passwords import Overloaded
from .upstream import UpstreamBusy, UpstreamUnavailable

if TYPE_CHECKING:
    from ..sms.service import SmsDispatcher

log = logging.getLogger("mfa_radius.radius")


def split_password(typed: bytes, radius: RadiusConfig,
                   digits: int | None = None) -> tuple[bytes, bytes] | None:
    """(password, code) from password+code as typed, or None when it cannot hold a code.

    Suffix mode takes the last `digits` characters (default `[radius] code_digits`).
    """
    if radius.password_split == "delimiter":
        password, sep, code = typed.rpartition(radius.delimiter.encode("utf-8"))
        return (password, code) if sep and password and code else None
    digits = digits or radius.code_digits
    if len(typed) <= digits or not typed[-digits:].isdigit():
        return None
    return typed[:-digits], typed[-digits:]


class PasswordAndSmsSteps(ServerParts):
    """The password and SMS steps of RadiusServer, which provides what is declared here."""

    config: Config
    passwords: Any  # the [radius] password backend (passwords.backend)
    sms: SmsDispatcher | None
    _errors = RateLimitedLog(log)  # a dead directory fails every request alike: once a minute

    if TYPE_CHECKING:
        async def _check_password(self, passwords, job: Job, password: bytes,
                                  code: bytes | None) -> bool | None: ...

        def _password_only(self, job: Job) -> None: ...

    async def _password_step(self, job: Job, typed: bytes) -> None:
        """Check the primary password (off the loop), then ask for the code or decide.

        Unknown, locked and real users take alike (passwords.py): the NSS look-up runs on the
        backend's threads, a locked user waits as long as the checks would have taken (none is
        run: a locked account's password is not tried), and fast rejects are padded.
        """
        passwords = self._backends[job.client.password_backend]
        try:
            groups = await passwords.run(self.verifier.accounts.groups, job.user)
            if job.client.groups and not groups & job.client.groups:
                await passwords.pad()  # as long as a check: says nothing about the password
                return self._reject(job, "not_in_group")
            try:
                status = self.verifier.status(job.user)  # on the loop, the groups cached
            except MfaError as exc:
                log.error("status of a user failed: %s", exc)
                return self._reject(job, "error")
            # One split per code length of the user's devices (6 and 8 digits may both occur);
            # none where the client needs the password alone.
            splits = {split for d in sorted(status.digits, reverse=True) or (None,)
                      if (split := split_password(typed, self.config.radius, d)) is not None
                      and job.client.code_required}
            if status.locked_for > 0:
                for _ in range(len(splits) + 1):
                    await passwords.pad()
                return self._reject(job, "locked")
            for split in sorted(splits):
                ok = await self._check_password(passwords, job, split[0], split[1])
                if ok is None:
                    return  # the upstream's challenge was relayed
                if ok:
                    if not self._directory_admits(passwords, job):
                        return self._reject(job, "not_in_group")
                    return self._verify(job, split[1])
            ok = await self._check_password(passwords, job, typed, None)
            if ok is None:
                return
            if ok:
                if not self._directory_admits(passwords, job):
                    return self._reject(job, "not_in_group")
                if hasattr(passwords, "name_of"):  # the directory's groups and name
                    status = self.verifier.status(job.user)
                    if status.locked_for > 0:  # under the directory's name (a first alias)
                        return self._reject(job, "locked")
                return await self._password_right(job, status)
            return self._reject(job, "bad_password")
        except (Overloaded, UpstreamBusy) as exc:
            self.dedup.abandon(job.key)
            self.drops.drop(job.addr[0], "overloaded", str(exc), "overload")
        except UpstreamUnavailable:  # upstream.py has logged which server failed
            self._reject(job, "upstream_unavailable")
        except asyncio.CancelledError:
            self.dedup.abandon(job.key)
            raise
        except MfaError as exc:  # a directory that could not be asked (ldap_passwords.py)
            self._errors.error("password backend", "password check failed for client %s: %s",
                               job.client.name, exc)
            self._reject(job, "error")
        except Exception:  # fail closed
            log.exception("password check failed for client %s", job.client.name)
            self._reject(job, "error")

    async def _password_right(self, job: Job, status) -> None:
        """The password is right and no code came with it: decide, or ask for the code."""
        if not job.client.code_required:
            return self._password_only(job)
        allowed = status.allowed_without_device if job.client.nullok is None \
            else job.client.nullok and not status.privileged
        if status.exempt or (not status.enrolled and allowed):
            # The verifier records it and answers exempt / no_device_allowed / nullok_client.
            return self._verify(job, b"-")
        if self.sms is not None and should_send(status, None):
            return await self._send_sms(job, True)  # SMS is this user's only method
        data = {"upstream": job.extra.hex()} if job.extra else None
        return self._challenge(job, self._sms_hint(status), data=data)

    def _directory_admits(self, passwords, job: Job) -> bool:
        """After a directory accepted the password (password_backend = "ldap"): its name for
        the user becomes the one policy sees, and whether `[ldap] required_groups` lets them
        on to the code. Other backends admit everyone whose password they accept."""
        name_of = getattr(passwords, "name_of", None)
        if name_of is None:
            return True
        job.user, sent = name_of(job.user), job.sent or job.user
        if sent != job.user:
            job.sent = sent
        return passwords.admits(job.user)

    async def _sms_step(self, job: Job, answer: bytes, password_round: bool) -> None:
        try:
            status = self.verifier.status(job.user)
            if not should_send(status, answer.decode("utf-8", "replace")):
                return self._verify(job, answer)  # no SMS for this user: an ordinary (bad) code
            await self._send_sms(job, password_round)
        except asyncio.CancelledError:
            self.dedup.abandon(job.key)
            raise
        except Exception:  # fail closed
            log.exception("SMS request failed for client %s", job.client.name)
            self._reject(job, "error")

    async def _send_sms(self, job: Job, password_round: bool) -> None:
        """Send a code and challenge for it (docs/sms.md, "Through RADIUS").

        A refused send (rate limit, lockout) still answers with a Challenge, as a code sent
        earlier may still be typed, but it adds no State unless the password was checked for
        this round (one State taken, one given). Without a password backend a State proves
        nothing and the next answer is checked as a code anyway: a flood of "sms" answers must
        not fill the State store.
        """
        if self.sms is None:  # a reload removed the gateways since this request arrived
            return self._reject(job, "error")
        source = f"radius:{job.client.name} nas={job.addr[0]}"
        outcome = await self.sms.request(job.user, source, wait=False)
        text = outcome.explain()
        if outcome.sent or outcome.queued:
            message = f"{text}. Enter the code: "
            with_state = True
        else:  # refused (rate limit, ...): a code sent earlier may still be typed
            message = f"{text[:1].upper()}{text[1:]}. {self.config.radius.challenge_message}"
            with_state = password_round
        self._challenge(job, message, kind="sms", reason=f"sms_{outcome.reason}",
                        with_state=with_state)

    def _sms_hint(self, status) -> str | None:
        if self.sms is None or not getattr(status, "sms", False):
            return None
        prompt = self.config.radius.challenge_message
        stripped = prompt.rstrip(": ")  # the hint goes before the prompt's own ": "
        return (f"{stripped} (or type sms for a code sent to your phone {status.phone_hint})"
                f"{prompt[len(stripped):]}")

