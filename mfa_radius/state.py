"""First run: create the key file and the database (both 0600), and open them for admin work.

Whatever opens the database here also opens the key file and checks it against the database's
key check (keycheck.bind): a wrong key file is refused before anything is read or written."""

from __future__ import annotations

import logging
import os

from . import names
from .config import Config
from .config.schema import StorageConfig
from .devices import Devices
from .errors import KeyFileError, MfaError
from .keycheck import open_keyed
from .sealing import Sealer, create_key_file, read_key_file
from .store import Storage, open_store as open_database

log = logging.getLogger("mfa_radius.names")


def init(config: Config) -> list[str]:
    """Create what is missing (key file, database, schema); return what was done, for the admin."""
    done = []
    key_file = config.storage.key_file
    if os.path.exists(key_file):
        read_key_file(key_file)  # refuse a malformed or too-open key before creating a database
        done.append(f"key file {key_file} exists (kept)")
    else:
        if _has_content(config.storage):
            raise KeyFileError(f"{key_file}: key file is missing but the database "
                               f"{config.storage.location} exists: its seeds cannot be opened "
                               "without the original key file; restore it from your backup "
                               "(or copy it from another node)")
        create_key_file(key_file)
        done.append(f"created key file {key_file} (mode 0600): back it up, apart from the database")
    existed = _has_content(config.storage)
    # Writes the key check of a new database; refuses one bound to another key file.
    store = open_store(config, create=True)
    store.close()
    if config.storage.shared:
        done.append(f"database {config.storage.location} " +
                    ("holds mfa-radius data, schema up to date" if existed
                     else "ready (schema created)"))
    else:
        done.append(f"database {config.storage.database} " +
                    ("exists, schema up to date" if existed else "created (mode 0600)"))
    return done


def _has_content(storage: StorageConfig) -> bool:
    """A database file that is more than an empty file (which init may turn into one); for a
    shared database, one whose key check is written (it has been initialised, by any node)."""
    if storage.shared:
        try:
            store = open_database(storage)
        except MfaError:  # unreachable, or no schema yet: open_store says which, if it matters
            return False
        try:
            with store.errors("reading the key check"):
                return store.key_check() is not None
        except MfaError:
            return False
        finally:
            store.close()
    try:
        return os.path.getsize(storage.database) > 0
    except OSError:
        return False


def open_keyed_store(config: Config, create: bool = False,
                     check_all_names: bool = False) -> tuple[Storage, Sealer]:
    """The configured database and key file, once the key is known to be the database's
    (keycheck), with the stored user names in the config's canonical form (bring_names; every
    name checked again with `check_all_names`)."""
    store, sealer = open_keyed(config, create)
    try:
        bring_names(store, config, force=check_all_names)
    except BaseException:
        store.close()
        raise
    return store, sealer


def open_store(config: Config, create: bool = False, check_all_names: bool = False) -> Storage:
    """The configured database: see open_keyed_store."""
    return open_keyed_store(config, create, check_all_names)[0]


def bring_names(store: Storage, config: Config, force: bool = False) -> list[str]:
    """Rename stored user names to the config's rule when they were brought to another one (or
    never: a database from before schema v8), or with `force` (serve, at start) check them all
    again. Returns the lines for the admin (clashes, refused names), also logged as warnings."""
    canonical, rule = names.policy_rule(config.policy)
    with store.errors("canonicalising stored user names"):
        plan = store.canonicalise_names(canonical, rule, force=force)
    if plan is None:
        return []
    for old, new in plan.renames.items():
        log.info("stored user name %s renamed to %s (%s)", names.describe(old),
                 names.describe(new), rule)
    lines = names.plan_lines(plan)
    for line in lines:
        log.warning("%s", line)
    return lines


def name_report(config: Config) -> list[str]:
    """The clashes and refused names the config's rule finds among the stored user names, read
    without writing (check-config): [] when the database does not exist yet."""
    path = config.storage.database
    if not config.storage.shared and not os.path.exists(path):
        return []
    canonical, _ = names.policy_rule(config.policy)
    try:
        store = open_database(config.storage, readonly=True)
    except MfaError as exc:
        return [str(exc)]
    try:
        with store.errors("reading stored user names"):
            stored = store.stored_names(holders_only=True)
    except MfaError as exc:
        return [str(exc)]
    finally:
        store.close()
    return names.plan_lines(names.plan(stored, canonical))


def open_devices(config: Config) -> Devices:
    """The lifecycle API over the configured database and key file."""
    store, sealer = open_keyed(config)
    return Devices(config, store, sealer)


def copy_store(config: Config, dsn: str, password_file: str = "") -> dict[str, int]:
    """Copy the configured SQLite database into the (empty) PostgreSQL database at `dsn`,
    creating the schema there; {table: rows copied}, verified by counts. Refused when the
    config already uses PostgreSQL, when the target holds devices or users, or when it is bound
    to another key file than this database."""
    import dataclasses

    from .keycheck import mismatch, open_keyed
    from .secret_files import dsn_problem, private_file_problem
    from .store.copy import copy_sqlite_to_postgres

    if config.storage.shared:
        raise MfaError("store copy copies a SQLite database: the config already uses "
                       f"PostgreSQL ({config.storage.location})")
    problem = dsn_problem(dsn)
    if problem:
        raise MfaError(f"--to {problem.replace('storage.password_file', '--password-file')}")
    if password_file:
        problem = private_file_problem(password_file)
        if problem:
            raise MfaError(f"--password-file {problem}")
    target_cfg = dataclasses.replace(config.storage, backend="postgresql", dsn=dsn,
                                     password_file=password_file)
    source, sealer = open_keyed(config)
    try:
        target = open_database(target_cfg, create=True)
        try:
            with target.errors("reading the key check"):
                bound = target.key_check()
            if bound is not None and not sealer.matches_key_check(bound):
                raise mismatch(config.storage.key_file, dsn)
            return copy_sqlite_to_postgres(source, target)
        finally:
            target.close()
    finally:
        source.close()
