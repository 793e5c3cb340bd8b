"""In-process cost of the RADIUS hot path, without the network: where the Python time goes.

Builds a database of N users with one TOTP device each (Devices.add), a RadiusServer on a fake
socket, N signed Access-Requests (code only, Message-Authenticator first), then feeds them to the
server's receive path in ticks of `--batch` datagrams: each tick is one readable event of the
socket, handled by the callback the server registered with `start()`, as the loop would.
Reports microseconds of CPU per request for a cold pass (users loaded from SQLite) and a warm
pass (the next step's codes, users cached); `--profile` prints cProfile's top entries. Every
`--fold-every` requests the harness does what the daemon's fold task does twice a second
(housekeeping.fold_when_idle: fold the step log while Verifier.fold_due says so), inside the
timed passes.

    .venv/bin/python bench/hotpath.py --users 20000 [--profile]

It measures the Python work of one request: add the kernel's part (recvfrom, sendto, epoll) for
the whole server cost that `make bench` reports.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import cProfile
import os
import pstats
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import servers  # noqa: E402
from tokens import current_step, seed_for, totp, user_name  # noqa: E402


class FakeSocket:
    """A UDP socket without the kernel: `recvfrom` returns the queued datagrams, then would block;
    `sendto` keeps the replies."""

    def __init__(self):
        self.sent = []
        self.queued = []

    def recvfrom(self, size):
        if not self.queued:
            raise BlockingIOError
        return self.queued.pop()

    def sendto(self, data, addr):
        self.sent.append(data)

    def fileno(self):
        return -1

    def close(self):
        pass


class FakeLoop:
    """The loop calls the server needs: its socket's reader (called once per tick by the
    harness, as a readable event), call_soon (run at the end of each tick) and call_later (run
    at the end of a pass: at the bench's rate the decision lines are written when BulkLines
    holds its maximum, as in the daemon under load)."""

    def __init__(self):
        self.readers = {}
        self.ready = []
        self.timers = []

    def add_reader(self, fd, callback, *args):
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def call_soon(self, callback, *args):
        self.ready.append((callback, args))
        return self

    def call_later(self, delay, callback, *args):
        self.timers.append((callback, args))
        return self

    def cancel(self):
        pass

    def readable(self, fd):
        callback, args = self.readers[fd]
        callback(*args)

    def run_timers(self):
        timers, self.timers = self.timers, []
        for callback, args in timers:
            callback(*args)

    def run_ready(self):
        while self.ready:
            batch, self.ready = self.ready, []
            for callback, args in batch:
                callback(*args)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--fold-every", type=int, default=4000,
                    help="requests between two passes of the daemon's fold task (0: none)")
    ap.add_argument("--synchronous", default="normal")
    ap.add_argument("--profile", nargs="?", const="all", choices=("all", "warm"),
                    help="cProfile both passes (all) or the warm one")
    ap.add_argument("--page-size", type=int, default=0, help="VACUUM the database to this page size")
    ap.add_argument("--in-order", action="store_true",
                    help="send the users in device-row order instead of shuffled")
    ap.add_argument("--no-preload", action="store_true",
                    help="start with an empty user cache (as before the daemon preloaded users)")
    ap.add_argument("--without", default="",
                    help="comma list of parts to stub out, to see what they cost: audit, log")
    args = ap.parse_args()

    from mfa_radius import config as config_mod
    from mfa_radius.devices import DeviceSpec
    from mfa_radius.radius import codec
    from mfa_radius.radius.server import RadiusServer
    from mfa_radius.state import init, open_devices
    from mfa_radius.verifier import Verifier

    # As root, serve refuses a config under a directory others can write to (/var/tmp is 1777).
    work = tempfile.mkdtemp(prefix="mfa-hotpath-",
                            dir="/var/lib" if os.geteuid() == 0 else "/var/tmp")
    atexit.register(shutil.rmtree, work, True)  # the database, key and log of this run
    servers.SYNCHRONOUS = args.synchronous
    cfg = config_mod.load(servers.write_mfa_config(work, servers.free_udp_port()))
    init(cfg)
    salt = os.urandom(8)
    devices = open_devices(cfg)
    devices.add([DeviceSpec(f"S{i:07d}", seed_for(i, salt), user=user_name(i))
                 for i in range(args.users)])
    if args.page_size:
        conn = devices.store.conn
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA page_size = {args.page_size}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode = WAL")
    devices.store.close()
    os.sync()

    # The decision lines go where the daemon's go (stderr, here a file), as in production.
    from mfa_radius import daemon

    log_file = open(os.path.join(work, "log"), "w")
    sys.stderr, real_stderr = log_file, sys.stderr
    daemon.setup_logging(False)
    sys.stderr = real_stderr

    without = set(filter(None, args.without.split(",")))
    if "log" in without:
        logging.getLogger("mfa_radius").setLevel(logging.WARNING)
    verifier = Verifier.open(cfg)
    if "audit" in without:  # the audit rows
        verifier.store.add_audit = lambda rows: None
    if "commit" in without:
        import contextlib
        verifier.store.transaction = contextlib.nullcontext
    if not args.no_preload:
        started = time.perf_counter()
        loaded = verifier.preload()
        print(f"preload: {loaded} users in {time.perf_counter() - started:.2f} s")
    server = RadiusServer(cfg, verifier)
    loop = FakeLoop()
    sock = FakeSocket()
    server.sockets.append(sock)  # instead of bind(): no kernel socket
    server.start(loop)
    secret = codec.Secret(servers.SECRET.encode())

    # Users sign in in no particular order (make bench shuffles them too).
    order = list(range(args.users))
    if not args.in_order:
        random.Random(args.users).shuffle(order)

    def packets(step):
        out = []
        for i in order:
            auth = os.urandom(16)
            code = totp(seed_for(i, salt), step).encode()
            hidden = codec.encrypt_password(code, auth, secret)
            out.append(codec.build_request(codec.ACCESS_REQUEST, i & 255, auth, secret,
                                           [(codec.USER_NAME, user_name(i).encode()),
                                            (codec.USER_PASSWORD, hidden)]))
        return out

    def run(datagrams, port_base=10000):
        sock.sent.clear()
        started = time.process_time()
        since_fold = 0
        for first in range(0, len(datagrams), args.batch):
            tick = datagrams[first:first + args.batch]
            # recvfrom pops from the end: the tick's first datagram last in the list.
            sock.queued = [(data, ("127.0.0.1", port_base + first + n))
                           for n, data in enumerate(tick)][::-1]
            loop.readable(sock.fileno())
            loop.run_ready()
            since_fold += args.batch
            if args.fold_every and since_fold >= args.fold_every:
                since_fold = 0
                while chunk := verifier.fold_due():
                    if not verifier.fold(chunk):
                        break
        loop.run_timers()
        spent = time.process_time() - started
        accepts = sum(1 for r in sock.sent if r[0] == codec.ACCESS_ACCEPT)
        return spent / len(datagrams) * 1e6, accepts

    step = current_step()
    cold = packets(step)
    warm = packets(step + 1)
    profiler = cProfile.Profile() if args.profile else None
    if profiler and args.profile != "warm":
        profiler.enable()
    cold_us, cold_ok = run(cold)
    if profiler:
        profiler.enable()
    warm_us, warm_ok = run(warm)
    replay_us, replay_ok = run(cold + warm, port_base=40000)
    print(f"replay of both: {replay_us:.1f} us/request CPU, {replay_ok} accepted (must be 0)")
    if replay_ok:
        from mfa_radius.state import open_store
        store = open_store(cfg)
        accepts: dict[str, int] = {}
        for event in store.audit_events(limit=10 * args.users):
            if event["result"] == "accept":
                accepts[event["user"]] = accepts.get(event["user"], 0) + 1
        twice = [u for u, n in accepts.items() if n > 2]
        print("users with >2 accepts:", twice[:5])
        for user in twice[:3]:
            print(user, "from step", step, [(d["last_step"], d["drift"])
                                            for d in store.user_devices(user)])
        store.close()
    if profiler:
        profiler.disable()
    chunks, started = 0, time.process_time()
    while verifier.fold(int(os.environ.get("FOLD_CHUNK", "500"))):
        chunks += 1
    if chunks:
        spent = time.process_time() - started
        print(f"fold: {chunks} chunks, {spent / chunks * 1e3:.1f} ms CPU a chunk")
    print(f"users {args.users}, batch {args.batch}, synchronous {args.synchronous}")
    print(f"cold: {cold_us:.1f} us/request CPU, {cold_ok} accepted")
    print(f"warm: {warm_us:.1f} us/request CPU, {warm_ok} accepted")
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", "25")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
