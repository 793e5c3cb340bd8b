"""An admin command run by an ordinary user says it needs root, not an SQLite error.

Needs root: creates a local user (useradd, removed after) and runs the real `mfa-radius` as it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import MFA, write_config
from mfa_radius import config as config_mod
from mfa_radius.state import init

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd")


@pytest.fixture
def somebody():
    name = f"mfau{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    yield name
    subprocess.run(["userdel", name], check=False)


@pytest.fixture
def public_dir():
    """A directory others may read (pytest's tmp_path is root's own, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mfa-unpriv-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def setup_state(public_dir: Path, db_dir_mode: int) -> tuple[Path, Path]:
    """A config others may read, naming a key file (0600, root's) and a database (0600, root's)
    in a directory of `db_dir_mode`; returns (config, database)."""
    state = public_dir / "state"
    state.mkdir(mode=db_dir_mode)
    os.chmod(state, db_dir_mode)
    cfg = write_config(public_dir)
    cfg.write_text(cfg.read_text().replace(f"{public_dir}/mfa.db", f"{state}/mfa.db"))
    os.chmod(cfg, 0o644)
    init(config_mod.load(str(cfg)))
    database = state / "mfa.db"
    assert os.stat(database).st_mode & 0o777 == 0o600
    return cfg, database


def run_as(user: str, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", MFA, "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_non_root_user_list_says_the_key_file_needs_root(somebody, public_dir):
    cfg, _ = setup_state(public_dir, 0o755)
    key = public_dir / "secret.key"
    result = run_as(somebody, cfg, "user", "list")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"mfa-radius: cannot read key file {key}: permission denied: run "
                             f"this as root (or as a user who may read {key})\n")
    # Root, for comparison, reads it.
    ok = subprocess.run([MFA, "--config", str(cfg), "user", "list"], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("db_dir_mode", [0o755, 0o700], ids=["file-0600", "directory-0700"])
def test_a_non_root_user_list_says_the_database_needs_root(somebody, public_dir, db_dir_mode):
    cfg, database = setup_state(public_dir, db_dir_mode)
    # The key file is theirs (as for an admin who delegates it): the database is not.
    os.chown(public_dir / "secret.key", pwd.getpwnam(somebody).pw_uid, -1)
    result = run_as(somebody, cfg, "user", "list")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"mfa-radius: {database}: permission denied: run this as root (or "
                             f"as a user with read and write access to {database} and its "
                             "directory)\n")
