-- The PostgreSQL schema of mfa-radius (postgres_migrations.py: version 1), shared by every node
-- of a cluster. It mirrors schema.sql (the SQLite schema) with three differences: user name
-- columns are `user_name` (`user` is a reserved word in PostgreSQL, and unquoted it silently
-- means current_user), times are double precision seconds, and a TOTP device's last used step
-- has one table (device_steps): the consume is one upsert every node contends on.

CREATE TABLE schema_version (version integer NOT NULL);

CREATE TABLE devices (
   id bigserial PRIMARY KEY,
   serial text NOT NULL UNIQUE,
   kind text NOT NULL,
   virtual integer NOT NULL DEFAULT 0,
   digits integer NOT NULL,
   algorithm text NOT NULL,
   period integer NOT NULL DEFAULT 30,
   counter bigint NOT NULL DEFAULT 0,
   seed bytea NOT NULL,
   fingerprint text NOT NULL UNIQUE,
   user_name text,
   created_at double precision NOT NULL,
   enabled_at double precision,
   last_used_at double precision,
   resynced_at double precision
);
CREATE INDEX idx_devices_user ON devices (user_name);

CREATE TABLE users (
   name text PRIMARY KEY,
   failures integer NOT NULL DEFAULT 0,
   locked_until double precision NOT NULL DEFAULT 0.0,
   last_success double precision,
   last_failure double precision,
   created_at double precision NOT NULL,
   phone text,
   sms_enabled_at double precision
);

CREATE TABLE recovery_codes (
   id bigserial PRIMARY KEY,
   user_name text NOT NULL,
   salt bytea NOT NULL,
   hash bytea NOT NULL,
   created_at double precision NOT NULL,
   used_at double precision
);
CREATE INDEX idx_recovery_codes_user ON recovery_codes (user_name);

-- Appended in time order by every node; a BRIN index finds time bounds for little write cost.
CREATE TABLE audit (
   id bigserial PRIMARY KEY,
   time double precision NOT NULL,
   user_name text,
   method text,
   serial text,
   source text,
   result text NOT NULL,
   reason text NOT NULL,
   device bigint,
   step bigint,
   drift integer
);
CREATE INDEX idx_audit_time ON audit USING brin (time);

CREATE TABLE sms_codes (
   user_name text PRIMARY KEY,
   hash bytea NOT NULL,
   created_at double precision NOT NULL,
   expires_at double precision NOT NULL
);
CREATE TABLE sms_sends (
   id bigserial PRIMARY KEY,
   time double precision NOT NULL,
   user_name text NOT NULL,
   source text
);
CREATE INDEX idx_sms_sends_time ON sms_sends (time);
CREATE INDEX idx_sms_sends_user_time ON sms_sends (user_name, time);

-- Change tracking for every node's user cache, as in schema.sql. `at` (seconds) lets the
-- housekeeping keep the last hour.
CREATE TABLE changes (
   seq bigserial PRIMARY KEY,
   user_name text NOT NULL,
   at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);

CREATE FUNCTION changes_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.user_name IS NOT NULL THEN INSERT INTO changes (user_name) VALUES (NEW.user_name); END IF;
    RETURN NEW;
  ELSIF TG_OP = 'DELETE' THEN
    IF OLD.user_name IS NOT NULL THEN INSERT INTO changes (user_name) VALUES (OLD.user_name); END IF;
    DELETE FROM device_steps WHERE device = OLD.id;
    RETURN OLD;
  END IF;
  IF OLD.user_name IS NOT NULL THEN INSERT INTO changes (user_name) VALUES (OLD.user_name); END IF;
  IF NEW.user_name IS NOT NULL AND NEW.user_name IS DISTINCT FROM OLD.user_name THEN
    INSERT INTO changes (user_name) VALUES (NEW.user_name);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER changes_devices_insert AFTER INSERT ON devices FOR EACH ROW EXECUTE FUNCTION changes_devices();
CREATE TRIGGER changes_devices_delete AFTER DELETE ON devices FOR EACH ROW EXECUTE FUNCTION changes_devices();
CREATE TRIGGER changes_devices_update AFTER UPDATE OF user_name, serial, seed, kind, digits, algorithm, period, counter, resynced_at ON devices FOR EACH ROW EXECUTE FUNCTION changes_devices();

CREATE FUNCTION changes_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN INSERT INTO changes (user_name) VALUES (NEW.name); RETURN NEW; END IF;
  INSERT INTO changes (user_name) VALUES (OLD.name);
  RETURN NULL;
END $$;
CREATE TRIGGER changes_users AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION changes_users();

CREATE FUNCTION changes_recovery_codes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN INSERT INTO changes (user_name) VALUES (NEW.user_name); RETURN NEW; END IF;
  INSERT INTO changes (user_name) VALUES (OLD.user_name);
  RETURN NULL;
END $$;
CREATE TRIGGER changes_recovery_codes AFTER INSERT OR UPDATE OR DELETE ON recovery_codes FOR EACH ROW EXECUTE FUNCTION changes_recovery_codes();

-- A TOTP device's last used step and drift (none: never used), also the position enable and
-- resync set. A deleted device's steps go with it (changes_devices above).
CREATE TABLE device_steps (
   device bigint PRIMARY KEY,
   step bigint NOT NULL,
   drift integer NOT NULL,
   used_at double precision NOT NULL
);

CREATE TABLE name_rule (rule text);
INSERT INTO name_rule (rule) VALUES (NULL);
CREATE TABLE name_clashes (name text NOT NULL, stored text NOT NULL, PRIMARY KEY (name, stored));

CREATE TABLE key_check (id integer PRIMARY KEY CHECK (id = 1), sealed bytea NOT NULL);

-- Access-Challenge State any node may answer (single use), and recent replies by request, so
-- that a retransmit to another node gets the same answer.
CREATE TABLE challenges (
   state bytea PRIMARY KEY,
   user_name text NOT NULL,
   client text NOT NULL,
   expires double precision NOT NULL,
   kind text NOT NULL,
   data text NOT NULL
);
-- Replies are appended (one COPY per batch, no unique key to check); a key written again (a
-- request decided again while the database could not be asked) keeps its rows, the newest wins.
CREATE TABLE replies (
   id bigserial PRIMARY KEY,
   key bytea NOT NULL,
   reply bytea NOT NULL,
   expires double precision NOT NULL
);
CREATE INDEX replies_key ON replies (key);
