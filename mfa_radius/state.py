"""First run: create the key file and the database (both 0600), and open them for admin work.

Whatever opens the database here also opens the key file and checks it against the database's
key check (keycheck.bind): a wrong key file is refused before anything is read or written."""

from __future__ import annotations

import os

from .config import Config
from .devices import Devices
from .errors import KeyFileError
from .keycheck import open_keyed
from .sealing import create_key_file, read_key_file
from .store import Store


def init(config: Config) -> list[str]:
    """Create what is missing (key file, database, schema); return what was done, for the admin."""
    done = []
    key_file = config.storage.key_file
    if os.path.exists(key_file):
        read_key_file(key_file)  # refuse a malformed or too-open key before creating a database
        done.append(f"key file {key_file} exists (kept)")
    else:
        if _has_content(config.storage.database):
            raise KeyFileError(f"{key_file}: key file is missing but the database "
                               f"{config.storage.database} exists: its seeds cannot be opened "
                               "without the original key file; restore it from your backup")
        create_key_file(key_file)
        done.append(f"created key file {key_file} (mode 0600): back it up, apart from the database")
    existed = _has_content(config.storage.database)
    store = open_store(config, create=True)  # writes the key check of a new database
    store.close()
    done.append(f"database {config.storage.database} " + ("exists, schema up to date" if existed
                                                         else "created (mode 0600)"))
    return done


def _has_content(path: str) -> bool:
    """A database file that is more than an empty file (which init may turn into one)."""
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def open_store(config: Config, create: bool = False) -> Store:
    """The configured database, once the configured key file is known to be its key."""
    return open_keyed(config, create)[0]


def open_devices(config: Config) -> Devices:
    """The lifecycle API over the configured database and key file."""
    store, sealer = open_keyed(config)
    return Devices(config, store, sealer)
