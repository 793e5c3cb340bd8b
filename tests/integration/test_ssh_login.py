"""A real OpenSSH login through the module: our own sshd on loopback, a real ssh client on a pty.

sshd names its PAM service after the name it was started as, so a symlink to /usr/sbin/sshd called
`sshd-mfa-test-XXXX` reads /etc/pam.d/sshd-mfa-test-XXXX and leaves the host's sshd alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pam_support import MODULE, PamEnv, require_root

SSHD = "/usr/sbin/sshd"
pexpect = pytest.importorskip("pexpect", reason="needs pexpect (pip install pexpect)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = Path(__file__).resolve().parents[2] / "conf"
SHIPPED_MODULE = "/opt/mfa-radius/pam_module/pam_mfa.py"


def shipped_pam(env: PamEnv, name: str) -> str:
    """A PAM file from conf/pam.d, pointed at this checkout's module and the test's daemon."""
    text = (CONF / "pam.d" / name).read_text()
    assert SHIPPED_MODULE in text
    return text.replace(SHIPPED_MODULE, f"{MODULE} socket={env.socket} config={env.config}")


class Sshd:
    def __init__(self, env: PamEnv, pam_auth: str, methods: str, whole_pam_file: bool = False,
                 shipped_config: bool = False):
        self.dir = env.dir / f"sshd-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        self.name = f"sshd-mfa-test-{uuid.uuid4().hex[:8]}"
        self.pam = Path("/etc/pam.d") / self.name
        self.pam.write_text(pam_auth if whole_pam_file else
                            pam_auth + "\naccount required pam_unix.so\n"
                            "session required pam_permit.so\n")
        binary = self.dir / self.name
        binary.symlink_to(SSHD)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.dir / "host_key")], check=True)
        self.port = free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir}/host_key\n"
            f"PidFile {self.dir}/sshd.pid\nUsePAM yes\nKbdInteractiveAuthentication yes\n"
            "PermitRootLogin no\nStrictModes no\n"
            + (_shipped_sshd_config(methods) if shipped_config else
               "PasswordAuthentication no\n"
               f"AuthenticationMethods {methods}\n") +
            f"AuthorizedKeysFile {self.dir}/authorized_keys_%u\n"
            "LogLevel VERBOSE\nUseDNS no\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        self.log = open(self.dir / "sshd.log", "w+")
        # The absolute path: sshd re-executes itself and refuses a relative one.
        self.proc = subprocess.Popen([str(binary), "-D", "-e", "-f", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("sshd did not start: " + self.logged())

    def logged(self) -> str:
        self.log.flush()
        return (self.dir / "sshd.log").read_text()

    def login(self, user: str, answers: list[tuple[str, str]], key: Path | None = None):
        """ssh USER@127.0.0.1 echo ok, answering each (prompt, text); return (output, exit)."""
        args = ["-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "NumberOfPasswordPrompts=1",
                "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=no"]
        if key:
            args += ["-i", str(key), "-o",
                     "PreferredAuthentications=publickey,keyboard-interactive"]
        else:
            args += ["-o", "PreferredAuthentications=keyboard-interactive",
                     "-o", "PubkeyAuthentication=no"]
        child = pexpect.spawn("ssh", args + [f"{user}@127.0.0.1", "echo", "ok-logged-in"],
                              timeout=20, encoding="utf-8")
        transcript = []
        try:
            for prompt, text in answers:
                child.expect(prompt)
                transcript.append(child.before + child.after)
                child.sendline(text)
            child.expect(pexpect.EOF)
            transcript.append(child.before)
        finally:
            child.close()
        return "".join(transcript), child.exitstatus

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        self.pam.unlink(missing_ok=True)


def _shipped_sshd_config(methods: str) -> str:
    """conf/sshd_config.d/mfa-radius.conf, with the AuthenticationMethods line the test wants."""
    lines = []
    for line in (CONF / "sshd_config.d" / "mfa-radius.conf").read_text().splitlines():
        if line.startswith("AuthenticationMethods"):
            line = f"AuthenticationMethods {methods}"
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture
def ssh_env():
    require_root("ssh", "ssh-keygen")
    if not os.path.exists(SSHD):
        pytest.skip("needs openssh-server (/usr/sbin/sshd)")
    env = PamEnv()
    name = f"mfas{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    password = f"Pw-{uuid.uuid4().hex[:10]}"
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    servers: list[Sshd] = []
    env.start_server()
    yield env, name, password, servers
    for server in servers:
        server.close()
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
    env.close()


def pam_stack(env: PamEnv, options: str = "", password: bool = True) -> str:
    lines = ["auth required pam_unix.so nodelay"] if password else []
    lines.append(f"auth required pam_python.so {MODULE} socket={env.socket} "
                 f"config={env.config} {options}".rstrip())
    return "\n".join(lines)


def test_password_then_code(ssh_env):
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    sshd = Sshd(env, pam_stack(env), "keyboard-interactive")
    servers.append(sshd)
    out, status = sshd.login(user, [("Password:", password),
                                    ("Verification code:", env.next_code(totp))])
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()
    # Wrong code: refused.
    out, status = sshd.login(user, [("Password:", password), ("Verification code:", "000000")])
    assert status != 0 and "ok-logged-in" not in out
    assert "Permission denied" in out
    # Wrong password, right code: refused too.
    out, status = sshd.login(user, [("Password:", "nope"),
                                    ("Verification code:", env.next_code(totp))])
    assert status != 0 and "ok-logged-in" not in out
    log = env.stop_server()
    assert f"service={sshd.name} user={user} rhost=127.0.0.1" in log
    assert "result=accept reason=ok" in log


def test_forward_pass_one_prompt(ssh_env):
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    stack = (f"auth required pam_python.so {MODULE} socket={env.socket} config={env.config} "
             "forward_pass\nauth required pam_unix.so use_first_pass nodelay")
    sshd = Sshd(env, stack, "keyboard-interactive")
    servers.append(sshd)
    out, status = sshd.login(user, [("Password & verification code:",
                                     password + env.next_code(totp))])
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()


def test_key_and_code(ssh_env):
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    sshd = Sshd(env, pam_stack(env, password=False), "publickey,keyboard-interactive")
    servers.append(sshd)
    key = sshd.dir / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", sshd.dir / f"authorized_keys_{user}")
    out, status = sshd.login(user, [("Verification code:", env.next_code(totp))], key=key)
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()
    assert "Password:" not in out


def test_daemon_down_falls_back_in_process(ssh_env):
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    env.stop_server()
    sshd = Sshd(env, pam_stack(env), "keyboard-interactive")
    servers.append(sshd)
    out, status = sshd.login(user, [("Password:", password),
                                    ("Verification code:", env.next_code(totp))])
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()
    deny = Sshd(env, pam_stack(env, "fallback=deny"), "keyboard-interactive")
    servers.append(deny)
    # No daemon and fallback=deny: refused after the password, without asking for a code.
    out, status = deny.login(user, [("Password:", password)])
    assert status != 0 and "ok-logged-in" not in out
    assert "Traceback" not in out


def test_shipped_files_password_then_code(ssh_env):
    """conf/pam.d/sshd and conf/sshd_config.d/mfa-radius.conf as shipped (Debian 12 stacks)."""
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    sshd = Sshd(env, shipped_pam(env, "sshd"), "keyboard-interactive", whole_pam_file=True,
                shipped_config=True)
    servers.append(sshd)
    out, status = sshd.login(user, [("Password:", password),
                                    ("Verification code:", env.next_code(totp))])
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()


def test_shipped_files_key_and_code(ssh_env):
    env, user, password, servers = ssh_env
    totp = env.enroll(user)
    sshd = Sshd(env, shipped_pam(env, "sshd-key-and-code"), "publickey,keyboard-interactive",
                whole_pam_file=True, shipped_config=True)
    servers.append(sshd)
    key = sshd.dir / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", sshd.dir / f"authorized_keys_{user}")
    out, status = sshd.login(user, [("Verification code:", env.next_code(totp))], key=key)
    assert status == 0 and "ok-logged-in" in out, out + sshd.logged()
    # Without the key, keyboard-interactive alone is not enough.
    out, status = sshd.login(user, [])
    assert status != 0 and "ok-logged-in" not in out
