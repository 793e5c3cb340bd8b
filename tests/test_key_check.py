"""A database is bound to its key file: a config naming another key file is refused by every
command that opens the database, in one line and exit 2, before anything is written."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from mfa_radius.sealing import create_key_file
from mfa_radius.state import open_devices
from conftest import run_cli, write_config
from mfa_helpers import assign


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrong_key_config(tmp_path: Path) -> Path:
    """A second config over the same database, naming a different (valid) key file."""
    create_key_file(str(tmp_path / "other.key"))
    path = tmp_path / "wrong.toml"
    path.write_text((tmp_path / "mfa-radius.toml").read_text().replace("secret.key", "other.key")
                    + f'[radius]\nlisten = ["127.0.0.1:{_free_port()}"]\n'
                    f'[pam]\nsocket = "{tmp_path}/pam.sock"\n')
    return path


def _snapshot(db: str):
    con = sqlite3.connect(db)
    try:
        return [con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("devices", "users", "audit", "key_check")]
    finally:
        con.close()


@pytest.fixture
def bound(cfg_path, cfg, tmp_path):
    devices = open_devices(cfg)
    assign(devices, "alice", "ALICE-1")
    devices.store.close()
    return _wrong_key_config(tmp_path)


@pytest.mark.parametrize("args", [
    ("device", "create-virtual", "NEW-1"),
    ("device", "import", "{csv}", "--format", "csv"),
    ("user", "list"),
    ("user", "show", "alice"),
    ("verify", "alice", "123456"),
    ("report",),
    ("audit",),
    ("backup", "{tmp}/copy.db"),
    ("housekeeping",),
    ("serve",),
    ("init",),
])
def test_wrong_key_file_exits_2_with_one_line_and_writes_nothing(bound, cfg, tmp_path, args):
    csv = tmp_path / "tokens.csv"
    csv.write_text("NEW-2, 3132333435363738393031323334353637383930, totp, 6, 30, carol\n")
    args = [a.format(csv=csv, tmp=tmp_path) for a in args]
    before = _snapshot(cfg.storage.database)
    result = run_cli(bound, *args)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"mfa-radius: key file {tmp_path}/other.key does not match database "
        f"{cfg.storage.database} (its seeds were sealed under another key: check [storage] "
        "key_file, or restore the right key file from your backup)"]
    assert result.stdout == ""
    assert _snapshot(cfg.storage.database) == before
    assert not (tmp_path / "copy.db").exists()


def test_the_right_key_still_works(bound, cfg_path):
    result = run_cli(cfg_path, "user", "list")
    assert result.returncode == 0 and "alice" in result.stdout


def _without_key_check(db: str) -> None:
    """What a database written before the key check looks like once migrated: migration 9
    creates the table empty, and no key is bound until one opens the database."""
    con = sqlite3.connect(db)
    con.execute("DELETE FROM key_check")
    con.commit()
    con.close()


def _key_checks(db: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM key_check").fetchone()[0]
    finally:
        con.close()


def test_an_old_database_is_bound_by_the_key_that_opens_its_seeds(bound, cfg_path, cfg):
    _without_key_check(cfg.storage.database)
    wrong = run_cli(bound, "user", "list")
    assert wrong.returncode == 2 and "does not match database" in wrong.stderr
    assert _key_checks(cfg.storage.database) == 0  # migrated, but not bound by the wrong key
    right = run_cli(cfg_path, "user", "list")
    assert right.returncode == 0, right.stderr
    assert _key_checks(cfg.storage.database) == 1
    assert run_cli(bound, "device", "create-virtual", "X").returncode == 2


def test_an_old_database_without_seeds_is_bound_by_the_first_key(cfg_path, cfg, tmp_path):
    _without_key_check(cfg.storage.database)
    wrong = _wrong_key_config(tmp_path)
    assert run_cli(wrong, "user", "list").returncode == 0
    assert _key_checks(cfg.storage.database) == 1
    result = run_cli(cfg_path, "user", "list")
    assert result.returncode == 2 and "does not match database" in result.stderr


def test_init_writes_the_check_and_refuses_a_wrong_key_on_an_existing_database(tmp_path,
                                                                                backend):
    """On both backends: a second node's init with another key file than the first one's is
    refused by the shared database's key check."""
    path = write_config(tmp_path, backend=backend)
    assert run_cli(path, "init").returncode == 0
    if backend == "sqlite":
        assert _key_checks(str(tmp_path / "mfa.db")) == 1
    else:
        with backend.connect() as conn:
            assert conn.execute("SELECT count(*) FROM key_check").fetchone()[0] == 1
    result = run_cli(_wrong_key_config(tmp_path), "init")
    assert result.returncode == 2 and "does not match database" in result.stderr
    assert len(result.stderr.splitlines()) == 1

