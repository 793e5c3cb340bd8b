"""A database from before canonical names (schema v7) opened by this version: names are brought
to the config's rule, two names that are one user are never merged but reported by check-config
and serve and refused until renamed, and the audit log keeps its history."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import run_cli
from mfa_helpers import assign
from radius_helpers import Daemon, access_request, need, now_code

from mfa_radius.radius import codec
from mfa_radius.state import open_devices

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture(scope="module")
def tools():
    need("radclient")


def _v7(daemon: Daemon) -> dict:
    """Devices of Alice, bob, Carol and carol, stored as typed before v8, in a v7 database
    (v8 adds the name_rule and name_clashes tables only, v9 the key check, v10 moves the step
    positions out of the device rows). Returns their keys by stored name."""
    devices = open_devices(daemon.cfg)
    names = ("Alice", "bob", "Carol", "carol")
    keys = {name: assign(devices, f"tmp{i}", f"{name}-1") for i, name in enumerate(names)}
    db = devices.store.conn
    for i, name in enumerate(names):
        db.execute("UPDATE devices SET user = ? WHERE serial = ?", (name, f"{name}-1"))
        db.execute("UPDATE users SET name = ? WHERE name = ?", (name, f"tmp{i}"))
    db.execute("INSERT INTO audit (time, user, source, result, reason) VALUES "
               "(1.0, 'Alice', 'radius:old', 'accept', 'ok')")
    db.execute("DROP TABLE name_rule")
    db.execute("DROP TABLE name_clashes")
    db.execute("DROP TABLE key_check")  # v9
    db.execute("DROP TABLE challenges")  # v11
    db.execute("DROP TABLE replies")
    db.execute("DROP TRIGGER recent_steps_devices_delete")  # v10
    db.execute("DROP TABLE recent_steps")
    db.execute("ALTER TABLE devices ADD COLUMN last_step INTEGER NOT NULL DEFAULT -1")
    db.execute("ALTER TABLE devices ADD COLUMN drift INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE fold_mark (upto INTEGER NOT NULL)")
    db.execute("INSERT INTO fold_mark (upto) SELECT coalesce(max(id), 0) FROM audit")
    db.execute("CREATE TRIGGER audit_devices_delete AFTER DELETE ON devices BEGIN "
               "UPDATE audit SET device = NULL WHERE id > (SELECT upto FROM fold_mark) "
               "AND device = OLD.id; END")
    db.execute("PRAGMA user_version = 7")
    devices.store.close()
    return keys


def _stored(path) -> tuple[list, list]:
    with sqlite3.connect(path) as db:
        return (sorted(r[0] for r in db.execute("SELECT user FROM devices")),
                sorted(r[0] for r in db.execute("SELECT name FROM users")))


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n', extra="[policy]\nnullok = true\n")
    d.keys = _v7(d)
    yield d
    d.stop()


def test_check_config_reports_a_clash_without_writing(daemon):
    result = run_cli(daemon.path, "check-config")
    assert result.returncode == 0, result.stderr
    # (The test daemon's short client secret has a warning of its own.)
    warnings = [line for line in result.stderr.splitlines()
                if line.startswith("warning: stored user names")]
    assert len(warnings) == 1, result.stderr
    assert "'Carol' and 'carol'" in warnings[0] and "mfa-radius user rename Carol" in warnings[0]
    db = daemon.cfg.storage.database
    assert _stored(db)[0] == ["Alice", "Carol", "bob", "carol"]  # read only
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7


def test_serve_migrates_lone_names_reports_the_clash_and_refuses_it(daemon):
    daemon.start()
    daemon.wait_log(r"stored user names 'Carol' and 'carol' are one user \('carol'\)")
    assert daemon.log().count("are one user") == 1
    devices, users = _stored(daemon.cfg.storage.database)
    assert devices == ["Carol", "alice", "bob", "carol"]  # not merged
    assert users == ["Carol", "alice", "bob", "carol"]
    # Alice's device is alice's now, under any spelling; the clash is refused, codes or not.
    packet, _ = access_request("ALICE", now_code(daemon.keys["Alice"]).encode())
    assert daemon.raw(packet, timeout=3)[0] == codec.ACCESS_ACCEPT
    for sent, key in (("carol", "carol"), ("CAROL", "Carol")):
        packet, _ = access_request(sent, now_code(daemon.keys[key]).encode())
        assert daemon.raw(packet, timeout=3)[0] == codec.ACCESS_REJECT
    lines = daemon.decisions(3)
    assert "user=alice result=accept reason=ok" in lines[0]
    assert all("user=carol result=reject reason=ambiguous_user" in line for line in lines[1:])
    # The audit log is history: its rows keep the names they were written with.
    audit = json.loads(run_cli(daemon.path, "audit", "--json").stdout)
    assert audit[0]["user"] == "Alice"


def test_renaming_one_name_of_a_clash_lets_the_other_sign_in(daemon):
    daemon.start()
    daemon.wait_log("are one user")
    # Never a merge: carol holds devices already.
    refused = run_cli(daemon.path, "user", "rename", "Carol", "carol")
    assert refused.returncode == 1 and "never merge" in refused.stderr
    result = run_cli(daemon.path, "user", "rename", "Carol", "carol-old")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "user 'Carol' renamed to carol-old"
    packet, _ = access_request("Carol", now_code(daemon.keys["carol"]).encode())
    assert daemon.raw(packet, timeout=3)[0] == codec.ACCESS_ACCEPT
    packet, _ = access_request("carol-old", now_code(daemon.keys["Carol"]).encode())
    assert daemon.raw(packet, timeout=3)[0] == codec.ACCESS_ACCEPT
    assert "stored user names" not in run_cli(daemon.path, "check-config").stderr
    daemon.stop()
    daemon.start()
    assert "are one user" not in daemon.log().split("stopping")[-1]


def test_the_first_cli_command_brings_names_to_the_rule(daemon):
    listed = json.loads(run_cli(daemon.path, "user", "list", "--json").stdout)
    assert [r["user"] for r in listed] == ["Carol", "alice", "bob", "carol"]
    assert "'Carol' and 'carol'" in run_cli(daemon.path, "check-config").stderr


def test_an_exact_case_host_keeps_its_names(tmp_path):
    d = Daemon(tmp_path, radius='password_backend = "none"\n',
               extra='[policy]\nnullok = true\nusername_case = "exact"\n')
    keys = _v7(d)
    try:
        d.start()
        assert _stored(d.cfg.storage.database)[0] == ["Alice", "Carol", "bob", "carol"]
        assert "are one user" not in d.log()
        packet, _ = access_request("Alice", now_code(keys["Alice"]).encode())
        assert d.raw(packet, timeout=3)[0] == codec.ACCESS_ACCEPT
        packet, _ = access_request("Carol", now_code(keys["Carol"]).encode())
        assert d.raw(packet, timeout=3)[0] == codec.ACCESS_ACCEPT
    finally:
        d.stop()
