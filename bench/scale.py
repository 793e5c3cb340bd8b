"""Part 3: does anything grow with the number of enrolled users? 1,000 against 1,000,000.

For each size: a fresh database filled through the Python API (`Devices.add`, in transactions of
CHUNK devices), in-process `Verifier.verify` latency for a sample of users (fresh process cache:
every verify is an indexed lookup, an unseal and a commit; the two sizes interleaved user by
user), then both RADIUS servers up, with blasts of the sample's codes to each in turn, one round
per 30 s step (medians). Also: importing 100,000 unassigned hardware tokens through
`mfa-radius device import` (CSV).
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time

import blast
import radius_bench
import servers
from procstats import peak_rss_kib
from tokens import current_step, seed_for, totp, user_name

CHUNK = 100_000


def build(workdir: str, count: int, salt: bytes, log) -> dict:
    from mfa_radius import config as config_mod
    from mfa_radius.devices import DeviceSpec
    from mfa_radius.state import init, open_devices

    os.makedirs(workdir, exist_ok=True)
    port = servers.free_udp_port()
    config = servers.write_mfa_config(workdir, port)
    cfg = config_mod.load(config)
    init(cfg)
    devices = open_devices(cfg)
    log(f"scale: adding {count} assigned devices with Devices.add")
    started = time.perf_counter()
    for first in range(0, count, CHUNK):
        devices.add([DeviceSpec(f"S{i:07d}", seed_for(i, salt), user=user_name(i, "s"))
                     for i in range(first, min(count, first + CHUNK))])
    seconds = time.perf_counter() - started
    devices.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    devices.store.close()
    # Let the fresh file reach the disk first: on ext4 (data=ordered) a commit's fsync would
    # otherwise wait for the whole new database to be written back, and verify would look slow.
    os.sync()
    size = os.path.getsize(cfg.storage.database)
    return {"config": config, "port": port, "devices": count, "workdir": workdir,
            "add_seconds": round(seconds, 2), "devices_per_s": round(count / seconds),
            "db_bytes": size, "db_bytes_per_device": round(size / count, 1)}


def verify_latency(sizes: list[dict]) -> None:
    """In-process verifies of each size's sample (info["verify"]), interleaved user by user: this
    VM's speed drifts by 10-30% over minutes, and measuring one size after the other put that
    drift into the ratio (0.69x-1.29x over one afternoon's runs of the same code)."""
    from mfa_radius import config as config_mod
    from mfa_radius.verifier import Attempt, Verifier

    verifiers = [Verifier.open(config_mod.load(info["config"])) for info in sizes]
    times: list[list[float]] = [[] for _ in sizes]
    lookups: list[list[float]] = [[] for _ in sizes]
    accepted = [0 for _ in sizes]
    try:
        # The database part alone (indexed lookups + unseal, no commit): a verify's median is
        # dominated by the commit, which other disk traffic on the machine moves a lot.
        count = min(len(info["users"]) for info in sizes)
        for i in range(count // 2):
            for k, (info, verifier) in enumerate(zip(sizes, verifiers)):
                started = time.perf_counter()
                verifier._load(info["users"][i])
                lookups[k].append((time.perf_counter() - started) * 1e6)
        for i in range(count):
            for k, (info, verifier) in enumerate(zip(sizes, verifiers)):
                code = totp(info["seeds"][i], current_step())
                started = time.perf_counter()
                decision = verifier.verify(Attempt(info["users"][i], code, "bench"))
                times[k].append((time.perf_counter() - started) * 1e6)
                accepted[k] += decision.accepted
    finally:
        for verifier in verifiers:
            verifier.store.close()
    for info, t, looked, ok in zip(sizes, times, lookups, accepted):
        t.sort()
        info["verify"] = {"verifies": len(t), "accepted": ok,
                          "median_us": round(statistics.median(t), 1),
                          "p99_us": round(t[int(0.99 * (len(t) - 1))], 1),
                          "cold_lookup_median_us": round(statistics.median(looked), 1)}
        # Past every step the verifies used: the RADIUS rounds take the steps after it.
        info["step"] = current_step()


def prepare(workdir: str, count: int, sample: int, salt: bytes, log) -> dict:
    """Build the database and pick the sample."""
    info = build(workdir, count, salt, log)
    idx = sorted(random.Random(count).sample(range(count), min(sample, count)))
    info["users"] = [user_name(i, "s") for i in idx]
    info["seeds"] = [seed_for(i, salt) for i in idx]
    return info


def radius_rounds(sizes: list[dict], rounds: int, log) -> None:
    """Both servers up; in each round a blast of the sample's codes to each, alternating.

    Every round needs a fresh step per user: round r uses step S+r (S: the verifies' step), which
    the +-1 window accepts once the clock has reached S+r-1, so later rounds wait for the clock.
    """
    base = max(info["step"] for info in sizes)
    with contextlib.ExitStack() as stack:
        running = []
        for info in sizes:
            started = time.perf_counter()
            server = stack.enter_context(servers.start_mfa(info["workdir"], info["config"],
                                                           info["port"]))
            info["server_start_seconds"] = round(time.perf_counter() - started, 2)
            blast.warm_up(server.port, os.path.join(info["workdir"], "req"))
            running.append((info, server))
        for r in range(1, rounds + 1):
            step = base + r
            while current_step() < step - 1:
                time.sleep(0.2)
            for info, server in running if r % 2 else reversed(running):
                log(f"scale {info['devices']}: RADIUS blast {r}/{rounds} of {len(info['users'])} codes")
                result = blast.blast(server.pid, server.port, info["users"], info["seeds"],
                                     os.path.join(info["workdir"], "req"), f"scale{r}", step=step)
                result.pop("files")
                result.pop("user_steps")
                info.setdefault("radius_rounds", []).append(result)
        for info, server in running:
            info["peak_rss_kib"] = peak_rss_kib(server.pid)
    for info in sizes:
        runs = info["radius_rounds"]
        info["radius"] = {
            "requests": runs[0]["requests"],
            "accepted": min(x["accepted"] for x in runs),
            "server_cpu_us_per_request": round(statistics.median(
                x["server_cpu_us_per_request"] for x in runs), 1),
            "req_per_s": round(statistics.median(x["req_per_s"] for x in runs), 1)}
        del info["users"], info["seeds"]


def import_hardware(workdir: str, count: int, salt: bytes, log) -> dict:
    os.makedirs(workdir, exist_ok=True)
    config = servers.write_mfa_config(workdir, servers.free_udp_port())
    servers.mfa(config, "init")
    path = os.path.join(workdir, "hardware.csv")
    radius_bench.write_csv(path, None, [seed_for(i, salt + b"hw") for i in range(count)], "HW")
    log(f"scale: importing {count} unassigned hardware tokens (mfa-radius device import)")
    seconds = radius_bench.import_csv(config, path)
    size = os.path.getsize(os.path.join(workdir, "mfa.db"))
    return {"tokens": count, "seconds": seconds, "tokens_per_s": round(count / seconds),
            "db_bytes": size}


def run(workdir: str, small: int, large: int, sample: int, hardware: int, salt: bytes,
        log, rounds: int = 3) -> dict:
    out = {"small": prepare(os.path.join(workdir, f"n{small}"), small, sample, salt, log),
           "large": prepare(os.path.join(workdir, f"n{large}"), large, sample, salt, log)}
    log(f"scale: {sample} in-process verifies at each size, interleaved")
    verify_latency([out["small"], out["large"]])
    radius_rounds([out["small"], out["large"]], rounds, log)
    out["hardware_import"] = import_hardware(os.path.join(workdir, "hw"), hardware, salt, log)
    s, l = out["small"], out["large"]
    out["ratios"] = {
        "verify_median_large_over_small": round(l["verify"]["median_us"] / s["verify"]["median_us"], 2),
        "cold_lookup_large_over_small": round(l["verify"]["cold_lookup_median_us"]
                                              / s["verify"]["cold_lookup_median_us"], 2)
        if s["verify"].get("cold_lookup_median_us") else None,
        "radius_cpu_large_over_small": round(l["radius"]["server_cpu_us_per_request"]
                                             / s["radius"]["server_cpu_us_per_request"], 2),
        "radius_req_per_s_large_over_small": round(l["radius"]["req_per_s"]
                                                   / s["radius"]["req_per_s"], 2)}
    return out
