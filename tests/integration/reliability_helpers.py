"""The whole daemon (`mfa-radius serve`: RADIUS + PAM socket) on one database, for the
reliability tests: stderr to a file (a flood's log must never block the server on a full pipe),
raw RADIUS requests, and the server's resident memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from pam_support import PYTHON, PamEnv

from mfa_radius.radius import codec

SECRET = "testing123"
S = codec.Secret(SECRET.encode())
MFA = str(Path(PYTHON).parent / "mfa-radius")


class FullServer(PamEnv):
    """PamEnv (config, key, database, PAM services) plus `mfa-radius serve` with a RADIUS client
    for 127.0.0.1."""

    def __init__(self, extra_toml: str = "", pam_toml: str = "", radius_toml: str = "",
                 synchronous: str = "normal"):
        clients = ('password_backend = "none"\n' + radius_toml +
                   '[[radius.clients]]\nname = "local"\naddress = "127.0.0.1"\n'
                   f'secret = "{SECRET}"\n')
        # PamEnv writes [radius] last with its own password_backend: replace it with ours.
        super().__init__(extra_toml="", pam_toml=pam_toml, synchronous=synchronous)
        text = self.config.read_text().replace('password_backend = "none"\n', clients)
        self.config.write_text(text + extra_toml)
        from mfa_radius import config as config_mod

        self.cfg = config_mod.load(str(self.config))
        self.port = int(self.cfg.radius.listen[0].rsplit(":", 1)[1])
        self.log_path = self.dir / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> FullServer:
        readies = self.log().count("ready: RADIUS on")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MFA, "--config", str(self.config), "serve"],
                                     stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log()}")
            if self.log().count("ready: RADIUS on") > readies and self.socket.exists():
                return self
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {self.log()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()
        self.proc = None

    def stop(self) -> str:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
            self.proc = None
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def close(self) -> None:
        self.stop()
        super().close()

    # ---- RADIUS -----------------------------------------------------------------------------

    def request(self, user: str, password: str | bytes | None, *, ident: int = 1,
                state: bytes | None = None, secret: codec.Secret = S,
                auth: bytes | None = None) -> tuple[bytes, bytes]:
        """(packet, request authenticator): a signed Access-Request."""
        auth = auth or os.urandom(16)
        attrs = [(codec.USER_NAME, user.encode())]
        if password is not None:
            pw = password.encode() if isinstance(password, str) else password
            attrs.append((codec.USER_PASSWORD, codec.encrypt_password(pw, auth, secret)))
        if state is not None:
            attrs.append((codec.STATE, state))
        return codec.build_request(codec.ACCESS_REQUEST, ident, auth, secret, attrs), auth

    def ask(self, user: str, password: str, timeout: float = 2.0, ident: int = 1) -> int | None:
        """Send one request, return the reply's code (None when unanswered); checks the reply."""
        packet, auth = self.request(user, password, ident=ident)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, ("127.0.0.1", self.port))
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                return None
        assert codec.verify_reply(reply, auth, S)
        return reply[0]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([MFA, "--config", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout)


def require_root_and(*tools: str) -> None:
    from pam_support import require_root

    require_root(*tools)


def enroll_many(server: FullServer, count: int, prefix: str = "u") -> dict:
    """`count` users with a TOTP device each (one transaction); {user: OtpKey}."""
    import secrets as _secrets

    from mfa_radius.devices import DeviceSpec
    from mfa_radius.otp import OtpKey

    specs, keys = [], {}
    for i in range(count):
        seed = _secrets.token_bytes(20)
        specs.append(DeviceSpec(f"{prefix}-tok-{i}", seed, user=f"{prefix}{i}"))
        keys[f"{prefix}{i}"] = OtpKey(seed)
    server.devices.add(specs)
    return keys


class Load:
    """A sender thread blasting Access-Requests (user, code) from a list, round robin, and a
    receiver thread recording every reply; `accepted` holds the (user, code) pairs that got an
    Access-Accept. Unanswered requests are simply forgotten (UDP)."""

    def __init__(self, server: FullServer, work, pace: float = 0.0005):
        self.server = server
        self.work = list(work)
        self.pace = pace
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        self.pending: dict[int, list] = {}
        self.accepted: list[tuple[str, str]] = []
        self.replies = {"accept": 0, "reject": 0, "other": 0}
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()

    def _send(self) -> None:
        i = 0
        while not self._stop.is_set():
            user, code = self.work[i % len(self.work)]
            ident = i % 256
            packet, auth = self.server.request(user, code, ident=ident)
            with self._lock:
                self.pending.setdefault(ident, []).append((auth, user, code))
                if len(self.pending[ident]) > 8:
                    del self.pending[ident][0]
            try:
                self.sock.sendto(packet, ("127.0.0.1", self.server.port))
                self.sent += 1
            except OSError:
                pass
            i += 1
            time.sleep(self.pace)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                for entry in self.pending.get(reply[1], []):
                    if codec.verify_reply(reply, entry[0], S):
                        self.pending[reply[1]].remove(entry)
                        if reply[0] == codec.ACCESS_ACCEPT:
                            self.accepted.append(entry[1:])
                            self.replies["accept"] += 1
                        elif reply[0] == codec.ACCESS_REJECT:
                            self.replies["reject"] += 1
                        else:
                            self.replies["other"] += 1
                        break

    def wait_accepts(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count and time.monotonic() < deadline:
            time.sleep(0.01)
