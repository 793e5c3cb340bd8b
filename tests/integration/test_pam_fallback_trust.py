"""The in-process fallback inside root's login processes (sudo, su) against a local user.

Through the real pam_python.so and pamtester with the daemon down, so the fallback answers: it
takes its config from the PAM line or the fixed default, never from the environment, and as root
it refuses a config, key, database or virtualenv that another user could change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from pam_support import (AUTH_ERR, AUTHINFO_UNAVAIL, SUCCESS, PamEnv, SyslogCapture, pamtester,
                         require_root, temporary_user, uid_of)

from mfa_radius import config as config_mod
from mfa_radius.sms.service import SmsService
from mfa_radius.state import init


@pytest.fixture(scope="module")
def syslog():
    capture = SyslogCapture()
    yield capture
    capture.close()


@pytest.fixture
def env(syslog):
    require_root()
    e = PamEnv()
    syslog.take()
    yield e
    e.close()


@pytest.fixture
def attacker():
    """A local user created for the test (no sudo rights, no device anywhere)."""
    require_root()
    with temporary_user("mfaatk") as name:
        yield name


def attacker_config(name: str) -> tuple[Path, Path]:
    """The attacker's own config in a directory they own: their key and database, themselves
    exempt, and an SMS `command` gateway that leaves a marker file when it runs (as root, if the
    fallback ever loaded this config). (config path, marker path)."""
    home = Path(tempfile.mkdtemp(prefix="mfa-attacker-"))
    marker = home / "ran-as-root"
    config = home / "evil.toml"
    config.write_text(
        "[storage]\n"
        f'database = "{home}/evil.db"\nkey_file = "{home}/evil.key"\n'
        "[policy]\n"
        f'exempt_users = ["{name}", "root"]\n'
        "nullok = true\n"
        "[[sms.gateways]]\n"
        'type = "command"\n'
        f'command = ["/bin/sh", "-c", "id > {marker}"]\n')
    cfg = config_mod.load(str(config))
    init(cfg)
    sms = SmsService.open(cfg)
    sms.enable(f"{name}sms", "+15550001234")  # an SMS-only user: a code is sent before the prompt
    sms.verifier.store.close()
    uid = uid_of(name)
    for path in [home, *home.iterdir()]:
        os.chown(path, uid, uid)
    return config, marker


def test_fallback_ignores_mfa_radius_config_from_the_environment(env, attacker):
    config, marker = attacker_config(attacker)
    evil = dict(os.environ, MFA_RADIUS_CONFIG=str(config))
    try:
        # The shipped stacks' line: no config=, so the fixed default decides, never the variable.
        bare = env.service()
        path = env.services[-1]
        path.write_text(path.read_text().replace(f" config={env.config}", ""))
        assert "config=" not in path.read_text()
        for user in (attacker, "root", f"{attacker}sms"):
            out = pamtester(bare, user, "123456", env=evil)
            assert SUCCESS not in out, (user, out)
        # config= on the line: the real config decides (no device there: refused), the
        # attacker's exemption and SMS gateway never apply.
        svc = env.service()
        for user in (attacker, f"{attacker}sms"):
            assert AUTH_ERR in pamtester(svc, user, "123456", env=evil)
        totp = env.enroll("alice")
        assert SUCCESS in pamtester(svc, "alice", env.next_code(totp), env=evil)
        assert not marker.exists(), marker.read_text()
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)


def _move_database(env: PamEnv, mode: int) -> Path:
    sub = env.dir / "db"
    sub.mkdir()
    os.chmod(sub, mode)
    env.devices.store.close()
    for p in env.dir.glob("mfa.db*"):
        p.rename(sub / p.name)
    env.config.write_text(env.config.read_text().replace(f"{env.dir}/mfa.db", f"{sub}/mfa.db"))
    env.devices = _Closed()
    return sub


class _Closed:
    class store:
        @staticmethod
        def close():
            pass


@pytest.mark.parametrize("breakage", ["config_group_writable", "config_dir_group_writable",
                                      "config_not_root", "key_not_root", "db_dir_group_writable",
                                      "venv_not_root"])
def test_fallback_as_root_refuses_what_others_can_change(env, syslog, attacker, breakage):
    totp = env.enroll("kate")
    options = ""
    if breakage == "config_group_writable":
        culprit, fix = env.config, f"chmod go-w {env.config}"
        os.chmod(env.config, 0o664)
    elif breakage == "config_dir_group_writable":
        culprit, fix = env.dir, f"chmod go-w {env.dir}"
        os.chmod(env.dir, 0o775)
    elif breakage == "config_not_root":
        culprit, fix = env.config, f"chown root:root {env.config}"
        os.chown(env.config, uid_of(attacker), -1)
    elif breakage == "key_not_root":
        culprit = env.dir / "secret.key"
        fix = f"chown root:root {culprit}"
        os.chown(culprit, uid_of(attacker), -1)
    elif breakage == "db_dir_group_writable":
        culprit = _move_database(env, 0o775)
        fix = f"chmod go-w {culprit}"
    else:
        # A virtualenv the attacker owns (it could hold any mfa_radius): refused before import.
        venv = env.dir / "venv"
        site = venv / "lib" / "python3.11" / "site-packages"
        site.mkdir(parents=True)
        os.chown(venv, uid_of(attacker), -1)
        culprit, fix = venv, f"chown root:root {venv}"
        options = f"venv={venv}"
    svc = env.service(options)
    out = pamtester(svc, "kate", env.next_code(totp))
    assert AUTHINFO_UNAVAIL in out and SUCCESS not in out
    if syslog.active:
        lines = [line for line in syslog.take() if f"({svc}:auth)" in line
                 and ("untrusted" in line or "fix it" in line)]
        assert len(lines) == 1, lines  # one line, at authpriv.err, naming the file and the fix
        assert str(culprit) in lines[0] and fix in lines[0] and lines[0].startswith("<83>")


def test_fallback_as_root_accepts_the_checkouts_default_venv(env):
    """The module's own default (this checkout's .venv, root-owned 0755 up to /) passes."""
    from pam_support import REPO

    from mfa_radius.trusted_paths import untrusted

    assert untrusted(str(REPO / ".venv" / "lib" / "python3.11" / "site-packages")) is None
    assert untrusted(str(REPO / "mfa_radius")) is None
    totp = env.enroll("leo")
    assert SUCCESS in pamtester(env.service(), "leo", env.next_code(totp))
