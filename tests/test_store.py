"""The SQLite store: opening, WAL, schema and migrations, errors turned into one clear line."""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import stat

import pytest

from mfa_radius import config as config_mod
from mfa_radius.errors import StoreError
from mfa_radius.state import open_devices
from mfa_radius.store import SCHEMA_VERSION, DuplicateDevice, Store, migrations, open_store

from mfa_helpers import assign, make_config


def test_missing_database_names_init(tmp_path):
    path = tmp_path / "mfa.db"
    with pytest.raises(StoreError, match="mfa-radius init") as info:
        Store.open(str(path))
    assert str(path) in str(info.value)
    assert not path.exists()


def test_create_makes_the_schema_and_sets_user_version(tmp_path):
    path = tmp_path / "deep" / "dir" / "mfa.db"
    store = Store.open(str(path), create=True)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"devices", "users", "recovery_codes", "audit"} <= tables
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    finally:
        store.close()
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize("synchronous,expected", [("full", 2), ("normal", 1)])
def test_synchronous_setting_is_applied(tmp_path, synchronous, expected):
    store = Store.open(str(tmp_path / "mfa.db"), create=True, synchronous=synchronous,
                       busy_timeout=2.5)
    try:
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    finally:
        store.close()


# (SQLite takes a file shorter than its 100-byte header for an empty database.)
@pytest.mark.parametrize("size", [100, 4096, 20000])
def test_corrupt_file_is_a_store_error(tmp_path, size):
    path = tmp_path / "mfa.db"
    path.write_bytes(secrets.token_bytes(size))
    with pytest.raises(StoreError) as info:
        Store.open(str(path))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_text_file_is_a_store_error(tmp_path):
    path = tmp_path / "mfa.db"
    path.write_text("[storage]\ndatabase = 'oops, this is the config'\n" * 50)
    with pytest.raises(StoreError, match="corrupt or not an mfa-radius database"):
        Store.open(str(path))


def test_a_damaged_database_is_a_store_error(tmp_path):
    cfg = make_config(tmp_path)
    path = cfg.storage.database
    store = Store.open(path)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(open(path, "rb").read())
    # Keep the header (so SQLite opens it) and wreck the pages holding the schema and tables.
    data[100:] = secrets.token_bytes(len(data) - 100)
    open(path, "wb").write(bytes(data))
    with pytest.raises(StoreError):
        store = Store.open(path)
        with store.errors("reading"):
            store.list_devices()


def test_newer_schema_is_refused(tmp_path):
    cfg = make_config(tmp_path)
    conn = sqlite3.connect(cfg.storage.database)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this mfa-radius") as info:
        Store.open(cfg.storage.database)
    assert f"v{SCHEMA_VERSION + 1}" in str(info.value)


def test_an_empty_file_is_refused_unless_created_then_0600(tmp_path):
    path = tmp_path / "mfa.db"
    path.write_bytes(b"")
    path.chmod(0o644)
    with pytest.raises(StoreError, match="empty"):
        Store.open(str(path))
    assert path.stat().st_size == 0
    store = Store.open(str(path), create=True)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

def test_migrations_run_in_order_and_only_once(tmp_path, monkeypatch):
    ran = []
    nxt = SCHEMA_VERSION + 1

    def migrate_next(db):
        ran.append(nxt)
        db["extra"].create({"id": int}, pk="id")

    path = str(tmp_path / "mfa.db")
    Store.open(path, create=True).close()
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(migrations.MIGRATIONS, nxt, migrate_next)
    Store.open(path).close()
    store = Store.open(path)
    try:
        assert ran == [nxt]
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == nxt
        assert store.conn.execute("SELECT count(*) FROM extra").fetchone()[0] == 0
    finally:
        store.close()


def test_a_failing_migration_leaves_the_old_version(tmp_path, monkeypatch):
    path = str(tmp_path / "mfa.db")
    Store.open(path, create=True).close()
    nxt = SCHEMA_VERSION + 1

    def migrate_next(db):
        db["half"].create({"id": int}, pk="id")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(migrations, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(migrations.MIGRATIONS, nxt, migrate_next)
    with pytest.raises(StoreError):
        Store.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == nxt - 1
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    conn.close()


def test_every_schema_version_has_a_migration_and_schema_sql_is_the_latest():
    assert sorted(migrations.MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    assert migrations.SCHEMA_FILE_VERSION == SCHEMA_VERSION


def _schema(path: str) -> dict:
    """The schema of a database, normalised: each table's columns (name, type, not null, default,
    primary key) and CREATE text, each index's table, uniqueness and columns, each trigger's
    text; quoting and white space aside."""
    def norm(sql: str | None) -> str | None:
        if sql is None:
            return None
        sql = re.sub(r"\s+", " ", sql.replace('"', "")).strip().rstrip(";")
        return re.sub(r"\s*([(),])\s*", r"\1", sql)

    con = sqlite3.connect(path)
    try:
        out: dict = {"user_version": con.execute("PRAGMA user_version").fetchone()[0]}
        for kind, name, table, sql in con.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"):
            entry: dict = {"table": table, "sql": norm(sql)}
            if kind == "table":
                entry["columns"] = con.execute(f"PRAGMA table_info({name})").fetchall()
            elif kind == "index":
                entry["unique"] = next(r[2] for r in con.execute(f"PRAGMA index_list({table})")
                                       if r[1] == name)
                entry["columns"] = con.execute(f"PRAGMA index_info({name})").fetchall()
            out[f"{kind} {name}"] = entry
        if "table name_rule" in out:
            out["name_rule rows"] = con.execute("SELECT count(*) FROM name_rule").fetchone()[0]
        return out
    finally:
        con.close()


def test_a_database_migrated_from_v1_equals_a_fresh_one_from_schema_sql(tmp_path, monkeypatch):
    old = str(tmp_path / "old.db")
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 1)
    Store.open(old, create=True).close()
    monkeypatch.undo()
    assert _schema(old)["user_version"] == 1
    Store.open(old).close()  # migrations 2 .. SCHEMA_VERSION
    fresh = str(tmp_path / "fresh.db")
    Store.open(fresh, create=True).close()  # schema.sql
    assert _schema(old) == _schema(fresh)
    assert "table recent_steps" in _schema(fresh) and "table fold_mark" not in _schema(fresh)

def test_unwritable_directory_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create database"):
        Store.open(str(blocker / "mfa.db"), create=True)


def test_transaction_rolls_back_on_error(tmp_path):
    store = Store.open(str(tmp_path / "mfa.db"), create=True)
    try:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.ensure_user("alice", 1.0)
                raise RuntimeError("boom")
        assert store.user_row("alice") is None
        assert not store.conn.in_transaction
        with store.transaction():
            store.ensure_user("alice", 1.0)
        assert store.user_row("alice")["failures"] == 0
    finally:
        store.close()


def test_errors_context_maps_sqlite_errors(tmp_path):
    store = Store.open(str(tmp_path / "mfa.db"), create=True)
    try:
        with pytest.raises(StoreError, match="listing failed: no such table"):
            with store.errors("listing"):
                store.conn.execute("SELECT * FROM nope")
    finally:
        store.close()

def test_the_changes_token_changes_on_another_connections_commit(tmp_path):
    path = str(tmp_path / "mfa.db")
    a = Store.open(path, create=True)
    b = Store.open(path)
    try:
        before = a.changes_token()
        with a.transaction():
            a.ensure_user("x", 1.0)
        assert a.changes_token() == before  # own commits do not count
        with b.transaction():
            b.ensure_user("y", 1.0)
        assert a.changes_token() != before
    finally:
        a.close()
        b.close()

def test_conditional_consume_is_once_only(tmp_path):
    cfg = make_config(tmp_path)
    d = open_devices(cfg)
    try:
        assign(d, "alice", "H1", kind="hotp")
        s = d.store
        h_id = s.device("H1")["id"]
        with s.transaction():
            assert s.consume_hotp(h_id, 5, 1.0)
            assert not s.consume_hotp(h_id, 5, 1.0)
            assert not s.consume_hotp(h_id, 4, 1.0)
            assert s.consume_hotp(h_id, 6, 1.0)
        assert s.device("H1")["counter"] == 7
    finally:
        d.store.close()


def test_user_names_and_summary(tmp_path):
    cfg = make_config(tmp_path)
    d = open_devices(cfg)
    try:
        assign(d, "bob", "B1")
        d.issue_recovery_codes("alice", count=2)
        assert d.store.user_names() == ["alice", "bob"]
        summary = d.store.user_summary("bob")
        assert summary["devices"] == ["B1"] and summary["recovery_codes_left"] == 0
        assert d.store.user_summary("ghost")["failures"] == 0
    finally:
        d.store.close()


def test_audit_events_filters_and_order(tmp_path):
    store = Store.open(str(tmp_path / "mfa.db"), create=True)
    try:
        with store.transaction():
            store.add_audit([(float(t), "alice" if t % 2 else "bob", "totp", "S", "src",
                              "accept", "ok", None, None, None) for t in range(10)])
        events = store.audit_events()
        assert [e["time"] for e in events] == [float(t) for t in range(10)]
        assert [e["time"] for e in store.audit_events(user="alice")] == [1.0, 3.0, 5.0, 7.0, 9.0]
        assert [e["time"] for e in store.audit_events(since=7.0)] == [7.0, 8.0, 9.0]
        # The limit keeps the newest events, oldest first.
        assert [e["time"] for e in store.audit_events(limit=2)] == [8.0, 9.0]
    finally:
        store.close()


def test_audit_time_bounds_are_found_over_the_rowid(tmp_path):
    store = Store.open(str(tmp_path / "mfa.db"), create=True)
    try:
        assert store._audit_id_at(5.0) == 1  # empty
        times = [1000.0 + t for t in range(3000)]
        times[2000] = 900.0  # the clock stepped back once
        with store.transaction():
            store.add_audit([(t, "u", "totp", "S", "src", "accept", "ok", None, None, None) for t in times])
        assert store._audit_id_at(0.0) == 1
        assert store._audit_id_at(1500.0) == 501
        assert store._audit_id_at(99999.0) == 3001
        since = store.audit_events(since=3995.0, limit=100)
        assert [e["time"] for e in since] == [3995.0, 3996.0, 3997.0, 3998.0, 3999.0]
        # Pruning never deletes a row newer than the bound, wherever it sits.
        assert store.prune_audit(2500.0, batch=700) == 1501  # 1000..2499 and the 900
        left = [r[0] for r in store.conn.execute("SELECT time FROM audit ORDER BY id")]
        assert left[0] == 2500.0 and min(left) == 2500.0 and len(left) == 1499
    finally:
        store.close()

def _old_database(path: str, version: int, monkeypatch, *statements: str) -> None:
    """A database at schema `version` (built by the migrations up to it) with alice's TOTP
    device A1 (last step 5), and more."""
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", version)
    old = Store.open(path, create=True)
    old.conn.execute("INSERT INTO devices (serial, kind, digits, algorithm, period, counter, "
                     "last_step, drift, seed, fingerprint, user, created_at, virtual) VALUES "
                     "('A1', 'totp', 6, 'SHA1', 30, 0, 5, 0, x'00', 'fp', 'alice', 0, 1)")
    for sql in statements:
        old.conn.execute(sql)
    old.close()
    monkeypatch.undo()


def test_a_v2_database_gets_change_tracking_and_keeps_its_devices(tmp_path, monkeypatch):
    path = str(tmp_path / "mfa.db")
    _old_database(path, 2, monkeypatch)
    store = Store.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.device("A1")["last_step"] == 5
        indexes = {r[0] for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'")}
        assert not indexes  # time bounds go over the rowid
        before = store.last_change()
        with store.transaction():
            store.resync_device(store.device("A1")["id"], last_step=9, drift=1)
        assert store.changed_users(before, 10)[2] == {"alice"}
        assert store.device("A1")["last_step"] == 9
        # A used step fires nothing: its consume is checked in SQL whatever was cached.
        with store.transaction():
            assert store.consume_step(store.device("A1")["id"], 10, 1, 0.0)
        assert store.last_change() == before + 1
    finally:
        store.close()


def test_a_v5_database_folds_its_used_table_and_drops_it(tmp_path, monkeypatch):
    path = str(tmp_path / "mfa.db")
    _old_database(path, 5, monkeypatch,
                  "INSERT INTO used (device, step, drift, time) VALUES (1, 8, 1, 3.0), "
                  "(1, 9, 1, 4.0)",
                  "INSERT INTO audit (time, user, method, serial, source, result, reason) "
                  "VALUES (4.0, 'alice', 'totp', 'A1', 't', 'accept', 'ok')")
    store = Store.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        row = store.device("A1")
        assert (row["last_step"], row["drift"], row["last_used_at"]) == (9, 1, 4.0)
        assert store.conn.execute("SELECT name FROM sqlite_master WHERE name = 'used'"
                                  ).fetchone() is None
        assert store.steps.waiting() == 0 and store.last_audit_id() == 1
        with store.transaction():
            assert not store.consume_step(row["id"], 9, 0, 5.0)
    finally:
        store.close()


def test_a_v6_database_keeps_the_steps_of_its_audit_rows(tmp_path, monkeypatch):
    """The steps a v6-v9 database held in its audit rows past the fold mark (not folded yet)
    are the devices' last used steps after the migration."""
    path = str(tmp_path / "mfa.db")
    _old_database(path, 6, monkeypatch,
                  "INSERT INTO audit (time, user, method, serial, source, result, reason, "
                  "device, step, drift) VALUES (4.0, 'alice', 'totp', 'A1', 't', 'accept', 'ok', "
                  "1, 9, 1)")
    store = Store.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        row = store.device("A1")
        assert (row["last_step"], row["drift"], row["last_used_at"]) == (9, 1, 4.0)
        with store.transaction():
            assert not store.consume_step(row["id"], 9, 0, 5.0)
            assert store.consume_step(row["id"], 10, 0, 5.0)
    finally:
        store.close()


def test_a_v9_database_keeps_folded_steps_and_positions_whichever_is_ahead(tmp_path,
                                                                             monkeypatch):
    path = str(tmp_path / "mfa.db")
    _old_database(path, 9, monkeypatch,
                  # A2: resynced ahead of its folded step; A1: its folded step ahead of its row.
                  "INSERT INTO devices (serial, kind, digits, algorithm, period, counter, "
                  "last_step, drift, seed, fingerprint, user, created_at, virtual) VALUES "
                  "('A2', 'totp', 6, 'SHA1', 30, 0, 50, 3, x'01', 'fp2', 'bob', 0, 1)",
                  "INSERT INTO device_steps VALUES (1, 7, -1, 2.0), (2, 40, 1, 3.0)",
                  "INSERT INTO audit (time, user, method, serial, source, result, reason, "
                  "device, step, drift) VALUES (4.0, 'alice', 'totp', 'A1', 't', 'accept', 'ok', "
                  "1, 6, 0)")
    store = Store.open(path)
    try:
        a1, a2 = store.device("A1"), store.device("A2")
        assert (a1["last_step"], a1["drift"], a1["last_used_at"]) == (7, -1, 4.0)
        assert (a2["last_step"], a2["drift"], a2["last_used_at"]) == (50, 3, 3.0)
        assert "last_step" not in {r[1] for r in store.conn.execute("PRAGMA table_info(devices)")}
    finally:
        store.close()


def test_a_serial_taken_meanwhile_is_a_duplicate_device(tmp_path):
    d = open_devices(make_config(tmp_path))
    try:
        assign(d, "alice", "S1")
        row = {"serial": "S1", "kind": "totp", "virtual": 0, "digits": 6, "algorithm": "SHA1",
               "period": 30, "counter": 0, "seed": b"x", "fingerprint": "other",
               "created_at": 0.0}
        with pytest.raises(DuplicateDevice), d.store.transaction():
            d.store.insert_devices([row])
        assert [r["serial"] for r in d.store.list_devices()] == ["S1"]
    finally:
        d.store.close()


def test_a_read_only_open_reads_and_never_writes(tmp_path):
    path = str(tmp_path / "mfa.db")
    with pytest.raises(StoreError, match="database not found"):
        open_store(path, readonly=True)
    assert not os.path.exists(path)
    Store.open(path, create=True).close()
    store = open_store(path, readonly=True)
    try:
        assert store.stored_names() == set()
        with pytest.raises(StoreError, match="read-only"), store.errors("writing"):
            store.conn.execute("INSERT INTO users (name, created_at) VALUES ('x', 0)")
    finally:
        store.close()

def test_null_parameters_still_bind_null(tmp_path):
    """The NoneType adapter (a shortcut past sqlite3's adaptation lookups) changes nothing."""
    store = Store.open(str(tmp_path / "mfa.db"), create=True)
    try:
        with store.transaction():
            store.add_audit([(1.0, "u", None, None, "src", "reject", "bad_code", None, None,
                              None)])
        assert store.conn.execute("SELECT method IS NULL, serial IS NULL, device IS NULL, "
                                  "typeof(step) FROM audit").fetchone() == (1, 1, 1, "null")
    finally:
        store.close()


def test_a_v7_database_gets_the_name_tables_and_its_names_are_brought_to_a_rule(
        tmp_path, monkeypatch):
    from mfa_radius import names

    path = str(tmp_path / "mfa.db")
    _old_database(path, 7, monkeypatch,
                  "UPDATE devices SET user = 'Alice'",
                  "INSERT INTO users (name, created_at) VALUES ('Alice', 0), ('Carol', 0), "
                  "('carol', 0), ('bob', 0)",
                  "INSERT INTO sms_sends (time, user, source) VALUES (1.0, 'BOB', 't'), "
                  "(2.0, 'CAROL', 't')",
                  "INSERT INTO audit (time, user, source, result, reason) VALUES "
                  "(1.0, 'Alice', 't', 'accept', 'ok')")
    store = Store.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.name_rule() is None  # the migration renames nothing: it has no config
        assert store.stored_names(holders_only=True) == {"Alice", "Carol", "carol", "bob"}
        canonical, rule = names.policy_rule(config_mod.PolicyConfig())
        before = store.last_change()
        plan = store.canonicalise_names(canonical, rule)
        assert plan.renames == {"Alice": "alice"} and plan.clashes == {"carol": ["Carol", "carol"]}
        assert store.device("A1")["user"] == "alice"
        assert store.user_row("alice") is not None and store.user_row("Alice") is None
        assert store.sms_sends_since("bob", 0) == [1.0]  # the send log follows its user
        assert store.sms_sends_since("CAROL", 0) == [2.0]  # but never into a clash
        assert store.audit_events()[0]["user"] == "Alice"  # history stays as written
        assert "alice" in store.changed_users(before, 10)[2]  # servers drop what they cached
        assert store.name_clashes() == {"carol": ["Carol", "carol"]}
        assert store.load_user("carol")[3] and store.load_user("Carol")[3] is False
        assert store.canonicalise_names(canonical, rule) is None  # done once per rule
        with store.transaction():
            assert not store.rename_user("Carol", "carol")  # never a merge
            assert store.rename_user("Carol", "carol2")
        assert store.name_clashes() == {} and not store.load_user("carol")[3]
    finally:
        store.close()
