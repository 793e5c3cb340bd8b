"""The PAM files shipped in conf/pam.d (login, su, sudo), run with pamtester on Debian's stacks."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from pam_support import AUTH_ERR, MODULE, SUCCESS, PamEnv, require_root

CONF = Path(__file__).resolve().parents[2] / "conf" / "pam.d"
SHIPPED_MODULE = "/opt/mfa-radius/pam_module/pam_mfa.py"


@pytest.fixture
def env():
    require_root()
    e = PamEnv()
    e.start_server()
    yield e
    e.close()


@pytest.fixture
def user():
    name = f"mfan{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    password = f"Pw-{uuid.uuid4().hex[:10]}"
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    yield name, password
    subprocess.run(["userdel", name], check=False)


def install(env: PamEnv, name: str) -> str:
    text = (CONF / name).read_text()
    assert SHIPPED_MODULE in text, f"conf/pam.d/{name} does not load the module"
    service = f"mfa-test-{name}-{uuid.uuid4().hex[:8]}"
    path = Path("/etc/pam.d") / service
    path.write_text(text.replace(SHIPPED_MODULE,
                                 f"{MODULE} socket={env.socket} config={env.config}"))
    env.services.append(path)
    return service


def run(service: str, user: str, *answers: str, tty: str | None = None,
        as_user: str | None = None) -> str:
    cmd = ["pamtester"] + ([f"-Itty={tty}"] if tty else []) + [service, user, "authenticate"]
    if as_user:
        cmd = ["runuser", "-u", as_user, "--"] + cmd
    proc = subprocess.run(cmd, input="".join(a + "\n" for a in answers), capture_output=True,
                          text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    return out


@pytest.mark.parametrize("name", ["su", "sudo", "login"])
def test_password_then_code(env, user, name):
    login, password = user
    totp = env.enroll(login)
    service = install(env, name)
    # su as root passes on pam_rootok alone, so it runs as the user (pam_unix then checks the
    # caller's own password through unix_chkpwd, and the socket lets a user ask about itself).
    as_user = login if name == "su" else None
    out = run(service, login, password, env.next_code(totp), tty="pts/3", as_user=as_user)
    assert SUCCESS in out and "Verification code: " in out, out
    out = run(service, login, password, "000000", tty="pts/3", as_user=as_user)
    assert AUTH_ERR in out


def test_login_console_is_the_break_glass_path(env, user):
    """On tty1 (the physical console) login asks the password only: a broken daemon or database
    can never lock root out of the console."""
    login, password = user
    env.enroll(login)
    service = install(env, "login")
    for tty in ("tty1", "/dev/tty1", "ttyS0"):
        out = run(service, login, password, tty=tty)
        assert SUCCESS in out and "Verification code" not in out, (tty, out)
    out = run(service, login, password, "000000", tty="pts/0")
    assert AUTH_ERR in out and "Verification code" in out
    # With the daemon stopped and the database gone, the console still works.
    env.stop_server()
    for p in env.dir.glob("mfa.db*"):
        p.unlink()
    assert SUCCESS in run(service, login, password, tty="tty1")
    assert SUCCESS not in run(service, login, password, "123456", tty="pts/0")


def test_su_as_root_needs_nothing(env, user):
    login, _ = user
    env.enroll(login)
    # pam_rootok: root su's without password or code (as with any su).
    assert SUCCESS in run(install(env, "su"), login)


def test_su_by_unprivileged_user_asks_target_users_code(env, user):
    """`su TARGET` run by nobody: pamtester as nobody cannot read shadow (pam_unix's helper can),
    and the socket refuses nobody asking about TARGET - refused, never let in."""
    login, password = user
    totp = env.enroll(login)
    out = run(install(env, "su"), login, password, env.next_code(totp), as_user="nobody")
    assert SUCCESS not in out
