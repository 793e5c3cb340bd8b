"""Part 1: RADIUS code-only, FreeRADIUS + rlm_totp then mfa-radius, same users, same radclient."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import blast
import latency
import servers
from procstats import peak_rss_kib
from tokens import b32, current_step, seconds_left, seed_for, totp, user_name, wait_for_room

LATENCY_SECONDS = 3.0


def make_users(count: int, salt: bytes, prefix: str = "u") -> tuple[list[str], list[bytes]]:
    users = [user_name(i, prefix) for i in range(count)]
    return users, [seed_for(i, salt + prefix.encode()) for i in range(count)]


def write_csv(path: str, users: list[str] | None, seeds: list[bytes], serial_prefix: str) -> None:
    """OATH CSV: serial, hex seed, totp, digits, period[, user]."""
    with open(path, "w") as fh:
        for i, seed in enumerate(seeds):
            line = f"{serial_prefix}{i:07d},{seed.hex()},totp,6,30"
            fh.write(line + (f",{users[i]}\n" if users else "\n"))


def import_csv(config: str, path: str) -> float:
    started = time.perf_counter()
    servers.mfa(config, "device", "import", path, "--format", "csv", "--json")
    return round(time.perf_counter() - started, 3)


def measure_latency(server, users, seeds, rate, step=None) -> dict:
    """Each user at most once, `rate` requests/s for LATENCY_SECONDS."""
    n = max(50, min(len(users), int(rate * LATENCY_SECONDS)))
    if step is None:  # FreeRADIUS: codes of the current step only; never cross a boundary
        wait_for_room(n / rate + 1.0)
        step = current_step()
    requests = [(u, totp(s, step)) for u, s in zip(users[:n], seeds[:n])]
    return latency.run(server.port, requests, rate)


def run_freeradius(workdir: str, users: list[str], seeds: list[bytes], log) -> dict:
    os.makedirs(workdir, exist_ok=True)
    users_file = os.path.join(workdir, "users")
    servers.write_freeradius_users(users_file, users, [b32(s) for s in seeds])
    out = {}
    with servers.start_freeradius(workdir, users_file) as server:
        log(f"freeradius pid {server.pid} on port {server.port}: blast {len(users)} requests")
        blast.warm_up(server.port, os.path.join(workdir, "req"))
        out["blast"] = blast.blast(server.pid, server.port, users, seeds,
                                   os.path.join(workdir, "req"), "fr")
        out["blast"].pop("files")
        out["blast"].pop("user_steps")
        rate = out["blast"]["req_per_s"] / 2
        log(f"freeradius latency at {rate:.0f} req/s")
        out["latency"] = measure_latency(server, users, seeds, rate)
        out["peak_rss_kib"] = peak_rss_kib(server.pid)
    return out


def setup_mfa(workdir: str, users, seeds, log, port: int | None = None,
              storage: str = "") -> tuple[str, int, float]:
    """Config, key, database, and the users' devices imported by CSV; (config, port, seconds).
    `storage`: more [storage] lines (another backend)."""
    os.makedirs(workdir, exist_ok=True)
    port = port or servers.free_udp_port()
    config = servers.write_mfa_config(workdir, port, storage=storage)
    servers.mfa(config, "init")
    csv_path = os.path.join(workdir, "tokens.csv")
    write_csv(csv_path, users, seeds, "B")
    log(f"mfa-radius: importing {len(users)} assigned TOTP devices from CSV")
    seconds = import_csv(config, csv_path)
    return config, port, seconds


def run_mfa(workdir: str, users: list[str], seeds: list[bytes], log,
            profile: str | None = None, warm: bool = False) -> dict:
    """Import, blast, replay blast, latency. With `profile`, py-spy samples the server during
    the first blast (its CPU figures are then inflated: use them for the profile only)."""
    by_name = sorted(range(len(users)), key=users.__getitem__)
    config, port, import_seconds = setup_mfa(workdir, [users[i] for i in by_name],
                                             [seeds[i] for i in by_name], log)
    out = {"import_seconds": import_seconds, "import_devices": len(users)}
    with servers.start_mfa(workdir, config, port) as server:
        pid = server.pid
        spy = start_profiler(pid, profile) if profile else None
        log(f"mfa-radius pid {pid} on port {port}: blast {len(users)} requests")
        blast.warm_up(port, os.path.join(workdir, "req"))
        out["blast"] = blast.blast(pid, port, users, seeds, os.path.join(workdir, "req"), "mfa")
        if spy:
            stop_profiler(spy)
            out["profile"] = profile
        files = out["blast"].pop("files")
        used = [[s] for s in out["blast"].pop("user_steps")]
        log("mfa-radius: replay blast (same files again)")
        out["replay"] = blast.replay(pid, port, files, len(users))
        log("mfa-radius: waiting for the idle fold of the used-steps log")
        out["fold"] = wait_for_fold(pid, os.path.join(workdir, "mfa.db"), len(users))
        rate = out["blast"]["req_per_s"] / 2
        # The blast consumed its step(s); the next step's codes are inside the +-1 window now.
        step = max(out["blast"]["steps"]) + 1
        log(f"mfa-radius latency at {rate:.0f} req/s")
        out["latency"] = measure_latency(server, users, seeds, rate, step=step)
        sent = out["latency"]["requests"]
        out["latency"]["same_digits_as_a_used_code"] = blast.same_digits(seeds[:sent], step,
                                                                         used[:sent])
        for u in range(sent):
            used[u].append(step)
        if warm:
            # Every user is cached now. Step+1 is used; step+2 is inside the window once the
            # clock has reached step+1, so wait for that (at most one step).
            while current_step() < step:
                time.sleep(0.2)
            log("mfa-radius: warm blast (users cached, next step's codes)")
            out["warm_blast"] = blast.blast(pid, port, users, seeds,
                                            os.path.join(workdir, "req"), "warm", step=step + 1)
            out["warm_blast"].pop("files")
            out["warm_blast"].pop("user_steps")
            out["warm_blast"]["same_digits_as_a_used_code"] = blast.same_digits(
                seeds, step + 1, used)
        out["peak_rss_kib"] = peak_rss_kib(pid)
    out["audit"] = audit_summary(os.path.join(workdir, "mfa.db"))
    out["all_accepted"] = out["blast"]["accepted"] == len(users)
    out["replay_all_rejected"] = out["replay"]["rejected"] == len(users)
    return out


def wait_for_fold(pid: int, database: str, steps: int, timeout: float = 30.0) -> dict:
    """The server folds its step log once idle for a second (work
    the blast did not pay for): wait until the log is empty; the server's CPU meanwhile, per
    used step (the idle second itself costs next to nothing)."""
    from procstats import CpuMeter

    from mfa_radius.store import Store

    meter = CpuMeter(pid).start()
    started = time.monotonic()
    left = -1
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        store = Store.open(database)
        try:
            left = store.steps.waiting()
        finally:
            store.close()
        if left == 0:
            break
    meter.stop()
    return {"seconds": round(time.monotonic() - started, 2), "rows_left": left,
            "server_cpu_seconds": round(meter.seconds, 3),
            "server_cpu_us_per_step": round(meter.us_per(steps), 1)}


def audit_summary(database: str) -> dict:
    """The server's own account of its decisions: count per result/reason."""
    import sqlite3

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {f"{result}/{reason}": count for result, reason, count in conn.execute(
            "SELECT result, reason, count(*) FROM audit GROUP BY 1, 2")}
    finally:
        conn.close()


def start_profiler(pid: int, path: str) -> subprocess.Popen:
    """py-spy attached to the running server (a separate process: not in the server's CPU)."""
    fmt = ("speedscope" if path.endswith(".json") else "raw" if path.endswith(".txt")
           else "flamegraph")
    spy = subprocess.Popen([os.path.join(servers.VENV_BIN, "py-spy"), "record", "--pid", str(pid),
                            "--rate", "500", "--format", fmt, "--output", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach before the load starts
    return spy


def stop_profiler(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
