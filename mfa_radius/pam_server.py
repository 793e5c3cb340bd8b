"""The daemon's Unix-socket front for the PAM module (status, verify, sms), as pam_sss asks sssd.

Runs inside the daemon's event loop and calls the verifier on that loop's thread (the verifier is
not thread-safe). The socket is world-connectable (0666) so screen lockers running as the user can
ask; who may ask about whom is decided per connection from SO_PEERCRED: uid 0 about anyone, any
other uid about its own user name only (`[pam] unprivileged_callers = "self"`) or not at all
("none"). A world-writable socket without that check would let any local user test codes for
any account (FACTS.md).

Caps, so that no caller can stall or flood the others: a maximum of concurrent connections, a
read timeout per connection, a request size cap and a token bucket per caller uid.

Standalone (tests, or a host that runs no RADIUS): `python -m mfa_radius.pam_server --config FILE`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import stat
import struct
import time
from typing import TYPE_CHECKING

from . import pam_protocol as proto
from .config import Config
from .errors import MfaError
from .names import UserNameError
from .pam_local import sms_fields, source_of, status_fields, verify_fields
from .verifier import Verifier, _safe

if TYPE_CHECKING:
    from .sms.service import SmsDispatcher

log = logging.getLogger("mfa_radius.pam")

_PEERCRED = struct.Struct("3i")


class _Bucket:
    """A token bucket: `burst` requests at once, then `rate` a second."""

    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float, now: float):
        self.tokens = burst
        self.stamp = now


class PamSocketServer:
    """Serve PAM status/verify requests on `[pam] socket` for the lifetime of the event loop."""

    # Root is every sshd/login/su: generous, only there to keep the loop responsive. Other uids
    # are one user's screen locker: a few tries, then one every two seconds.
    ROOT_RATE, ROOT_BURST = 200.0, 400.0
    USER_RATE, USER_BURST = 0.5, 10.0
    # Open connections a non-root uid may hold at once: a local user who opens (and holds) as
    # many as it can must not take the slots that root's logins (sshd, su) need.
    USER_CONNECTIONS = 4

    def __init__(self, config: Config, verifier: Verifier, *, max_connections: int = 64,
                 read_timeout: float = 5.0):
        self.config = config
        self.verifier = verifier
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._server: asyncio.AbstractServer | None = None
        self._path: str | None = None
        self._inode: tuple[int, int] | None = None
        self._active = 0
        self._user_active = 0  # of which non-root callers
        self._active_by_uid: dict[int, int] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._sms: SmsDispatcher | None = None  # built at the first SMS request
        self.metrics = None  # the metrics module while /metrics is served (the daemon sets it)

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket (directory 0755, socket 0666) and start accepting."""
        path = self.config.pam.socket
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a temporary name, set the mode, then rename: the socket never appears with
        # the wrong mode, and a stale socket from a crashed daemon is replaced atomically.
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}")
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            sock.bind(tmp)
            # Every caller may connect; SO_PEERCRED decides what it may ask.
            os.chmod(tmp, 0o666)  # noqa: S103
            os.rename(tmp, path)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        st = os.stat(path)
        self._path, self._inode = path, (st.st_dev, st.st_ino)
        self._server = await asyncio.start_unix_server(self._handle, sock=sock,
                                                       limit=proto.MAX_REQUEST)
        log.info("PAM socket listening on %s (unprivileged callers: %s)", path,
                 self.config.pam.unprivileged_callers)

    def reconfigure(self, config: Config) -> None:
        if config.pam.socket != self.config.pam.socket:
            log.warning("[pam] socket changed to %s: takes effect after a restart "
                        "(still serving %s)", config.pam.socket, self._path)
        if self._sms is not None:
            try:
                self._sms.reconfigure(config)
            except MfaError as exc:
                log.error("PAM socket: keeping the old SMS gateways: %s", exc)
        self.config = config

    def close(self) -> None:
        """Stop accepting and remove the socket file if it is still ours."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sms is not None:
            self._sms.close()
            self._sms = None
        if self._path and self._inode:
            try:
                st = os.stat(self._path)
                if (st.st_dev, st.st_ino) == self._inode and stat.S_ISSOCK(st.st_mode):
                    os.unlink(self._path)
            except OSError:
                pass
            self._path = self._inode = None

    # ---- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = self._peer_uid(writer) or 0  # None (unknown) is refused in _serve_one
        mine = self._active_by_uid.get(uid, 0)
        # A refused connection is not counted: a flood of them must not crowd out root's.
        admitted = self._active < self.max_connections and (
            not uid or (mine < self.USER_CONNECTIONS
                        # non-root callers together get half the slots, root the rest
                        and self._user_active < max(1, self.max_connections // 2)))
        if admitted:
            self._active += 1
            if uid:
                self._user_active += 1
                self._active_by_uid[uid] = mine + 1
        try:
            if admitted:
                reply = await self._serve_one(reader, writer)
            else:
                reply = self._error("busy", "Authentication service busy, try again.")
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), self.read_timeout)
        except (OSError, TimeoutError, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - one bad connection must not take the front down
            log.exception("PAM socket: internal error on one connection")
        finally:
            if admitted:
                self._active -= 1
                if uid:
                    self._user_active -= 1
                    if self._active_by_uid[uid] > 1:
                        self._active_by_uid[uid] -= 1
                    else:
                        del self._active_by_uid[uid]
            writer.close()

    async def _serve_one(self, reader, writer) -> bytes:
        uid = self._peer_uid(writer)
        if uid is None:
            return self._error("denied", "")
        try:
            line = await asyncio.wait_for(reader.readline(), self.read_timeout)
        except TimeoutError:
            log.warning("PAM socket: uid %d sent no request within %.0f s", uid, self.read_timeout)
            return b""
        except (ValueError, asyncio.LimitOverrunError):
            log.warning("PAM socket: uid %d sent an oversized request", uid)
            return self._error("malformed", "")
        if not line:
            return b""
        try:
            op, fields = proto.decode(line)
        except (ValueError, UnicodeDecodeError):
            log.warning("PAM socket: uid %d sent a malformed request", uid)
            return self._error("malformed", "")
        if op not in proto.OPS or not set(fields) <= proto.FIELDS or not fields.get("user"):
            log.warning("PAM socket: uid %d sent a malformed request", uid)
            return self._error("malformed", "")
        if not self._take_token(uid):
            log.warning("PAM socket: uid %d throttled", uid)
            return self._error("throttled", "Too many attempts, try again later.")
        try:  # the canonical name from here on (ALICE is alice), for every check and log line
            user = fields["user"] = self.verifier.canonical(fields["user"])
        except UserNameError:
            log.warning("PAM socket: uid %d sent a malformed user name %s", uid,
                        _safe(fields["user"]))
            return self._error("malformed", "")
        if not self._authorised(uid, user):
            log.warning("PAM socket: uid %d may not ask about user %s (unprivileged_callers=%s)",
                        uid, _safe(user), self.config.pam.unprivileged_callers)
            return self._error("denied", "")
        if op == "status":
            return self._status(user)
        if op == "verify":
            return self._verify(uid, fields)
        return await self._send_sms(uid, fields)

    def _status(self, user: str) -> bytes:
        try:
            return proto.encode("ok", status_fields(self.verifier, user))
        except Exception as exc:  # noqa: BLE001 - a broken store is reported, never guessed at
            log.error("PAM status for %s failed: %s", _safe(user), exc)
            return self._error("error", "")

    def _verify(self, uid: int, fields: dict) -> bytes:
        started = time.perf_counter()
        reply = verify_fields(self.verifier, fields, uid)
        if self.metrics is not None:
            self.metrics.observe("pam", fields.get("service", "")[:64] or "-", reply["result"],
                                 reply["reason"], time.perf_counter() - started)
        return proto.encode("ok", reply)

    async def _send_sms(self, uid: int, fields: dict) -> bytes:
        """Issue a code on this (the loop's) thread, send it on the dispatcher's pool, and wait
        for the gateway so that the prompt can say where the code went, or why it did not."""
        try:
            if self._sms is None:
                from .sms.gateways import SmsSender
                from .sms.service import SmsDispatcher

                self._sms = SmsDispatcher(self.verifier,
                                          SmsSender.from_config(self.config, self._sms_event))
            outcome = await self._sms.request(fields["user"], source_of(fields, uid))
        except Exception as exc:  # noqa: BLE001 - no code sent is an answer, not a crash
            log.error("PAM sms for %s failed: %s", _safe(fields["user"]), exc)
            return self._error("error", "could not send code")
        return proto.encode("ok", sms_fields(outcome, fields, uid))

    # ---- authorisation and throttling ------------------------------------------------------

    @staticmethod
    def _peer_uid(writer) -> int | None:
        sock = writer.get_extra_info("socket")
        try:
            _pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except (OSError, AttributeError, struct.error):
            return None
        return uid

    def _authorised(self, uid: int, user: str) -> bool:
        if uid == 0:
            return True
        if self.config.pam.unprivileged_callers != "self":
            return False
        try:
            return pwd.getpwuid(uid).pw_name == user
        except KeyError:
            return False

    def _take_token(self, uid: int) -> bool:
        rate, burst = ((self.ROOT_RATE, self.ROOT_BURST) if uid == 0
                       else (self.USER_RATE, self.USER_BURST))
        now = time.monotonic()
        bucket = self._buckets.get(uid)
        if bucket is None:
            if len(self._buckets) > 10000:
                self._buckets.clear()
            bucket = self._buckets[uid] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _error(self, reason: str, message: str) -> bytes:
        if self.metrics is not None:
            self.metrics.drop("pam", reason)
        return proto.encode("error", {"reason": reason, "message": message})

    def _sms_event(self, event: str, gateway: str) -> None:
        if self.metrics is not None:
            self.metrics.sms_event(event, gateway)


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve only the PAM socket until `stop` is set (or SIGTERM/SIGINT)."""
    import signal

    verifier = Verifier.open(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = PamSocketServer(config, verifier)
    await server.start()
    try:
        await stop.wait()
    finally:
        server.close()
        verifier.store.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from . import config as config_mod
    from .errors import MfaError

    parser = argparse.ArgumentParser(prog="python -m mfa_radius.pam_server",
                                     description="Serve only the PAM socket (no RADIUS).")
    parser.add_argument("--config", help="config file (default: $MFA_RADIUS_CONFIG or "
                        f"{config_mod.DEFAULT_PATH})")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_mod.load(config_mod.resolve_path(args.config))
        asyncio.run(serve(cfg))
    except MfaError as exc:
        print(f"mfa-radius: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
