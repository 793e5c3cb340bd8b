"""A bad environment at every entry point: `mfa-radius verify` (CLI), `mfa-radius serve`, and the
PAM module's in-process fallback (pamtester, no daemon). Key file missing or world-readable,
database missing, corrupt, on a read-only mount, on a full disk: each fails closed (never an
accept) with one clear line, no traceback, and an exit code the CLI documents (2: configuration,
key file or database; 1: refused or failed).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pyotp
import pytest
from conftest import trusted_tmpdir
from pam_support import MODULE, SUCCESS, pamtester, require_root
from reliability_helpers import MFA, S, SECRET

from mfa_radius import config as config_mod
from mfa_radius.radius import codec
from mfa_radius.state import init, open_devices

BREAKAGES = ["key_missing", "key_world_readable", "db_missing", "db_corrupt", "db_read_only",
             "disk_full"]
FINDINGS: dict[tuple[str, str], str] = {}


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    """Config in a world-traversable directory; key and database in <dir>/data, which can be a
    tiny tmpfs or a read-only bind mount. Alice is enrolled before anything is broken."""

    def __init__(self, breakage: str):
        self.dir = trusted_tmpdir("mfa-env-")  # 0755, root's up to / (serve refuses /tmp)
        self.data = self.dir / "data"
        self.data.mkdir()
        self.mounts: list[Path] = []
        self.services: list[Path] = []
        if breakage in ("disk_full", "disk_fills_later"):
            if not _run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                        str(self.data)):
                self.close()
                pytest.skip("cannot mount a tmpfs here (needed to simulate a full disk)")
            self.mounts.append(self.data)
        self.port = _free_port()
        self.config = self.dir / "mfa-radius.toml"
        self.config.write_text(
            "[storage]\n"
            f'database = "{self.data}/mfa.db"\nkey_file = "{self.data}/secret.key"\n'
            'synchronous = "normal"\n[otp]\ntotp_window = 4\n'
            f'[pam]\nsocket = "{self.dir}/run/pam.sock"\n'
            f'[radius]\nlisten = ["127.0.0.1:{self.port}"]\npassword_backend = "none"\n'
            f'[[radius.clients]]\nname = "local"\naddress = "127.0.0.1"\nsecret = "{SECRET}"\n')
        cfg = config_mod.load(str(self.config))
        init(cfg)
        devices = open_devices(cfg)
        info = devices.create_virtual("A1")
        self.totp = pyotp.TOTP(info["secret"])
        now = time.time()
        devices.enable("alice", "A1", self.totp.at(now - 30), self.totp.at(now))
        devices.store.close()
        self.steps = 0
        self.breakage = breakage
        self._break(breakage)

    def next_code(self) -> str:
        self.steps += 1
        return self.totp.at(time.time() + 30 * self.steps)

    def _break(self, breakage: str) -> None:
        db, key = self.data / "mfa.db", self.data / "secret.key"
        if breakage == "key_missing":
            key.unlink()
        elif breakage == "key_world_readable":
            key.chmod(0o644)
        elif breakage == "db_missing":
            for p in self.data.glob("mfa.db*"):
                p.unlink()
        elif breakage == "db_corrupt":
            for p in self.data.glob("mfa.db-*"):
                p.unlink()
            db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
        elif breakage == "db_read_only":
            if not (_run("mount", "--bind", str(self.data), str(self.data))):
                pytest.skip("cannot bind-mount here (needed for a read-only database)")
            self.mounts.append(self.data)
            if not _run("mount", "-o", "remount,ro,bind", str(self.data)):
                pytest.skip("cannot remount read-only here")
        elif breakage in ("disk_full", "disk_fills_later"):
            if breakage == "disk_fills_later":
                return  # the test fills it with fill_disk() once the server runs
            self.fill_disk()

    def fill_disk(self) -> None:
        with open(self.data / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        # The last few blocks: a page or two may still fit, nothing more.
        try:
            with open(self.data / "filler2", "wb") as f:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
        except OSError:
            pass

    def free_disk(self) -> None:
        for name in ("filler", "filler2"):
            (self.data / name).unlink(missing_ok=True)

    def service(self) -> str:
        name = f"mfa-test-{uuid.uuid4().hex[:10]}"
        path = Path("/etc/pam.d") / name
        path.write_text(f"auth required pam_python.so {MODULE} socket={self.dir}/run/pam.sock "
                        f"config={self.config}\naccount required pam_permit.so\n")
        self.services.append(path)
        return name

    def close(self) -> None:
        for path in self.services:
            path.unlink(missing_ok=True)
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=BREAKAGES)
def env(request):
    require_root()
    e = Env(request.param)
    yield e
    e.close()


def one_clear_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mfa-radius: "), stderr
    return lines[0]


def hint_checks(breakage: str, line: str) -> None:
    if breakage == "key_world_readable":
        assert "chmod 600" in line, line
    if breakage == "key_missing":
        assert "secret.key" in line, line
    if breakage == "db_read_only":
        assert "read-only" in line, line
    if breakage == "disk_full":
        assert "disk is full" in line, line
    if breakage in ("db_missing", "db_corrupt"):
        assert "mfa.db" in line or "database" in line, line


def test_cli_verify(env):
    proc = subprocess.run([MFA, "--config", str(env.config), "verify", "alice", env.next_code()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (1, 2), (proc.returncode, proc.stdout, proc.stderr)
    assert "accepted" not in proc.stdout
    line = one_clear_line(proc.stderr)
    hint_checks(env.breakage, line)
    FINDINGS[("cli", env.breakage)] = f"exit {proc.returncode}: {line}"
    print(f"\ncli verify / {env.breakage}: exit {proc.returncode}: {line}")


def test_serve(env):
    log = env.dir / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([MFA, "--config", str(env.config), "serve"], stdout=out,
                                stderr=out)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None \
                    and "ready:" not in log.read_text():
                time.sleep(0.05)
            if proc.poll() is not None:
                text = log.read_text()
                assert proc.returncode == 2, (proc.returncode, text)
                line = one_clear_line(text)
                hint_checks(env.breakage, line)
                outcome = f"exit 2: {line}"
            else:
                # It started (reading works): a valid code must still never be accepted.
                auth = os.urandom(16)
                packet = codec.build_request(codec.ACCESS_REQUEST, 1, auth, S, [
                    (codec.USER_NAME, b"alice"),
                    (codec.USER_PASSWORD,
                     codec.encrypt_password(env.next_code().encode(), auth, S))])
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(3)
                    sock.sendto(packet, ("127.0.0.1", env.port))
                    try:
                        reply = sock.recv(4096)
                    except TimeoutError:
                        reply = None
                assert reply is None or reply[0] == codec.ACCESS_REJECT, reply
                time.sleep(0.2)
                text = log.read_text()
                assert "Traceback" not in text, text
                assert "reason=error" in text or reply is None, text
                errors = [ln for ln in text.splitlines() if "ERROR" in ln or "error" in ln]
                outcome = ("started; request " + ("unanswered" if reply is None else "rejected")
                           + f"; {errors[0] if errors else ''}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    FINDINGS[("serve", env.breakage)] = outcome
    print(f"\nserve / {env.breakage}: {outcome}")


def test_pam_fallback(env):
    out = pamtester(env.service(), "alice", env.next_code())
    assert SUCCESS not in out
    assert "Traceback" not in out
    FINDINGS[("pam", env.breakage)] = out.strip().splitlines()[-1]
    print(f"\npam fallback / {env.breakage}: {out.strip().splitlines()[-1]}")


def test_disk_fills_while_serving_then_recovers():
    """The disk fills under a running daemon: codes are refused (reason=error), never accepted;
    once space is freed the same daemon accepts again, without a restart."""
    require_root()
    env = Env("disk_fills_later")
    log = env.dir / "serve.log"
    out = open(log, "wb")
    proc = subprocess.Popen([MFA, "--config", str(env.config), "serve"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while "ready:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)

        def ask(code: str):
            auth = os.urandom(16)
            packet = codec.build_request(codec.ACCESS_REQUEST, 1, auth, S, [
                (codec.USER_NAME, b"alice"),
                (codec.USER_PASSWORD, codec.encrypt_password(code.encode(), auth, S))])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(3)
                sock.sendto(packet, ("127.0.0.1", env.port))
                return sock.recv(4096)[0]

        env.fill_disk()
        refused = [ask(env.next_code()) for _ in range(2)]
        env.free_disk()
        code = env.next_code()
        after = ask(code)
        again = ask(code)
        deadline = time.monotonic() + 5  # decision lines are written within 0.1 s, in bulk
        while "reason=error" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        out.close()
        env.close()
    print(f"\nserve / disk fills while serving: {refused} then {after}, {again}")
    assert refused == [codec.ACCESS_REJECT] * 2, text
    assert "reason=error" in text and "Traceback" not in text, text
    assert after == codec.ACCESS_ACCEPT, text
    assert again == codec.ACCESS_REJECT, text  # the replay record survived the full disk


def test_fold_errors_on_a_full_disk_are_rate_limited():
    """Accepted steps wait to be folded when the disk fills: the daemon retries every pass but
    logs the failure a couple of times a minute, not on every pass."""
    require_root()
    env = Env("disk_fills_later")
    log = env.dir / "serve.log"
    out = open(log, "wb")
    proc = subprocess.Popen([MFA, "--config", str(env.config), "serve"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while "ready:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            for i in range(3):
                auth = os.urandom(16)
                packet = codec.build_request(codec.ACCESS_REQUEST, i, auth, S, [
                    (codec.USER_NAME, b"alice"),
                    (codec.USER_PASSWORD, codec.encrypt_password(env.next_code().encode(), auth,
                                                                 S))])
                sock.sendto(packet, ("127.0.0.1", env.port))
                assert sock.recv(4096)[0] == codec.ACCESS_ACCEPT
        # Before the daemon is idle long enough to fold the accepts' steps: an empty WAL file
        # (the fold's pages need new blocks), then no block left.
        import sqlite3

        with sqlite3.connect(env.data / "mfa.db") as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        env.fill_disk()
        time.sleep(6)  # a fold pass every 0.5 s once idle
        text = log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        out.close()
        env.close()
    failures = text.count("folding the step log")
    print(f"\nserve / fold on a full disk: {failures} error line(s) in 6 s")
    assert 1 <= failures <= 2, text
    assert "Traceback" not in text, text
