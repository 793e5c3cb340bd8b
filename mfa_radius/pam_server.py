"""The daemon's Unix-socket front for the PAM module (status, verify, sms), as pam_sss asks sssd.

Runs inside the daemon's event loop and calls the verifier on that loop's thread (the verifier is
not thread-safe). Two sockets:

- `[pam] root_socket` (default /run/mfa-radius/root/pam.sock) in a 0700 directory, for root's
  callers (sshd, login, su, sudo) alone: no other user can connect to it, so no flood of theirs
  fills its listen backlog, and only uid 0 is served there;
- `[pam] socket` (default /run/mfa-radius/pam.sock), world-connectable (0666) so that screen
  lockers running as the user can ask; who may ask about whom is decided per connection from
  SO_PEERCRED: uid 0 about anyone, any other uid about its own user name only
  (`[pam] unprivileged_callers = "self"`) or not at all ("none"). A world-writable socket without
  that check would let any local user test codes for any account.

The directories are created with explicit modes (whatever the umask) and an existing one is used
only if it is this process's user's, not a link and not writable by group or others; as root, the
whole chain above must be root's (trusted_paths), as the PAM module checks it too. A socket path a
live daemon answers on is never taken over, and on exit a socket is removed only if it is still
the one this process bound.

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
from .errors import ConfigError, MfaError
from .logsetup import RateLimitedLog, safe
from .pam_local import sms_fields, source_of, status_fields, verify_fields
from .private_files import make_dirs, user_name
from .rules.names import UserNameError
from .verifier import Verifier

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
        self._servers: list[asyncio.AbstractServer] = []
        self._bound: list[tuple[str, tuple[int, int]]] = []  # (path, (st_dev, st_ino)) we bound
        self._ratelog = RateLimitedLog(log)
        self._active = 0
        self._user_active = 0  # of which non-root callers
        self._active_by_uid: dict[int, int] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._sms: SmsDispatcher | None = None  # built at the first SMS request
        self.metrics = None  # the metrics module while /metrics is served (the daemon sets it)

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the root socket (directory 0700, socket 0600) and the one for other callers
        (directory 0755, socket 0666), and start accepting; raises MfaError (a directory that is
        not ours, a live daemon on the path) or OSError."""
        pam = self.config.pam
        try:
            for path, dir_mode, sock_mode, root_only in ((pam.root_path, 0o700, 0o600, True),
                                                         (pam.socket, 0o755, 0o666, False)):
                sock = self._bind(path, dir_mode, sock_mode)

                async def handle(reader, writer, root_only=root_only):
                    await self._handle(reader, writer, root_only)

                self._servers.append(await asyncio.start_unix_server(
                    handle, sock=sock, limit=proto.MAX_REQUEST))
        except BaseException:
            self.close()
            raise
        log.info("PAM sockets listening on %s (root) and %s (unprivileged callers: %s)",
                 pam.root_path, pam.socket, pam.unprivileged_callers)

    def _bind(self, path: str, dir_mode: int, sock_mode: int) -> socket.socket:
        directory = os.path.dirname(path) or "."
        _own_directory(directory, dir_mode)
        _refuse_live_daemon(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a temporary name, set the mode and listen, then rename: the socket never
        # appears with the wrong mode or refusing connections, and a stale socket from a crashed
        # daemon is replaced atomically.
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}")
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            sock.bind(tmp)
            os.chmod(tmp, sock_mode)
            sock.listen(128)
            sock.setblocking(False)
            st = os.stat(tmp)
            os.rename(tmp, path)
        except OSError:
            sock.close()
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        self._bound.append((path, (st.st_dev, st.st_ino)))
        return sock

    def reconfigure(self, config: Config) -> None:
        for key, old, new in (("socket", self.config.pam.socket, config.pam.socket),
                              ("root_socket", self.config.pam.root_path, config.pam.root_path)):
            if old != new:
                log.warning("[pam] %s changed to %s: takes effect after a restart "
                            "(still serving %s)", key, new, old)
        if self._sms is not None:
            try:
                self._sms.reconfigure(config)
            except MfaError as exc:
                log.error("PAM socket: keeping the old SMS gateways: %s", exc)
        self.config = config

    def close(self) -> None:
        """Stop accepting and remove each socket file that is still the one this process bound
        (another daemon may have replaced it since: its socket stays)."""
        for server in self._servers:
            server.close()
        self._servers = []
        if self._sms is not None:
            self._sms.close()
            self._sms = None
        for path, inode in self._bound:
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == inode and stat.S_ISSOCK(st.st_mode):
                    os.unlink(path)
            except OSError:
                pass
        self._bound = []

    # ---- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      root_only: bool = False) -> None:
        uid = self._peer_uid(writer)
        if root_only and uid != 0:
            # Only root can reach that directory; anyone else here (a daemon_user) is refused.
            self._ratelog.warning(f"root-{uid}", "PAM root socket: uid %s refused (root only)",
                                  uid)
            writer.close()
            return
        uid = uid or 0  # None (unknown) is refused in _serve_one
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
                self._ratelog.warning(f"busy-{uid}", "PAM socket: uid %d refused: too many "
                                      "connections at once (busy)", uid)
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
            self._ratelog.warning(f"silent-{uid}", "PAM socket: uid %d sent no request within "
                                  "%.0f s", uid, self.read_timeout)
            return b""
        except (ValueError, asyncio.LimitOverrunError):
            self._ratelog.warning(f"malformed-{uid}", "PAM socket: uid %d sent an oversized "
                                  "request", uid)
            return self._error("malformed", "")
        if not line:
            # A connect/close flood looks like this: each costs a connection slot and a wake-up.
            self._ratelog.warning(f"empty-{uid}", "PAM socket: uid %d closed without a request",
                                  uid)
            return b""
        try:
            op, fields = proto.decode(line)
        except (ValueError, UnicodeDecodeError):
            self._ratelog.warning(f"malformed-{uid}", "PAM socket: uid %d sent a malformed "
                                  "request", uid)
            return self._error("malformed", "")
        if op not in proto.OPS or not set(fields) <= proto.FIELDS or not fields.get("user"):
            self._ratelog.warning(f"malformed-{uid}", "PAM socket: uid %d sent a malformed "
                                  "request", uid)
            return self._error("malformed", "")
        if not self._take_token(uid):
            self._ratelog.warning(f"throttled-{uid}", "PAM socket: uid %d throttled", uid)
            return self._error("throttled", "Too many attempts, try again later.")
        try:  # the canonical name from here on (ALICE is alice), for every check and log line
            user = fields["user"] = self.verifier.canonical(fields["user"])
        except UserNameError:
            log.warning("PAM socket: uid %d sent a malformed user name %s", uid,
                        safe(fields["user"]))
            return self._error("malformed", "")
        if not self._authorised(uid, user):
            self._ratelog.warning(f"denied-{uid}", "PAM socket: uid %d may not ask about user %s "
                                  "(unprivileged_callers=%s)", uid, safe(user),
                                  self.config.pam.unprivileged_callers)
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
            log.error("PAM status for %s failed: %s", safe(user), exc)
            return self._error("error", "")

    def _verify(self, uid: int, fields: dict) -> bytes:
        started = time.perf_counter()
        reply = verify_fields(self.verifier, fields, uid)
        if self.metrics is not None:
            # Another uid's service name is only a claim: one label for all of them, so that no
            # caller can grow the metric's label set.
            service = (fields.get("service", "")[:64] or "-") if uid == 0 else "(unprivileged)"
            self.metrics.observe("pam", service, reply["result"],
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
            log.error("PAM sms for %s failed: %s", safe(fields["user"]), exc)
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


def _own_directory(directory: str, mode: int) -> None:
    """Create `directory` (and missing parents, 0755) with exactly `mode`, or check the existing
    one: a directory, not a link, this process's user's, writable by neither group nor others.
    As root, every directory above it must be root's as well (the PAM module refuses a socket
    whose directory chain another user controls)."""
    euid = os.geteuid()
    make_dirs(directory, mode, 0o755)
    st = os.lstat(directory)
    fix = f"remove it or fix it with: chown {user_name(euid)} {directory} && chmod {mode:o} " \
          f"{directory}"
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"PAM socket directory {directory} is not a directory (a link or a "
                          f"file); {fix}")
    if st.st_uid != euid:
        raise ConfigError(f"PAM socket directory {directory} is owned by uid {st.st_uid}, not "
                          f"by this process's user (uid {euid}); {fix}")
    if st.st_mode & 0o022:
        raise ConfigError(f"PAM socket directory {directory} is writable by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); {fix}")
    if stat.S_IMODE(st.st_mode) & ~mode:
        # Ours and closed to writers: narrowed to the design's mode, never widened (an admin's
        # 0700 directory stays closed to screen lockers).
        os.chmod(directory, stat.S_IMODE(st.st_mode) & mode)
    if euid == 0:
        from .trusted_paths import check_trusted

        check_trusted(directory, "PAM socket directory")


def _refuse_live_daemon(path: str) -> None:
    """Raise if a daemon answers on `path`: a second `serve` must not take its socket over."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    who = ""
    try:
        probe.connect(path)
    except BlockingIOError:
        pass  # EAGAIN: its backlog is full, so it is alive
    except (ConnectionRefusedError, FileNotFoundError):
        return  # a stale socket from a daemon that died: replaced
    except OSError as exc:
        raise ConfigError(f"PAM socket {path}: cannot check whether a daemon answers on it "
                          f"({exc.strerror})") from None
    else:
        try:
            pid, uid, _gid = _PEERCRED.unpack(
                probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            who = f" (pid {pid}, uid {uid})"
        except OSError:
            pass
    finally:
        probe.close()
    raise ConfigError(f"PAM socket {path}: another daemon is answering on it{who}; stop it "
                      "first, or give this one another [pam] socket and root_socket")


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
        from .trusted_paths import check_root_files

        check_root_files(cfg, database=False)
        asyncio.run(serve(cfg))
    except MfaError as exc:
        print(f"mfa-radius: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
