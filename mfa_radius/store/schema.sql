-- The SQLite schema of mfa-radius, as a new database is created (PRAGMA user_version is then set
-- to migrations.SCHEMA_VERSION). A database made by an older version reaches the same schema
-- through migrations.py; tests/test_store.py checks that both agree.

-- Tokens. A seed is sealed under the key file, bound to its serial (sealing.py); `fingerprint`
-- (a keyed hash of the seed) refuses the same seed twice. `counter` is an HOTP device's next
-- expected counter; a TOTP device's last used step is kept by the step log below, not here.
CREATE TABLE "devices" (
   "id" INTEGER PRIMARY KEY,
   "serial" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "virtual" INTEGER NOT NULL DEFAULT 0,
   "digits" INTEGER NOT NULL,
   "algorithm" TEXT NOT NULL,
   "period" INTEGER NOT NULL DEFAULT 30,
   "counter" INTEGER NOT NULL DEFAULT 0,
   "seed" BLOB NOT NULL,
   "fingerprint" TEXT NOT NULL,
   "user" TEXT,
   "created_at" REAL NOT NULL,
   "enabled_at" REAL,
   "last_used_at" REAL,
   "resynced_at" REAL
);
CREATE UNIQUE INDEX "idx_devices_serial" ON "devices" ("serial");
CREATE UNIQUE INDEX "idx_devices_fingerprint" ON "devices" ("fingerprint");
CREATE INDEX "idx_devices_user" ON "devices" ("user");

-- Failure counters and lockouts, and the phone registered for SMS codes.
CREATE TABLE "users" (
   "name" TEXT PRIMARY KEY,
   "failures" INTEGER NOT NULL DEFAULT 0,
   "locked_until" REAL NOT NULL DEFAULT 0.0,
   "last_success" REAL,
   "last_failure" REAL,
   "created_at" REAL NOT NULL,
   "phone" TEXT,
   "sms_enabled_at" REAL
);

-- Salted hashes only; a used code is kept, so typing it again is a replay, not a guess.
CREATE TABLE "recovery_codes" (
   "id" INTEGER PRIMARY KEY,
   "user" TEXT NOT NULL,
   "salt" BLOB NOT NULL,
   "hash" BLOB NOT NULL,
   "created_at" REAL NOT NULL,
   "used_at" REAL
);
CREATE INDEX "idx_recovery_codes_user" ON "recovery_codes" ("user");

-- One row per decision, appended in time order: the rowid is the time order, so time bounds are
-- found by a binary search over it instead of an index, whose random pages would cost every
-- commit. (device, step, drift): the step a TOTP accept used, as history; never read to decide.
CREATE TABLE "audit" (
   "id" INTEGER PRIMARY KEY,
   "time" REAL NOT NULL,
   "user" TEXT,
   "method" TEXT,
   "serial" TEXT,
   "source" TEXT,
   "result" TEXT NOT NULL,
   "reason" TEXT NOT NULL,
   device INTEGER,
   step INTEGER,
   drift INTEGER
);

-- The live SMS code of a user (its HMAC only), and the send log the rate limits count.
CREATE TABLE "sms_codes" (
   "user" TEXT PRIMARY KEY,
   "hash" BLOB NOT NULL,
   "created_at" REAL NOT NULL,
   "expires_at" REAL NOT NULL
);
CREATE TABLE "sms_sends" (
   "id" INTEGER PRIMARY KEY,
   "time" REAL NOT NULL,
   "user" TEXT NOT NULL,
   "source" TEXT
);
CREATE INDEX "idx_sms_sends_time" ON "sms_sends" ("time");
CREATE INDEX "idx_sms_sends_user_time" ON "sms_sends" ("user", "time");

-- Change tracking for the verifiers' caches: the triggers append the name of every user whose
-- cached state a write makes stale, whoever writes (this code, another process, the sqlite3
-- shell). AUTOINCREMENT: a sequence number is never given twice, so a reader keeps its place.
-- Replay state fires none: every consume is checked in SQL (step log), whatever was cached.
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL);
CREATE TRIGGER changes_devices_insert AFTER INSERT ON devices WHEN NEW.user IS NOT NULL BEGIN INSERT INTO changes (user) VALUES (NEW.user); END;
CREATE TRIGGER changes_devices_delete AFTER DELETE ON devices WHEN OLD.user IS NOT NULL BEGIN INSERT INTO changes (user) VALUES (OLD.user); END;
CREATE TRIGGER changes_devices_update AFTER UPDATE OF user, serial, seed, kind, digits, algorithm, period, counter, resynced_at ON devices BEGIN INSERT INTO changes (user) SELECT OLD.user WHERE OLD.user IS NOT NULL; INSERT INTO changes (user) SELECT NEW.user WHERE NEW.user IS NOT NULL AND NEW.user IS NOT OLD.user; END;
CREATE TRIGGER changes_users_insert AFTER INSERT ON users BEGIN INSERT INTO changes (user) VALUES (NEW.name); END;
CREATE TRIGGER changes_users_update AFTER UPDATE ON users BEGIN INSERT INTO changes (user) VALUES (OLD.name); END;
CREATE TRIGGER changes_users_delete AFTER DELETE ON users BEGIN INSERT INTO changes (user) VALUES (OLD.name); END;
CREATE TRIGGER changes_recovery_codes_insert AFTER INSERT ON recovery_codes BEGIN INSERT INTO changes (user) VALUES (NEW.user); END;
CREATE TRIGGER changes_recovery_codes_update AFTER UPDATE ON recovery_codes BEGIN INSERT INTO changes (user) VALUES (OLD.user); END;
CREATE TRIGGER changes_recovery_codes_delete AFTER DELETE ON recovery_codes BEGIN INSERT INTO changes (user) VALUES (OLD.user); END;

-- The step log (steplog.py): a TOTP device's last used step is the higher of its rows here; none
-- means never used. `device_steps` holds the folded steps and the positions enable and resync
-- set; `recent_steps` the steps used since the last fold. A deleted device's id can be given to
-- a new device: its steps go with it.
CREATE TABLE device_steps (device INTEGER PRIMARY KEY, step INTEGER NOT NULL, drift INTEGER NOT NULL, used_at REAL NOT NULL);
CREATE TRIGGER device_steps_devices_delete AFTER DELETE ON devices BEGIN DELETE FROM device_steps WHERE device = OLD.id; END;

-- User names: the rule the stored names were last brought to (NULL: as typed), and the stored
-- names that fold to one canonical name (refused while more than one still holds something).
CREATE TABLE name_rule (rule TEXT);
INSERT INTO name_rule (rule) VALUES (NULL);
CREATE TABLE name_clashes (name TEXT NOT NULL, stored TEXT NOT NULL, PRIMARY KEY (name, stored));

-- A constant sealed under the database's key file: a wrong key file is refused at open.
CREATE TABLE key_check (id INTEGER PRIMARY KEY CHECK (id = 1), sealed BLOB NOT NULL);

CREATE TABLE recent_steps (device INTEGER PRIMARY KEY, step INTEGER NOT NULL, drift INTEGER NOT NULL, used_at REAL NOT NULL);
CREATE TRIGGER recent_steps_devices_delete AFTER DELETE ON devices BEGIN DELETE FROM recent_steps WHERE device = OLD.id; END;

-- Access-Challenge State and recent replies, as a shared store keeps them (postgres_schema.sql).
CREATE TABLE challenges (state BLOB PRIMARY KEY, user TEXT NOT NULL, client TEXT NOT NULL, expires REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE replies (key BLOB PRIMARY KEY, reply BLOB NOT NULL, expires REAL NOT NULL);
