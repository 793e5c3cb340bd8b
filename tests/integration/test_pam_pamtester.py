"""The PAM module through the real pam_python.so and pamtester, with and without the daemon."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid

import pytest

from pam_support import (AUTH_ERR, AUTHINFO_UNAVAIL, IGNORED, MAXTRIES, SUCCESS, PamEnv,
                         SyslogCapture, pamtester, require_root, run_as)


@pytest.fixture(scope="module")
def syslog():
    capture = SyslogCapture()
    yield capture
    capture.close()


@pytest.fixture
def env(syslog):
    require_root()
    e = PamEnv('[policy]\nprivileged_users = ["root", "boss"]\nlockout_failures = 3\n')
    syslog.take()
    yield e
    e.close()


@pytest.fixture(params=["socket", "daemon", "local"])
def mode(request, env):
    """Run the test through the socket served alone, by `mfa-radius serve`, and in-process."""
    if request.param != "local":
        env.start_server(daemon=request.param == "daemon")
    return request.param


def no_code_in(lines: list[str], *codes: str) -> None:
    for line in lines:
        for code in codes:
            assert code not in line, line


def test_accept_wrong_replay(env, mode, syslog):
    totp = env.enroll("alice")
    svc = env.service()
    code = env.next_code(totp)
    assert SUCCESS in pamtester(svc, "alice", code)
    assert AUTH_ERR in pamtester(svc, "alice", code)  # replay
    assert AUTH_ERR in pamtester(svc, "alice", "000000" if code != "000000" else "111111")
    lines = syslog.take()
    no_code_in(lines, code)
    if syslog.active:
        joined = "\n".join(lines)
        assert "user=alice" in joined and "result=accept reason=ok" in joined
        assert "reason=replay" in joined and "reason=bad_code" in joined
        assert all("<8" in line[:3] for line in lines)  # facility authpriv (10 << 3)
    if mode != "local":
        out = env.stop_server()
        assert "result=accept reason=ok" in out and "reason=replay" in out
        assert code not in out


def test_lockout_gives_maxtries(env, mode):
    totp = env.enroll("dave")
    svc = env.service()
    for _ in range(3):
        assert AUTH_ERR in pamtester(svc, "dave", "12345x")
    out = pamtester(svc, "dave", env.next_code(totp))
    assert MAXTRIES in out and "try again in" in out
    # PAM_SILENT: the same answer, and no message.
    proc = subprocess.run(["pamtester", svc, "dave", "authenticate(PAM_SILENT)"], input="\n",
                          capture_output=True, text=True, timeout=60)
    assert MAXTRIES in proc.stderr + proc.stdout and "try again" not in proc.stdout + proc.stderr


def test_locked_user_gets_in_with_a_recovery_code(env, mode):
    """A valid recovery code opens a locked account at the PAM prompt; a TOTP code does not."""
    totp = env.enroll("erin")
    codes = env.devices.issue_recovery_codes("erin", 2)
    svc = env.service()
    for _ in range(3):
        assert AUTH_ERR in pamtester(svc, "erin", "12345x")
    out = pamtester(svc, "erin", env.next_code(totp))  # a right code, but locked
    assert MAXTRIES in out and "or enter a recovery code" in out
    assert MAXTRIES in pamtester(svc, "erin", "")  # nothing typed: still locked
    out = pamtester(svc, "erin", codes[0])
    assert SUCCESS in out, out
    assert SUCCESS in pamtester(svc, "erin", env.next_code(totp))  # the lockout is gone
    assert AUTH_ERR in pamtester(svc, "erin", codes[0])  # once only


def test_nullok(env, mode):
    plain, nullok = env.service(), env.service("nullok")
    # No device, not privileged: nullok lets the next module decide (PAM_IGNORE, never success).
    assert IGNORED in pamtester(nullok, "carol")
    assert AUTH_ERR in pamtester(plain, "carol", "123456")
    # Privileged users (root, boss) are refused even with nullok.
    assert AUTH_ERR in pamtester(nullok, "boss", "123456")
    assert AUTH_ERR in pamtester(nullok, "root", "123456")
    # nullok with pam_permit after it: the unenrolled user gets through, on pam_permit's word.
    stacked = env.service("nullok", control="[success=done ignore=ignore default=die]",
                          after="auth required pam_permit.so")
    assert SUCCESS in pamtester(stacked, "carol")
    assert AUTH_ERR in pamtester(stacked, "boss", "123456")


def test_policy_nullok_is_ignore_not_success(syslog):
    require_root()
    e = PamEnv("[policy]\nnullok = true\n")
    try:
        e.start_server()
        svc = e.service()
        assert IGNORED in pamtester(svc, "erin")
        totp = e.enroll("erin")
        assert SUCCESS in pamtester(svc, "erin", e.next_code(totp))
    finally:
        e.close()


def test_several_devices_and_recovery_code(env, mode):
    t1 = env.enroll("frank", "F1")
    t8 = env.enroll("frank", "F8", digits=8)
    codes = env.devices.issue_recovery_codes("frank", 2)
    svc = env.service()
    assert SUCCESS in pamtester(svc, "frank", env.next_code(t8))
    assert SUCCESS in pamtester(svc, "frank", env.next_code(t1))
    assert SUCCESS in pamtester(svc, "frank", codes[0])
    assert AUTH_ERR in pamtester(svc, "frank", codes[0])  # used up
    assert SUCCESS in pamtester(svc, "frank", codes[1].replace("-", ""))


def test_echo_and_prompt_options(env, mode):
    totp = env.enroll("gina")
    svc = env.service("prompt=Token_code:_ echo_verification_code")
    out = pamtester(svc, "gina", env.next_code(totp))
    assert SUCCESS in out and "Token code: " in out


def test_use_first_pass_takes_code_from_authtok(env, mode):
    totp = env.enroll("hank")
    # pam_python sets no AUTHTOK here; a use_first_pass module with nothing to use refuses.
    svc = env.service("use_first_pass")
    assert AUTH_ERR in pamtester(svc, "hank")
    # try_first_pass with no AUTHTOK prompts.
    svc = env.service("try_first_pass")
    assert SUCCESS in pamtester(svc, "hank", env.next_code(totp))


# ---- forward_pass with a real local user and pam_unix ----------------------------------------

@pytest.fixture
def local_user():
    require_root()
    name = f"mfat{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    password = f"pw-{uuid.uuid4().hex[:8]}"
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    yield name, password
    subprocess.run(["userdel", name], check=False)


def test_forward_pass_with_pam_unix(env, mode, local_user):
    name, password = local_user
    totp = env.enroll(name)
    svc = env.service("forward_pass", after="auth required pam_unix.so use_first_pass nodelay")
    out = pamtester(svc, name, password + env.next_code(totp))
    assert SUCCESS in out and "Password & verification code: " in out
    # Right code, wrong password: pam_unix refuses what was forwarded.
    assert AUTH_ERR in pamtester(svc, name, "wrong" + env.next_code(totp))
    # Right password, wrong code.
    assert AUTH_ERR in pamtester(svc, name, password + "000000")
    # Recovery code (with its dash) after the password.
    codes = env.devices.issue_recovery_codes(name, 1)
    assert SUCCESS in pamtester(svc, name, password + codes[0])


def test_use_first_pass_splits_a_previous_modules_authtok(env, mode, local_user):
    """One prompt from the module before (pam_unix, optional, sets PAM_AUTHTOK to what was typed):
    use_first_pass takes the code off its end, forward_pass hands the rest on."""
    name, password = local_user
    totp = env.enroll(name)
    svc = env.service("use_first_pass forward_pass",
                      before="auth optional pam_unix.so nodelay",
                      after="auth required pam_unix.so use_first_pass nodelay")
    out = pamtester(svc, name, password + env.next_code(totp))
    assert SUCCESS in out and "Verification code" not in out
    assert AUTH_ERR in pamtester(svc, name, password + "000000")
    assert AUTH_ERR in pamtester(svc, name, password)  # no code at all: never prompts


def test_forward_pass_unenrolled_nullok_still_forwards_password(env, mode, local_user):
    name, password = local_user
    svc = env.service("forward_pass nullok",
                      control="[success=ok ignore=ignore default=die]",
                      after="auth required pam_unix.so use_first_pass nodelay")
    assert SUCCESS in pamtester(svc, name, password)
    assert AUTH_ERR in pamtester(svc, name, "wrong")


def test_pam_unix_first_then_code(env, mode, local_user):
    """The usual stack: pam_unix prompts for the password, then the module for the code."""
    name, password = local_user
    totp = env.enroll(name)
    svc = env.service(before="auth required pam_unix.so nodelay")
    assert SUCCESS in pamtester(svc, name, password, env.next_code(totp))
    assert AUTH_ERR in pamtester(svc, name, "wrong", env.next_code(totp))
    assert AUTH_ERR in pamtester(svc, name, password, "000000")


# ---- who may ask: SO_PEERCRED ----------------------------------------------------------------

ASK = r"""
import _socket, sys
s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
s.connect(sys.argv[1] if len(sys.argv) > 1 else PATH)
s.sendall(REQ)
print(s.recv(4096).decode().strip())
"""


def ask_as(user: str, path, request: str) -> str:
    code = ASK.replace("PATH", repr(str(path))).replace("REQ", repr(request.encode()))
    proc = run_as(user, code)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_non_root_caller_may_ask_only_about_itself(env):
    env.start_server()
    env.enroll("alice")
    assert ask_as("nobody", env.socket, "status\tuser=alice\n").startswith("error\treason=denied")
    assert ask_as("nobody", env.socket,
                  "verify\tuser=alice\tcode=123456\n").startswith("error\treason=denied")
    assert ask_as("nobody", env.socket, "status\tuser=nobody\n").startswith("ok\tstatus=")
    # pamtester run by nobody (a screen locker's position) about someone else: refused.
    svc = env.service()
    assert AUTH_ERR in pamtester(svc, "alice", "123456", as_user="nobody")
    out = env.stop_server()
    assert "uid 65534 may not ask about user alice" in out


def test_unprivileged_callers_none(syslog):
    require_root()
    e = PamEnv(pam_toml='unprivileged_callers = "none"\n')
    try:
        e.start_server()
        assert ask_as("nobody", e.socket, "status\tuser=nobody\n").startswith(
            "error\treason=denied")
    finally:
        e.close()


# ---- fail closed -----------------------------------------------------------------------------

def test_fallback_deny_without_daemon(env, syslog):
    totp = env.enroll("ivan")
    svc = env.service("fallback=deny")
    assert AUTHINFO_UNAVAIL in pamtester(svc, "ivan", env.next_code(totp))
    if syslog.active:
        assert any("fallback=deny" in line for line in syslog.take())


def test_daemon_with_corrupt_database_fails_closed(env, syslog):
    totp = env.enroll("judy")
    env.start_server()
    svc = env.service()
    env.devices.store.close()
    db = env.dir / "mfa.db"
    for suffix in ("-wal", "-shm"):
        (env.dir / f"mfa.db{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 200)
    out = pamtester(svc, "judy", env.next_code(totp))
    assert AUTHINFO_UNAVAIL in out or AUTH_ERR in out
    env.devices = _Closed()


class _Closed:
    class store:
        @staticmethod
        def close():
            pass


@pytest.mark.parametrize("breakage", ["missing_db", "corrupt_db", "bad_config",
                                      "missing_config", "bad_key", "missing_key", "bad_option"])
def test_fallback_fails_closed(env, syslog, breakage):
    totp = env.enroll("kate")
    code = env.next_code(totp)
    options = ""
    env.devices.store.close()
    env.devices = _Closed()
    db, key = env.dir / "mfa.db", env.dir / "secret.key"
    if breakage == "missing_db":
        for p in env.dir.glob("mfa.db*"):
            p.unlink()
    elif breakage == "corrupt_db":
        for p in env.dir.glob("mfa.db-*"):
            p.unlink()
        db.write_bytes(b"\x00garbage" * 1000)
    elif breakage == "bad_config":
        env.config.write_text(env.config.read_text() + "\n[storage2]\nx = 1\n")
    elif breakage == "missing_config":
        env.config.unlink()
    elif breakage == "bad_key":
        key.write_bytes(b"short")
    elif breakage == "missing_key":
        key.unlink()
    elif breakage == "bad_option":
        options = "fallback=maybe"
    svc = env.service(options)
    out = pamtester(svc, "kate", code)
    assert AUTHINFO_UNAVAIL in out or AUTH_ERR in out, out
    assert SUCCESS not in out
    lines = syslog.take()
    no_code_in(lines, code)
    if syslog.active:
        assert any("refusing" in line or "reason=" in line for line in lines), lines


def test_corrupt_database_detected_by_sqlite(env):
    """Sanity check of the breakage used above: SQLite itself refuses the file."""
    env.devices.store.close()
    env.devices = _Closed()
    for p in env.dir.glob("mfa.db-*"):
        p.unlink()
    (env.dir / "mfa.db").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(env.dir / "mfa.db").execute("select * from sqlite_master").fetchall()


def test_venv_option_and_default(env):
    """fallback=local finds mfa_radius through venv= or the .venv next to the module."""
    totp = env.enroll("leo")
    svc = env.service(f"venv={os.path.dirname(os.path.dirname(os.path.realpath(__file__)))}/nope")
    # A venv that does not exist: the system path has no mfa_radius, so it fails closed...
    out = pamtester(svc, "leo", env.next_code(totp))
    # ...unless mfa_radius is importable system-wide (then it verifies): never an error shown.
    assert SUCCESS in out or AUTHINFO_UNAVAIL in out
    svc = env.service()
    assert SUCCESS in pamtester(svc, "leo", env.next_code(totp))


def test_fallback_in_unprivileged_process_cannot_read_key(env, syslog):
    """A screen locker runs as the user: with the daemon down, the in-process fallback cannot
    read the root-only key file, and refuses (one syslog line saying so)."""
    totp = env.enroll("nobody")
    svc = env.service()
    out = pamtester(svc, "nobody", env.next_code(totp), as_user="nobody")
    assert AUTHINFO_UNAVAIL in out
    if syslog.active:
        assert any("secret.key" in line and "refusing" in line for line in syslog.take())


def test_broken_install_fails_closed(env, tmp_path):
    """pam_mfa.py without its pam_mfa_impl.py: pam_python refuses, nothing on the terminal."""
    from pam_support import MODULE

    broken = tmp_path / "pam_module"
    broken.mkdir()
    (broken / "pam_mfa.py").write_text(MODULE.read_text())
    svc = env.service()
    path = env.services[-1]
    path.write_text(path.read_text().replace(str(MODULE), str(broken / "pam_mfa.py")))
    out = pamtester(svc, "alice", "123456")
    assert SUCCESS not in out and "Error in service module" in out
