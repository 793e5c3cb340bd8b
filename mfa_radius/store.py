"""The only module that speaks SQL: schema, migrations, and every query the rest of the code needs.

One SQLite file in WAL mode. Anything that consumes a code runs inside a short `BEGIN IMMEDIATE`
transaction, so two processes (the daemon and a PAM fallback, or two CLI calls) can never both
accept one code: an HOTP counter moves with a conditional UPDATE (`... WHERE counter <= ?`); a used
TOTP step goes into the accept's audit row (the used-steps log, see `_migrate_6`), written by a
verifier that has read every row of the log committed before, and is folded into `device_steps`
(each device's last used step, `_migrate_7`) later, in bulk.
Schema changes are numbered migrations keyed on `PRAGMA user_version`; they run under sqlite-utils,
imported only when a migration is due (it costs ~90 ms to import).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator

from .errors import StoreError, TransactionLost
from .private_files import make_private_dirs

SCHEMA_VERSION = 9

DEVICE_COLUMNS = ("id", "serial", "kind", "virtual", "digits", "algorithm", "period", "counter",
                  "last_step", "drift", "seed", "fingerprint", "user", "created_at", "enabled_at",
                  "last_used_at")
# A TOTP device's last used step, its drift and when, as they stand: the folded accepts in
# `device_steps` (_migrate_7) when ahead of what enable/resync set in the device row.
_DEVICE_NOW = {
    "last_step": "CASE WHEN s.step > d.last_step THEN s.step ELSE d.last_step END",
    "drift": "CASE WHEN s.step > d.last_step THEN s.drift ELSE d.drift END",
    "last_used_at": ("CASE WHEN s.used_at > coalesce(d.last_used_at, 0) THEN s.used_at "
                     "ELSE d.last_used_at END"),
}
_DEVICES_JOINED = "devices d LEFT JOIN device_steps s ON s.device = d.id"


def _device_columns(keys: Iterable[str]) -> str:
    return ", ".join(_DEVICE_NOW.get(k, f"d.{k}") for k in keys)


_DEVICE_SELECT = f"SELECT {_device_columns(DEVICE_COLUMNS)} FROM {_DEVICES_JOINED}"
USER_COLUMNS = ("name", "failures", "locked_until", "last_success", "last_failure", "created_at",
                "phone")
_USER_SELECT = "SELECT " + ", ".join(USER_COLUMNS) + " FROM users"


def _check_access(path: str, opened: bool = False) -> None:
    """Refuse, saying why, when this user may not use the database: SQLite only says "unable to
    open database file", and a directory that may not be searched hides the file. `opened`:
    SQLite has failed, so also look at the file's and the directory's permissions."""
    try:
        os.stat(path)
    except PermissionError:
        pass
    except OSError:  # missing, or a path through a file: said when it is created or opened
        return
    else:
        folder = os.path.dirname(os.path.abspath(path))
        # Effective ids: under sudo or su the real uid is the caller's, not root.
        if not opened or os.geteuid() == 0 or (
                os.access(path, os.R_OK | os.W_OK, effective_ids=True)
                and os.access(folder, os.W_OK | os.X_OK, effective_ids=True)):
            return
    raise StoreError(f"{path}: permission denied: run this as root (or as a user with read "
                     f"and write access to {path} and its directory)")


def _migrate_1(db) -> None:
    db["devices"].create({
        "id": int, "serial": str, "kind": str, "virtual": int, "digits": int, "algorithm": str,
        "period": int, "counter": int, "last_step": int, "drift": int, "seed": bytes,
        "fingerprint": str, "user": str, "created_at": float, "enabled_at": float,
        "last_used_at": float,
    }, pk="id", not_null={"serial", "kind", "digits", "algorithm", "period", "counter",
                           "last_step", "drift", "seed", "fingerprint", "created_at", "virtual"},
        defaults={"virtual": 0, "period": 30, "counter": 0, "last_step": -1, "drift": 0})
    db["devices"].create_index(["serial"], unique=True)
    db["devices"].create_index(["fingerprint"], unique=True)
    db["devices"].create_index(["user"])
    db["users"].create({
        "name": str, "failures": int, "locked_until": float, "last_success": float,
        "last_failure": float, "created_at": float,
    }, pk="name", not_null={"failures", "locked_until", "created_at"},
        defaults={"failures": 0, "locked_until": 0.0})
    db["recovery_codes"].create({
        "id": int, "user": str, "salt": bytes, "hash": bytes, "created_at": float, "used_at": float,
    }, pk="id", not_null={"user", "salt", "hash", "created_at"})
    db["recovery_codes"].create_index(["user"])
    db["audit"].create({
        "id": int, "time": float, "user": str, "method": str, "serial": str, "source": str,
        "result": str, "reason": str,
    }, pk="id", not_null={"time", "result", "reason"})
    db["audit"].create_index(["time"])
    db["audit"].create_index(["user", "time"])


def _migrate_2(db) -> None:
    """SMS codes: the user's phone, the live code (only its HMAC), and the send log."""
    db["users"].add_column("phone", str)
    db["users"].add_column("sms_enabled_at", float)
    db["sms_codes"].create({"user": str, "hash": bytes, "created_at": float, "expires_at": float},
                           pk="user", not_null={"hash", "created_at", "expires_at"})
    db["sms_sends"].create({"id": int, "time": float, "user": str, "source": str},
                           pk="id", not_null={"time", "user"})
    db["sms_sends"].create_index(["time"])
    db["sms_sends"].create_index(["user", "time"])


def _migrate_3(db) -> None:
    """Change tracking for the verifier's in-memory users, and a cheaper audit insert.

    Triggers append the name of every user whose cached state a write makes stale to `changes`,
    whoever writes (this code, another process, an admin with the sqlite3 shell): a server that
    sees another connection's commit drops just those users instead of everything. The hot-path
    TOTP update (last_step, drift, last_used_at) fires none: it is conditional in SQL, so a stale
    cached step can only turn into a refused replay, which reloads that user. `resynced_at` is
    set by resync so that it fires. The audit (user, time) index cost ~17 us per decision once
    the table held 200k rows (random user -> random index page per insert); per-user audit
    queries use the time index and filter.
    """
    conn = db.conn
    db["devices"].add_column("resynced_at", float)
    conn.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "user TEXT NOT NULL)")
    conn.execute("DROP INDEX IF EXISTS idx_audit_user_time")
    on_devices = {
        "insert": ("AFTER INSERT ON devices WHEN NEW.user IS NOT NULL",
                   "INSERT INTO changes (user) VALUES (NEW.user);"),
        "delete": ("AFTER DELETE ON devices WHEN OLD.user IS NOT NULL",
                   "INSERT INTO changes (user) VALUES (OLD.user);"),
        "update": ("AFTER UPDATE OF user, serial, seed, kind, digits, algorithm, period, counter, "
                   "resynced_at ON devices",
                   "INSERT INTO changes (user) SELECT OLD.user WHERE OLD.user IS NOT NULL; "
                   "INSERT INTO changes (user) SELECT NEW.user WHERE NEW.user IS NOT NULL "
                   "AND NEW.user IS NOT OLD.user;"),
    }
    for event, (when, body) in on_devices.items():
        conn.execute(f"CREATE TRIGGER changes_devices_{event} {when} BEGIN {body} END")
    for table, column in (("users", "name"), ("recovery_codes", "user")):
        conn.execute(f"CREATE TRIGGER changes_{table}_insert AFTER INSERT ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (NEW.{column}); END")
        conn.execute(f"CREATE TRIGGER changes_{table}_update AFTER UPDATE ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (OLD.{column}); END")
        conn.execute(f"CREATE TRIGGER changes_{table}_delete AFTER DELETE ON {table} "
                     f"BEGIN INSERT INTO changes (user) VALUES (OLD.{column}); END")


def _migrate_4(db) -> None:
    """The used-steps log: a TOTP accept appends one row instead of updating its device's row.

    In a table of many devices each accept's UPDATE landed on a page of its own, so a commit of a
    handful of accepts wrote a handful of random pages to the WAL (and, at checkpoint, to the
    file): with a million devices most of them not even in the cache. Appends share the table's
    last page. `seq` is AUTOINCREMENT so that it never goes back once rows are folded away: every
    verifier keeps its place in the log, reads the rows other processes appended since, and
    notices a gap (rows folded or deleted before it saw them) by counting. Rows are folded into
    `devices` (last_step, drift, last_used_at) by the daemon when idle, and by housekeeping;
    readers of device rows merge the rows not folded yet (Store.device, list_devices).
    """
    conn = db.conn
    conn.execute("CREATE TABLE used (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "device INTEGER NOT NULL, step INTEGER NOT NULL, drift INTEGER NOT NULL, "
                 "time REAL NOT NULL)")
    # A deleted device's id can be given to a new device: its used steps go with it.
    conn.execute("CREATE TRIGGER used_devices_delete AFTER DELETE ON devices "
                 "BEGIN DELETE FROM used WHERE device = OLD.id; END")


# The verifier's cold load of one user, in ONE query (three separate ones cost twice as much):
# the user row (if any), whether unused recovery codes exist, and one row per assigned device.
_LOAD_DEVICE_KEYS = ("id", "serial", "kind", "digits", "algorithm", "period", "counter",
                     "last_step", "drift", "seed")
# A clash (name_clashes) counts while one of its other stored names still holds something.
_STILL_HELD = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = x.stored)"
                          for t, c in (("users", "name"), ("devices", "user"),
                                       ("recovery_codes", "user"), ("sms_codes", "user")))
_AMBIGUOUS = ("EXISTS (SELECT 1 FROM name_clashes x WHERE x.name = q.n AND x.stored != q.n "
              f"AND ({_STILL_HELD}))")
_LOAD_USER = (
    "SELECT u.name IS NOT NULL, u.failures, u.locked_until, u.phone, EXISTS (SELECT 1 FROM "
    "recovery_codes r WHERE r.user = q.n AND r.used_at IS NULL), " + _AMBIGUOUS + ", "
    + _device_columns(_LOAD_DEVICE_KEYS) +
    " FROM (SELECT ? AS n) q LEFT JOIN users u ON u.name = q.n "
    "LEFT JOIN devices d ON d.user = q.n LEFT JOIN device_steps s ON s.device = d.id "
    "ORDER BY d.id")

def _latest_by_device(rows: Iterable[tuple[int, int, int, float]]
                      ) -> dict[int, tuple[int, int, float]]:
    """{device id: (step, drift, time)} of the highest step of each device among `rows` of
    (device id, step, drift, time)."""
    latest: dict[int, tuple[int, int, float]] = {}
    for device, step, drift, when in rows:
        if device not in latest or step > latest[device][0]:
            latest[device] = (step, drift, when)
    return latest


# The steps of the used-steps log not folded into `device_steps` yet (_migrate_6, _migrate_7).
_UNFOLDED = "FROM audit WHERE id > (SELECT upto FROM fold_mark) AND device IS NOT NULL"
# The fold into the device rows of schema v6 (_migrate_6 only): never moves a row back (a resync
# may be ahead).
_FOLD_TOTP = ("UPDATE devices SET last_step = ?, drift = ?, last_used_at = ? "
              "WHERE id = ? AND last_step < ?")
# The fold of the log rows (?, ?] into `device_steps` (_migrate_7), each device's highest step
# with its drift and time (SQLite takes a bare column from the max() row).
_FOLD_STEPS = (
    "INSERT INTO device_steps (device, step, drift, used_at) "
    "SELECT device, max(step), drift, time FROM audit WHERE id > ? AND id <= ? "
    "AND device IS NOT NULL GROUP BY device "
    "ON CONFLICT (device) DO UPDATE SET step = excluded.step, drift = excluded.drift, "
    "used_at = excluded.used_at WHERE excluded.step > device_steps.step")
_RETURNING_PAIRS = " RETURNING device, step"

def _migrate_5(db) -> None:
    """No index on audit time: rows are appended in time order (each decision's time is taken
    under the write lock), so the rowid is the time order and a time bound is found by a binary
    search over it (Store._audit_id_at). The index's pages were a third of a busy commit's
    writes (~20 us a commit here)."""
    db.conn.execute("DROP INDEX IF EXISTS idx_audit_time")


def _migrate_6(db) -> None:
    """The used-steps log moves into the audit log: a TOTP accept's audit row carries its
    device, step and drift, and `used` goes. A busy commit wrote two inserts to two tables' last
    pages plus the AUTOINCREMENT counter's page; now it writes one insert to one page (~15-40 us
    less a commit here). `fold_mark.upto` is the audit id up to which the steps are in the device
    rows; rows past it are the log. Audit ids only grow: a deleted row is never the newest
    (Store.prune_audit keeps it), so the log keeps its place as `used` did with AUTOINCREMENT.
    """
    conn = db.conn
    for column in ("device", "step", "drift"):
        conn.execute(f"ALTER TABLE audit ADD COLUMN {column} INTEGER")
    latest = _latest_by_device(conn.execute("SELECT device, step, drift, time FROM used"))
    conn.executemany(_FOLD_TOTP, [(step, drift, when, device, step)
                                  for device, (step, drift, when) in latest.items()])
    conn.execute("DROP TRIGGER IF EXISTS used_devices_delete")
    conn.execute("DROP TABLE used")
    conn.execute("CREATE TABLE fold_mark (upto INTEGER NOT NULL)")
    conn.execute("INSERT INTO fold_mark (upto) SELECT coalesce(max(id), 0) FROM audit")
    # A deleted device's id can be given to a new device: its steps not folded yet must not be.
    conn.execute("CREATE TRIGGER audit_devices_delete AFTER DELETE ON devices BEGIN "
                 "UPDATE audit SET device = NULL WHERE id > (SELECT upto FROM fold_mark) "
                 "AND device = OLD.id; END")


def _migrate_7(db) -> None:
    """The log folds into `device_steps`, a narrow table of each device's last used step,
    instead of the device rows. A device row (its sealed seed, serial, fingerprint) fills ~1/27
    of a page, so folding 20,000 steps rewrote ~1,500 pages (and copied them again at the
    checkpoint), ~10 us a step; the narrow rows fit ~100 pages. Enable and resync still write
    the device row; readers take whichever step is ahead (_DEVICE_NOW)."""
    conn = db.conn
    conn.execute("CREATE TABLE device_steps (device INTEGER PRIMARY KEY, step INTEGER NOT NULL, "
                 "drift INTEGER NOT NULL, used_at REAL NOT NULL)")
    # A deleted device's id can be given to a new device: its last used step must not be.
    conn.execute("CREATE TRIGGER device_steps_devices_delete AFTER DELETE ON devices "
                 "BEGIN DELETE FROM device_steps WHERE device = OLD.id; END")


# The tables whose user names are rewritten when names are brought to a rule (the audit log is
# history: its rows keep the names as they were written). The first four hold something of the
# user's (a row that makes two stored names a clash); the SMS send log only follows.
_NAME_COLUMNS = (("users", "name"), ("devices", "user"), ("recovery_codes", "user"),
                 ("sms_codes", "user"), ("sms_sends", "user"))
_HOLDERS = _NAME_COLUMNS[:4]


def _migrate_8(db) -> None:
    """User names in canonical form (mfa_radius/names.py). What the canonical form is depends on
    the config ([policy] username_case, strip_realm), which a migration does not see: this one
    only records that the stored names are as they were typed (`name_rule` NULL); the first
    process to open the database with a config brings them to its rule
    (Store.canonicalise_names), renaming a name where nothing else folds to the same one and
    listing the rest in `name_clashes` (canonical name, stored name), never merging them. A
    canonical name with a clash whose stored names still hold something is refused."""
    conn = db.conn
    conn.execute("CREATE TABLE name_rule (rule TEXT)")
    conn.execute("INSERT INTO name_rule (rule) VALUES (NULL)")
    conn.execute("CREATE TABLE name_clashes (name TEXT NOT NULL, stored TEXT NOT NULL, "
                 "PRIMARY KEY (name, stored))")


def _migrate_9(db) -> None:
    """A key check: a constant sealed under the database's key file (written by the first key
    that opens the database, Store.set_key_check), so a wrong key file is refused at once instead
    of sealing seeds that the real key cannot open. One row at most."""
    db.conn.execute("CREATE TABLE key_check (id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "sealed BLOB NOT NULL)")


MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5,
              6: _migrate_6, 7: _migrate_7, 8: _migrate_8, 9: _migrate_9}
# Times in the audit log may go back a little (a clock stepped back, an attempt timed by its
# caller): time bounds found over the rowid are widened by this much, then filtered exactly.
AUDIT_CLOCK_SLACK = 600.0
# The send log is kept this long (the rate limits look back minutes; the rest is for audits).
SMS_SEND_LOG_DAYS = 30
# Rows of `changes` kept by housekeeping (a server more than this far behind reloads all users).
CHANGES_KEPT = 100_000

# The sqlite3 module "adapts" every parameter that is not an int, float, str or bytearray: for
# None it looks up `__adapt__` and `__conform__`, two failed attribute lookups that each build
# and discard an AttributeError (~0.3 us a NULL; an audit row of a reject binds three to five).
# A registered adapter is found in its table first. None stays None: it binds NULL as before.
sqlite3.register_adapter(type(None), lambda value: value)


class Store:
    """A connection to the database file, with the queries the verifier and the CLI use."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, create: bool = False, synchronous: str = "normal",
             busy_timeout: float = 10.0) -> Store:
        """Open (or with `create`, create 0600) the database and bring its schema up to date."""
        _check_access(path)
        if not os.path.exists(path):
            if not create:
                raise StoreError(f"{path}: database not found (create it with 'mfa-radius init')")
            try:
                make_private_dirs(os.path.dirname(os.path.abspath(path)))
                # 0600 whatever the umask; SQLite gives -wal and -shm the database's mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(f"{path}: cannot create database: {exc.strerror}") from None
        else:
            cls._check_empty(path, create)
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            store = cls(conn, path)
            with store.errors("open"):
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{path}: cannot switch the database to WAL mode "
                                     f"(journal_mode is {mode}); is the directory writable?")
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                # 16 MiB of page cache (default 2 MiB): the device pages a busy server updates
                # stay in memory even with a million enrolled users.
                conn.execute("PRAGMA cache_size = -16384")
                conn.execute("PRAGMA foreign_keys = ON")
                store._migrate()
        except sqlite3.Error as exc:
            _check_access(path, opened=True)
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        return store

    @staticmethod
    def _check_empty(path: str, create: bool) -> None:
        """An empty file (a truncated copy, a `touch`) would silently become a new, empty
        database with whatever mode it has: only `init` may do that, and makes it 0600."""
        try:
            empty = os.path.isfile(path) and os.path.getsize(path) == 0
            if empty and create:
                os.chmod(path, 0o600)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open database: {exc.strerror}") from None
        if empty and not create:
            raise StoreError(f"{path}: the database file is empty (0 bytes), not an mfa-radius "
                             "database; restore it from a backup, or run 'mfa-radius init' to "
                             "start a new one there")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn SQLite errors into one clear StoreError line naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text or "malformed" in text:
                hint = "the file is corrupt or not an mfa-radius database; restore it from a backup"
            elif "readonly" in text or ("unable to open" in text and not os.access(
                    os.path.dirname(os.path.abspath(self.path)), os.W_OK)):
                # WAL mode must create -wal and -shm next to the file: a read-only directory
                # (or mount) only shows up as "unable to open database file".
                hint = "the database (or its directory) is read-only"
            elif "disk is full" in text or "disk I/O" in text:
                hint = "the disk is full or failing"
            elif "locked" in text or "busy" in text:
                hint = "the database stayed locked by another process"
            else:
                hint = text
            raise StoreError(f"{self.path}: {doing} failed: {hint}") from None

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema v{version} is newer than this "
                             f"mfa-radius (v{SCHEMA_VERSION}); upgrade mfa-radius")
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        with self.transaction():
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](db)
                self.conn.execute(f"PRAGMA user_version = {step}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            # A failed COMMIT (deferred constraint, full disk) leaves the transaction open,
            # holding the write lock for every process: roll it back as well.
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside transaction(): the writes of the block are undone if it raises, the rest of
        the transaction stays. Raises TransactionLost when SQLite had to abandon the whole
        transaction (a full disk, an I/O error): nothing of it can be committed then."""
        self.conn.execute("SAVEPOINT attempt")
        try:
            yield
        except BaseException as exc:
            try:
                if not self.conn.in_transaction:
                    raise TransactionLost(f"{self.path}: the transaction was rolled back: "
                                          f"{exc}") from None
                self.conn.execute("ROLLBACK TO attempt")
                self.conn.execute("RELEASE attempt")
            except sqlite3.Error as again:
                raise TransactionLost(f"{self.path}: cannot undo a failed step: {again}") \
                    from None
            raise
        self.conn.execute("RELEASE attempt")

    # ---- the key check (_migrate_9) ------------------------------------------------

    def key_check(self) -> bytes | None:
        """The sealed key-check constant, or None when no key has been bound yet."""
        with self.errors("reading the key check"):
            row = self.conn.execute("SELECT sealed FROM key_check WHERE id = 1").fetchone()
        return row[0] if row else None

    def set_key_check(self, sealed: bytes) -> bool:
        """Bind the database to a key (its sealed constant) unless one already is; True if this
        call wrote it. Runs its own transaction."""
        with self.errors("writing the key check"), self.transaction():
            return self.conn.execute("INSERT OR IGNORE INTO key_check (id, sealed) VALUES (1, ?)",
                                     (sealed,)).rowcount == 1

    def oldest_seeds(self, limit: int) -> list[tuple[str, bytes]]:
        """(serial, sealed seed) of the `limit` oldest devices: the ones sealed first."""
        with self.errors("reading seeds"):
            return self.conn.execute("SELECT serial, seed FROM devices ORDER BY id LIMIT ?",
                                     (limit,)).fetchall()

    def defer_checkpoints(self, pages: int) -> None:
        """Checkpoint at commit only once the WAL holds `pages` pages (SQLite's default: 1000);
        the daemon's Checkpointer does them before that."""
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def checkpoint(self) -> tuple[int, int, int]:
        """A PASSIVE WAL checkpoint: (1 if it could not run, pages in the WAL, pages copied)."""
        with self.errors("WAL checkpoint"):
            busy, pages, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, pages, copied

    def data_version(self) -> int:
        """Changes whenever another connection commits (the cache-invalidation signal)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def backup(self, dest: str) -> None:
        """A consistent copy of the live database (SQLite online backup), created 0600.

        Written to a temporary file next to `dest` without a rollback journal, checked, then
        linked into place: a failure (a full disk, an interrupt) leaves neither a half-written
        `dest` nor a `dest-journal`, and an existing `dest` is never overwritten.
        """
        if os.path.lexists(dest):
            raise StoreError(f"{dest}: already exists; refusing to overwrite it")
        folder, name = os.path.split(os.path.abspath(dest))
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise StoreError(f"{dest}: cannot create backup: {exc.strerror}") from None
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                with self.errors("backup"):
                    # The copy is thrown away on any failure: no journal needed (or left).
                    target.execute("PRAGMA journal_mode = OFF")
                    self.conn.backup(target, pages=1024)
                    check = target.execute("PRAGMA integrity_check").fetchone()[0]
                    if check != "ok":
                        raise StoreError(f"{dest}: backup failed its integrity check: {check}")
            finally:
                target.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            try:
                os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwritten
            except FileExistsError:
                raise StoreError(f"{dest}: already exists; refusing to overwrite it") from None
            except OSError as exc:
                raise StoreError(f"{dest}: cannot create backup: {exc.strerror}") from None
        finally:
            for leftover in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)

    # ---- user names (_migrate_8) -------------------------------------------------------------

    def name_rule(self) -> str | None:
        """The rule the stored names were last brought to (None: as typed)."""
        return self.conn.execute("SELECT rule FROM name_rule").fetchone()[0]

    def stored_names(self, holders_only: bool = False) -> set[str]:
        """Every distinct user name stored outside the audit log (with holders_only, only those
        holding something: a users row, a device, recovery codes, an SMS code)."""
        tables = _HOLDERS if holders_only else _NAME_COLUMNS
        sql = " UNION ".join(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL" for t, c in tables)
        return {r[0] for r in self.conn.execute(sql)}

    def canonicalise_names(self, canonical, rule: str, force: bool = False):
        """Bring the stored names to `rule` (names.rule_id) with `canonical` (its
        canonicaliser), unless they already are or with `force`; the names.NamePlan, or None
        when nothing was due.

        Renames each name of the plan in every table but the audit log, and replaces
        `name_clashes` with the plan's clashes (never merged). Names only in the SMS send log
        follow their user's canonical name (the send limits count them together).
        """
        from . import names

        if not force and self.name_rule() == rule:
            return None
        with self.transaction():
            if not force and self.name_rule() == rule:  # another process did it meanwhile
                return None
            holders = self.stored_names(holders_only=True)
            plan = names.plan(holders, canonical)
            for old, new in plan.renames.items():
                self._rename_rows(old, new)
            for old in self.stored_names() - holders:
                try:
                    new = canonical(old)
                except names.UserNameError:
                    continue
                if new != old and new not in plan.clashes:
                    self.conn.execute("UPDATE sms_sends SET user = ? WHERE user = ?", (new, old))
            self.conn.execute("DELETE FROM name_clashes")
            self.conn.executemany("INSERT INTO name_clashes (name, stored) VALUES (?, ?)",
                                  [(canon, s) for canon, members in plan.clashes.items()
                                   for s in members])
            self.conn.execute("UPDATE name_rule SET rule = ?", (rule,))
        return plan

    def name_clashes(self) -> dict[str, list[str]]:
        """{canonical name: its stored names} of the clashes still held (see _migrate_8)."""
        held = self.stored_names(holders_only=True)
        out: dict[str, list[str]] = {}
        for name, stored in self.conn.execute("SELECT name, stored FROM name_clashes "
                                              "ORDER BY name, stored"):
            if stored in held:
                out.setdefault(name, []).append(stored)
        return {k: v for k, v in out.items() if len(v) > 1}

    def rename_user(self, old: str, new: str) -> bool:
        """Move everything of stored name `old` (taken as stored, not canonicalised) to `new`
        (inside a transaction); False when `new` already holds something (never a merge) or
        `old` holds nothing. The audit log keeps the old name."""
        holds = " OR ".join(f"EXISTS (SELECT 1 FROM {t} WHERE {c} = ?1)" for t, c in _HOLDERS)
        if self.conn.execute(f"SELECT {holds}", (new,)).fetchone()[0]:
            return False
        if not self.conn.execute(f"SELECT {holds}", (old,)).fetchone()[0]:
            return False
        self._rename_rows(old, new)
        return True

    def _rename_rows(self, old: str, new: str) -> None:
        for table, column in _NAME_COLUMNS:
            self.conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))
        # The `changes` triggers log the old name of an update; a server may have cached the
        # new one (as a user without devices).
        self.conn.execute("INSERT INTO changes (user) VALUES (?)", (new,))

    # ---- hot path: reads ---------------------------------------------------------------------

    def load_user(self, name: str) -> tuple[dict | None, list[dict], bool, bool]:
        """(users row or None, assigned devices with sealed seeds, has unused recovery codes,
        whether other stored names fold to this one: a clash, see _migrate_8)."""
        rows = self.conn.execute(_LOAD_USER, (name,)).fetchall()
        first = rows[0]
        user = ({"failures": first[1], "locked_until": first[2], "phone": first[3]}
                if first[0] else None)
        devices = [dict(zip(_LOAD_DEVICE_KEYS, r[6:])) for r in rows if r[6] is not None]
        return user, devices, bool(first[4]), bool(first[5])

    def preload_users(self, limit: int) -> Iterator[tuple[str, dict | None, list[dict], bool]]:
        """(name, users row or None, devices, has unused recovery codes) for up to `limit` users
        with an assigned device (the server's start-up load; users with no device are loaded
        when first asked about). With more such users than `limit`, the most recently active
        ones (a device used, or enabled, last): they are the likeliest to sign in next."""
        recovery = {r[0] for r in self.conn.execute(
            "SELECT DISTINCT user FROM recovery_codes WHERE used_at IS NULL")}
        columns = ("SELECT d.user, u.name IS NOT NULL, u.failures, u.locked_until, u.phone, "
                   + _device_columns(_LOAD_DEVICE_KEYS))
        enrolled = self.conn.execute("SELECT count(*) FROM (SELECT DISTINCT user FROM devices "
                                     "WHERE user IS NOT NULL)").fetchone()[0]
        if enrolled <= limit:
            rows = self.conn.execute(
                columns + f" FROM {_DEVICES_JOINED} LEFT JOIN users u ON u.name = d.user "
                "WHERE d.user IS NOT NULL ORDER BY d.user, d.id")
        else:
            rows = self.conn.execute(
                f"WITH recent AS (SELECT d.user FROM {_DEVICES_JOINED} WHERE d.user IS NOT NULL "
                "GROUP BY d.user ORDER BY max(coalesce(" + _DEVICE_NOW["last_used_at"] +
                ", d.enabled_at, d.created_at)) DESC LIMIT ?) "
                + columns + " FROM recent r JOIN devices d ON d.user = r.user "
                "LEFT JOIN device_steps s ON s.device = d.id "
                "LEFT JOIN users u ON u.name = d.user ORDER BY d.user, d.id", (limit,))
        name: str | None = None
        user: dict | None = None
        devices: list[dict] = []
        count = 0
        for r in rows:
            if r[0] != name:
                if name is not None:
                    yield name, user, devices, name in recovery
                    count += 1
                    if count >= limit:
                        return
                name, devices = r[0], []
                user = {"failures": r[2], "locked_until": r[3], "phone": r[4]} if r[1] else None
            devices.append(dict(zip(_LOAD_DEVICE_KEYS, r[5:])))
        if name is not None and count < limit:
            yield name, user, devices, name in recovery

    def last_change(self) -> int:
        """The sequence number of the latest tracked change (0 when none)."""
        return self.conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]

    def changed_users(self, after: int, limit: int) -> tuple[int, int, set[str] | None]:
        """(oldest kept seq, latest seq, users changed after `after`); None instead of the set
        when more than `limit` users changed (drop everything instead)."""
        first, last = self.conn.execute(
            "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM changes").fetchone()
        rows = self.conn.execute("SELECT DISTINCT user FROM changes WHERE seq > ? LIMIT ?",
                                 (after, limit + 1)).fetchall()
        return first, last, None if len(rows) > limit else {r[0] for r in rows}

    def user_row(self, name: str) -> dict | None:
        row = self.conn.execute(_USER_SELECT + " WHERE name = ?", (name,)).fetchone()
        return dict(zip(USER_COLUMNS, row)) if row else None

    def user_devices(self, name: str) -> list[dict]:
        rows = self.conn.execute(_DEVICE_SELECT + " WHERE d.user = ? ORDER BY d.id", (name,))
        return self._with_used([dict(zip(DEVICE_COLUMNS, r)) for r in rows])

    def has_recovery_codes(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM recovery_codes WHERE user = ? AND used_at IS NULL"
                                 " LIMIT 1", (name,)).fetchone() is not None

    def recovery_codes(self, name: str) -> list[tuple[int, bytes, bytes, bool]]:
        """(id, salt, hash, used) of the user's recovery codes, used ones too (a used code typed
        again is a replay, not a guess)."""
        return self.conn.execute("SELECT id, salt, hash, used_at IS NOT NULL FROM recovery_codes "
                                 "WHERE user = ? ORDER BY id", (name,)).fetchall()

    def recovery_tries_since(self, name: str, since: float) -> int:
        """Recovery codes checked for `name` while it was locked (audit rows with method
        recovery, reason locked or replay) since `since`."""
        return self.conn.execute(
            "SELECT count(*) FROM audit WHERE user = ? AND time > ? AND method = 'recovery' "
            "AND reason IN ('locked', 'replay')", (name, since)).fetchone()[0]

    # ---- hot path: writes (inside transaction()) -------------------------------------------

    # ---- the used-steps log: TOTP accepts in the audit log (_migrate_6) -------------------

    def last_audit_id(self) -> int:
        """The id of the newest audit row (0 before the first): the end of the used-steps log."""
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]

    def used_since(self, after: int) -> list[tuple[int, int, int, int, str | None]]:
        """(audit id, device id, step, drift, its user) of the TOTP accepts after `after`."""
        return self.conn.execute(
            "SELECT a.id, a.device, a.step, a.drift, d.user FROM audit a LEFT JOIN devices d "
            "ON d.id = a.device WHERE a.id > ? AND a.device IS NOT NULL ORDER BY a.id",
            (after,)).fetchall()

    def unfolded_steps(self, device_ids: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
        """{device id: (step, drift)} of the latest step not folded yet, for the given devices
        (a scan of the log: it holds what was used since the last fold) or for all."""
        return {device: (step, drift)
                for device, (step, drift, _) in self._latest_used(device_ids).items()}

    def _latest_used(self, device_ids: Iterable[int] | None = None
                     ) -> dict[int, tuple[int, int, float]]:
        """{device id: (step, drift, time)} of each device's latest step in the log."""
        sql = "SELECT device, step, drift, time " + _UNFOLDED
        if device_ids is None:
            return _latest_by_device(self.conn.execute(sql))
        ids = list(device_ids)
        if not ids:
            return {}
        return _latest_by_device(self.conn.execute(
            f"{sql} AND device IN ({','.join('?' * len(ids))})", ids))

    def fold_used(self, limit: int = -1) -> tuple[int, list[tuple[int, int]] | None]:
        """Move the oldest `limit` (>= 1) steps of the log (all with -1) into `device_steps`,
        and the mark past them, inside a transaction. Returns how many devices' steps were
        written, and which (device id, step) while steps are left; None once the whole log is
        folded (asking for the pairs costs ~1.3 us a step)."""
        mark = self.conn.execute("SELECT upto FROM fold_mark").fetchone()[0]
        end = self.last_audit_id()
        if end < mark:  # rows deleted by hand: nothing of them is left to fold
            self.conn.execute("UPDATE fold_mark SET upto = ?", (end,))
            return 0, None
        upto = end
        if limit > 0:  # the log's limit-th row past the mark, and whether another follows
            ids = self.conn.execute("SELECT id FROM audit WHERE id > ? AND device IS NOT NULL "
                                    "ORDER BY id LIMIT 2 OFFSET ?", (mark, limit - 1)).fetchall()
            if len(ids) == 2:
                upto = ids[0][0]
        if upto == mark:
            return 0, None
        self.conn.execute("UPDATE fold_mark SET upto = ?", (upto,))
        if upto == end:
            return self.conn.execute(_FOLD_STEPS, (mark, upto)).rowcount, None
        pairs = self.conn.execute(_FOLD_STEPS + _RETURNING_PAIRS, (mark, upto)).fetchall()
        return len(pairs), pairs

    def count_used(self) -> int:
        """Steps in the log not folded yet."""
        return self.conn.execute("SELECT count(*) " + _UNFOLDED).fetchone()[0]

    def _with_used(self, rows: list[dict]) -> list[dict]:
        """Device rows with the steps used since the last fold merged in (what they will hold)."""
        if not rows:
            return rows
        latest = self._latest_used()
        for r in rows:
            used = latest.get(r["id"])
            if used is None:
                continue
            if used[0] > r["last_step"]:
                r.update(last_step=used[0], drift=used[1])
            # Apart from the step: a resync moves the row's step past the log's, not its time.
            if used[2] > (r["last_used_at"] or 0):
                r["last_used_at"] = used[2]
        return rows

    def consume_hotp(self, device_id: int, counter: int, now: float) -> bool:
        """Move the next expected counter past `counter` unless it already is; True if fresh."""
        cur = self.conn.execute("UPDATE devices SET counter = ?, last_used_at = ? "
                                "WHERE id = ? AND counter <= ?",
                                (counter + 1, now, device_id, counter))
        return cur.rowcount == 1

    def consume_recovery_code(self, code_id: int, now: float) -> bool:
        cur = self.conn.execute("UPDATE recovery_codes SET used_at = ? WHERE id = ? AND "
                                "used_at IS NULL", (now, code_id))
        return cur.rowcount == 1

    def set_user_state(self, name: str, failures: int, locked_until: float, *,
                       success_at: float | None = None, failure_at: float | None = None) -> None:
        self.conn.execute(
            "INSERT INTO users (name, failures, locked_until, last_success, last_failure, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "failures = excluded.failures, locked_until = excluded.locked_until, "
            "last_success = coalesce(excluded.last_success, last_success), "
            "last_failure = coalesce(excluded.last_failure, last_failure)",
            (name, failures, locked_until, success_at, failure_at, time.time()))

    def add_audit(self, rows: Iterable[tuple]) -> None:
        """rows: (time, user, method, serial, source, result, reason, device id, step, drift),
        the last three set for a TOTP accept only: its step is used (the used-steps log)."""
        self.conn.executemany("INSERT INTO audit (time, user, method, serial, source, result, "
                              "reason, device, step, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              rows)

    # ---- device lifecycle ------------------------------------------------------------------

    def device(self, serial: str) -> dict | None:
        row = self.conn.execute(_DEVICE_SELECT + " WHERE d.serial = ?", (serial,)).fetchone()
        return self._with_used([dict(zip(DEVICE_COLUMNS, row))])[0] if row else None

    def insert_devices(self, devices: Iterable[dict]) -> int:
        """Insert device rows (inside a transaction). Raises sqlite3.IntegrityError on a clash."""
        cols = [c for c in DEVICE_COLUMNS if c != "id"]
        sql = (f"INSERT INTO devices ({', '.join(cols)}) VALUES "
               f"({', '.join('?' for _ in cols)})")
        # rowcount, not total_changes: the `changes` triggers' rows are not devices.
        return self.conn.executemany(sql, ([d.get(c) for c in cols] for d in devices)).rowcount

    def clashes(self, serials: list[str], fingerprints: list[str]) -> tuple[set, set]:
        """Which of these serials and fingerprints are already held by a device."""
        taken_serials: set[str] = set()
        taken_fps: set[str] = set()
        for chunk in _chunks(serials):
            q = f"SELECT serial FROM devices WHERE serial IN ({','.join('?' * len(chunk))})"
            taken_serials.update(r[0] for r in self.conn.execute(q, chunk))
        for chunk in _chunks(fingerprints):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT fingerprint FROM devices WHERE fingerprint IN ({marks})"
            taken_fps.update(r[0] for r in self.conn.execute(q, chunk))
        return taken_serials, taken_fps

    def assign_device(self, device_id: int, user: str, *, now: float, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> bool:
        """Assign an unassigned device; False if it was assigned meanwhile."""
        cur = self.conn.execute(
            "UPDATE devices SET user = ?, enabled_at = ?, counter = coalesce(?, counter), "
            "last_step = coalesce(?, last_step), drift = coalesce(?, drift) "
            "WHERE id = ? AND user IS NULL", (user, now, counter, last_step, drift, device_id))
        return cur.rowcount == 1

    def resync_device(self, device_id: int, *, counter: int | None = None,
                      last_step: int | None = None, drift: int | None = None) -> None:
        self.conn.execute("UPDATE devices SET counter = coalesce(?, counter), "
                          "last_step = coalesce(?, last_step), drift = coalesce(?, drift), "
                          "resynced_at = ? WHERE id = ?",
                          (counter, last_step, drift, time.time(), device_id))

    def unassign_device(self, device_id: int, user: str) -> bool:
        cur = self.conn.execute("UPDATE devices SET user = NULL, enabled_at = NULL, drift = 0 "
                                "WHERE id = ? AND user = ?", (device_id, user))
        if cur.rowcount != 1:
            return False
        self.conn.execute("UPDATE device_steps SET drift = 0 WHERE device = ?", (device_id,))
        return True

    def delete_device(self, device_id: int) -> bool:
        cur = self.conn.execute("DELETE FROM devices WHERE id = ? AND user IS NULL", (device_id,))
        return cur.rowcount == 1

    def count_user_devices(self, user: str) -> int:
        return self.conn.execute("SELECT count(*) FROM devices WHERE user = ?",
                                 (user,)).fetchone()[0]

    def list_devices(self, user: str | None = None, status: str = "any") -> list[dict]:
        where, args = [], []
        if user is not None:
            where.append("d.user = ?")
            args.append(user)
        if status == "assigned":
            where.append("d.user IS NOT NULL")
        elif status == "unassigned":
            where.append("d.user IS NULL")
        sql = (_DEVICE_SELECT + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY d.serial")
        return self._with_used([dict(zip(DEVICE_COLUMNS, r)) for r in self.conn.execute(sql, args)])

    # ---- users, recovery codes, audit ------------------------------------------------------

    def ensure_user(self, name: str, now: float) -> None:
        self.conn.execute("INSERT INTO users (name, created_at) VALUES (?, ?) "
                          "ON CONFLICT(name) DO NOTHING", (name, now))

    def unlock_user(self, name: str) -> bool:
        cur = self.conn.execute("UPDATE users SET failures = 0, locked_until = 0 WHERE name = ?",
                                (name,))
        return cur.rowcount == 1

    def replace_recovery_codes(self, user: str, hashed: list[tuple[bytes, bytes]],
                               now: float) -> None:
        self.conn.execute("DELETE FROM recovery_codes WHERE user = ?", (user,))
        self.conn.executemany("INSERT INTO recovery_codes (user, salt, hash, created_at) "
                              "VALUES (?, ?, ?, ?)", ((user, s, h, now) for s, h in hashed))

    def user_names(self) -> list[str]:
        """Every user the database knows: with a users row or an assigned device."""
        rows = self.conn.execute("SELECT name FROM users UNION SELECT user FROM devices "
                                 "WHERE user IS NOT NULL ORDER BY 1")
        return [r[0] for r in rows]

    def user_summary(self, name: str) -> dict:
        row = self.user_row(name) or {"name": name, "failures": 0, "locked_until": 0.0,
                                      "last_success": None, "last_failure": None,
                                      "created_at": None}
        row["devices"] = [d["serial"] for d in self.user_devices(name)]
        row["recovery_codes_left"] = self.conn.execute(
            "SELECT count(*) FROM recovery_codes WHERE user = ? AND used_at IS NULL",
            (name,)).fetchone()[0]
        return row

    # ---- SMS -------------------------------------------------------------------------------

    def set_phone(self, user: str, phone: str | None, now: float) -> bool:
        """Register (or with None, remove) the user's SMS phone; False if nothing changed."""
        if phone is not None:
            self.ensure_user(user, now)
        cur = self.conn.execute(
            "UPDATE users SET phone = ?, sms_enabled_at = ? WHERE name = ? AND "
            "phone IS NOT ?", (phone, now if phone else None, user, phone))
        if phone is None:
            self.conn.execute("DELETE FROM sms_codes WHERE user = ?", (user,))
        return cur.rowcount == 1

    def sms_users(self) -> list[dict]:
        """Every user with a phone registered for SMS codes: user, phone, enabled_at."""
        rows = self.conn.execute("SELECT name, phone, sms_enabled_at FROM users WHERE phone IS "
                                 "NOT NULL ORDER BY name")
        return [{"user": r[0], "phone": r[1], "enabled_at": r[2]} for r in rows]

    def sms_code(self, user: str) -> tuple[bytes, float] | None:
        """(hash, expires_at) of the user's live code, if one was issued."""
        return self.conn.execute("SELECT hash, expires_at FROM sms_codes WHERE user = ?",
                                 (user,)).fetchone()

    def replace_sms_code(self, user: str, digest: bytes, now: float, expires_at: float) -> None:
        """Store a new code for the user; the previous one, if any, stops working."""
        self.conn.execute("INSERT INTO sms_codes (user, hash, created_at, expires_at) VALUES "
                          "(?, ?, ?, ?) ON CONFLICT(user) DO UPDATE SET hash = excluded.hash, "
                          "created_at = excluded.created_at, expires_at = excluded.expires_at",
                          (user, digest, now, expires_at))

    def consume_sms_code(self, user: str, digest: bytes, now: float) -> bool:
        """Use up the live code with this hash; True only for the one caller that got it."""
        cur = self.conn.execute("DELETE FROM sms_codes WHERE user = ? AND hash = ? AND "
                                "expires_at > ?", (user, digest, now))
        return cur.rowcount == 1

    def sms_sends_since(self, user: str, since: float) -> list[float]:
        """Times of the user's sends after `since`."""
        return [r[0] for r in self.conn.execute(
            "SELECT time FROM sms_sends WHERE user = ? AND time > ? ORDER BY time",
            (user, since))]

    def sms_sends_total(self, since: float) -> tuple[int, float | None]:
        """(how many sends for anyone after `since`, the oldest of them)."""
        count, oldest = self.conn.execute("SELECT count(*), min(time) FROM sms_sends WHERE "
                                          "time > ?", (since,)).fetchone()
        return count, oldest

    def add_sms_send(self, user: str, now: float, source: str) -> None:
        self.conn.execute("INSERT INTO sms_sends (time, user, source) VALUES (?, ?, ?)",
                          (now, user, source))
        self.conn.execute("DELETE FROM sms_sends WHERE time < ?",
                          (now - SMS_SEND_LOG_DAYS * 86400,))

    def audit_events(self, user: str | None = None, since: float | None = None,
                     limit: int = 1000) -> list[dict]:
        """The newest `limit` events (of `user`, at or after `since`), oldest first."""
        where: list[str] = []
        args: list[object] = []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if since is not None:
            where.append("id >= ? AND time >= ?")
            args += [self._audit_id_at(since - AUDIT_CLOCK_SLACK), since]
        sql = ("SELECT time, user, method, serial, source, result, reason FROM audit" +
               (" WHERE " + " AND ".join(where) if where else "") +
               " ORDER BY id DESC LIMIT ?")
        keys = ("time", "user", "method", "serial", "source", "result", "reason")
        rows = [dict(zip(keys, r)) for r in self.conn.execute(sql, [*args, limit])]
        rows.reverse()
        return rows

    def _audit_id_at(self, when: float) -> int:
        """The first audit rowid whose time is at or after `when` (one past the last row when
        none is), by binary search over the rowids: ~2 log2(rows) primary-key lookups."""
        lo, hi = self.conn.execute("SELECT coalesce(min(id), 1), coalesce(max(id), 0) + 1 "
                                   "FROM audit").fetchone()
        first_after = "SELECT id, time FROM audit WHERE id >= ? ORDER BY id LIMIT 1"
        while lo < hi:
            mid = (lo + hi) // 2
            row = self.conn.execute(first_after, (mid,)).fetchone()
            if row is None or row[0] >= hi or row[1] >= when:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    # ---- housekeeping and metrics ----------------------------------------------------------

    def prune_audit(self, before: float, batch: int = 5000) -> int:
        """Delete audit rows older than `before`, `batch` rows per transaction; return how many.

        Small transactions keep the write lock for milliseconds, so logins are never held up
        behind a prune of a year's worth of rows. Only rows before the time bound over the
        rowids (widened by AUDIT_CLOCK_SLACK) are looked at; each is checked on its own time.
        Steps not folded yet stay, and so does the newest row: audit ids must never go back, as
        the used-steps log is read by id (_migrate_6).
        """
        total = 0
        while True:
            with self.errors("pruning the audit log"), self.transaction():
                bound = min(self._audit_id_at(before + AUDIT_CLOCK_SLACK), self.last_audit_id())
                cur = self.conn.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id < ? AND time < ? "
                    "AND (device IS NULL OR id <= (SELECT upto FROM fold_mark)) ORDER BY id "
                    "LIMIT ?)", (bound, before, batch))
            total += cur.rowcount
            if cur.rowcount < batch:
                return total

    def prune_expired(self, now: float, idle_before: float) -> dict[str, int]:
        """Delete state that no longer means anything; return {what: rows deleted}.

        - SMS codes past their expiry (they can no longer be used);
        - user rows that only hold failure counters (no device, recovery code or phone), not locked
          and idle since `idle_before`: mostly names guessed by password sprayers.
        """
        done = {}
        with self.errors("pruning expired state"), self.transaction():
            done["sms_codes"] = self.conn.execute(
                "DELETE FROM sms_codes WHERE expires_at <= ?", (now,)).rowcount
            done["users"] = self.conn.execute(
                "DELETE FROM users WHERE locked_until <= ? AND phone IS NULL AND "
                "max(coalesce(last_failure, 0), coalesce(last_success, 0), created_at) < ? "
                "AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.user = users.name) "
                "AND NOT EXISTS (SELECT 1 FROM recovery_codes WHERE recovery_codes.user = "
                "users.name)", (now, idle_before)).rowcount
            # Servers keep their place in `changes`; one that fell behind the oldest kept row
            # reloads everything, so a modest tail is enough.
            done["changes"] = self.conn.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?",
                (CHANGES_KEPT,)).rowcount
        return done

    def gauge_counts(self, now: float) -> dict[str, int]:
        """Numbers for the metrics gauges: locked and enrolled users, assigned/unassigned
        devices."""
        with self.errors("counting for metrics"):
            locked = self.conn.execute("SELECT count(*) FROM users WHERE locked_until > ?",
                                       (now,)).fetchone()[0]
            enrolled, assigned, unassigned = self.conn.execute(
                "SELECT count(DISTINCT user), count(user), count(*) - count(user) FROM devices"
            ).fetchone()
        return {"locked_users": locked, "enrolled_users": enrolled, "devices_assigned": assigned,
                "devices_unassigned": unassigned}


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
