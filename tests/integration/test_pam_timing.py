"""Milliseconds a login pays for the module: pamtester, median of many runs, each an accepted code.

    sudo .venv/bin/python tests/integration/test_pam_timing.py [RUNS]

prints the table quoted in docs/ssh.md. As a test it asserts the issue's budget: the socket path
adds at most 10 ms to a login over a bare pam_python module (prompt only).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyotp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pam_support import PamEnv, require_root  # noqa: E402

BARE = '''
def pam_sm_authenticate(pamh, flags, argv):
    pamh.conversation(pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, "Verification code: "))
    return pamh.PAM_SUCCESS


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_SUCCESS
'''
GA_SO = "/usr/lib/x86_64-linux-gnu/security/pam_google_authenticator.so"


def _login(service: str, user: str, answer: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(["pamtester", service, user, "authenticate"], input=answer + "\n",
                          capture_output=True, text=True)
    elapsed = (time.perf_counter() - started) * 1000
    assert proc.returncode == 0, (service, proc.stdout, proc.stderr)
    return elapsed


def measure(runs: int = 41) -> dict[str, list[float]]:
    """ms per login of each variant, run round-robin so that load drift hits all alike."""
    env = PamEnv()
    full = PamEnv(synchronous="full")  # the shipped default: every accept is fsync'ed
    scratch = Path(tempfile.mkdtemp(prefix="mfa-bench-"))
    extra: list[Path] = []

    def write_service(text: str) -> str:
        name = f"mfa-bench-{len(extra)}-{scratch.name[-6:]}"
        Path("/etc/pam.d", name).write_text(text)
        extra.append(Path("/etc/pam.d", name))
        return name

    try:
        info = env.devices.create_virtual("BENCH", kind="hotp")
        hotp = pyotp.HOTP(info["secret"])
        env.devices.enable("bench", "BENCH", hotp.at(0), hotp.at(1))
        counter = iter(range(2, 10 ** 6))
        info = full.devices.create_virtual("BENCH", kind="hotp")
        hotp_full = pyotp.HOTP(info["secret"])
        full.devices.enable("bench", "BENCH", hotp_full.at(0), hotp_full.at(1))
        counter_full = iter(range(2, 10 ** 6))
        bare = scratch / "bare_pam.py"
        bare.write_text(BARE)
        # (name, service, user, answer for run i)
        variants = [
            ("pam_permit.so only", write_service("auth required pam_permit.so\n"), "bench",
             lambda: ""),
            ("bare pam_python module", write_service(f"auth required pam_python.so {bare}\n"),
             "bench", lambda: "1"),
        ]
        if Path(GA_SO).exists():
            secret = pyotp.random_base32(32)
            ga = scratch / "ga_secret"
            ga.write_text(f'{secret}\n" TOTP_AUTH\n')
            ga.chmod(0o400)
            totp = pyotp.TOTP(secret)
            variants.append(("pam_google_authenticator.so (C)", write_service(
                f"auth required pam_google_authenticator.so secret={ga} user=root\n"), "root",
                totp.now))
        env.start_server()
        variants.append(("pam_mfa.py via the daemon's socket", env.service(), "bench",
                         lambda: hotp.at(next(counter))))
        full.start_server()
        variants.append(("pam_mfa.py via the socket, synchronous = \"full\"", full.service(),
                         "bench", lambda: hotp_full.at(next(counter_full))))
        # The same module pointed at a socket that does not exist: the in-process fallback.
        variants.append(("pam_mfa.py in-process fallback",
                         env.service(f"socket={env.dir}/no-daemon.sock"), "bench",
                         lambda: hotp.at(next(counter))))
        samples: dict[str, list[float]] = {name: [] for name, *_ in variants}
        for _ in range(runs):
            for name, service, user, answer in variants:
                samples[name].append(_login(service, user, answer()))
        return samples
    finally:
        env.close()
        full.close()
        for path in extra:
            path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def overhead(samples: dict[str, list[float]], name: str) -> float:
    """Median over rounds of (variant - bare module) in the same round: load drift cancels out."""
    return statistics.median(m - b for m, b in zip(samples[name],
                                                   samples["bare pam_python module"]))


def table(samples: dict[str, list[float]]) -> str:
    lines = ["| module | ms per login (median) | over bare pam_python (median of paired runs) |",
             "|---|---|---|"]
    for name, values in samples.items():
        over = f"{overhead(samples, name):+.1f}" if "pam_mfa" in name else ""
        lines.append(f"| {name} | {statistics.median(values):.1f} | {over} |")
    return "\n".join(lines)


def test_socket_path_adds_at_most_10_ms():
    require_root()
    samples = measure(25)
    print("\n" + table(samples))
    over = overhead(samples, "pam_mfa.py via the daemon's socket")
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if over > 10.0 and load > cpus:
        # Each login wakes the daemon twice; on an overloaded machine every wake-up waits for a
        # CPU, which measures the machine, not the module.
        pytest.skip(f"machine busy (load {load:.1f} on {cpus} CPUs): socket path measured "
                    f"{over:+.1f} ms over bare; the budget is checked on an idle machine")
    assert over <= 10.0, table(samples)


if __name__ == "__main__":
    print(table(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 41)))
