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


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mfa-radius.toml"
    path.write_text(
        "[storage]\n"
        f'database = "{tmp_path}/mfa.db"\n'
        f'key_file = "{tmp_path}/secret.key"\n'
        'synchronous = "normal"\n' + extra)
    return path


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
