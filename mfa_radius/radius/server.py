"""The RADIUS packet loop: UDP in, one verifier batch per loop tick, signed replies out.

Each readable socket is drained with `recvfrom` until it would block; every request of that tick
that needs a code checked joins ONE `verifier.verify_batch` call (one transaction, group commit),
then the replies go out. Password checks (PAM) run in a thread pool and join the next batch when
they finish (steps.py, with the SMS step). The verifier is only ever called on the loop thread.

Drops are silent on the wire (RFC 2865: unknown clients, wrong secrets, malformed packets) and
logged at most once per source every few seconds, so a flood cannot fill the disk.

`RadiusServer` is one class of a little over 300 lines (with steps.py's mixin) on purpose: the
per-request path is method calls on one object that holds all of its state, and
that path is the one the benchmark measures against FreeRADIUS.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from .. import hostport
from ..config import Config
from ..errors import ConfigError, MfaError, StoreError
from ..logsetup import BulkLines, RateLimitedLog, decision_line
from ..rules.names import UserNameError, policy_rule
from ..rules.sms import is_sms_request
from ..sms.gateways import SmsSender
from ..sms.service import SmsDispatcher
from ..verifier import Attempt, Decision, Verifier
from . import codec
from .challenge import ChallengeStore
from .clients import ClientTable
from .dedup import IN_PROGRESS, NEW, DuplicateCache
from .job import Job
from .passwords import backend
from .relay import UpstreamSteps
from .replies import ReplyTable
from .shared import ReplyLedger, SharedChallenges, request_digest
from .steps import PasswordAndSmsSteps

log = logging.getLogger("mfa_radius.radius")

LOG_FLUSH_DELAY = 0.1  # seconds a decision line may wait to be written with others
MAX_PER_TICK = 1024  # datagrams read per readable event, so one busy socket cannot starve others
RECV_SIZE = codec.MAX_PACKET
CHALLENGE_MESSAGE = "Enter the verification code from your device: "


class DropLog:
    """Silent drops, logged at most `burst` times a minute per (source, reason) (logsetup), and
    counted by cause when metrics are on."""

    def __init__(self):
        self._limited = RateLimitedLog(log)
        self.metrics = None

    def drop(self, source: str, reason: str, detail: str = "", cause: str = "malformed") -> None:
        self._limited.warning(f"{source} {reason}", "dropped request from %s: %s%s", source,
                              reason, f": {detail}" if detail else "")
        if self.metrics is not None:
            self.metrics.drop("radius", cause)


def bind_socket(address: str) -> socket.socket:
    try:
        where = hostport.parse(address)
    except ValueError as exc:  # config.load has said so already, with the line
        raise ConfigError(f"[radius] listen: {exc}") from None
    family = where.family
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # One socket per configured address: never answer IPv4 through a v4-mapped socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(where.sockaddr)
    except OSError as exc:
        sock.close()
        raise MfaError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


class RadiusServer(PasswordAndSmsSteps, UpstreamSteps):
    """The packet loop of `[radius] listen`; the password and SMS steps are in steps.py, those
    of an upstream password server in relay.py."""

    def __init__(self, config: Config, verifier: Verifier, passwords=None):
        self.verifier = verifier
        self.passwords = passwords if passwords is not None else backend(config)
        # One backend per distinct setting, shared by the clients that name it.
        self._backends = {config.radius.password_backend: self.passwords}
        self._grouped: set[str] = set()  # backends whose directory groups the verifier sees
        self.sockets: list[socket.socket] = []
        self.dedup = DuplicateCache(config.radius.duplicate_ttl)
        self.challenges: ChallengeStore | SharedChallenges
        self.challenges = ChallengeStore(config.radius.challenge_timeout)
        # Other nodes answer from the same database: they must know our States and replies.
        self.ledger: ReplyLedger | None = None
        if verifier.store.shared:
            self.challenges = SharedChallenges(verifier.store, self.challenges)
            self.ledger = ReplyLedger(verifier.store, config.radius.duplicate_ttl)
        self._outbox: list[tuple[Job, bytes]] | None = None  # replies held for one record()
        self.drops = DropLog()
        self._challenge_full = RateLimitedLog(log)
        # The requests waiting for the next verifier batch, and their attempts (same order).
        self._queue: list[Job] = []
        self._attempts: list[Attempt] = []
        self._flush_handle: asyncio.Handle | None = None
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self.sms: SmsDispatcher | None = None  # once [[sms.gateways]] are configured
        self._metrics = None
        self._lines = BulkLines(log.name)
        self._apply(config)

    # ---- configuration ---------------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        """Build everything derived from the config first, then swap it in (all or nothing)."""
        clients = ClientTable.from_config(config)
        replies = ReplyTable.from_config(config)
        r = config.radius
        for name in {c.password_backend or r.password_backend for c in r.clients}:
            if name not in self._backends:  # a client's own: built once, kept across reloads
                self._backends[name] = backend(config, name)
        for name, passwords in self._backends.items():
            if hasattr(passwords, "accounts") and name not in self._grouped:
                # A directory's groups for the users it checks (ldap_passwords.py).
                self.verifier.accounts = passwords.accounts(self.verifier.accounts)
                self._grouped.add(name)
        message = r.challenge_message.encode("utf-8")
        if not message or len(message) > 253:
            raise ConfigError(f"{config.path}: [radius] challenge_message must be 1-253 octets")
        timeout = codec.encode_attr(codec.SESSION_TIMEOUT,
                                    min(int(r.challenge_timeout), 2**32 - 1).to_bytes(4, "big"))
        tail = codec.encode_attr(codec.REPLY_MESSAGE, message) + timeout
        sms = self._sms_for(config)  # last: it may replace the running gateways
        self._canonical, _ = policy_rule(config.policy)
        self.config = config
        self.clients = clients
        self.replies = replies
        self.sms = sms
        self.dedup.ttl = r.duplicate_ttl
        self.challenges.timeout = r.challenge_timeout
        if self.ledger is not None:
            self.ledger.ttl = r.duplicate_ttl
        self._challenge_attrs_tail = tail
        self._session_timeout_attr = timeout

    def _sms_for(self, config: Config):
        if not config.sms.gateways:
            return self.sms  # kept for a later reload; unused while no user can get an SMS
        if self.sms is None:
            return SmsDispatcher(self.verifier, SmsSender.from_config(config, self._sms_event))
        self.sms.reconfigure(config)
        return self.sms

    def _sms_event(self, event: str, gateway: str) -> None:
        if self._metrics is not None:
            self._metrics.sms_event(event, gateway)

    @property
    def metrics(self):
        """The metrics module while `/metrics` is served (the daemon sets it), else None."""
        return self._metrics

    @metrics.setter
    def metrics(self, module) -> None:
        self._metrics = self.drops.metrics = module

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config (clients, secrets, replies, timeouts); ConfigError keeps the old.

        Listen addresses and the password backend change on restart only.
        """
        self._apply(config)

    # ---- sockets ---------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every `[radius] listen` address (before start, so errors reach the admin)."""
        try:
            for address in self.config.radius.listen:
                self.sockets.append(bind_socket(address))
        except MfaError:
            self.close()
            raise

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def close(self) -> None:
        for sock in self.sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []
        for task in list(self._tasks):
            task.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for passwords in self._backends.values():
            passwords.close()
        self._lines.flush()
        if self.sms is not None:
            self.sms.close()

    def addresses(self) -> list[str]:
        out = []
        for sock in self.sockets:
            host, port = sock.getsockname()[:2]
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    # ---- receiving -------------------------------------------------------------------------

    def _on_readable(self, sock: socket.socket) -> None:
        recvfrom = sock.recvfrom
        datagram = self._datagram
        self._draining = True
        try:
            for _ in range(MAX_PER_TICK):
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.warning("receive error: %s", exc)
                    break
                try:
                    datagram(sock, data, addr)
                except Exception:  # one bad packet must never stop the server
                    log.exception("internal error on a packet from %s", addr[0])
        finally:
            self._draining = False
        # Decide what was drained now rather than on the next pass of the loop (one pass, one
        # epoll_wait fewer per tick).
        if self._queue:
            self._flush()

    def _datagram(self, sock: socket.socket, data: bytes, addr: tuple) -> None:
        host = addr[0]
        client = self.clients.lookup(host)
        if client is None:
            self.drops.drop(host, "unknown client", cause="unknown_client")
            return
        try:
            # Authenticated first (Message-Authenticator): an entry in the duplicate cache is
            # only ever made or found by a packet that carries the client's secret.
            request = codec.parse_request(data, client.secret, client.require_ma)
        except codec.Malformed as exc:
            what = "wrong shared secret" if exc.cause == "wrong_secret" else "malformed"
            self.drops.drop(host, f"{what} (client {client.name})", str(exc), exc.cause)
            return
        # request.raw stops at the Length field: padding beyond it is not compared (RFC 2865 3).
        key = (host, addr[1], request.id, request.authenticator, request.raw)
        now = time.monotonic()
        cached = self.dedup.claim(key, now)
        if cached is not NEW:
            if self._metrics is not None:
                self._metrics.DUPLICATES.labels(client.name).inc()
            if cached is IN_PROGRESS:
                log.debug("client %s: duplicate of a request in progress, dropped", client.name)
            elif isinstance(cached, bytes):
                log.debug("client %s: duplicate, cached reply sent again", client.name)
                self._send(sock, cached, addr)
            return
        job = Job(sock, addr, client, request, key, now)
        try:
            if request.code == codec.STATUS_SERVER:
                self._status_server(job)
            else:
                self._access_request(job)
        except Exception:
            self.dedup.abandon(key)  # unanswered: let the retransmit try again
            raise

    # ---- deciding --------------------------------------------------------------------------

    def _access_request(self, job: Job) -> None:
        request = job.request
        raw_user = request.user_name or b""
        try:
            job.user = user = raw_user.decode("utf-8")  # as sent, for the log
        except UnicodeDecodeError:
            job.user = raw_user.decode("utf-8", "backslashreplace")
            return self._reject(job, "malformed")
        # Once, before any policy: what the verifier, the password backend, the replies and
        # the decision line see is the canonical name (ALICE, EXAMPLE\alice: alice).
        try:
            canonical = self._canonical(user)
        except UserNameError:
            return self._reject(job, "malformed")
        passwords = self._backends[job.client.password_backend]
        if hasattr(passwords, "alias"):  # the directory's name for it (ldap_passwords.py)
            canonical = passwords.alias(canonical)
        if canonical != user:
            job.user, job.sent = canonical, user
        if job.client.groups and not passwords.needs_password \
                and not self.verifier.accounts.groups(job.user) & job.client.groups:
            return self._reject(job, "not_in_group")  # a password backend's step checks it
        hidden = request.password
        if hidden is not None:
            password = codec.decrypt_password(hidden, request.authenticator, job.client.secret)
        elif request.state is not None and self.sms is not None:
            # Proxies (FreeRADIUS) and radclient leave out an empty User-Password: at a
            # challenge, that is the empty answer, which asks for an SMS.
            password = b""
        else:
            return self._reject(job, self._no_password_reason(request))
        state = request.state
        # Before any step that changes something (a State taken, a password tried, an SMS
        # sent): a retransmit another node answered gets that answer. A code alone is looked
        # up with the others of its batch (_flush).
        if self.ledger is not None and (
                state is not None or passwords.needs_password
                or (self.sms is not None and is_sms_request(password))) \
                and not self._not_answered_elsewhere(self.ledger, [job]):
            return
        if state is None and self.sms is None and not passwords.needs_password:
            return self._verify(job, password)  # a code alone, the usual case
        if state is not None:
            try:
                challenge = self.challenges.take(state, job.user, job.client.name, time.time())
            except MfaError as exc:  # the shared database is unreachable
                return self._store_down(job, exc)
            if challenge is None:
                return self._reject(job, "unknown_state")
            if challenge.kind == "relay":  # the answer to an upstream's challenge
                return self._spawn(self._relay_answer(job, password, challenge))
            job.extra = bytes.fromhex(challenge.data.get("upstream", ""))
            return self._code_or_sms(job, password, passwords.needs_password)
        if not passwords.needs_password:
            return self._code_or_sms(job, password, False)
        self._spawn(self._password_step(job, password))

    @staticmethod
    def _no_password_reason(request: codec.Request) -> str:
        # CHAP, MS-CHAP and EAP cannot carry a one-time code through a password check: PAP only.
        if request.get(codec.CHAP_PASSWORD) is not None:
            return "chap_unsupported"
        if request.get(codec.EAP_MESSAGE) is not None:
            return "eap_unsupported"
        if request.is_mschap():
            return "mschap_unsupported"
        return "no_user_password"

    def _spawn(self, coro) -> None:
        """Run `coro` as a task of the loop, kept until done (close() cancels what is left)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("RadiusServer.start() was not called")
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _verify(self, job: Job, code: bytes, password_only: bool = False) -> None:
        try:
            text = code.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(job, "malformed")
        source = f"radius:{job.client.name} nas={job.addr[0]}"
        self._queue.append(job)
        self._attempts.append(Attempt(job.user, text, source, nullok=job.client.nullok,
                                      password_only=password_only))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._draining:
            return  # _on_readable flushes when the socket is drained
        if self._queue and self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Decide every queued attempt in ONE verifier call, then send the replies."""
        self._flush_handle = None
        jobs, self._queue = self._queue, []
        attempts, self._attempts = self._attempts, []
        if not jobs:
            return
        if self.ledger is not None:
            fresh = set(map(id, self._not_answered_elsewhere(
                self.ledger, [j for j in jobs if not j.checked])))
            kept = [(j, a) for j, a in zip(jobs, attempts) if j.checked or id(j) in fresh]
            if not kept:
                return
            jobs, attempts = [j for j, _ in kept], [a for _, a in kept]
        try:
            decisions = self.verifier.verify_batch(attempts)
        except Exception:  # verify_batch fails closed itself; this is the last line of defence
            log.exception("verifier failed on a batch of %d", len(jobs))
            decisions = [Decision(False, "error")] * len(jobs)
        if self.ledger is not None and isinstance(self.verifier.last_error, StoreError):
            # The shared database is unreachable: no reply, so the client tries the other
            # server (which may still reach it) and retransmits here; never an accept.
            for job in jobs:
                self._store_down(job, self.verifier.last_error)
            return
        self._outbox = [] if self.ledger is not None else None
        try:
            for job, decision in zip(jobs, decisions):
                try:
                    if decision.accepted:
                        attrs = job.extra + self.replies.for_user(job.user,
                                                                  self.verifier.accounts)
                        self._reply(job, codec.ACCESS_ACCEPT, attrs, "accept", decision.reason)
                    else:
                        self._reject(job, decision.reason)
                except Exception:  # one reply's problem must not stop the others
                    self.dedup.abandon(job.key)
                    log.exception("internal error replying to client %s", job.client.name)
        finally:
            outbox, self._outbox = self._outbox, None
            if outbox and self.ledger is not None:
                self._send_recorded(self.ledger, outbox)

    def _store_down(self, job: Job, exc: MfaError) -> None:
        """No reply while the shared database cannot be reached (see _flush)."""
        self.dedup.abandon(job.key)
        self.drops.drop(job.addr[0], "database unavailable", str(exc), "store_unavailable")

    def _not_answered_elsewhere(self, ledger: ReplyLedger, jobs: list[Job]) -> list[Job]:
        """The jobs no other node has answered; the others get that node's reply again."""
        for job in jobs:
            job.checked = True
            job.digest = request_digest(job.client.name, job.key)
        recorded = ledger.recorded([j.digest for j in jobs])
        if not recorded:
            return jobs
        left = []
        for job in jobs:
            reply = recorded.get(job.digest)
            if reply is None:
                left.append(job)
                continue
            self.dedup.finish(job.key, reply, time.monotonic())
            if self._metrics is not None:
                self._metrics.DUPLICATES.labels(job.client.name).inc()
            log.debug("client %s: duplicate of a request another node answered, its reply "
                      "sent", job.client.name)
            self._send(job.sock, reply, job.addr)
        return left

    def _send_recorded(self, ledger: ReplyLedger, outbox: list[tuple[Job, bytes]]) -> None:
        """Record the replies for the other nodes, then send them."""
        ledger.record([(j.digest or request_digest(j.client.name, j.key), reply)
                       for j, reply in outbox])
        for job, reply in outbox:
            self._send(job.sock, reply, job.addr)

    def _challenge(self, job: Job, message: str | None = None, kind: str = "code",
                   reason: str = "password_ok", with_state: bool = True,
                   data: dict | None = None) -> None:
        """Access-Challenge: a new State (unless `with_state` is False), and Reply-Message (the
        configured one by default). Without room for a State (ChallengeStore's bounds), a
        reject."""
        state: bytes | None = b""
        if with_state:
            try:
                state = self.challenges.issue(job.user, job.client.name, time.time(), kind=kind,
                                              data=data)
            except MfaError as exc:  # the shared database could not take it
                return self._store_down(job, exc)
            if state is None:
                self._challenge_full.warning(job.client.name, "client %s: no room for another "
                                             "challenge State; rejected", job.client.name)
                return self._reject(job, "challenge_limit")
        if message is None:
            tail = self._challenge_attrs_tail
        else:
            raw = message.encode("utf-8")[:253].decode("utf-8", "ignore").encode("utf-8")
            tail = codec.encode_attr(codec.REPLY_MESSAGE, raw) + self._session_timeout_attr
        attrs = (codec.encode_attr(codec.STATE, state) if state else b"") + tail
        self._reply(job, codec.ACCESS_CHALLENGE, attrs, "challenge", reason)

    # ---- SMS codes (docs/sms.md): asked for with an empty answer or "sms" ----------------

    def _code_or_sms(self, job: Job, answer: bytes, password_round: bool) -> None:
        """Verify the code, unless the user asks for an SMS (then send one and challenge).

        `password_round`: this answer carries the State of a round whose password was checked.
        """
        if self.sms is None or not is_sms_request(answer):
            return self._verify(job, answer)
        self._spawn(self._sms_step(job, answer, password_round))

    def _reject(self, job: Job, reason: str) -> None:
        # Only Message-Authenticator and Proxy-State: every reject looks the same on the wire,
        # so a reject tells nobody whether the user exists or which factor was wrong.
        self._reply(job, codec.ACCESS_REJECT, b"", "reject", reason)

    # ---- replying --------------------------------------------------------------------------

    def _status_server(self, job: Job) -> None:
        """Access-Accept to a Status-Server probe (RFC 5997): counted apart from logins, and
        logged at DEBUG only (appliances and proxies probe every few seconds)."""
        reply = codec.build_reply(codec.ACCESS_ACCEPT, job.request, job.client.secret)
        now = time.monotonic()
        self.dedup.finish(job.key, reply, now)
        self._send(job.sock, reply, job.addr)
        if self._metrics is not None:
            self._metrics.status_server(job.client.name)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", decision_line(job.client.name, "-", "accept", "status_server",
                                          (now - job.started) * 1000))

    def _reply(self, job: Job, code: int, attrs: bytes, result: str, reason: str) -> None:
        try:
            reply = codec.build_reply(code, job.request, job.client.secret, attrs)
        except ValueError as exc:  # too many Proxy-State or reply attributes for one packet
            log.error("client %s: cannot build reply: %s", job.client.name, exc)
            reply = codec.build_reply(codec.ACCESS_REJECT, job.request, job.client.secret)
            result, reason = "reject", "reply_too_long"
        now = time.monotonic()
        self.dedup.finish(job.key, reply, now)
        if self._outbox is not None:
            self._outbox.append((job, reply))  # recorded with the batch's others, then sent
        elif self.ledger is not None:
            self._send_recorded(self.ledger, [(job, reply)])
        else:
            self._send(job.sock, reply, job.addr)
        elapsed = now - job.started
        if self._metrics is not None:
            self._metrics.observe("radius", job.client.name, result, reason, elapsed)
        if self._lines.add(decision_line(job.client.name, job.user[:256] or "-", result,
                                           reason, elapsed * 1000, job.sent[:256],
                                           job.client.policy)):
            # One write for all the lines of the next LOG_FLUSH_DELAY seconds (BulkLines
            # writes at once past its cap): a write per loop tick costs a syscall for a few
            # lines.
            if self._loop is not None:
                self._loop.call_later(LOG_FLUSH_DELAY, self._lines.flush)
            else:
                self._lines.flush()

    def _send(self, sock: socket.socket, reply: bytes, addr: tuple) -> None:
        try:
            sock.sendto(reply, addr)
        except OSError as exc:
            self.drops.drop(addr[0], "send failed", str(exc), "send_failed")
