"""ruff (with its security rules) and mypy are clean on the package and the PAM module.

The rules and their justified exceptions live in pyproject.toml ([tool.ruff], [tool.mypy]).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = ["mfa_radius", "pam_module"]


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install -e '.[test]')")
    return found


def test_ruff_clean():
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", *TARGETS], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean():
    proc = subprocess.run([tool("mypy"), "--no-incremental", "--cache-dir=/dev/null"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
