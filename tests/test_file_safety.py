"""Files and directories that hold secrets are private whatever the umask, and a QR code file is
written as a new 0600 file before its device is stored."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import MFA, run_cli, write_config

from mfa_radius.sealing import create_key_file


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _serials(cfg_path) -> list[str]:
    result = run_cli(cfg_path, "device", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [d["serial"] for d in json.loads(result.stdout)]


def test_init_under_umask_000_makes_private_directories_and_files(tmp_path):
    path = tmp_path / "mfa-radius.toml"
    path.write_text("[storage]\n"
                    f'database = "{tmp_path}/lib/mfa/db/mfa.db"\n'
                    f'key_file = "{tmp_path}/etc/mfa/secret.key"\n')
    result = subprocess.run([MFA, "--config", str(path), "init"], capture_output=True, text=True,
                            preexec_fn=lambda: os.umask(0), timeout=60)
    assert result.returncode == 0, result.stderr
    for directory in ("lib", "lib/mfa", "lib/mfa/db", "etc", "etc/mfa"):
        assert _mode(tmp_path / directory) == 0o700, directory
    assert _mode(tmp_path / "etc/mfa/secret.key") == 0o600
    db = tmp_path / "lib/mfa/db/mfa.db"
    assert _mode(db) == 0o600
    # Opened again under umask 000: SQLite's -wal and -shm take the database's mode.
    result = subprocess.run([MFA, "--config", str(path), "user", "list"], capture_output=True,
                            text=True, preexec_fn=lambda: os.umask(0), timeout=60)
    assert result.returncode == 0, result.stderr
    for extra in ("-wal", "-shm"):
        side = tmp_path / f"lib/mfa/db/mfa.db{extra}"
        if side.exists():
            assert _mode(side) & 0o077 == 0, extra


def test_qr_png_is_a_new_0600_file(cfg_path, tmp_path):
    png = tmp_path / "qr.png"
    result = subprocess.run([MFA, "--config", str(cfg_path), "device", "create-virtual", "Q1",
                             "--qr-png", str(png)], capture_output=True, text=True,
                            preexec_fn=lambda: os.umask(0), timeout=60)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes().startswith(b"\x89PNG") and _mode(png) == 0o600


def test_qr_png_onto_an_existing_file_is_refused_and_nothing_is_stored(cfg_path, tmp_path):
    png = tmp_path / "qr.png"
    png.write_bytes(b"old")
    png.chmod(0o644)
    result = run_cli(cfg_path, "device", "create-virtual", "Q1", "--qr-png", str(png))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"mfa-radius: {png}: already exists; refusing to write the QR code into it (--force "
        "replaces it); no device was created"]
    assert "secret" not in result.stdout
    assert png.read_bytes() == b"old" and _mode(png) == 0o644
    assert "Q1" not in _serials(cfg_path)
    # --force replaces it with a new private file.
    forced = run_cli(cfg_path, "device", "create-virtual", "Q1", "--qr-png", str(png), "--force")
    assert forced.returncode == 0, forced.stderr
    assert png.read_bytes().startswith(b"\x89PNG") and _mode(png) == 0o600
    assert "Q1" in _serials(cfg_path)


def test_qr_png_onto_a_symlink_is_refused(cfg_path, tmp_path):
    target = tmp_path / "elsewhere"
    link = tmp_path / "qr.png"
    link.symlink_to(target)
    result = run_cli(cfg_path, "device", "create-virtual", "Q1", "--qr-png", str(link))
    assert result.returncode == 1 and "already exists" in result.stderr
    assert not target.exists() and "Q1" not in _serials(cfg_path)


def test_qr_png_onto_an_unwritable_path_fails_clearly_and_stores_nothing(cfg_path, tmp_path):
    png = tmp_path / "no" / "such" / "dir" / "qr.png"
    result = run_cli(cfg_path, "device", "create-virtual", "Q1", "--qr-png", str(png))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"mfa-radius: {png}: cannot write the QR code: No such file or directory; no device "
        "was created"]
    assert "internal error" not in result.stderr
    assert "Q1" not in _serials(cfg_path)
    # The serial is not burnt: it can be created once the path is right.
    ok = run_cli(cfg_path, "device", "create-virtual", "Q1", "--qr-png", str(tmp_path / "q.png"))
    assert ok.returncode == 0, ok.stderr


def test_init_with_no_key_file_takes_an_empty_database_file(tmp_path):
    path = write_config(tmp_path)
    db = tmp_path / "mfa.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    result = run_cli(path, "init")
    assert result.returncode == 0, result.stderr
    assert _mode(db) == 0o600 and _mode(tmp_path / "secret.key") == 0o600


def test_an_empty_database_file_is_refused_except_by_init(tmp_path):
    path = write_config(tmp_path)
    db = tmp_path / "mfa.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    create_key_file(str(tmp_path / "secret.key"))
    result = run_cli(path, "user", "list")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"mfa-radius: {db}: the database file is empty (0 bytes), not an mfa-radius database; "
        "restore it from a backup, or run 'mfa-radius init' to start a new one there"]
    assert db.stat().st_size == 0 and _mode(db) == 0o644
    result = run_cli(path, "init")
    assert result.returncode == 0, result.stderr
    assert _mode(db) == 0o600 and db.stat().st_size > 0
    assert run_cli(path, "user", "list").returncode == 0
