"""The PostgreSQL backend against a real server (the session's throw-away cluster): its config
keys and their refusals, schema versions, failing closed while the server is down and resuming
by itself, the password never shown, what both backends share (challenges, replies, failure
counts), and `store copy` from a populated SQLite database."""

from __future__ import annotations

import os
import time

import pytest

from mfa_radius import config as config_mod
from mfa_radius.errors import ConfigError, StoreError
from mfa_radius.state import open_devices
from mfa_radius.store import open_store
from mfa_radius.verifier import Verifier

from conftest import run_cli
from mfa_helpers import NOW, assign, make_config, totp_at, verify


def _config_text(tmp_path, storage: str) -> str:
    return ("[storage]\n"
            f'database = "{tmp_path}/mfa.db"\n'
            f'key_file = "{tmp_path}/secret.key"\n' + storage)


def _load(tmp_path, storage: str):
    path = tmp_path / "mfa-radius.toml"
    path.write_text(_config_text(tmp_path, storage))
    return config_mod.load(str(path))


# ---- the config keys ---------------------------------------------------------------------------

def test_a_dsn_with_a_password_is_refused_at_its_line_without_showing_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, 'backend = "postgresql"\n'
                        'dsn = "postgresql://mfa:Sup3rSecret@db.example.org/mfa"\n')
    message = str(err.value)
    assert f"{tmp_path}/mfa-radius.toml:5:" in message and "password_file" in message
    assert "Sup3rSecret" not in message and "\n" not in message
    with pytest.raises(ConfigError, match="must not contain a password"):
        _load(tmp_path, 'backend = "postgresql"\ndsn = "host=db password=x dbname=mfa"\n')


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_may_read_is_refused(tmp_path, mode):
    secret = tmp_path / "pg-password"
    secret.write_text("pw\n")
    os.chmod(secret, mode)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, 'backend = "postgresql"\ndsn = "postgresql://mfa@127.0.0.1/mfa"\n'
                        f'password_file = "{secret}"\n')
    assert ":6:" in str(err.value) and "chmod 600" in str(err.value)


def test_postgresql_needs_a_dsn_and_sqlite_refuses_one(tmp_path):
    with pytest.raises(ConfigError, match="needs 'storage.dsn'"):
        _load(tmp_path, 'backend = "postgresql"\n')
    with pytest.raises(ConfigError, match="only used with backend"):
        _load(tmp_path, 'dsn = "postgresql://mfa@127.0.0.1/mfa"\n')


def test_check_config_accepts_a_postgresql_storage(tmp_path, pg_database):
    path = tmp_path / "mfa-radius.toml"
    path.write_text(_config_text(tmp_path, pg_database.storage_toml()))
    assert run_cli(path, "init").returncode == 0
    result = run_cli(path, "check-config")
    assert result.returncode == 0, result.stderr
    assert pg_database.cluster.password not in result.stdout + result.stderr


# ---- schema, errors, outages -------------------------------------------------------------------

def test_a_schema_newer_than_this_version_is_refused(tmp_path, pg_database):
    cfg = make_config(tmp_path, backend=pg_database)
    with pg_database.connect() as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError) as err:
        open_store(cfg.storage)
    assert "schema v99 is newer than this mfa-radius" in str(err.value)
    assert "\n" not in str(err.value)
    result = run_cli(cfg.path, "user", "list")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_an_empty_database_is_refused_until_init(tmp_path, pg_database):
    cfg = _load(tmp_path, pg_database.storage_toml())
    with pytest.raises(StoreError, match="mfa-radius init"):
        open_store(cfg.storage)


def test_the_password_never_appears_in_an_error(tmp_path, pg_cluster):
    password = pg_cluster.password
    for dsn in (pg_cluster.dsn("no_such_database"),
                f"postgresql://nobody@127.0.0.1:{pg_cluster.port}/postgres"):
        cfg = _load(tmp_path, f'backend = "postgresql"\ndsn = "{dsn}"\n'
                              f'password_file = "{pg_cluster.password_file}"\n')
        with pytest.raises(StoreError) as err:
            open_store(cfg.storage)
        assert password not in str(err.value) and "\n" not in str(err.value)
        assert dsn in str(err.value)
    wrong = tmp_path / "wrong-password"
    wrong.write_text(password[::-1] + "\n")
    os.chmod(wrong, 0o600)
    cfg = _load(tmp_path, f'backend = "postgresql"\ndsn = "{pg_cluster.dsn("postgres")}"\n'
                          f'password_file = "{wrong}"\n')
    with pytest.raises(StoreError, match="password authentication failed") as err:
        open_store(cfg.storage)
    assert password[::-1] not in str(err.value)


def test_a_database_down_fails_closed_in_one_line_then_service_resumes(tmp_path, pg_database):
    cluster = pg_database.cluster
    cfg = make_config(tmp_path, "connect_timeout = 1\n", backend=pg_database)
    devices = open_devices(cfg)
    key = assign(devices, "alice", "S1")
    devices.store.close()
    verifier = Verifier.open(cfg)
    try:
        assert verify(verifier, "alice", totp_at(key, NOW)).reason == "ok"
        cluster.stop()
        try:
            for i in (1, 2):
                code = totp_at(key, NOW + 30 * i)
                assert verify(verifier, "alice", code, now=NOW + 30 * i).reason == "error"
                message = str(verifier.last_error)
                assert isinstance(verifier.last_error, StoreError)
                assert pg_database.dsn in message and "\n" not in message
                assert cluster.password not in message
        finally:
            cluster.restart()
        deadline = time.monotonic() + 30
        while True:
            decision = verify(verifier, "alice", totp_at(key, NOW + 90), now=NOW + 90)
            if decision.reason != "error" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert decision.reason == "ok"
        assert verify(verifier, "alice", totp_at(key, NOW + 90), now=NOW + 90).reason == "replay"
    finally:
        verifier.store.close()


# ---- what both backends share --------------------------------------------------------------

def test_a_challenge_is_taken_once_and_not_after_it_expired(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    one, two = open_store(cfg.storage), open_store(cfg.storage)
    try:
        one.put_challenge(b"state-1", "alice", "vpn", NOW + 60, "sms", {"n": 1})
        one.put_challenge(b"state-2", "bob", "vpn", NOW - 1, "code", {})
        assert two.take_challenge(b"state-1", NOW) == ("alice", "vpn", NOW + 60, "sms", {"n": 1})
        assert one.take_challenge(b"state-1", NOW) is None
        assert one.take_challenge(b"state-2", NOW) is None
        one.put_replies([(b"k1", b"\x02reply", NOW + 30), (b"k2", b"old", NOW - 1)])
        assert two.replies_for([b"k1", b"k2", b"k3"], NOW) == {b"k1": b"\x02reply"}
        one.put_challenge(b"state-3", "carol", "vpn", NOW - 1, "code", {})
        done = one.prune_expired(NOW, NOW - 86400)
        assert done["challenges"] == 1 and done["replies"] == 1
    finally:
        one.close()
        two.close()


def test_a_batch_of_replies_naming_a_key_twice_keeps_the_last(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    one, two = open_store(cfg.storage), open_store(cfg.storage)
    try:
        one.put_replies([(b"k1", b"first", NOW + 30), (b"k2", b"other", NOW + 30)])
        one.put_replies([(b"k1", b"second", NOW + 30), (b"k1", b"third", NOW + 30)])
        assert two.replies_for([b"k1", b"k2"], NOW) == {b"k1": b"third", b"k2": b"other"}
    finally:
        one.close()
        two.close()


def test_audit_rows_of_a_batch_are_all_kept_with_their_fields(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    store = open_store(cfg.storage)
    try:
        with store.transaction():
            store.add_audit([(NOW, "alice", "totp", "S1", "radius:vpn nas=10.0.0.1", "accept",
                              "ok", None, 5, 0),
                             (NOW + 1, None, None, None, "radius:vpn", "reject", "malformed",
                              None, None, None),
                             (NOW + 2, "b\tob\\", "totp", "S2", "pam", "reject", "bad_code",
                              None, None, None)])
        events = store.audit_events(since=NOW - 1)
        assert [(e["user"], e["result"], e["reason"]) for e in events] == [
            ("alice", "accept", "ok"), (None, "reject", "malformed"),
            ("b\tob\\", "reject", "bad_code")]
        assert events[-1]["time"] == NOW + 2  # oldest first
    finally:
        store.close()


def test_failures_are_counted_in_the_store_and_a_lock_never_shortens(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    one, two = open_store(cfg.storage), open_store(cfg.storage)
    try:
        with one.transaction():
            assert one.add_failure("dave", NOW) == 1
        with two.transaction():
            assert two.add_failure("dave", NOW + 1) == 2
            two.lock_user("dave", NOW + 100)
        with one.transaction():
            one.lock_user("dave", NOW + 50)
        row = one.user_row("dave")
        assert (row["failures"], row["locked_until"], row["last_failure"]) == (2, NOW + 100,
                                                                            NOW + 1)
    finally:
        one.close()
        two.close()


def test_an_sms_code_is_used_once_across_connections(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    one, two = open_store(cfg.storage), open_store(cfg.storage)
    try:
        with one.transaction():
            one.set_phone("erin", "+15550001", NOW)
            one.replace_sms_code("erin", b"digest", NOW, NOW + 300)
        with two.transaction():
            assert two.consume_sms_code("erin", b"digest", NOW + 1)
        with one.transaction():
            assert not one.consume_sms_code("erin", b"digest", NOW + 2)
    finally:
        one.close()
        two.close()


def test_another_nodes_commit_changes_the_token_and_names_the_user(tmp_path, backend):
    cfg = make_config(tmp_path, backend=backend)
    reader = open_store(cfg.storage)
    devices = open_devices(cfg)
    try:
        token, seq = reader.changes_token(), reader.last_change()
        assign(devices, "frank", "F1")
        assert reader.changes_token() != token
        _, last, users = reader.changed_users(seq, 100)
        assert last > seq and "frank" in users
    finally:
        reader.close()
        devices.store.close()


# ---- store copy --------------------------------------------------------------------------------

def test_store_copy_moves_everything_and_a_used_code_stays_used(tmp_path, pg_database):
    cfg = make_config(tmp_path, "[policy]\nlockout_failures = 3\n")
    devices = open_devices(cfg)
    totp = assign(devices, "alice", "T1")
    hotp = assign(devices, "bob", "H1", kind="hotp")
    recovery = devices.issue_recovery_codes("carol", count=3)
    with devices.store.transaction():
        devices.store.set_phone("carol", "+15550002", NOW)
    devices.store.close()
    verifier = Verifier.open(cfg)
    used_totp = totp_at(totp, NOW)
    assert verify(verifier, "alice", used_totp).reason == "ok"
    assert verify(verifier, "bob", hotp.code(0)).reason == "ok"
    assert verify(verifier, "carol", recovery[0]).reason == "ok"
    assert verify(verifier, "dave", "123456").reason in ("no_device", "bad_code")
    verifier.store.close()

    result = run_cli(cfg.path, "store", "copy", "--to", pg_database.dsn, "--password-file",
                     pg_database.cluster.password_file)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]
             if len(line.split()) == 2}
    assert lines["devices"] == "2" and lines["recovery_codes"] == "3"
    assert lines["device_steps"] == "1" and lines["audit"] == "4" and lines["key_check"] == "1"

    pg_cfg = make_config(tmp_path, backend=pg_database, name="pg.toml")
    verifier = Verifier.open(pg_cfg)
    try:
        assert verify(verifier, "alice", used_totp).reason == "replay"
        assert verify(verifier, "alice", totp_at(totp, NOW, 1)).reason == "ok"
        assert verify(verifier, "bob", hotp.code(0)).reason == "replay"
        assert verify(verifier, "bob", hotp.code(1)).reason == "ok"
        assert verify(verifier, "carol", recovery[0]).reason == "replay"
        assert verify(verifier, "carol", recovery[1]).reason == "ok"
        assert verifier.store.user_row("carol")["phone"] == "+15550002"
        assert len(verifier.store.audit_events()) == 4 + 6
        # A new device gets an id past the copied ones.
        devices = open_devices(pg_cfg)
        assign(devices, "erin", "E1")
        devices.store.close()
    finally:
        verifier.store.close()
    again = run_cli(cfg.path, "store", "copy", "--to", pg_database.dsn, "--password-file",
                    pg_database.cluster.password_file)
    assert again.returncode != 0 and "already holds devices or users" in again.stderr


def test_store_copy_refuses_a_database_bound_to_another_key(tmp_path, pg_database):
    make_config(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path,
                backend=pg_database)  # bound to other/secret.key
    cfg = make_config(tmp_path)
    result = run_cli(cfg.path, "store", "copy", "--to", pg_database.dsn, "--password-file",
                     pg_database.cluster.password_file)
    assert result.returncode == 2 and "does not match database" in result.stderr
    assert len(result.stderr.splitlines()) == 1
