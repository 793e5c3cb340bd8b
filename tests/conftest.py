"""Shared fixtures: a real config file, key file and SQLite database in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI (CI=true) replays the same examples every run, so a landing is never decided by the luck of
# the draw; local runs draw new examples each time and keep exploring (fuzz, property tests).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from mfa_radius import config as config_mod
from mfa_radius.state import init, open_devices

VENV_BIN = Path(sys.executable).parent
MFA = str(VENV_BIN / "mfa-radius")

# As root, `serve` and the PAM fallback refuse files in a directory others can write to, up to /
# (mfa_radius/trusted_paths.py): /tmp (1777) is one. So as root the tests' temporary directories
# live under a root-owned 0755 base instead.
TRUSTED_BASE = Path("/var/lib/mfa-radius-tests")


def trusted_tmpdir(prefix: str) -> Path:
    """A new directory (0755) that root may trust: under TRUSTED_BASE as root, else /tmp."""
    import tempfile

    if os.geteuid() != 0:
        return Path(tempfile.mkdtemp(prefix=prefix))
    TRUSTED_BASE.mkdir(mode=0o755, exist_ok=True)
    os.chown(TRUSTED_BASE, 0, 0)
    os.chmod(TRUSTED_BASE, 0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TRUSTED_BASE))
    os.chmod(path, 0o755)
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest's tmp_path under TRUSTED_BASE when running as root (one directory per run, so that
    runs in parallel do not share it), unless --basetemp says otherwise."""
    if os.geteuid() == 0 and not config.option.basetemp:
        config.option.basetemp = str(trusted_tmpdir("pytest-"))
        config._mfa_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    import shutil

    base = getattr(config, "_mfa_basetemp", None)
    if base:
        shutil.rmtree(base, ignore_errors=True)


def write_config(tmp_path: Path, extra: str = "", backend=None) -> Path:
    """A config file in `tmp_path` (`backend`: None or "sqlite", or a pg_support.PgDatabase)."""
    path = tmp_path / "mfa-radius.toml"
    path.write_text(
        "[storage]\n"
        f'database = "{tmp_path}/mfa.db"\n'
        f'key_file = "{tmp_path}/secret.key"\n'
        'synchronous = "normal"\n' + storage_lines(backend) + extra)
    return path


def storage_lines(backend) -> str:
    """The [storage] keys of a backend fixture's value (none for SQLite)."""
    return "" if backend in (None, "sqlite") else backend.storage_toml()


# ---- PostgreSQL: one throw-away cluster for the session (pg_support.py) ----------------------

@pytest.fixture(scope="session")
def pg_cluster():
    """The session's PostgreSQL cluster (pg_support.PgCluster); skips when PostgreSQL is
    missing."""
    import pg_support

    reason = pg_support.missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = pg_support.PgCluster.start(trusted_tmpdir("pg-cluster-"))
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_database(pg_cluster):
    """A fresh, empty database of the session's cluster (pg_support.PgDatabase), dropped after
    the test."""
    db = pg_cluster.new_database()
    yield db
    db.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Each store backend in turn: "sqlite", or a fresh PostgreSQL database (PgDatabase).
    Pass it to make_config / write_config (backend=...)."""
    if request.param == "sqlite":
        return "sqlite"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def cfg_path(tmp_path):
    """A config file whose key and database have been created by init."""
    path = write_config(tmp_path)
    init(config_mod.load(str(path)))
    return path


@pytest.fixture
def cfg(cfg_path):
    return config_mod.load(str(cfg_path))


@pytest.fixture
def devices(cfg):
    d = open_devices(cfg)
    yield d
    d.store.close()


def run_cli(cfg_path, *args, input=None, env=None):
    """Run the real `mfa-radius` console script."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([MFA, "--config", str(cfg_path), *args], capture_output=True,
                          text=True, input=input, env=full_env, timeout=60)


# ---- OpenLDAP: one throw-away slapd for the session (ldap_support.py) -------------------------

@pytest.fixture(scope="session")
def slapd():
    """The session's OpenLDAP directory (ldap_support.Slapd); skips when slapd is missing."""
    import ldap_support

    reason = ldap_support.missing_reason()
    if reason:
        pytest.skip(reason)
    directory = ldap_support.Slapd.start(trusted_tmpdir("slapd-"))
    yield directory
    directory.destroy()
