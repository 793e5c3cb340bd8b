"""First run: create the key file and the database (both 0600), and open them for admin work."""

from __future__ import annotations

import os

from .config import Config
from .devices import Devices
from .errors import KeyFileError
from .sealing import Sealer, create_key_file, read_key_file
from .store import Store


def init(config: Config) -> list[str]:
    """Create what is missing (key file, database, schema); return what was done, for the admin."""
    done = []
    key_file = config.storage.key_file
    if os.path.exists(key_file):
        read_key_file(key_file)  # refuse a malformed or too-open key before creating a database
        done.append(f"key file {key_file} exists (kept)")
    else:
        if os.path.exists(config.storage.database):
            raise KeyFileError(f"{key_file}: key file is missing but the database "
                               f"{config.storage.database} exists: its seeds cannot be opened "
                               "without the original key file; restore it from your backup")
        create_key_file(key_file)
        done.append(f"created key file {key_file} (mode 0600): back it up, apart from the database")
    existed = os.path.exists(config.storage.database)
    store = open_store(config, create=True)
    store.close()
    done.append(f"database {config.storage.database} " + ("exists, schema up to date" if existed
                                                         else "created (mode 0600)"))
    return done


def open_store(config: Config, create: bool = False) -> Store:
    return Store.open(config.storage.database, create=create,
                      synchronous=config.storage.synchronous,
                      busy_timeout=config.storage.busy_timeout)


def open_devices(config: Config) -> Devices:
    """The lifecycle API over the configured database and key file."""
    sealer = Sealer.from_file(config.storage.key_file)
    return Devices(config, open_store(config), sealer)
