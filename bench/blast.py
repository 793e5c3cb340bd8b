"""Feed a server radclient files of 1,000 Access-Requests, one after another, and count replies.

radclient's own CPU grows with the number of distinct requests in one file, so the requests go in
files of CHUNK. Each file is written just before it is sent, with the codes of the current 30 s
step (FreeRADIUS 3.2.1 has no clock-skew window); a file is never sent across a step boundary.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time

from procstats import CpuMeter
from tokens import current_step, totp, wait_for_room

CHUNK = 1000
SECRET = "testing123"
# A file of 1,000 takes ~0.1-0.3 s; never start one with less than this left in the step.
STEP_MARGIN = 1.5
_SUMMARY = re.compile(r"^\s*(Accepted|Rejected|Lost)\s*:\s*(\d+)", re.M)


def write_file(path: str, users: list[str], codes: list[str]) -> None:
    with open(path, "w") as fh:
        for user, code in zip(users, codes):
            # Message-Authenticator = 0x00 makes radclient compute and sign it.
            fh.write(f'User-Name = "{user}", User-Password = "{code}", '
                     f'Message-Authenticator = 0x00\n\n')


def radclient(path: str, port: int, parallel: int = 100, timeout: float = 3.0) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(["radclient", "-q", "-s", "-c", "1", "-p", str(parallel),
                           "-t", str(timeout), "-f", path,
                           f"127.0.0.1:{port}", "auth", SECRET],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    counts = {k.lower(): int(v) for k, v in _SUMMARY.findall(proc.stdout + proc.stderr)}
    if not counts:
        raise RuntimeError(f"radclient printed no summary (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout)[-300:]}")
    return {"accepted": counts.get("accepted", 0), "rejected": counts.get("rejected", 0),
            "lost": counts.get("lost", 0), "wall": wall, "exit": proc.returncode}


def blast(server_pid: int | list[int], port: int, users: list[str], seeds: list[bytes], workdir: str,
          tag: str, step: int | None = None) -> dict:
    """Send every user its code once (current step, or `step` if given); totals and server CPU
    (of several process trees when given several pids: a server and its database)."""
    os.makedirs(workdir, exist_ok=True)
    files, steps, chunk_steps = [], set(), []
    totals = {"accepted": 0, "rejected": 0, "lost": 0, "wall": 0.0}
    meter = CpuMeter(server_pid).start()
    client_cpu = _children_cpu()
    started = time.perf_counter()
    for n, first in enumerate(range(0, len(users), CHUNK)):
        if step is None:
            wait_for_room(STEP_MARGIN)
        s = current_step() if step is None else step
        steps.add(s)
        chunk_steps.append(s)
        chunk_users = users[first:first + CHUNK]
        codes = [totp(seed, s) for seed in seeds[first:first + CHUNK]]
        path = os.path.join(workdir, f"{tag}-{n:04d}.txt")
        write_file(path, chunk_users, codes)
        files.append(path)
        result = radclient(path, port)
        for key in ("accepted", "rejected", "lost", "wall"):
            totals[key] += result[key]
    elapsed = time.perf_counter() - started
    meter.stop()
    totals["client_cpu"] = _children_cpu() - client_cpu
    return _summary(totals, len(users), meter, elapsed, files=files, steps=sorted(steps),
                    user_steps=[s for s in chunk_steps for _ in range(CHUNK)][:len(users)])


def same_digits(seeds: list[bytes], step: int | list[int], used: list[list[int]]) -> int:
    """How many users' code for `step` equals the code of a step they used before: RFC 6238 5.2
    forbids accepting the same OTP twice, so mfa-radius refuses such a code while that used
    step is in the window (one chance in a million per pair of steps)."""
    steps = step if isinstance(step, list) else [step] * len(seeds)
    return sum(1 for seed, s, before in zip(seeds, steps, used)
               if any(totp(seed, s) == totp(seed, b) for b in before if b != s))


def warm_up(port: int, workdir: str, count: int = 20) -> dict:
    """A few requests for an unknown user before measuring, so one-time costs (lazy imports,
    first database pages) are not charged to the blast; both servers get the same."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "warm-up.txt")
    write_file(path, ["bench-warm-up"] * count, ["000000"] * count)
    return radclient(path, port)


def replay(server_pid: int | list[int], port: int, files: list[str], count: int) -> dict:
    """Send the very same request files again (same users, same codes)."""
    totals = {"accepted": 0, "rejected": 0, "lost": 0, "wall": 0.0}
    meter = CpuMeter(server_pid).start()
    started = time.perf_counter()
    for path in files:
        result = radclient(path, port)
        for key in ("accepted", "rejected", "lost", "wall"):
            totals[key] += result[key]
    elapsed = time.perf_counter() - started
    meter.stop()
    return _summary(totals, count, meter, elapsed)


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: the radclient runs (the server under
    test is still running, so it is not among them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(totals: dict, count: int, meter: CpuMeter, elapsed: float, **extra) -> dict:
    out = {"requests": count, "accepted": totals["accepted"], "rejected": totals["rejected"],
           "lost": totals["lost"],
           "req_per_s": round(count / totals["wall"], 1) if totals["wall"] else 0.0,
           "radclient_seconds": round(totals["wall"], 3), "elapsed_seconds": round(elapsed, 3),
           "server_cpu_seconds": round(meter.seconds, 3),
           "server_cpu_user_seconds": round(meter.user, 3),
           "server_cpu_system_seconds": round(meter.system, 3),
           "server_cpu_us_per_request": round(meter.us_per(count), 1),
           "server_cpu_us_per_request_ticks": round(meter.seconds * 1e6 / count, 1)}
    if "client_cpu" in totals:  # radclient sets the rate: its CPU per request says how busy
        out["radclient_cpu_us_per_request"] = round(totals["client_cpu"] * 1e6 / count, 1)
    out.update(extra)
    return out
