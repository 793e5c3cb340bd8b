"""`make install DESTDIR=...`: the files land in their FHS places, paths name PREFIX (not DESTDIR),
the installed command runs, and a second install keeps an admin's edited conf."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/mfa-radius"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not os.path.exists(
    "/usr/bin/python3"), reason="make install needs make and /usr/bin/python3")


def make_install(destdir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={destdir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    make_install(dest)
    return dest


def run_installed(destdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed script, run by the installed venv's python (its shebang names PREFIX,
    which exists only inside DESTDIR here)."""
    venv = destdir / PREFIX.lstrip("/")
    return subprocess.run([str(venv / "bin" / "python"), str(venv / "bin" / "mfa-radius"), *args],
                          capture_output=True, text=True, timeout=60, cwd=destdir)


def test_expected_files(destdir):
    expected = [
        f"{PREFIX}/bin/mfa-radius",
        f"{PREFIX}/bin/python",
        f"{PREFIX}/pyvenv.cfg",
        f"{PREFIX}/pam_module/pam_mfa.py",
        f"{PREFIX}/pam_module/pam_mfa_impl.py",
        f"{PREFIX}/pam_module/__pycache__/pam_mfa_impl.cpython-311.pyc",
        f"{PREFIX}/share/doc/mfa-radius/README.md",
        f"{PREFIX}/share/doc/mfa-radius/operations.md",
        f"{PREFIX}/share/doc/mfa-radius/examples/mfa-radius.toml",
        "/lib/systemd/system/mfa-radius.service",
        "/etc/mfa-radius/mfa-radius.toml",
        "/etc/pam.d/mfa-radius",
        "/usr/local/sbin/mfa-radius",
    ]
    missing = [p for p in expected if not os.path.lexists(destdir / p.lstrip("/"))]
    assert not missing
    assert os.readlink(destdir / "usr/local/sbin/mfa-radius") == f"{PREFIX}/bin/mfa-radius"
    conf = destdir / "etc/mfa-radius/mfa-radius.toml"
    assert (conf.stat().st_mode & 0o777) == 0o640
    assert conf.read_text() == (ROOT / "conf/mfa-radius.toml").read_text()


def test_not_editable_and_no_destdir_in_paths(destdir):
    venv = destdir / PREFIX.lstrip("/")
    site = venv / "lib/python3.11/site-packages"
    assert (site / "mfa_radius" / "__init__.py").is_file()  # a real copy, not a link to the tree
    assert not list(site.glob("__editable__*"))
    shebang = (venv / "bin/mfa-radius").read_text().splitlines()[0]
    assert shebang in (f"#!{PREFIX}/bin/python", f"#!{PREFIX}/bin/python3")
    leaks = subprocess.run(["grep", "-rlF", str(destdir), str(destdir)], capture_output=True,
                           text=True).stdout.split()
    assert not leaks, leaks[:10]
    unit = (destdir / "lib/systemd/system/mfa-radius.service").read_text()
    assert f"ExecStart={PREFIX}/bin/mfa-radius --config /etc/mfa-radius/mfa-radius.toml serve" \
        in unit


def test_installed_command_runs_and_accepts_the_installed_conf(destdir):
    proc = run_installed(destdir, "--version")
    assert proc.returncode == 0, proc.stderr
    assert "0.1.0" in proc.stdout
    # check-config runs serve's checks: as root the config is named by an absolute path, and the
    # key file must exist. The installed conf, its state moved into DESTDIR, after init:
    conf = destdir / "etc/mfa-radius/mfa-radius.toml"
    moved = destdir / "etc/mfa-radius/moved.toml"
    moved.write_text(conf.read_text()
                     .replace('"/var/lib/mfa-radius/', f'"{destdir}/var/lib/mfa-radius/')
                     .replace('"/etc/mfa-radius/', f'"{destdir}/etc/mfa-radius/'))
    os.chmod(moved, 0o640)
    try:
        proc = run_installed(destdir, "--config", str(moved), "init")
        assert proc.returncode == 0, proc.stderr
        proc = run_installed(destdir, "--config", str(moved), "check-config")
        assert proc.returncode == 0, proc.stderr
    finally:
        moved.unlink()


def test_a_second_install_keeps_an_edited_conf(destdir):
    conf = destdir / "etc/mfa-radius/mfa-radius.toml"
    pamd = destdir / "etc/pam.d/mfa-radius"
    edited = conf.read_text().replace("totp_window = 1", "totp_window = 2")
    conf.write_text(edited)
    untouched_pamd = pamd.read_text()
    proc = make_install(destdir)
    assert conf.read_text() == edited
    assert (destdir / "etc/mfa-radius/mfa-radius.toml.dist").read_text() == \
        (ROOT / "conf/mfa-radius.toml").read_text()
    assert "kept your" in proc.stdout
    # An unedited file stays as it is, without a .dist next to it.
    assert pamd.read_text() == untouched_pamd
    assert not (destdir / "etc/pam.d/mfa-radius.dist").exists()
    assert run_installed(destdir, "--version").returncode == 0


def test_the_unit_names_the_configured_sysconfdir_and_prefix(tmp_path):
    proc = subprocess.run(["make", "--no-print-directory", "install-unit", f"DESTDIR={tmp_path}",
                           "SYSCONFDIR=/usr/local/etc", "PREFIX=/srv/mfa"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    unit = (tmp_path / "lib/systemd/system/mfa-radius.service").read_text()
    assert "ExecStart=/srv/mfa/bin/mfa-radius --config /usr/local/etc/mfa-radius/mfa-radius.toml " \
        "serve" in unit
    assert "/etc/mfa-radius" not in unit.replace("/usr/local/etc/mfa-radius", "")
    assert "/opt/mfa-radius" not in unit
