"""Run the real `mfa-radius serve` on a loopback UDP port and talk to it like appliances do."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfa_radius import config as config_mod
from mfa_radius.otp import time_step
from mfa_radius.radius import codec
from mfa_radius.state import init

MFA = str(Path(sys.executable).parent / "mfa-radius")
SECRET = "testing123"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian packages freeradius-utils, pamtester, "
                        "libpam-radius-auth)")


def now_code(key, offset: int = 0) -> str:
    """The TOTP code of the current step (+ offset steps) for an OtpKey with period 30."""
    return key.code(time_step(time.time(), 30) + offset)


class Daemon:
    """`mfa-radius --config FILE serve` in a subprocess, stderr captured to a file."""

    def __init__(self, tmp_path: Path, radius: str = "", extra: str = "", clients: str | None = None,
                 storage: str | None = None):
        """`storage`: the [storage] section's lines instead of a SQLite database in tmp_path
        (e.g. a PostgreSQL DSN that several daemons share)."""
        self.tmp = tmp_path
        self.port = free_port()
        self.path = tmp_path / "mfa-radius.toml"
        if clients is None:
            clients = ('[[radius.clients]]\nname = "local"\naddress = "127.0.0.1"\n'
                       f'secret = "{SECRET}"\n')
        if storage is None:
            storage = (f'database = "{tmp_path}/mfa.db"\n'
                       f'key_file = "{tmp_path}/secret.key"\n'
                       'synchronous = "normal"\n')
        self.path.write_text(
            "[storage]\n" + storage +
            f'[pam]\nsocket = "{tmp_path}/pam.sock"\n'
            f'[radius]\nlisten = ["127.0.0.1:{self.port}"]\n' + radius + "\n" + clients
            + "\n" + extra)
        self.cfg = config_mod.load(str(self.path))
        if self.cfg.storage.backend != "sqlite" or not os.path.exists(self.cfg.storage.database):
            init(self.cfg)  # a shared database: creates the schema, or checks the key against it
        self.log_path = tmp_path / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *args: str) -> Daemon:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MFA, "--config", str(self.path), "serve", *args],
                                     stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log()}")
            if "ready: RADIUS on" in self.log():
                return self
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {self.log()}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in log:\n{self.log()}")

    def decisions(self, count: int = 0, timeout: float = 5.0) -> list[str]:
        """The decision lines so far, waiting until there are at least `count` (a reply can
        reach the client a moment before its log line is written)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = re.findall(r"client=.*", self.log())
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    # ---- raw UDP, for what radclient cannot do (same bytes twice, malformed packets) --------

    def raw(self, packet: bytes, timeout: float = 1.0, sock: socket.socket | None = None):
        own = sock is None
        sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.settimeout(timeout)
            sock.sendto(packet, ("127.0.0.1", self.port))
            try:
                return sock.recv(4096)
            except TimeoutError:
                return None
        finally:
            if own:
                sock.close()


def access_request(user: str, password: bytes | None, secret: str = SECRET, *,
                   state: bytes | None = None, extra: list | None = None, sign: bool = True,
                   ident: int = 1) -> tuple[bytes, bytes]:
    """(packet, request authenticator) for an Access-Request built with the project's codec."""
    s = codec.Secret(secret.encode())
    auth = os.urandom(16)
    attrs = [(codec.USER_NAME, user.encode())]
    if password is not None:
        attrs.append((codec.USER_PASSWORD, codec.encrypt_password(password, auth, s)))
    if state is not None:
        attrs.append((codec.STATE, state))
    attrs += extra or []
    return codec.build_request(codec.ACCESS_REQUEST, ident, auth, s, attrs, sign=sign), auth


def radclient(daemon: Daemon, lines: str, code: str = "auth", secret: str = SECRET,
              retries: int = 1, timeout: float = 1.0, address: str | None = None):
    """Run radclient -x with request `lines` on stdin; return (reply code name or None, output)."""
    out = subprocess.run(["radclient", "-x", "-r", str(retries), "-t", str(timeout),
                          address or daemon.address, code, secret],
                         input=lines, capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    m = re.search(r"Received (Access-\w+|Accounting-\w+)", text)
    return (m.group(1) if m else None), text


def reply_attr(output: str, name: str) -> list[str]:
    """Values of attribute `name` in the reply part of radclient -x output."""
    reply = output.split("Received", 1)[1] if "Received" in output else ""
    return re.findall(rf"^\s*{re.escape(name)} = (.*)$", reply, re.MULTILINE)
