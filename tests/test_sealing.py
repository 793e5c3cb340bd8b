"""Seeds at rest: the key file, AES-GCM sealing, fingerprints, and what init creates."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat

import pytest

from mfa_radius import config as config_mod
from mfa_radius.errors import KeyFileError
from mfa_radius.sealing import Sealer, create_key_file, read_key_file
from mfa_radius.state import init, open_devices

from mfa_helpers import make_config


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write_key(path, content: bytes, perms: int = 0o600):
    path.write_bytes(content)
    os.chmod(path, perms)


# ---- key file -----------------------------------------------------------------------------------

def test_key_file_is_created_0600_with_32_random_bytes(tmp_path):
    path = tmp_path / "sub" / "secret.key"
    old = os.umask(0)  # even with a permissive umask
    try:
        create_key_file(str(path))
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert len(read_key_file(str(path))) == 32
    other = tmp_path / "other.key"
    create_key_file(str(other))
    assert read_key_file(str(path)) != read_key_file(str(other))


def test_key_file_under_a_non_directory_is_a_key_file_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KeyFileError, match="cannot create key file"):
        create_key_file(str(blocker / "secret.key"))


def test_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "secret.key"
    create_key_file(str(path))
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(str(path))
    assert path.read_bytes() == before


@pytest.mark.parametrize("perms", [0o640, 0o644, 0o604, 0o660, 0o602])
def test_key_file_open_to_group_or_others_is_refused(tmp_path, perms):
    path = tmp_path / "secret.key"
    create_key_file(str(path))
    os.chmod(path, perms)
    with pytest.raises(KeyFileError) as info:
        read_key_file(str(path))
    message = str(info.value)
    assert f"chmod 600 {path}" in message
    assert f"{perms:04o}" in message


def test_key_file_mode_0400_is_fine(tmp_path):
    path = tmp_path / "secret.key"
    create_key_file(str(path))
    os.chmod(path, 0o400)
    assert len(read_key_file(str(path))) == 32


@pytest.mark.parametrize("content", [b"", b"not base64 at all!!\n",
                                     base64.b64encode(b"x" * 31) + b"\n",
                                     base64.b64encode(b"x" * 33) + b"\n",
                                     b"\x00" * 44])
def test_malformed_key_file_is_refused(tmp_path, content):
    path = tmp_path / "secret.key"
    write_key(path, content)
    with pytest.raises(KeyFileError, match="malformed"):
        read_key_file(str(path))


def test_key_file_tolerates_surrounding_whitespace(tmp_path):
    path = tmp_path / "secret.key"
    key = secrets.token_bytes(32)
    write_key(path, b"  " + base64.b64encode(key) + b"\n\n")
    assert read_key_file(str(path)) == key


def test_missing_key_file_names_init(tmp_path):
    with pytest.raises(KeyFileError, match="mfa-radius init"):
        read_key_file(str(tmp_path / "nope.key"))


def test_key_file_must_be_a_regular_file_not_a_symlink(tmp_path):
    real = tmp_path / "real.key"
    create_key_file(str(real))
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError):
        read_key_file(str(link))
    with pytest.raises(KeyFileError):
        read_key_file(str(tmp_path))


# ---- sealing ------------------------------------------------------------------------------------

def test_seal_round_trip_and_randomised():
    sealer = Sealer(secrets.token_bytes(32))
    seed = secrets.token_bytes(20)
    a, b = sealer.seal(seed, "S1"), sealer.seal(seed, "S1")
    assert a != b  # fresh nonce per seal
    assert seed not in a and seed not in b
    assert sealer.unseal(a, "S1") == sealer.unseal(b, "S1") == seed


def test_wrong_key_cannot_unseal():
    seed = secrets.token_bytes(20)
    blob = Sealer(secrets.token_bytes(32)).seal(seed, "S1")
    with pytest.raises(KeyFileError, match="does not open with this key file"):
        Sealer(secrets.token_bytes(32)).unseal(blob, "S1")


def test_sealed_seed_is_bound_to_its_serial():
    sealer = Sealer(secrets.token_bytes(32))
    blob = sealer.seal(secrets.token_bytes(20), "S1")
    with pytest.raises(KeyFileError):
        sealer.unseal(blob, "S2")


@pytest.mark.parametrize("mangle", [lambda b: b[:-1], lambda b: b[:10], lambda b: b"\x02" + b[1:],
                                    lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], lambda b: b""])
def test_tampered_blob_is_refused(mangle):
    sealer = Sealer(secrets.token_bytes(32))
    blob = sealer.seal(secrets.token_bytes(20), "S1")
    with pytest.raises(KeyFileError):
        sealer.unseal(mangle(blob), "S1")


def test_fingerprint_is_keyed_and_deterministic():
    key = secrets.token_bytes(32)
    seed = secrets.token_bytes(20)
    assert Sealer(key).fingerprint(seed) == Sealer(key).fingerprint(seed)
    assert Sealer(key).fingerprint(seed) != Sealer(key).fingerprint(seed + b"\x00")
    assert Sealer(key).fingerprint(seed) != Sealer(secrets.token_bytes(32)).fingerprint(seed)
    assert Sealer(key).fingerprint(seed) != hashlib.sha256(seed).hexdigest()


# ---- init and the files on disk -----------------------------------------------------------------

def test_init_creates_key_and_database_0600(tmp_path):
    cfg = make_config(tmp_path)
    assert mode(cfg.storage.key_file) == 0o600
    assert mode(cfg.storage.database) == 0o600


def test_database_companion_files_are_0600(tmp_path):
    cfg = make_config(tmp_path)
    d = open_devices(cfg)
    try:
        d.create_virtual("S1")
        for suffix in ("-wal", "-shm"):
            path = cfg.storage.database + suffix
            if os.path.exists(path):
                assert mode(path) & 0o077 == 0, suffix
    finally:
        d.store.close()


def test_init_is_idempotent(tmp_path):
    cfg = make_config(tmp_path)
    key = open(cfg.storage.key_file, "rb").read()
    done = init(cfg)
    assert any("kept" in line for line in done)
    assert open(cfg.storage.key_file, "rb").read() == key


def test_init_refuses_a_new_key_next_to_an_existing_database(tmp_path):
    cfg = make_config(tmp_path)
    os.unlink(cfg.storage.key_file)
    with pytest.raises(KeyFileError, match="backup"):
        init(cfg)
    assert not os.path.exists(cfg.storage.key_file)


def test_init_refuses_a_too_open_key_before_creating_the_database(tmp_path):
    path = tmp_path / "mfa-radius.toml"
    path.write_text(f'[storage]\ndatabase = "{tmp_path}/db/mfa.db"\n'
                    f'key_file = "{tmp_path}/secret.key"\n')
    write_key(tmp_path / "secret.key", base64.b64encode(secrets.token_bytes(32)), 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        init(config_mod.load(str(path)))
    assert not os.path.exists(tmp_path / "db" / "mfa.db")


def test_open_devices_refuses_a_too_open_key(tmp_path):
    cfg = make_config(tmp_path)
    os.chmod(cfg.storage.key_file, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        open_devices(cfg)


def test_seeds_are_not_stored_in_clear(tmp_path):
    cfg = make_config(tmp_path)
    d = open_devices(cfg)
    try:
        infos = [d.create_virtual(f"V{i}") for i in range(5)]
        infos += [d.create_virtual(f"H{i}", kind="hotp", digits=8) for i in range(5)]
        raw = b""
        for suffix in ("", "-wal"):
            if os.path.exists(cfg.storage.database + suffix):
                raw += open(cfg.storage.database + suffix, "rb").read()
        for info in infos:
            seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
            for form in (seed, seed.hex().encode(), seed.hex().upper().encode(),
                         info["secret"].encode(), base64.b64encode(seed)):
                assert form not in raw
        # The sealed blobs are there and open with the key.
        row = d.store.device("V0")
        assert d.sealer.unseal(row["seed"], "V0") == base64.b32decode(
            infos[0]["secret"] + "=" * (-len(infos[0]["secret"]) % 8))
    finally:
        d.store.close()


def test_init_keeps_an_existing_key_and_creates_the_missing_database(tmp_path):
    cfg = make_config(tmp_path)
    key = open(cfg.storage.key_file, "rb").read()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(cfg.storage.database + suffix):
            os.unlink(cfg.storage.database + suffix)
    done = init(cfg)
    assert open(cfg.storage.key_file, "rb").read() == key
    assert os.path.exists(cfg.storage.database) and mode(cfg.storage.database) == 0o600
    assert any("created" in line for line in done)
