"""Part 2: what one login costs through pamtester, per PAM module (median wall time).

Services are /etc/pam.d/bench-* files, written for the run and removed afterwards. Every mfa login
uses a fresh user with its current TOTP code (a code is accepted once); google-authenticator's file
has no DISALLOW_REUSE, so one code serves all its logins.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

import radius_bench
import servers
from tokens import b32, current_step, seed_for, totp, user_name

PAM_D = "/etc/pam.d"
PAM_PYTHON = "/lib/security/pam_python.so"
HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.join(servers.ROOT, "pam_module", "pam_mfa.py")
SUCCESS = "successfully authenticated"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (writes /etc/pam.d)"
    for tool in ("pamtester", "oathtool"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists(PAM_PYTHON):
        return "needs libpam-python"
    if not os.path.exists(MODULE):
        return f"{MODULE} not there yet"
    return None


def _ga_module() -> str | None:
    for d in ("/lib/x86_64-linux-gnu/security", "/lib/security", "/usr/lib/x86_64-linux-gnu/security"):
        path = os.path.join(d, "pam_google_authenticator.so")
        if os.path.exists(path):
            return path
    return None


def login(service: str, user: str, code: str) -> tuple[float, bool, str]:
    started = time.perf_counter()
    proc = subprocess.run(["pamtester", service, user, "authenticate"], input=code + "\n",
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    output = (proc.stdout + proc.stderr).strip()
    return elapsed, SUCCESS in output, output


def interleaved(plans: dict[str, tuple[str, list[tuple[str, str]]]]) -> dict:
    """Run the services' logins round-robin, so load from elsewhere hits them all alike."""
    times = {name: [] for name in plans}
    ok = {name: 0 for name in plans}
    failure = {}
    rounds = max(len(logins) for _, logins in plans.values())
    for i in range(rounds):
        for name, (service, logins) in plans.items():
            if i >= len(logins):
                continue
            elapsed, success, output = login(service, *logins[i])
            times[name].append(elapsed * 1000)
            ok[name] += success
            if not success and name not in failure:
                failure[name] = output[-200:]
    out = {}
    for name, values in times.items():
        out[name] = {"runs": len(values), "succeeded": ok[name],
                     "median_ms": round(statistics.median(values), 2),
                     "p90_ms": round(sorted(values)[int(0.9 * (len(values) - 1))], 2)}
        if name in failure:
            out[name]["first_failure"] = failure[name]
    return out


def run(workdir: str, runs: int, salt: bytes, log) -> dict:
    reason = missing()
    if reason:
        return {"skipped": reason}
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    services: dict[str, str] = {}

    def service(name: str, line: str) -> str:
        path = os.path.join(PAM_D, f"bench-{name}")
        with open(path, "w") as fh:
            fh.write(f"auth required {line}\naccount required pam_permit.so\n")
        services[name] = path
        return f"bench-{name}"

    users, seeds = radius_bench.make_users(2 * runs, salt, prefix="p")
    config, port, _ = radius_bench.setup_mfa(workdir, users, seeds, log)
    out: dict = {}
    try:
        permit = service("permit", "pam_permit.so")
        bare = service("bare", f"pam_python.so {HERE}/pam_bare.py")
        mfa = service("mfa", f"pam_python.so {MODULE} socket={workdir}/pam.sock config={config}")
        ga_so = _ga_module()
        ga_seed = seed_for(0, salt + b"ga")
        ga_file = os.path.join(workdir, "google_authenticator")
        with open(ga_file, "w") as fh:
            fh.write(f'{b32(ga_seed)}\n" TOTP_AUTH\n')
        os.chmod(ga_file, 0o600)
        ga = service("ga", f"{ga_so} user=root secret={ga_file}") if ga_so else None

        dummy = [("benchuser", "123456")] * runs
        ga_logins = []
        if ga:
            code = subprocess.run(["oathtool", "--totp", "-b", b32(ga_seed)], capture_output=True,
                                  text=True, check=True).stdout.strip()
            ga_logins = [("benchuser", code)] * runs
        log(f"PAM: {runs} logins per module via pamtester, interleaved")
        with servers.start_mfa(workdir, config, port) as daemon:
            # Fresh user per login: each code is accepted once. The +-1 step window covers a
            # step boundary passed during the run.
            logins = [(u, totp(s, current_step())) for u, s in zip(users[:runs], seeds[:runs])]
            plans = {"pam_permit": (permit, dummy), "bare_pam_python": (bare, dummy),
                     "pam_mfa_daemon": (mfa, logins)}
            if ga:
                plans["google_authenticator"] = (ga, ga_logins)
            out.update(interleaved(plans))
            if out["pam_mfa_daemon"]["succeeded"] < runs:
                out["pam_mfa_daemon"]["daemon_log"] = daemon.tail(8)
        # Daemon stopped: the module finds no listener and verifies in-process.
        logins = [(u, totp(s, current_step())) for u, s in zip(users[runs:], seeds[runs:])]
        second = interleaved({"bare_pam_python": (bare, dummy), "pam_mfa_fallback": (mfa, logins)})
        out["pam_mfa_fallback"] = second["pam_mfa_fallback"]
        out["pam_mfa_fallback"]["bare_median_ms_same_phase"] = second["bare_pam_python"]["median_ms"]
        if not ga:
            out["google_authenticator"] = {"skipped": "pam_google_authenticator.so not found"}
    finally:
        for path in services.values():
            os.unlink(path)
    out["pam_mfa_daemon"]["added_over_bare_ms"] = round(
        out["pam_mfa_daemon"]["median_ms"] - out["bare_pam_python"]["median_ms"], 2)
    fallback = out["pam_mfa_fallback"]
    fallback["added_over_bare_ms"] = round(fallback["median_ms"]
                                           - fallback["bare_median_ms_same_phase"], 2)
    return out
