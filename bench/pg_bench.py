"""Part 5: RADIUS code-only on PostgreSQL. The radius part's blast (radclient files, every user
once) against (a) one mfa-radius node on SQLite, (b) one node on PostgreSQL and (c) two nodes
(two serve processes, two ports) sharing one PostgreSQL database, each blasted with half the
users at the same time. The server's CPU counts the serve process(es) AND the postmaster's
whole process tree (the backends that run the queries, the WAL writer, the checkpointer...).

The cluster is a throw-away one (pgcluster.py) with PostgreSQL's default settings: fsync and
synchronous_commit on, so an accept waits for its commit to reach the disk as in production.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from pathlib import Path

import blast
import latency
import pgcluster
import servers
from procstats import CpuMeter, peak_rss_kib
from radius_bench import LATENCY_SECONDS, measure_latency, setup_mfa

# What the part checks and prints (docs/benchmarks.md, "PostgreSQL").
MIN_PG_OVER_SQLITE = 0.5
MAX_P99_MS = 20.0


class BenchCluster(pgcluster.PgCluster):
    """PostgreSQL's defaults; with `statements`, pg_stat_statements loaded as well."""

    settings: dict[str, str] = {}


def run(workdir: str, users: list[str], seeds: list[bytes], log,
        statements: bool = False) -> dict:
    reason = pgcluster.missing_reason()
    if reason:
        return {"skipped": reason}
    out: dict = {"users": len(users), "statements": statements}
    out["sqlite"] = one_node(os.path.join(workdir, "sqlite"), users, seeds, log)
    cluster_class = type("StatementsCluster", (BenchCluster,),
                         {"settings": {"shared_preload_libraries": "pg_stat_statements"}}) \
        if statements else BenchCluster
    base = Path(workdir, "cluster")
    base.mkdir(parents=True, mode=0o755)  # the postgres user reaches its socket through it
    cluster = cluster_class.start(base)
    try:
        log(f"postgresql {cluster.port}: one node")
        db = cluster.new_database()
        out["postgresql_one"] = one_node(os.path.join(workdir, "pg-one"), users, seeds, log,
                                         cluster, db, statements)
        db.drop()
        log("postgresql: two nodes, one database")
        db = cluster.new_database()
        out["postgresql_two"] = two_nodes(os.path.join(workdir, "pg-two"), users, seeds, log,
                                          cluster, db)
        db.drop()
    finally:
        cluster.destroy()
    out["targets"] = targets(out)
    return out


def _by_name(users, seeds):
    """The import assigns device rows in name order (as the radius part's does)."""
    order = sorted(range(len(users)), key=users.__getitem__)
    return [users[i] for i in order], [seeds[i] for i in order]


def one_node(workdir: str, users, seeds, log, cluster=None, db=None,
             statements: bool = False) -> dict:
    storage = db.storage_toml() if db else ""
    config, port, import_seconds = setup_mfa(workdir, *_by_name(users, seeds), log,
                                             storage=storage)
    out: dict = {"import_seconds": import_seconds}
    roots = [cluster.postmaster_pid()] if cluster else []
    req = os.path.join(workdir, "req")
    with servers.start_mfa(workdir, config, port) as server:
        blast.warm_up(port, req)
        if statements:
            _reset_statements(db)
        log(f"{'postgresql' if db else 'sqlite'}: blast {len(users)} requests to one node")
        database = CpuMeter(roots).start()  # PostgreSQL's share of the blast's CPU
        out["blast"] = blast.blast([server.pid, *roots], port, users, seeds, req, "one")
        database.stop()
        if roots:
            out["blast"]["postgresql_cpu_us_per_request"] = round(database.us_per(len(users)), 1)
        if statements:
            out["statements"] = _statements(db, len(users))
        out["blast"].pop("files")
        out["blast"].pop("user_steps")
        rate = out["blast"]["req_per_s"] / 2
        log(f"latency at {rate:.0f} req/s")
        out["latency"] = measure_latency(server, users, seeds, rate,
                                         step=max(out["blast"]["steps"]) + 1)
        out["server_rss_kib"] = peak_rss_kib(server.pid)
    out["all_accepted"] = out["blast"]["accepted"] == len(users)
    return out


def _second_node(workdir: str, first_dir: str, db) -> tuple[str, int]:
    """Node B: its own config, port and PAM socket, node A's key file (copied, as docs/ha.md
    says), `init` checking that key against the database."""
    os.makedirs(workdir, exist_ok=True)
    port = servers.free_udp_port()
    config = servers.write_mfa_config(workdir, port, storage=db.storage_toml())
    shutil.copy2(os.path.join(first_dir, "secret.key"), os.path.join(workdir, "secret.key"))
    servers.mfa(config, "init")
    return config, port


def two_nodes(workdir: str, users, seeds, log, cluster, db) -> dict:
    dir_a, dir_b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    config_a, port_a, import_seconds = setup_mfa(dir_a, *_by_name(users, seeds), log,
                                                 storage=db.storage_toml())
    config_b, port_b = _second_node(dir_b, dir_a, db)
    half = len(users) // 2
    shares = [(users[:half], seeds[:half]), (users[half:], seeds[half:])]
    out: dict = {"import_seconds": import_seconds}
    postmaster = cluster.postmaster_pid()
    with servers.start_mfa(dir_a, config_a, port_a) as a, \
            servers.start_mfa(dir_b, config_b, port_b) as b:
        nodes = [(a, dir_a), (b, dir_b)]
        for node, d in nodes:
            blast.warm_up(node.port, os.path.join(d, "req"))
        log(f"postgresql: blast {half} + {len(users) - half} requests to two nodes at once")
        meter = CpuMeter([a.pid, b.pid, postmaster]).start()
        database = CpuMeter(postmaster).start()
        results = _concurrently([
            lambda node=node, d=d, share=share: blast.blast(
                node.pid, node.port, *share, os.path.join(d, "req"), "two")
            for (node, d), share in zip(nodes, shares)])
        database.stop()
        meter.stop()
        out["nodes"] = results
        out["blast"] = _combined(results, meter, len(users))
        out["blast"]["postgresql_cpu_us_per_request"] = round(database.us_per(len(users)), 1)
        # Each node's codes sent to the other one: the shared database must refuse them all.
        log("postgresql: replay blast, each node's requests to the other node")
        replay_meter_roots = [a.pid, b.pid, postmaster]
        crossed = [blast.replay(replay_meter_roots, b.port, results[0]["files"], half),
                   blast.replay(replay_meter_roots, a.port, results[1]["files"], len(users) - half)]
        out["cross_replay_rejected"] = sum(r["rejected"] for r in crossed)
        for r in results:
            r.pop("files")
            r.pop("user_steps")
        rate = out["blast"]["req_per_s"] / 2
        log(f"latency at {rate:.0f} req/s in all ({rate / 2:.0f} per node)")
        out["latency"] = _latency_two(nodes, shares, rate / 2,
                                      max(max(r["steps"]) for r in results) + 1)
        out["server_rss_kib"] = peak_rss_kib(a.pid) + peak_rss_kib(b.pid)
    out["all_accepted"] = out["blast"]["accepted"] == len(users)
    out["cross_replay_all_rejected"] = out["cross_replay_rejected"] == len(users)
    return out


def _concurrently(calls) -> list:
    """Run the calls in threads (radclient runs as a child: the GIL is not what limits them)."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def runner(i, call):
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _combined(results: list[dict], meter: CpuMeter, count: int) -> dict:
    """Both nodes' blasts as one: req/s is all requests over the longer node's radclient time
    (the two ran side by side), CPU that of both servers and PostgreSQL over the whole time."""
    longest = max(r["radclient_seconds"] for r in results)
    return {"requests": count, "accepted": sum(r["accepted"] for r in results),
            "rejected": sum(r["rejected"] for r in results),
            "lost": sum(r["lost"] for r in results),
            "req_per_s": round(count / longest, 1) if longest else 0.0,
            "req_per_s_sum_of_nodes": round(sum(r["req_per_s"] for r in results), 1),
            "radclient_seconds": longest,
            "server_cpu_seconds": round(meter.seconds, 3),
            "server_cpu_us_per_request": round(meter.us_per(count), 1),
            "server_cpu_us_per_request_ticks": round(meter.seconds * 1e6 / count, 1)}


def _latency_two(nodes, shares, rate_each: float, step: int) -> dict:
    """Both nodes at `rate_each` at the same time, from two processes (two fixed-rate clients
    in one process would delay each other's sends)."""
    from tokens import totp

    jobs = []
    for (node, _), (users, seeds) in zip(nodes, shares):
        n = max(50, min(len(users), int(rate_each * LATENCY_SECONDS)))
        jobs.append((node.port, [(u, totp(s, step)) for u, s in zip(users[:n], seeds[:n])],
                     rate_each))
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        per_node = pool.starmap(latency.run, jobs)
    return {"per_node": per_node, "target_rate": round(2 * rate_each, 1),
            "p50_ms": max(r["p50_ms"] for r in per_node),
            "p99_ms": max(r["p99_ms"] for r in per_node),
            "accepted": sum(r["accepted"] for r in per_node),
            "requests": sum(r["requests"] for r in per_node),
            "late_sends": sum(r["late_sends"] for r in per_node)}


# ---- pg_stat_statements: what a blast sends ------------------------------------------------------

def _reset_statements(db) -> None:
    with db.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def _statements(db, requests: int, top: int = 15) -> dict:
    """Statements (round trips) the blast sent this database, in all and per request."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT s.calls, s.rows, round(s.total_exec_time::numeric, 1), s.query "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%' "
            "ORDER BY s.calls DESC").fetchall()
    calls = sum(r[0] for r in rows)
    return {"calls": calls, "calls_per_request": round(calls / requests, 2),
            "exec_ms_per_request": round(float(sum(r[2] for r in rows)) / requests, 4),
            "top": [{"calls": c, "per_request": round(c / requests, 3), "rows": n,
                     "exec_ms": float(ms), "query": " ".join(q.split())[:160]}
                    for c, n, ms, q in rows[:top]]}


# ---- targets -------------------------------------------------------------------------------------

def targets(out: dict) -> list[dict]:
    lite, one, two = out["sqlite"], out["postgresql_one"], out["postgresql_two"]
    ratio = one["blast"]["req_per_s"] / lite["blast"]["req_per_s"]
    return [
        {"target": f"one node on PostgreSQL >= {MIN_PG_OVER_SQLITE:g} x its SQLite req/s",
         "value": f"{one['blast']['req_per_s']:.0f} / {lite['blast']['req_per_s']:.0f} = "
                  f"{ratio:.2f}", "met": ratio >= MIN_PG_OVER_SQLITE},
        {"target": f"p99 at half load <= {MAX_P99_MS:g} ms (one node)",
         "value": f"{one['latency']['p99_ms']:.2f} ms", "met": one["latency"]["p99_ms"] <= MAX_P99_MS},
        {"target": f"p99 at half load <= {MAX_P99_MS:g} ms (two nodes, worse node)",
         "value": f"{two['latency']['p99_ms']:.2f} ms", "met": two["latency"]["p99_ms"] <= MAX_P99_MS},
        {"target": "two nodes together >= one node (req/s)",
         "value": f"{two['blast']['req_per_s']:.0f} vs {one['blast']['req_per_s']:.0f}",
         "met": two["blast"]["req_per_s"] >= one["blast"]["req_per_s"]},
        {"target": "every fresh code accepted (all cases); two nodes: each node's codes "
                   "refused by the other",
         "value": f"{lite['blast']['accepted']}, {one['blast']['accepted']}, "
                  f"{two['blast']['accepted']} of {out['users']}; "
                  f"{two['cross_replay_rejected']} refused",
         "met": lite["all_accepted"] and one["all_accepted"] and two["all_accepted"]
         and two["cross_replay_all_rejected"]},
    ]


def table(pg: dict) -> list[str]:
    if "skipped" in pg:
        return ["PostgreSQL", "", f"skipped: {pg['skipped']}", ""]
    cases = [("SQLite, one node", pg["sqlite"]), ("PostgreSQL, one node", pg["postgresql_one"]),
             ("PostgreSQL, two nodes, one database", pg["postgresql_two"])]
    lines = [f"RADIUS code-only on PostgreSQL, {pg['users']} users (server CPU: mfa-radius + "
             "the postmaster's process tree)", "",
             "| case | server CPU per request (us) | of which PostgreSQL | requests/s | accepted | "
             "latency p50 / p99 (ms) at half | import (s) |", "|---|---|---|---|---|---|---|"]
    for label, c in cases:
        b, lat = c["blast"], c["latency"]
        lines.append(f"| {label} | {b['server_cpu_us_per_request']:.1f} | "
                     f"{b.get('postgresql_cpu_us_per_request', '-')} | {b['req_per_s']:.0f} | "
                     f"{b['accepted']}/{pg['users']} | {lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} "
                     f"@ {lat['target_rate']:.0f}/s | {c['import_seconds']:.2f} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |"
              for t in pg["targets"]]
    st = pg["postgresql_one"].get("statements")
    if st:
        lines += ["", f"pg_stat_statements over the one-node blast: {st['calls_per_request']} "
                  f"statements per request, {st['exec_ms_per_request']} ms of execution each", "",
                  "| calls per request | rows | statement |", "|---|---|---|"]
        lines += [f"| {s['per_request']} | {s['rows']} | `{s['query'][:110]}` |"
                  for s in st["top"]]
    return lines + [""]
