"""Part 4: password+code with `password_backend = "pam"` (pam_unix, yescrypt).

K system users with real passwords and one TOTP device each send password+code once, through
radclient. Measured: requests/s, server CPU over the blast and how many cores that is (the PAM
checks run in the server's thread pool), and the latency of Status-Server requests sent at a fixed
rate during the blast against the same without it: the event loop must not stall while password
checks queue. Users and the PAM service are created for the run and removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time

import blast
import latency
import radius_bench
import servers
from procstats import CpuMeter, peak_rss_kib
from tokens import current_step, totp, wait_for_room

PAM_SERVICE = "bench-pwcheck"
PREFIX = "mfabpw"
STATUS_RATE = 200


def missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates users and /etc/pam.d/bench-pwcheck)"
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run([os.path.join(servers.VENV_BIN, "python"), "-c", "import pam"],
                           capture_output=True)
    if probe.returncode:
        return "needs python-pam in the venv"
    return None


def _create_users(names: list[str], password: str) -> None:
    for name in names:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
    subprocess.run(["chpasswd"], input="".join(f"{n}:{password}\n" for n in names), text=True,
                   check=True, capture_output=True)


def _remove_users(names: list[str]) -> None:
    for name in names:
        subprocess.run(["userdel", name], capture_output=True)


def _hash_method(name: str) -> str:
    with open("/etc/shadow") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                field = line.split(":")[1]
                return {"$y$": "yescrypt", "$6$": "sha512crypt", "$5$": "sha256crypt"}.get(
                    field[:3], field[:3])
    return "?"


def run(workdir: str, count: int, salt: bytes, log) -> dict:
    reason = missing()
    if reason:
        return {"skipped": reason}
    os.makedirs(workdir, exist_ok=True)
    tag = secrets.token_hex(2)
    names = [f"{PREFIX}{tag}{i:04d}" for i in range(count)]
    password = "Bench-" + secrets.token_urlsafe(12)
    _, seeds = radius_bench.make_users(count, salt, prefix="w")
    pam_file = os.path.join("/etc/pam.d", PAM_SERVICE)
    out: dict = {"users": count}
    log(f"password+code: creating {count} system users with passwords")
    try:
        _create_users(names, password)
        out["hash"] = _hash_method(names[0])
        with open(pam_file, "w") as fh:
            fh.write("auth required pam_unix.so nodelay\naccount required pam_unix.so\n")
        port = servers.free_udp_port()
        config = servers.write_mfa_config(workdir, port, backend="pam",
                                          radius_extra=f'pam_service = "{PAM_SERVICE}"\n')
        servers.mfa(config, "init")
        csv_path = os.path.join(workdir, "tokens.csv")
        radius_bench.write_csv(csv_path, names, seeds, "W")
        radius_bench.import_csv(config, csv_path)
        with servers.start_mfa(workdir, config, port) as server:
            status = [(None, "")] * (STATUS_RATE * 2)
            out["status_server_idle"] = latency.run(port, status, STATUS_RATE)
            wait_for_room(count / 20 + 5)
            step = current_step()
            path = os.path.join(workdir, "pw.txt")
            blast.write_file(path, names, [password + totp(s, step) for s in seeds])
            box: dict = {}

            def load():
                meter = CpuMeter(server.pid).start()
                box["result"] = blast.radclient(path, port, parallel=50, timeout=20)
                box["cpu"] = meter.stop()

            log(f"password+code: {count} requests while Status-Server runs at {STATUS_RATE}/s")
            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.2)
            # Status-Server for as long as the password blast lasts (estimated at >= 20/s).
            during = []
            while thread.is_alive():
                during.append(latency.run(port, [(None, "")] * STATUS_RATE, STATUS_RATE))
            thread.join()
            result, meter = box["result"], box["cpu"]
            out["blast"] = {**result, "req_per_s": round(count / result["wall"], 1),
                            "server_cpu_seconds": round(meter.seconds, 3),
                            "cores_used": round(meter.seconds / result["wall"], 2),
                            "server_cpu_ms_per_request": round(meter.seconds * 1000 / count, 1)}
            lat = sorted(during, key=lambda r: r["p99_ms"])
            out["status_server_under_load"] = {
                "seconds": len(during), "worst_p99_ms": lat[-1]["p99_ms"] if lat else None,
                "median_p50_ms": sorted(r["p50_ms"] for r in during)[len(during) // 2]
                if during else None,
                "lost": sum(r["lost"] for r in during)}
            out["peak_rss_kib"] = peak_rss_kib(server.pid)
    finally:
        if os.path.exists(pam_file):
            os.unlink(pam_file)
        _remove_users(names)
    return out
