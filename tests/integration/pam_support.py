"""Real peers for the PAM tests: PAM services in /etc/pam.d, pamtester, the socket server, syslog.

Everything here needs root (writing /etc/pam.d, binding /dev/log, running as other users) and the
Debian packages libpam-python and pamtester; `require_root()` skips with the reason otherwise.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyotp
import pytest

from conftest import trusted_tmpdir

from mfa_radius import config as config_mod
from mfa_radius.state import init, open_devices

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "pam_module" / "pam_mfa.py"
PYTHON = sys.executable
PAM_PYTHON = "/lib/security/pam_python.so"

# pam_python writes no bytecode: precompile the module's code as an install does (docs/ssh.md), so
# the tests run what production runs (and a stale .pyc never hides an edit).
compileall.compile_dir(str(MODULE.parent), quiet=1)

# pam_strerror() texts pamtester prints, one per PAM code the module returns.
SUCCESS = "successfully authenticated"
AUTH_ERR = "Authentication failure"
MAXTRIES = "Have exhausted maximum number of retries"
AUTHINFO_UNAVAIL = "Authentication service cannot retrieve authentication info"
# A stack whose only module returned PAM_IGNORE ends in libpam's default, PAM_PERM_DENIED.
IGNORED = "Permission denied"


def require_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (writes /etc/pam.d, runs pamtester as other users)")
    if not os.path.exists(PAM_PYTHON):
        pytest.skip("needs Debian's libpam-python (pam_python.so)")
    for tool in ("pamtester",) + tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


class PamEnv:
    """Config, key and database in a world-traversable directory that root may trust (root-owned,
    0755, in a chain of such: the fallback refuses anything else), and PAM services using them."""

    def __init__(self, extra_toml: str = "", pam_toml: str = "", synchronous: str = "normal"):
        self.dir = trusted_tmpdir("mfa-pam-")  # 0755: non-root callers must reach the socket
        self.socket = self.dir / "run" / "pam.sock"
        self.root_socket = self.dir / "run" / "root" / "pam.sock"  # [pam] root_socket's default
        self.config = self.dir / "mfa-radius.toml"
        self.config.write_text(
            "[storage]\n"
            f'database = "{self.dir}/mfa.db"\n'
            f'key_file = "{self.dir}/secret.key"\n'
            f'synchronous = "{synchronous}"\n'
            "[otp]\n"
            "totp_window = 4\n"
            "[pam]\n"
            f'socket = "{self.socket}"\n' + pam_toml +
            "[radius]\n"  # only used when the test runs the whole daemon (`mfa-radius serve`)
            f'listen = ["127.0.0.1:{_free_udp_port()}"]\n'
            'password_backend = "none"\n' + extra_toml)
        self.cfg = config_mod.load(str(self.config))
        init(self.cfg)
        self.devices = open_devices(self.cfg)
        self.services: list[Path] = []
        self.server: subprocess.Popen | None = None
        self._steps: dict[str, int] = {}

    # ---- enrolment ---------------------------------------------------------------------------

    def enroll(self, user: str, serial: str | None = None, digits: int = 6) -> pyotp.TOTP:
        serial = serial or f"{user}-{uuid.uuid4().hex[:6]}"
        info = self.devices.create_virtual(serial, digits=digits)
        totp = pyotp.TOTP(info["secret"], digits=digits)
        now = time.time()
        self.devices.enable(user, serial, totp.at(now - 30), totp.at(now))
        self._steps[info["secret"]] = 0
        return totp

    def next_code(self, totp: pyotp.TOTP) -> str:
        """A code the verifier has not seen: the next time step each call (totp_window = 4)."""
        self._steps[totp.secret] += 1
        return totp.at(time.time() + 30 * self._steps[totp.secret])

    # ---- PAM services ------------------------------------------------------------------------

    def service(self, options: str = "", *, before: str = "", after: str = "",
                control: str = "required") -> str:
        """Write /etc/pam.d/<unique name> using the module; removed by close()."""
        name = f"mfa-test-{uuid.uuid4().hex[:10]}"
        path = Path("/etc/pam.d") / name
        opts = f"socket={self.socket} config={self.config} {options}".strip()
        path.write_text(
            (before + "\n" if before else "")
            + f"auth {control} pam_python.so {MODULE} {opts}\n"
            + (after + "\n" if after else "")
            + "account required pam_permit.so\n")
        self.services.append(path)
        return name

    # ---- the daemon's socket front, standalone -----------------------------------------------

    def start_server(self, daemon: bool = False) -> None:
        """The PAM socket alone (python -m mfa_radius.pam_server), or all of `mfa-radius serve`."""
        cmd = ([str(Path(PYTHON).parent / "mfa-radius"), "--config", str(self.config), "serve"]
               if daemon else [PYTHON, "-m", "mfa_radius.pam_server", "--config", str(self.config)])
        self.server = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.socket.exists():
                return
            if self.server.poll() is not None:
                raise RuntimeError("pam_server exited: " + self.server.stdout.read())
            time.sleep(0.02)
        raise RuntimeError("pam_server did not create its socket")

    def stop_server(self) -> str:
        """Stop the server; return what it logged."""
        if self.server is None:
            return ""
        self.server.terminate()
        out, _ = self.server.communicate(timeout=15)
        self.server = None
        return out

    def close(self) -> None:
        self.stop_server()
        for path in self.services:
            path.unlink(missing_ok=True)
        self.devices.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pamtester(service: str, user: str, *answers: str, as_user: str | None = None,
              env: dict | None = None) -> str:
    """Run the real pamtester; return its combined output (pam_strerror text on failure)."""
    cmd = ["pamtester", service, user, "authenticate"]
    if as_user:
        cmd = ["runuser", "-u", as_user, "--"] + cmd
    proc = subprocess.run(cmd, input="".join(a + "\n" for a in answers), capture_output=True,
                          text=True, timeout=60, env=env)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert (proc.returncode == 0) == (SUCCESS in out), out
    return out


class SyslogCapture:
    """Bind /dev/log (when no syslog daemon owns it) and collect what is logged."""

    PATH = "/dev/log"

    def __init__(self):
        self.lines: list[str] = []
        self.active = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if os.path.exists(self.PATH):
                return
            self._sock.bind(self.PATH)
            os.chmod(self.PATH, 0o666)  # as syslog daemons do: every process may log
        except OSError:
            return
        self.active = True
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.lines.append(data.decode("utf-8", "replace"))

    def take(self) -> list[str]:
        time.sleep(0.05)
        lines, self.lines = self.lines, []
        return lines

    def close(self) -> None:
        if self.active:
            self._stop = True
            self._thread.join(2)
            os.unlink(self.PATH)
        self._sock.close()


def run_as(user: str, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a small stdlib-only Python program as another user (runuser), with Debian's python3."""
    return subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-S", "-c", code],
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def temporary_user(prefix: str):
    """A local user made for one test (no home, no login shell, no sudo rights), then removed."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid
