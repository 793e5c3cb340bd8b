"""Binding a database to its key file, so that a wrong key is refused before it seals anything.

The database holds a constant sealed under its key (Storage.key_check). Everything that opens the
key with the database (the daemon, the PAM fallback, the CLI, housekeeping, backup) checks it; a
mismatch is one line and exit 2, before anything is read or written. A database made before the
check existed is bound by the first key that opens its oldest seeds (the ones sealed first, by
the key it was created with), or by the first key at all when it holds no seeds.
"""

from __future__ import annotations

from .config import Config
from .errors import KeyFileError
from .sealing import Sealer
from .store import Storage, open_store

# Seeds tried when binding an older database: the oldest must open, or most of these.
SAMPLE = 16


def mismatch(key_file: str, database: str) -> KeyFileError:
    return KeyFileError(f"key file {key_file} does not match database {database} (its seeds "
                        "were sealed under another key: check [storage] key_file, or restore "
                        "the right key file from your backup)")


def bind(store: Storage, sealer: Sealer, key_file: str) -> None:
    """Raise KeyFileError unless `sealer` is the database's key; bind an unbound database."""
    sealed = store.key_check()
    if sealed is None:
        seeds = store.oldest_seeds(SAMPLE)
        opened = [sealer.opens(seed, serial) for serial, seed in seeds]
        # A few unopenable rows (copied or tampered with) do not stop the right key; seeds that
        # a wrong key sealed later (what this check prevents from now on) are not the oldest.
        if opened and not (opened[0] or 2 * sum(opened) > len(opened)):
            raise mismatch(key_file, store.path)
        if store.set_key_check(sealer.key_check()):
            return
        sealed = store.key_check()  # another process bound it meanwhile: theirs decides
    if sealed is None or not sealer.matches_key_check(sealed):
        raise mismatch(key_file, store.path)


def open_keyed(config: Config, create: bool = False) -> tuple[Storage, Sealer]:
    """The configured database (created with `create`) and key, checked against each other."""
    storage = config.storage
    sealer = Sealer.from_file(storage.key_file)
    store = open_store(storage, create=create)
    try:
        bind(store, sealer, storage.key_file)
    except BaseException:
        store.close()
        raise
    return store, sealer
