"""Server cost per RADIUS request of two checkouts, by a driver that is the same for both.

For each checkout (its own `.venv`), a fresh database of N users with one TOTP device each
(`init` and the CSV import of that checkout), then the real `mfa-radius serve` of that checkout
on a UDP port, fed by a closed-loop client: a batch of `--batch` signed code-only Access-Requests
(Message-Authenticator first) sent at once, then every reply awaited before the next batch, so
both servers get the same datagrams in the same groups. Three passes: `cold` (every user's
current code once, first sign-in since start, as `make bench`'s blast), `warm` (the next step's
codes) and `replay` (the cold codes again: all rejected). Each pass is followed by an idle
period long enough for the server's idle fold; its cost is reported apart (`idle`).

Two ways to count:

- `--mode callgrind`: the server runs under `valgrind --tool=callgrind`; counters are zeroed
  before a pass and dumped after it (`callgrind_control`), so each figure is the instructions the
  server executed for that pass alone, all threads, user space (the kernel's part of recvfrom,
  sendto and fsync is not in it, and is the same for both checkouts). It does not move with the
  machine's load: one run is enough, which is what a noisy VM needs.
- `--mode cpu`: the server runs natively; CPU time (per-thread schedstat) of the server process
  over each pass, in `--rounds` rounds whose order alternates (ABBA), fresh database each round.

    .venv/bin/python bench/instructions.py --checkout OLD --checkout . --mode callgrind --users 2000
    .venv/bin/python bench/instructions.py --checkout OLD --checkout . --mode cpu --rounds 6
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402
from latency import ACCESS_ACCEPT, access_request  # noqa: E402
from procstats import CpuMeter  # noqa: E402
from radius_bench import write_csv  # noqa: E402
from tokens import current_step, seed_for, totp, user_name  # noqa: E402

PASSES = ("cold", "warm", "replay")


def _mfa(checkout: str, config: str, *args: str) -> None:
    subprocess.run([os.path.join(checkout, ".venv", "bin", "mfa-radius"), "--config", config,
                    *args], check=True, capture_output=True, text=True)


def _git_head(checkout: str) -> str:
    out = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


class Client:
    """One connected UDP socket; a batch is sent whole, then its replies are awaited."""

    def __init__(self, port: int, timeout: float):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(timeout)
        self.key = servers.SECRET.encode()

    def batch(self, requests: list[tuple[str, str]]) -> tuple[int, int]:
        """(accepted, answered) of at most 256 requests."""
        auths = {}
        packets = []
        for ident, (user, code) in enumerate(requests):
            packet, auth = access_request(ident, user, code, self.key)
            auths[ident] = auth
            packets.append(packet)
        for packet in packets:
            self.sock.send(packet)
        accepted = answered = 0
        while auths:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            auth = auths.pop(data[1], None)
            if auth is None or hashlib.md5(data[:4] + auth + data[20:] + self.key).digest() \
                    != data[4:20]:
                raise RuntimeError("a reply that does not match its request")
            answered += 1
            accepted += data[0] == ACCESS_ACCEPT
        return accepted, answered

    def close(self) -> None:
        self.sock.close()


class Callgrind:
    """Zero and dump the counters of a server running under callgrind."""

    def __init__(self, workdir: str):
        self.out = os.path.join(workdir, "callgrind.out")
        self.prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}"]

    def _control(self, pid: int, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                       capture_output=True, text=True, timeout=600)

    def zero(self, pid: int) -> None:
        self._control(pid, "--zero")

    def dump(self, pid: int) -> int:
        before = set(glob.glob(self.out + ".*"))
        self._control(pid, "--dump")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = set(glob.glob(self.out + ".*")) - before
            for path in new:
                with open(path) as fh:
                    text = fh.read()
                found = re.search(r"^(?:totals|summary):\s*(\d+)", text, re.M)
                if found:
                    return int(found.group(1))
            time.sleep(0.2)
        raise RuntimeError("callgrind wrote no dump")


def run_checkout(checkout: str, args, work: str) -> dict:
    workdir = tempfile.mkdtemp(dir=work)
    counter = Callgrind(workdir) if args.mode == "callgrind" else None
    port = servers.free_udp_port()
    config = servers.write_mfa_config(workdir, port)
    _mfa(checkout, config, "init")
    salt = os.urandom(8)
    users = [user_name(i) for i in range(args.users)]
    seeds = [seed_for(i, salt) for i in range(args.users)]
    csv_path = os.path.join(workdir, "tokens.csv")
    write_csv(csv_path, users, seeds, "B")
    _mfa(checkout, config, "device", "import", csv_path, "--format", "csv")
    prefix = counter.prefix if counter else []
    argv = prefix + [os.path.join(checkout, ".venv", "bin", "mfa-radius"), "--config", config,
                     "serve"]
    server = servers.Server("mfa-radius", argv, os.path.join(workdir, "serve.log"), "ready:",
                            port)
    out: dict = {"checkout": checkout, "commit": _git_head(checkout)}
    client = Client(port, 60.0 if counter else 5.0)
    try:
        # One-time costs (lazy imports, first statements) are not charged to the passes.
        client.batch([("nobody", "000000")] * 20)
        step = current_step()
        plans = {"cold": step, "warm": step + 1, "replay": step}
        for name in PASSES:
            requests = [(u, totp(s, plans[name])) for u, s in zip(users, seeds)]
            if counter:
                counter.zero(server.pid)
            else:
                meter = CpuMeter(server.pid).start()
            accepted = answered = 0
            started = time.perf_counter()
            for first in range(0, len(requests), args.batch):
                a, n = client.batch(requests[first:first + args.batch])
                accepted += a
                answered += n
            wall = time.perf_counter() - started
            row = {"requests": len(requests), "accepted": accepted, "answered": answered,
                   "wall_s": round(wall, 3)}
            if counter:
                row["instructions"] = counter.dump(server.pid)
                row["per_request"] = round(row["instructions"] / len(requests))
            else:
                meter.stop()
                row["cpu_us"] = round(meter.us_per(len(requests)), 2)
                meter = CpuMeter(server.pid).start()
            # Idle: the server folds what the pass logged (the daemon's fold task, once idle).
            time.sleep(args.idle)
            if counter:
                row["idle_instructions"] = counter.dump(server.pid)
                row["idle_per_request"] = round(row["idle_instructions"] / len(requests))
            else:
                meter.stop()
                row["idle_cpu_us"] = round(meter.us_per(len(requests)), 2)
            out[name] = row
    finally:
        client.close()
        server.stop()
    if counter and args.keep:  # the dumps, for callgrind_annotate: 1 cold, 3 warm, 5 replay
        os.makedirs(args.keep, exist_ok=True)
        for path in glob.glob(counter.out + ".*"):
            shutil.copy(path, os.path.join(args.keep, f"{out['commit']}-{os.path.basename(path)}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkout", action="append", required=True,
                    help="a checkout with its own .venv (twice or more: compared in order)")
    ap.add_argument("--mode", choices=("callgrind", "cpu"), default="callgrind")
    ap.add_argument("--users", type=int, default=None,
                    help="users and requests per pass (default 2,000 callgrind, 20,000 cpu)")
    ap.add_argument("--batch", type=int, default=50, help="requests sent at once (<= 256)")
    ap.add_argument("--rounds", type=int, default=None, help="default 1 callgrind, 6 cpu")
    ap.add_argument("--idle", type=float, default=None,
                    help="seconds idle after each pass (default 8 callgrind, 3 cpu)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--keep", help="callgrind: copy the dumps to this directory")
    args = ap.parse_args()
    grind = args.mode == "callgrind"
    args.users = args.users or (2000 if grind else 20000)
    args.rounds = args.rounds or (1 if grind else 6)
    args.idle = args.idle if args.idle is not None else (8.0 if grind else 3.0)
    if not 1 <= args.batch <= 256:
        ap.error("--batch must be 1-256 (one RADIUS identifier each)")
    checkouts = [os.path.abspath(c) for c in args.checkout]
    for checkout in checkouts:
        if not os.access(os.path.join(checkout, ".venv", "bin", "mfa-radius"), os.X_OK):
            ap.error(f"{checkout} has no .venv/bin/mfa-radius (run make venv there)")
    if grind and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        ap.error("--mode callgrind needs valgrind (apt-get install valgrind)")
    # As root, serve refuses a config under a directory others can write to (/var/tmp is 1777).
    work = tempfile.mkdtemp(prefix="mfa-instructions-",
                            dir="/var/lib" if os.geteuid() == 0 else "/var/tmp")
    results: list[dict] = []
    try:
        for r in range(args.rounds):
            order = checkouts if r % 2 == 0 else checkouts[::-1]
            for checkout in order:
                res = run_checkout(checkout, args, work)
                res["round"] = r + 1
                results.append(res)
                key = "per_request" if grind else "cpu_us"
                print(f"round {r + 1} {res['commit']}: " + ", ".join(
                    f"{p} {res[p][key]} +idle {res[p]['idle_' + key]} "
                    f"({res[p]['accepted']}/{res[p]['requests']} accepted)"
                    for p in PASSES), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, checkouts, grind)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"mode": args.mode, "users": args.users, "batch": args.batch,
                       "rounds": results}, fh, indent=1)
    return 0


def report(results: list[dict], checkouts: list[str], grind: bool) -> None:
    key, idle = ("per_request", "idle_per_request") if grind else ("cpu_us", "idle_cpu_us")
    unit = "instructions per request" if grind else "server CPU us per request"
    print(f"\nmedians, {unit} (idle: the fold after the pass, per request of the pass)")
    print("| checkout | " + " | ".join(f"{p} | {p} idle" for p in PASSES) + " |")
    print("|---|" + "---|---|" * len(PASSES))
    medians = {}
    for checkout in checkouts:
        rows = [r for r in results if r["checkout"] == checkout]
        med = {p: statistics.median(r[p][key] for r in rows) for p in PASSES}
        med_idle = {p: statistics.median(r[p][idle] for r in rows) for p in PASSES}
        medians[checkout] = med
        print(f"| {rows[0]['commit']} | " + " | ".join(
            f"{med[p]:.6g} | {med_idle[p]:.6g}" for p in PASSES) + " |")
    base = medians[checkouts[0]]
    for checkout in checkouts[1:]:
        print(f"{_git_head(checkout)} / {_git_head(checkouts[0])}: " + ", ".join(
            f"{p} {medians[checkout][p] / base[p]:.3f}" for p in PASSES))


if __name__ == "__main__":
    sys.exit(main())
