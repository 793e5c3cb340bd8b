"""Helpers shared by the core tests: a fresh config/key/database, directly assigned devices."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from mfa_radius import config as config_mod
from mfa_radius.devices import DeviceSpec, Devices
from mfa_radius.otp import OtpKey, time_step
from mfa_radius.state import init, open_devices
from mfa_radius.verifier import Attempt, Verifier

# The middle of a 30 s step, far from any real clock: tests pass `now=` explicitly.
NOW = 1_800_000_015.0
STEP = time_step(NOW, 30)


def make_config(tmp_path: Path, extra: str = "", name: str = "mfa-radius.toml", backend=None):
    """A config in `tmp_path` with `extra` TOML appended, after init (key file + database);
    `backend`: the conftest `backend` fixture's value (None: SQLite)."""
    path = tmp_path / name
    pg = "" if backend in (None, "sqlite") else backend.storage_toml()
    path.write_text(
        "[storage]\n"
        f'database = "{tmp_path}/mfa.db"\n'
        f'key_file = "{tmp_path}/secret.key"\n'
        'synchronous = "normal"\n' + pg + extra)
    cfg = config_mod.load(str(path))
    init(cfg)
    return cfg


def assign(devices: Devices, user: str | None, serial: str, *, kind: str = "totp",
           digits: int = 6, algorithm: str = "SHA1", period: int = 30,
           counter: int = 0) -> OtpKey:
    """Add a device with a fresh seed (assigned to `user` at once); return a key for its codes."""
    seed = secrets.token_bytes(20)
    devices.add([DeviceSpec(serial, seed, kind, digits, algorithm, period, counter, user)])
    return OtpKey(seed, algorithm, digits)


_COLUMNS = ("serial, kind, virtual, digits, algorithm, period, counter, seed, "
            "fingerprint, user, created_at, enabled_at")


def foreign_device(tmp_path, cfg, user: str, serial: str):
    """A device of `user` sealed under another key file (made with another config's public API,
    its row then copied into `cfg`'s database as a restore from the wrong host would); its key."""
    (tmp_path / "other").mkdir(exist_ok=True)
    other = make_config(tmp_path / "other")
    devices = open_devices(other)
    key = assign(devices, user, serial)
    devices.store.close()
    con = sqlite3.connect(cfg.storage.database)
    con.execute("ATTACH DATABASE ? AS other", (other.storage.database,))
    con.execute(f"INSERT INTO devices ({_COLUMNS}) SELECT {_COLUMNS} FROM other.devices "
                "WHERE serial = ?", (serial,))
    con.commit()
    con.close()
    return key


def totp_at(key: OtpKey, now: float, offset: int = 0, period: int = 30) -> str:
    """The code `offset` steps away from the step containing `now`."""
    return key.code(time_step(now, period) + offset)


def verify(verifier: Verifier, user: str, code: str, now: float = NOW, source: str = "test"):
    return verifier.verify(Attempt(user, code, source, now))


__all__ = ["NOW", "STEP", "make_config", "assign", "foreign_device", "totp_at", "verify",
           "open_devices"]
