#!/usr/bin/env python3
"""`make bench`: mfa-radius side by side with FreeRADIUS + rlm_totp and google-authenticator-libpam.

    .venv/bin/python bench/run.py [--quick] [--users N] [--rounds R] [--only radius,pam,scale,password,postgresql,isolation]
                                   [--pg-statements]
                                   [--large N] [--profile FILE.svg|FILE.json]

Prints the tables (Markdown) and writes everything as JSON to bench/results/. Method and caveats:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import isolation_bench  # noqa: E402
import pam_bench  # noqa: E402
import password_bench  # noqa: E402
import pg_bench  # noqa: E402
import radius_bench  # noqa: E402
import scale  # noqa: E402
import servers  # noqa: E402

RESULTS = os.path.join(HERE, "results")
STATUS_RATE = password_bench.STATUS_RATE
PARTS = ("radius", "pam", "scale", "password", "postgresql", "isolation")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return ""
    return {"cpu": cpu, "cores": os.cpu_count(), "fsync_ms": fsync_probe(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "freeradius": version(["freeradius", "-v"]), "loadavg_at_start": os.getloadavg()}


def fsync_probe(count: int = 200) -> dict:
    """What one 4 KiB write + fsync costs on the work disk now: a commit with
    synchronous=full waits for this, so it explains verify and latency figures."""
    fd, path = tempfile.mkstemp(dir="/var/tmp", prefix="mfa-bench-fsync-")
    times = []
    try:
        for i in range(count):
            os.pwrite(fd, b"x" * 4096, (i % 64) * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {"p50": round(times[len(times) // 2], 3), "p99": round(times[int(0.99 * (count - 1))], 3)}


def ensure_peers(parts: list[str]) -> None:
    """Install the Debian packages the peers need, when root and missing."""
    need = []
    if "radius" in parts:
        if not shutil.which("radclient"):
            need.append("freeradius-utils")
        if not os.path.exists("/usr/sbin/freeradius"):
            need.append("freeradius")
    if "pam" in parts:
        for tool, pkg in (("pamtester", "pamtester"), ("oathtool", "oathtool")):
            if not shutil.which(tool):
                need.append(pkg)
        if not os.path.exists("/lib/security/pam_python.so"):
            need.append("libpam-python")
        if not any(os.path.exists(os.path.join(d, "pam_google_authenticator.so"))
                   for d in ("/lib/x86_64-linux-gnu/security", "/lib/security")):
            need.append("libpam-google-authenticator")
    if not need:
        return
    if os.geteuid() != 0:
        log(f"not root: cannot install {' '.join(need)}; those parts will skip")
        return
    log(f"apt-get install {' '.join(need)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env,
                   check=False, stdout=subprocess.DEVNULL)
    # Debian's package starts FreeRADIUS as a system service: the benchmark runs its own copy.
    if "freeradius" in need:
        for argv in (["systemctl", "disable", "--now", "freeradius"],
                     ["service", "freeradius", "stop"]):
            subprocess.run(argv, check=False, capture_output=True)


# ---- part 1 -------------------------------------------------------------------------------------

def shuffled_users(count: int, salt: bytes) -> tuple[list[str], list[bytes]]:
    """Users sign in in no particular order: the blast sends them shuffled (the same order to
    every server), while the CSV import assigns device rows in name order."""
    users, seeds = radius_bench.make_users(count, salt)
    order = list(range(len(users)))
    random.Random(len(users)).shuffle(order)
    return [users[i] for i in order], [seeds[i] for i in order]


def part_radius(args, work: str, salt: bytes) -> dict:
    users, seeds = shuffled_users(args.users, salt)
    rounds = []
    for r in range(args.rounds):
        entry = {}
        if servers.freeradius_available():
            entry["freeradius"] = radius_bench.run_freeradius(
                os.path.join(work, f"r{r}-freeradius"), users, seeds, log)
        else:
            entry["freeradius"] = {"skipped": "freeradius or the peer start script is missing"}
        entry["mfa_radius"] = radius_bench.run_mfa(
            os.path.join(work, f"r{r}-mfa"), users, seeds, log, warm=args.warm)
        rounds.append(entry)
    out = {"users": args.users, "rounds": rounds, "median": _radius_medians(rounds)}
    if args.profile:
        # An extra round, not in the medians: py-spy pauses the server to sample it.
        log(f"profiling round: py-spy -> {args.profile}")
        out["profile_round"] = radius_bench.run_mfa(os.path.join(work, "profile-mfa"), users,
                                                    seeds, log, profile=args.profile)
    return out


def _med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _radius_medians(rounds: list[dict]) -> dict:
    out = {}
    for server in ("freeradius", "mfa_radius"):
        runs = [r[server] for r in rounds if "skipped" not in r[server]]
        if not runs:
            continue
        m = {"cpu_us_per_request": _med([x["blast"]["server_cpu_us_per_request"] for x in runs]),
             "req_per_s": _med([x["blast"]["req_per_s"] for x in runs]),
             "radclient_cpu_us_per_request": _med([x["blast"].get("radclient_cpu_us_per_request")
                                                   for x in runs]),
             "accepted": min(x["blast"]["accepted"] for x in runs),
             "p50_ms": _med([x["latency"]["p50_ms"] for x in runs]),
             "p99_ms": _med([x["latency"]["p99_ms"] for x in runs]),
             "latency_rate": _med([x["latency"]["target_rate"] for x in runs]),
             "peak_rss_mib": _med([x["peak_rss_kib"] / 1024 for x in runs])}
        if server == "mfa_radius":
            m["replay_rejected"] = min(x["replay"]["rejected"] for x in runs)
            m["all_accepted"] = all(x["all_accepted"] for x in runs)
            m["replay_all_rejected"] = all(x["replay_all_rejected"] for x in runs)
            m["import_seconds"] = _med([x["import_seconds"] for x in runs])
            m["replay_cpu_us_per_request"] = _med([x["replay"]["server_cpu_us_per_request"]
                                                   for x in runs])
            folds = [x["fold"] for x in runs if "fold" in x]
            if folds:
                # Deferred work of the blast, done once idle: charged next to its CPU.
                m["fold_cpu_us_per_step"] = _med([f["server_cpu_us_per_step"] for f in folds])
                m["cpu_with_fold_us_per_request"] = round(
                    m["cpu_us_per_request"] + m["fold_cpu_us_per_step"], 1)
            warm = [x["warm_blast"] for x in runs if "warm_blast" in x]
            if warm:
                m["warm_cpu_us_per_request"] = _med([w["server_cpu_us_per_request"] for w in warm])
                m["warm_req_per_s"] = _med([w["req_per_s"] for w in warm])
                m["warm_accepted"] = min(w["accepted"] for w in warm)
                # Fresh codes equal to a code the user had just used: refused (RFC 6238 5.2).
                m["warm_same_digits"] = max(w.get("same_digits_as_a_used_code", 0) for w in warm)
        out[server] = m
    if "freeradius" in out and "mfa_radius" in out:
        fr, mf = out["freeradius"], out["mfa_radius"]
        out["ratios"] = {
            "cpu_mfa_over_freeradius": round(mf["cpu_us_per_request"] / fr["cpu_us_per_request"], 2),
            "req_per_s_mfa_over_freeradius": round(mf["req_per_s"] / fr["req_per_s"], 2)}
        if "cpu_with_fold_us_per_request" in mf:
            out["ratios"]["cpu_with_fold_mfa_over_freeradius"] = round(
                mf["cpu_with_fold_us_per_request"] / fr["cpu_us_per_request"], 2)
    return out


# ---- tables ---------------------------------------------------------------------------------------

def tables(results: dict) -> str:
    lines = []
    radius = results.get("radius")
    if radius and radius.get("median"):
        m = radius["median"]
        fr, mf = m.get("freeradius", {}), m.get("mfa_radius", {})
        ratio = m.get("ratios", {})

        def cell(d, key, fmt="{:.1f}"):
            return fmt.format(d[key]) if d.get(key) is not None else "-"
        lines += [f"RADIUS code-only, {radius['users']} users, Message-Authenticator on, "
                  f"medians of {len(radius['rounds'])} round(s)", "",
                  "| | FreeRADIUS 3.2 + rlm_totp | mfa-radius | mfa / FreeRADIUS |",
                  "|---|---|---|---|",
                  f"| server CPU per request (us) | {cell(fr, 'cpu_us_per_request')} | "
                  f"{cell(mf, 'cpu_us_per_request')} | {ratio.get('cpu_mfa_over_freeradius', '-')} |",
                  f"| requests/s (radclient -p 100) | {cell(fr, 'req_per_s', '{:.0f}')} | "
                  f"{cell(mf, 'req_per_s', '{:.0f}')} | {ratio.get('req_per_s_mfa_over_freeradius', '-')} |",
                  f"| radclient's own CPU per request (us; it sets the rate) | "
                  f"{cell(fr, 'radclient_cpu_us_per_request')} | "
                  f"{cell(mf, 'radclient_cpu_us_per_request')} | |",
                  f"| accepted | {cell(fr, 'accepted', '{}')} | {cell(mf, 'accepted', '{}')} | |",
                  f"| same codes again: rejected | (no replay check) | "
                  f"{cell(mf, 'replay_rejected', '{}')} | |",
                  f"| latency p50 / p99 (ms) at half peak | {cell(fr, 'p50_ms', '{:.2f}')} / "
                  f"{cell(fr, 'p99_ms', '{:.2f}')} @ {cell(fr, 'latency_rate', '{:.0f}')}/s | "
                  f"{cell(mf, 'p50_ms', '{:.2f}')} / {cell(mf, 'p99_ms', '{:.2f}')} @ "
                  f"{cell(mf, 'latency_rate', '{:.0f}')}/s | |",
                  f"| peak RSS (MiB) | {cell(fr, 'peak_rss_mib')} | {cell(mf, 'peak_rss_mib')} | |",
                  f"| bulk import (CSV, s) | | {cell(mf, 'import_seconds', '{:.2f}')} | |"]
        if mf.get("warm_cpu_us_per_request") is not None:
            lines.append(f"| warm cache (users seen before): CPU us/req, req/s, accepted | | "
                         f"{mf['warm_cpu_us_per_request']:.1f}, {mf['warm_req_per_s']:.0f}, "
                         f"{mf['warm_accepted']}"
                         + (f" ({mf['warm_same_digits']} user(s) got a code equal to one they used "
                            "before: refused if that step is still in the window, RFC 6238 5.2)"
                            if mf.get("warm_same_digits") else "")
                         + " | |")
        if mf.get("fold_cpu_us_per_step") is not None:
            lines.append(f"| + the used-steps log folded once idle: CPU us/req "
                         f"| | {mf['fold_cpu_us_per_step']:.1f} (total "
                         f"{mf['cpu_with_fold_us_per_request']:.1f}) | "
                         f"{ratio.get('cpu_with_fold_mfa_over_freeradius', '-')} |")
        if mf.get("replay_cpu_us_per_request") is not None:
            lines.append(f"| replay blast (all rejected): CPU us/req | | "
                         f"{mf['replay_cpu_us_per_request']:.1f} | |")
        lines.append("")
    pam = results.get("pam")
    if pam:
        lines += ["PAM login cost (pamtester, median wall time)", ""]
        if "skipped" in pam:
            lines += [f"skipped: {pam['skipped']}", ""]
        else:
            lines += ["| module | median ms | p90 ms | added over bare pam_python (ms) | ok |",
                      "|---|---|---|---|---|"]
            names = {"pam_permit": "pam_permit.so (pamtester itself)",
                     "bare_pam_python": "bare pam_python module (prompt only)",
                     "pam_mfa_daemon": "pam_mfa.py via the daemon socket",
                     "pam_mfa_fallback": "pam_mfa.py, daemon stopped (in-process)",
                     "google_authenticator": "pam_google_authenticator.so"}
            for key, label in names.items():
                r = pam.get(key, {})
                if "skipped" in r or not r:
                    lines.append(f"| {label} | skipped | | | |")
                    continue
                added = r.get("added_over_bare_ms", "")
                lines.append(f"| {label} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {added} | "
                             f"{r['succeeded']}/{r['runs']} |")
            lines.append("")
    sc = results.get("scale")
    if sc:
        lines += ["Scale: the same sample of users against a small and a large database", "",
                  "| enrolled | Devices.add (s) | bytes/device | verify median / p99 (us) | "
                  "user lookup median (us) | RADIUS CPU us/req | RADIUS req/s | server RSS (MiB) |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in ("small", "large"):
            s = sc[key]
            lines.append(f"| {s['devices']:,} | {s['add_seconds']} | {s['db_bytes_per_device']:.0f} | "
                         f"{s['verify']['median_us']:.0f} / {s['verify']['p99_us']:.0f} | "
                         f"{s['verify'].get('cold_lookup_median_us') or '-'} | "
                         f"{s['radius']['server_cpu_us_per_request']:.1f} | "
                         f"{s['radius']['req_per_s']:.0f} | {s['peak_rss_kib'] / 1024:.1f} |")
        r = sc["ratios"]
        hw = sc["hardware_import"]
        lines += ["", f"large/small: verify {r['verify_median_large_over_small']}x, user lookup "
                  f"{r.get('cold_lookup_large_over_small')}x, RADIUS CPU "
                  f"{r['radius_cpu_large_over_small']}x, req/s {r['radius_req_per_s_large_over_small']}x",
                  f"import of {hw['tokens']:,} hardware tokens (mfa-radius device import, CSV): "
                  f"{hw['seconds']} s ({hw['tokens_per_s']:,}/s)", ""]
    pw = results.get("password")
    if pw:
        lines += ["Password+code, password_backend = \"pam\" (pam_unix)", ""]
        if "skipped" in pw:
            lines += [f"skipped: {pw['skipped']}", ""]
        else:
            b, idle, busy = pw["blast"], pw["status_server_idle"], pw["status_server_under_load"]
            lines += [f"{pw['users']} users ({pw['hash']}), radclient -p 50: {b['accepted']} "
                      f"accepted, {b['rejected']} rejected, {b['lost']} lost; {b['req_per_s']} req/s; "
                      f"server CPU {b['server_cpu_ms_per_request']} ms/request, "
                      f"{b['cores_used']} cores busy",
                      f"Status-Server at {STATUS_RATE}/s: idle p50/p99 {idle['p50_ms']}/"
                      f"{idle['p99_ms']} ms; during the password blast p50 "
                      f"{busy['median_p50_ms']} ms, worst p99 {busy['worst_p99_ms']} ms, "
                      f"lost {busy['lost']}", ""]
    if results.get("postgresql"):
        lines += pg_bench.table(results["postgresql"])
    if results.get("isolation"):
        lines += ["", *isolation_bench.table(results["isolation"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 users, 1 round, 10 PAM logins, 1k vs 100k scale")
    parser.add_argument("--users", type=int, help="RADIUS users (default 20000; quick 2000)")
    parser.add_argument("--rounds", type=int, help="RADIUS rounds (default 5; quick 1)")
    parser.add_argument("--pam-runs", type=int, help="logins per PAM module (default 30; quick 10)")
    parser.add_argument("--large", type=int, help="large scale size (default 1000000; quick 100000)")
    parser.add_argument("--password-users", type=int,
                        help="users for the password+code part (default 100; quick 40)")
    parser.add_argument("--scale-rounds", type=int,
                        help="RADIUS blasts per scale size, one per 30 s step (default 5; quick 1)")
    parser.add_argument("--sample", type=int, default=1000, help="users sampled at each scale size")
    parser.add_argument("--hardware", type=int, default=100_000, help="hardware tokens to import")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="parts: radius,pam,scale,password,postgresql,isolation")
    parser.add_argument("--pg-statements", action="store_true",
                        help="postgresql part: load pg_stat_statements and list what the one-node "
                             "blast sends (its CPU figures then include the extension's)")
    parser.add_argument("--profile", help="py-spy output of mfa-radius during the last blast "
                                          "(.svg flamegraph, .json speedscope, .txt collapsed stacks)")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="skip mfa-radius's warm-cache blast (it waits up to one 30 s step)")
    parser.add_argument("--synchronous", choices=("full", "normal"),
                        help="mfa-radius [storage] synchronous (default: the config default, normal)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.users = args.users or (2000 if args.quick else 20000)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.pam_runs = args.pam_runs or (10 if args.quick else 30)
    args.large = args.large or (100_000 if args.quick else 1_000_000)
    args.password_users = args.password_users or (40 if args.quick else 100)
    args.scale_rounds = args.scale_rounds or (1 if args.quick else 5)
    if args.quick:
        args.hardware = min(args.hardware, 20_000)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if not os.path.exists(servers.MFA):
        parser.error(f"{servers.MFA} missing: run 'make venv' first")

    servers.SYNCHRONOUS = args.synchronous
    ensure_peers(parts)
    # As root, serve refuses a config under a directory others can write to (/var/tmp is 1777).
    work = tempfile.mkdtemp(prefix="mfa-bench-",
                            dir="/var/lib" if os.geteuid() == 0 else "/var/tmp")
    os.chmod(work, 0o755)  # pamtester's module reaches the socket through it
    salt = os.urandom(8)
    started = time.time()
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "machine": machine(), "args": vars(args)}
    log(f"work directory {work}")
    try:
        if "radius" in parts:
            results["radius"] = part_radius(args, os.path.join(work, "radius"), salt)
        if "pam" in parts:
            results["pam"] = pam_bench.run(os.path.join(work, "pam"), args.pam_runs, salt, log)
        if "scale" in parts:
            results["scale"] = scale.run(os.path.join(work, "scale"), 1000, args.large,
                                         args.sample, args.hardware, salt, log,
                                         rounds=args.scale_rounds)
        if "password" in parts:
            results["password"] = password_bench.run(os.path.join(work, "password"),
                                                     args.password_users, salt, log)
        if "isolation" in parts:
            results["isolation"] = isolation_bench.run(os.path.join(work, "isolation"),
                                                       args.password_users * 2, salt, log)
        if "postgresql" in parts:
            results["postgresql"] = pg_bench.run(os.path.join(work, "postgresql"),
                                                 *shuffled_users(args.users, salt), log,
                                                 statements=args.pg_statements)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.time() - started, 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    path = os.path.join(RESULTS, f"bench-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    shutil.copyfile(path, os.path.join(RESULTS, "latest.json"))
    text = tables(results)
    with open(os.path.join(RESULTS, "latest.md"), "w") as fh:
        fh.write(text + "\n")
    print(text)
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
          f"load average at start {results['machine']['loadavg_at_start'][0]:.2f}; "
          f"fsync p50/p99 {results['machine']['fsync_ms']['p50']}/"
          f"{results['machine']['fsync_ms']['p99']} ms; "
          f"{results['seconds']} s; JSON: {path}")
    ok = True
    mf = results.get("radius", {}).get("median", {}).get("mfa_radius")
    if mf and not (mf["all_accepted"] and mf["replay_all_rejected"]):
        print("FAIL: mfa-radius did not accept every fresh code or accepted a replayed one")
        ok = False
    pg = results.get("postgresql", {})
    for t in pg.get("targets", []):
        print(f"{'met' if t['met'] else 'MISSED'}: {t['target']} ({t['value']})")
    if pg.get("targets") and not pg["targets"][-1]["met"]:
        print("FAIL: on PostgreSQL mfa-radius did not accept every fresh code or accepted a "
              "code another node had used")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
