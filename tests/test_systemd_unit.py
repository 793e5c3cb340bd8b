"""systemd/mfa-radius.service: `systemd-analyze verify` finds nothing, `security` rates it <= 3.0,
and the command lines it runs exist in our CLI."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "mfa-radius.service"
INSTALLED_BIN = "/opt/mfa-radius/bin/mfa-radius"
VENV_MFA = str(Path(sys.executable).parent / "mfa-radius")
MAX_EXPOSURE = 3.0

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
    copy = tmp_path / "mfa-radius.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_BIN, VENV_MFA))
    return copy


@needs_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    copy = runnable_copy(tmp_path)
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    # Other units on the host may draw warnings of their own; only ours count.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if "mfa-radius" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@needs_analyze
def test_verify_would_catch_a_mistake(tmp_path):
    """The check above is not vacuous: a bad value in the same copy is reported."""
    copy = runnable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe"))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    assert "Failed to parse boolean value" in proc.stdout + proc.stderr


@needs_analyze
def test_security_exposure_is_at_most_3(tmp_path):
    proc = subprocess.run([analyze, "security", "--offline=true", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 252)")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_notify_reload_restart_and_directories():
    svc = service_section()
    assert svc["Type"] == ["notify"]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["RuntimeDirectory"] == ["mfa-radius"]
    assert svc["StateDirectory"] == ["mfa-radius"]
    assert svc["ConfigurationDirectory"] == ["mfa-radius"]
    assert svc["UMask"] == ["0077"]
    # The directories systemd creates are where the default config puts things.
    from mfa_radius.config import Config

    defaults = Config()
    assert defaults.pam.socket.startswith("/run/mfa-radius/")
    assert defaults.storage.database.startswith("/var/lib/mfa-radius/")
    assert defaults.storage.key_file.startswith("/etc/mfa-radius/")


def test_every_command_line_is_accepted_by_the_cli():
    """ExecStart*/ExecReload of our binary must use options the CLI has (no `--quiet` drift)."""
    for key, values in service_section().items():
        if not key.startswith("Exec"):
            continue
        for value in values:
            argv = shlex.split(value.lstrip("-@:+!"))
            if argv[0] != INSTALLED_BIN:
                continue
            proc = subprocess.run([VENV_MFA, *argv[1:], "--help"], capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 0, f"{key}={value}: {proc.stderr}"


def test_unit_parses_as_ini():
    # Duplicate keys (SystemCallFilter twice) are legal in systemd; only syntax is checked here.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
