"""Start and stop the two servers under test, each in the foreground as our child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
MFA = os.path.join(VENV_BIN, "mfa-radius")
PEER_START = os.environ.get("MFA_BENCH_PEER",
                            os.path.join(os.path.dirname(ROOT), "shared", "peers",
                                         "freeradius-totp", "start"))
SECRET = "testing123"
# [storage] synchronous for every mfa-radius config the benchmark writes; None: the default (normal).
SYNCHRONOUS: str | None = None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, argv: list[str], log_path: str, ready: str, port: int,
                 env: dict | None = None):
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start (code {self.proc.returncode}); "
                                   f"see {log_path}: {self.tail()}")
            with open(log_path, errors="replace") as fh:
                if ready in fh.read():
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} not ready after 60 s; see {log_path}")

    def tail(self, n: int = 5) -> str:
        with open(self.log_path, errors="replace") as fh:
            return " | ".join(fh.read().splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def freeradius_available() -> bool:
    return os.path.exists("/usr/sbin/freeradius") and os.path.exists(PEER_START)


def start_freeradius(workdir: str, users_file: str) -> Server:
    port = free_udp_port()
    return Server("freeradius", ["sh", PEER_START, os.path.join(workdir, "raddb"), str(port),
                                 users_file],
                  os.path.join(workdir, "freeradius.log"), "Ready to process requests", port)


def write_freeradius_users(path: str, users: list[str], secrets_b32: list[str]) -> None:
    with open(path, "w") as fh:
        for user, secret in zip(users, secrets_b32):
            fh.write(f'{user}\tTOTP-Secret := "{secret}"\n')


def write_mfa_config(workdir: str, port: int, backend: str = "none", extra: str = "",
                     radius_extra: str = "", storage: str = "") -> str:
    """mfa-radius's config in `workdir`; `storage`: more [storage] lines (another backend)."""
    path = os.path.join(workdir, "mfa-radius.toml")
    with open(path, "w") as fh:
        fh.write(f"""[storage]
database = "{workdir}/mfa.db"
key_file = "{workdir}/secret.key"
{f'synchronous = "{SYNCHRONOUS}"' if SYNCHRONOUS else ""}
{storage}
[radius]
password_backend = "{backend}"
listen = ["127.0.0.1:{port}"]
{radius_extra}
[[radius.clients]]
name = "bench"
address = "127.0.0.1"
secret = "{SECRET}"

[pam]
socket = "{workdir}/pam.sock"
{extra}""")
    return path


def mfa(config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([MFA, "--config", config, *args], capture_output=True, text=True,
                          check=check)


def start_mfa(workdir: str, config: str, port: int, argv_prefix: list[str] | None = None) -> Server:
    argv = (argv_prefix or []) + [MFA, "--config", config, "serve"]
    return Server("mfa-radius", argv, os.path.join(workdir, "mfa-radius.log"), "ready:", port)
