"""`make run` demo state: created once under ./var, kept on re-runs, the printed code works."""

from __future__ import annotations

import base64
import time

from mfa_radius import config as config_mod
from mfa_radius import demo
from mfa_radius.otp import OtpKey, time_step
from mfa_radius.verifier import Attempt, Verifier


def test_demo_state_created_once_and_code_accepted(tmp_path, capsys):
    var = tmp_path / "var"
    path, info = demo.setup(str(var))
    again_path, again = demo.setup(str(var))
    assert (again_path, again) == (path, info)  # re-running keeps the state
    cfg = config_mod.load(path)
    assert cfg.radius.listen == ["127.0.0.1:1812"]
    assert cfg.radius.password_backend == "none"
    assert [(c.address, c.secret) for c in cfg.radius.clients] == [("127.0.0.1", "testing123")]
    assert cfg.storage.database.startswith(str(var))
    assert (var / "demo-device.json").stat().st_mode & 0o077 == 0

    seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
    code = OtpKey(seed).code(time_step(time.time(), 30))
    verifier = Verifier.open(cfg)
    try:
        decision = verifier.verify(Attempt("demo", code, "test"))
    finally:
        verifier.store.close()
    assert decision.accepted and decision.reason == "ok"

    demo.show(info, path)
    out = capsys.readouterr().out
    assert "radtest demo <code> 127.0.0.1 0 testing123" in out
    assert info["secret"] in out


# ---- the first hour: managing the demo, a busy port, the QR code on any theme ----------------

import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from conftest import MFA  # noqa: E402
from terminal_qr import decode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
needs_zbarimg = pytest.mark.skipif(shutil.which("zbarimg") is None,
                                   reason="zbarimg (Debian package zbar-tools) not installed")


def shown(tmp_path, capsys, port=demo.PORT) -> tuple[str, dict, str]:
    path, info = demo.setup(str(tmp_path / "var"), port=port)
    demo.show(info, path, port)
    return path, info, capsys.readouterr().out


def test_demo_prints_the_commands_that_manage_it_and_they_work(tmp_path, capsys):
    path, _, out = shown(tmp_path, capsys)
    (command,) = [line.strip() for line in out.splitlines() if line.strip().endswith(
        " user list") and "--config" in line]
    assert command == f"{shlex.quote(demo.cli_command())} --config {shlex.quote(path)} user list"
    listed = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^demo\s+yes\s+DEMO-TOTP-1", listed.stdout, re.M)
    (export,) = [line.strip() for line in out.splitlines() if line.strip().startswith("export ")]
    assert f"MFA_RADIUS_CONFIG={shlex.quote(path)}" in export
    # The export line, in a shell whose PATH lacks the venv, makes README's bare commands work.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    shell = subprocess.run(["bash", "-c", f"{export}\nmfa-radius user list"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert "DEMO-TOTP-1" in shell.stdout


def test_readme_quick_start_says_how_to_manage_the_demo():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/mfa-radius --config var/mfa-radius.toml" in quick
    assert "export MFA_RADIUS_CONFIG=" in quick and "make run PORT=" in quick


def test_demo_listens_on_the_port_asked_for(tmp_path, capsys):
    path, _, out = shown(tmp_path, capsys, port=18555)
    assert config_mod.load(path).radius.listen == ["127.0.0.1:18555"]
    assert "radtest demo <code> 127.0.0.1:18555 0 testing123" in out


def test_a_busy_port_is_named_with_its_holder_before_anything_is_printed(tmp_path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        proc = subprocess.run([sys.executable, "-m", "mfa_radius.demo", "--port", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 1 and proc.stdout == ""
    # The test's own process holds it: named with its pid.
    assert re.fullmatch(rf"mfa-radius demo: UDP port {port} is already in use by python\S* "
                        rf"\(pid {os.getpid()}\): pick another port: make run PORT=18120\n",
                        proc.stderr), proc.stderr
    assert not (tmp_path / "var").exists()


def test_make_run_installs_only_what_the_demo_needs_and_passes_the_port(tmp_path):
    proc = subprocess.run(["make", "--no-print-directory", "-n", "run", f"VENV={tmp_path}/v",
                           "PORT=18120"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install -q --disable-pip-version-check -e .\n" in proc.stdout
    assert "[test]" not in proc.stdout
    assert "-m mfa_radius.demo --port 18120" in proc.stdout


def qr_lines(out: str) -> str:
    return "".join(line + "\n" for line in out.splitlines() if "\033[" in line)


@needs_zbarimg
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_demo_qr_code_scans_on_light_and_dark_terminals(tmp_path, capsys, theme):
    _, info, out = shown(tmp_path, capsys)
    assert decode(qr_lines(out), theme, tmp_path) == info["otpauth_uri"]


@needs_zbarimg
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_create_virtual_qr_scans_on_light_and_dark_terminals(cfg_path, tmp_path, theme):
    result = subprocess.run([MFA, "--config", str(cfg_path), "device", "create-virtual", "p1",
                             "--qr"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    uri = re.search(r"^otpauth URI: (\S+)$", result.stdout, re.M).group(1)
    assert decode(qr_lines(result.stdout), theme, tmp_path) == uri
