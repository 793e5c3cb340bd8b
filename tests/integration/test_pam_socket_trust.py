"""The PAM sockets against local users: floods, impostors, foreign directories, a second daemon.

Real peers: `mfa-radius serve` (or the socket served alone), pamtester through pam_python.so, and
processes run as users the tests create (runuser).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from pam_support import (AUTH_ERR, AUTHINFO_UNAVAIL, PYTHON, SUCCESS, PamEnv, SyslogCapture,
                         _free_udp_port, pamtester, require_root, run_as, temporary_user,
                         uid_of)
from reliability_helpers import FullServer

MFA = str(Path(PYTHON).parent / "mfa-radius")


@pytest.fixture(scope="module")
def syslog():
    capture = SyslogCapture()
    yield capture
    capture.close()


@pytest.fixture
def user():
    require_root()
    with temporary_user("mfasock") as name:
        yield name


# ---- root's logins do not depend on what other users do ---------------------------------------

FLOOD = r"""
import _socket, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
        n += 1
    except OSError:
        pass
    s.close()
print(n)
"""


def test_connect_flood_by_three_users_does_not_fail_roots_logins(user):
    server = FullServer()
    try:
        server.start()
        totp = server.enroll("alice")
        svc = server.service("fallback=deny")  # any failure to reach the daemon shows
        flooders = [subprocess.Popen(
            ["runuser", "-u", user, "--", "/usr/bin/python3", "-S", "-c", FLOOD,
             str(server.socket), "8"], stdout=subprocess.PIPE, text=True) for _ in range(3)]
        time.sleep(0.5)
        results = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            results.append(pamtester(svc, "alice", server.next_code(totp)))
        counts = [int(p.communicate(timeout=30)[0] or 0) for p in flooders]
        assert sum(counts) > 1000, counts  # the flood did reach the public socket
        assert results and all(SUCCESS in r for r in results), [
            r for r in results if SUCCESS not in r][:3]
        log = server.stop()
        # The daemon says so, rate-limited: a few lines per uid and reason, not one per connect.
        assert f"uid {uid_of(user)} closed without a request" in log
        assert log.count("closed without a request") < 50
    finally:
        server.close()


# ---- an impostor on the socket path ------------------------------------------------------------

FAKE = r"""
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(b"ok\tstatus=exempt\tresult=accept\treason=exempt\n")
    except OSError:
        pass  # the module hung up on us
    c.close()
"""


def start_fake(as_user: str | None, path: Path) -> subprocess.Popen:
    runuser = ["runuser", "-u", as_user, "--"] if as_user else []
    proc = subprocess.Popen([*runuser, "/usr/bin/python3", "-S", "-c", FAKE, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("where", ["user_directory", "replaced_directory", "root_directory",
                                   "root_server_in_user_directory"])
def test_impostor_answering_exempt_is_refused(user, syslog, where):
    """A server answering `ok status=exempt` is refused (PAM_AUTH_ERR, no fallback) when it is
    not root (SO_PEERCRED) or when a directory on its path is not root's alone."""
    env = PamEnv()
    fake = None
    try:
        if where == "replaced_directory":
            # The real daemon runs; its directory is then swapped for one the user controls.
            env.start_server()
            os.rename(env.dir / "run", env.dir / "run.real")
        directory = env.dir / "run"
        directory.mkdir(mode=0o755)
        (directory / "root").mkdir(mode=0o755)
        for d in (directory, directory / "root"):
            os.chown(d, uid_of(user), -1)
        server_user = None if where == "root_server_in_user_directory" else user
        fake = start_fake(server_user, env.root_socket)
        fake_public = start_fake(server_user, env.socket)
        if where == "root_directory":
            # The directories handed back to root: the server's own uid still gives it away.
            for d in (directory, directory / "root"):
                os.chown(d, 0, -1)
        syslog.take()
        svc = env.service("fallback=local")
        out = pamtester(svc, "root", "")
        assert AUTH_ERR in out and SUCCESS not in out
        # The same from an unprivileged caller (socket=): refused too.
        assert SUCCESS not in pamtester(svc, user, "", as_user=user)
        if syslog.active:
            lines = [line for line in syslog.take()
                     if f"({svc}:auth)" in line and "untrusted server" in line]
            assert lines, "no refusal logged"
            if where == "root_directory":
                assert f"served by uid {uid_of(user)}, not by the daemon" in lines[0]
            elif where == "root_server_in_user_directory":
                assert f"run is owned by uid {uid_of(user)}, not root" in lines[0]
        fake_public.kill()
    finally:
        if fake is not None:
            fake.kill()
        env.close()


# ---- a busy daemon is retried, not taken for a dead one -----------------------------------------

@pytest.mark.parametrize("busy", ["backlog_full", "refused_then_listening", "busy_answer"])
def test_busy_socket_is_retried_briefly(busy):
    """A daemon that takes the connection late (full backlog: EAGAIN), listens late (restarting:
    ECONNREFUSED) or answers "busy" once: the module asks again within BUSY_RETRY, and the login
    goes through (fallback=deny: a login that gave up would fail)."""
    require_root()
    env = PamEnv()
    held = []
    try:
        path = env.root_socket
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent.parent, 0o755)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        if busy == "backlog_full":
            listener.listen(0)
            for _ in range(3):  # fill the backlog: the next connect gets EAGAIN
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.setblocking(False)
                try:
                    c.connect(str(path))
                except BlockingIOError:
                    c.close()
                    break
                held.append(c)
        answers = iter([b"error\treason=busy\tmessage=\n"] if busy == "busy_answer" else [])

        def serve_late():
            time.sleep(0.4)
            if busy == "refused_then_listening":
                listener.listen(8)
            for c in held:
                c.close()
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                if not conn.recv(4096):
                    conn.close()  # one of the held connections
                    continue
                conn.sendall(next(answers, b"ok\tstatus=exempt\n"))
                conn.close()

        if busy == "busy_answer":
            listener.listen(8)
        thread = threading.Thread(target=serve_late, daemon=True)
        thread.start()
        started = time.monotonic()
        out = pamtester(env.service("fallback=deny"), "root")
        assert SUCCESS in out, out
        assert time.monotonic() - started < 5
        listener.close()
    finally:
        env.close()


def test_no_daemon_at_all_is_unavailable_at_once():
    require_root()
    env = PamEnv()
    try:
        started = time.monotonic()
        assert AUTHINFO_UNAVAIL in pamtester(env.service("fallback=deny"), "root", "123456")
        assert time.monotonic() - started < 3
    finally:
        env.close()


# ---- serve: directories, a second daemon, its own socket only ---------------------------------

def serve(env: PamEnv, umask: int | None = None, timeout: float = 15) -> subprocess.Popen:
    return subprocess.Popen([MFA, "--config", str(env.config), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no socket"
        time.sleep(0.05)


def test_serve_under_umask_000_creates_0755_and_0700_directories():
    require_root()
    env = PamEnv()
    proc = serve(env, umask=0)
    try:
        wait_for(env.socket, proc)
        mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)  # noqa: E731
        assert mode(env.socket.parent) == 0o755
        assert mode(env.root_socket.parent) == 0o700
        assert mode(env.socket) == 0o666 and mode(env.root_socket) == 0o600
        assert os.lstat(env.root_socket.parent).st_uid == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
        env.close()


@pytest.mark.parametrize("which", ["socket_dir", "root_socket_dir"])
def test_serve_refuses_a_socket_directory_owned_by_another_user(user, which):
    env = PamEnv()
    try:
        directory = env.socket.parent if which == "socket_dir" else env.root_socket.parent
        directory.mkdir(parents=True, mode=0o755)
        os.chown(directory, uid_of(user), -1)
        proc = serve(env)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 2, out
        line = [x for x in out.splitlines() if x.startswith("mfa-radius: ")]
        assert len(line) == 1, out
        assert "PAM socket directory" in line[0]
        assert f"{directory} is owned by uid {uid_of(user)}" in line[0]
        assert "Traceback" not in out
    finally:
        env.close()


def test_second_serve_on_the_same_socket_refuses_and_the_first_keeps_answering():
    require_root()
    first = FullServer()
    try:
        first.start()
        totp = first.enroll("alice")
        svc = first.service("fallback=deny")
        # Another config, another RADIUS port, the same PAM sockets.
        second_cfg = first.dir / "second.toml"
        text = first.config.read_text().replace(f"127.0.0.1:{first.port}",
                                                 f"127.0.0.1:{_free_udp_port()}")
        second_cfg.write_text(text)
        second = subprocess.run([MFA, "--config", str(second_cfg), "serve"], capture_output=True,
                                text=True, timeout=30)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another daemon is answering on it" in second.stderr
        assert f"pid {first.proc.pid}" in second.stderr
        # The first daemon's sockets survived the second's start and exit.
        assert SUCCESS in pamtester(svc, "alice", first.next_code(totp))
        asked = run_as("nobody", "import _socket\ns = _socket.socket(_socket.AF_UNIX, "
                                 f"_socket.SOCK_STREAM)\ns.connect({str(first.socket)!r})\n"
                                 "s.sendall(b'status\\tuser=nobody\\n')\nprint(s.recv(999))")
        assert asked.stdout.startswith("b'ok\\tstatus="), asked.stdout + asked.stderr
    finally:
        first.close()


def test_serve_removes_only_the_socket_it_bound():
    """A daemon whose socket path was taken over meanwhile (its file moved aside, another daemon
    started) leaves the newer socket in place when it stops."""
    require_root()
    first = FullServer()
    second = None
    try:
        first.start()
        aside = first.dir / "aside"
        aside.mkdir()
        for path in (first.socket, first.root_socket):
            os.rename(path, aside / f"{path.parent.name}-{path.name}")
        second_cfg = first.dir / "second.toml"
        second_cfg.write_text(first.config.read_text().replace(
            f"127.0.0.1:{first.port}", f"127.0.0.1:{_free_udp_port()}"))
        second = subprocess.Popen([MFA, "--config", str(second_cfg), "serve"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(first.socket, second)
        time.sleep(0.3)
        inodes = [os.stat(p).st_ino for p in (first.socket, first.root_socket)]
        first.stop()
        assert [os.stat(p).st_ino for p in (first.socket, first.root_socket)] == inodes
        totp = first.enroll("bob")
        assert SUCCESS in pamtester(first.service("fallback=deny"), "bob", first.next_code(totp))
    finally:
        if second is not None:
            second.terminate()
            second.communicate(timeout=15)
        first.close()


def test_root_socket_serves_root_only_and_unprivileged_callers_use_the_other(user):
    """Root's pamtester goes through root_socket, a user's through socket (per-uid rules)."""
    env = PamEnv()
    try:
        env.start_server(daemon=True)
        totp = env.enroll(user)
        svc = env.service("fallback=deny")
        assert SUCCESS in pamtester(svc, user, env.next_code(totp))  # root asks about user
        assert SUCCESS in pamtester(svc, user, env.next_code(totp), as_user=user)
        # The root socket's directory keeps everyone else out.
        probe = run_as(user, "import _socket\ns = _socket.socket(_socket.AF_UNIX, "
                             f"_socket.SOCK_STREAM)\ns.connect({str(env.root_socket)!r})")
        assert "PermissionError" in probe.stderr
        log = env.stop_server()
        # The caller's uid first; what a non-root caller sent is marked as its claim.
        assert f"pam uid={uid_of(user)} claimed_service=mfa-test-" in log
        assert f" user={user} result=accept" in log
    finally:
        env.close()


# ---- serve as root: config and secret files others can change ---------------------------------

@pytest.mark.parametrize("breakage", ["config_group_writable", "secret_dir_group_writable",
                                      "key_owned_by_user"])
def test_serve_as_root_refuses_files_others_can_change(user, breakage):
    env = PamEnv()
    try:
        if breakage == "config_group_writable":
            os.chmod(env.config, 0o664)
            expected = f"untrusted config file {env.config}: it is writable by group or others"
        elif breakage == "secret_dir_group_writable":
            secrets = env.dir / "secrets"
            secrets.mkdir(mode=0o775)
            os.chmod(secrets, 0o775)
            (secrets / "vpn.secret").write_text("a-long-enough-shared-secret\n")
            os.chmod(secrets / "vpn.secret", 0o600)
            env.config.write_text(env.config.read_text() + '[[radius.clients]]\nname = "vpn"\n'
                                  f'address = "127.0.0.1"\nsecret_file = "{secrets}/vpn.secret"\n')
            expected = f"{secrets} is writable by group or others"
        else:
            os.chown(env.dir / "secret.key", uid_of(user), -1)
            expected = f"untrusted key file {env.dir}/secret.key: it is owned by uid {uid_of(user)}"
        proc = subprocess.run([MFA, "--config", str(env.config), "serve"], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "fix it with: ch" in lines[0], lines
    finally:
        env.close()


def test_key_file_of_another_user_is_refused_by_the_cli(user):
    env = PamEnv()
    try:
        key = env.dir / "secret.key"
        os.chown(key, uid_of(user), -1)
        proc = subprocess.run([MFA, "--config", str(env.config), "verify", "alice", "123456"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert f"key file {key} is owned by uid {uid_of(user)}" in proc.stderr
        assert f"chown root {key}" in proc.stderr
    finally:
        env.close()


# ---- PAM log fields --------------------------------------------------------------------------

def test_pam_log_fields_are_quoted_and_other_uids_items_marked_claimed(syslog):
    """A non-root caller picks service/rhost/tty freely: the daemon's line starts with its real
    uid and marks those as claims, quoted so that spaces and '=' cannot add keys and escaped so
    that ESC, C1 and bidi characters cannot hide anything; the module's own line quotes too."""
    require_root()
    env = PamEnv()
    try:
        env.start_server(daemon=True)
        request = ("verify\tuser=nobody\tcode=123456\tservice=sshd uid=0 result=accept\x1b[8m"
                   "\trhost=10.0.0.1\u202e\ttty=pts/1\n")
        ask = ("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
               f"s.connect({str(env.socket)!r})\ns.sendall({request.encode()!r})\n"
               "print(s.recv(4096))")
        assert run_as("nobody", ask).stdout.startswith("b'ok")
        syslog.take()
        svc = env.service()
        out = pamtester(svc, "bob smith=1", "123456")
        assert AUTH_ERR in out
        log = env.stop_server()
        line = next(x for x in log.splitlines() if "pam uid=65534" in x)
        assert 'pam uid=65534 claimed_service="sshd uid=0 result=accept\\' in line
        assert "\x1b" not in line and "claimed_tty=pts/1" in line
        # (C1 and bidi characters: logsetup's escaping, tested in tests/test_logsetup.py.)
        assert '[8m" user=nobody claimed_rhost=' in line and "result=reject reason=" in line
        root_line = next(x for x in log.splitlines() if "pam uid=0 " in x)
        assert 'user="bob smith=1"' in root_line and "service=mfa-test-" in root_line
        if syslog.active:
            mine = [x for x in syslog.take() if f"({svc}:auth)" in x and "result=" in x]
            assert mine and all('user="bob smith=1"' in x for x in mine), mine
    finally:
        env.close()


def test_daemon_user_option_trusts_that_uid_only(user):
    """daemon_user=NAME: a server with NAME's uid in a directory of NAME's is the daemon; the same
    server is refused without the option, and another user's is refused with it."""
    env = PamEnv()
    fakes = []
    try:
        directory = env.dir / "run"
        directory.mkdir(mode=0o755)
        (directory / "root").mkdir(mode=0o700)
        for d in (directory, directory / "root"):
            os.chown(d, uid_of(user), -1)
        fakes = [start_fake(user, env.root_socket), start_fake(user, env.socket)]
        assert SUCCESS in pamtester(env.service(f"daemon_user={user}"), "root")
        assert AUTH_ERR in pamtester(env.service(), "root")
        assert AUTH_ERR in pamtester(env.service("daemon_user=nobody"), "root")
    finally:
        for fake in fakes:
            fake.kill()
        env.close()
