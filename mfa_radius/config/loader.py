"""Reading the config: TOML into the typed sections (schema.py), unknown keys and wrong types
refused, every error naming file, line and key; then the checks of meaning (checks.py).

Unknown keys are errors: a misspelt key silently ignored is a security bug in an authentication
server.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from typing import get_args, get_origin, get_type_hints

from ..errors import ConfigError
from ..trusted_paths import check_root_files
from . import checks
from .lines import where as _where
from .schema import ENV_VAR, SECTIONS, Config


def load(path: str, *, serving: bool = False) -> Config:
    """Read and validate `path`; raise ConfigError naming the file, line and key.

    `serving=True` (`serve`, its reloads and `check-config`) also runs the checks that read other
    files: as root, that the config, key and secret files are root's alone (trusted_paths); each
    RADIUS client's secret_file, and the reply attributes against the RADIUS dictionary. So
    `check-config` accepts exactly what `serve` accepts, while the PAM fallback, which needs
    neither, loads without reading RADIUS secrets into a login process.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (use --config FILE or {ENV_VAR})") \
            from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    cfg = from_dict(data, path=path, text=text)
    if serving:
        # As root: the config, key and secret files must be root's alone, up to /, before any
        # secret file is read.
        check_root_files(cfg, database=False)
        checks.serving(cfg, path, text)
    return cfg


def from_dict(data: dict, path: str = "<config>", text: str = "") -> Config:
    """Build a Config from parsed TOML, refusing unknown keys and wrong types."""
    sections = {}
    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(_where(path, text, None, name) + f"unknown section [{name}]"
                              f" (known: {', '.join(sorted(SECTIONS))})")
        if not isinstance(value, dict):
            raise ConfigError(_where(path, text, None, name) + f"[{name}] must be a table")
        sections[name] = _build(SECTIONS[name], value, name, path, text)
    cfg = Config(path=path, **sections)
    checks.semantics(cfg, path, text)
    cfg = checks.canonical_names(cfg, path, text)
    checks.sms(cfg, data.get("sms", {}).get("gateways", []), path, text)
    return cfg


def _build(cls: type, values: dict, dotted: str, path: str, text: str):
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    section, _, _ = dotted.partition(".")
    if "[" in dotted:  # an entry of a [[table array]]: errors point into that entry
        section = dotted
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_where(path, text, section, key) + f"unknown key '{dotted}.{key}'"
                              f" (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(hints[key], value, f"{dotted}.{key}", fields[key].metadata,
                              path, text, section, key)
    missing = [f.name for f in fields.values()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in kwargs]
    if missing:
        raise ConfigError(_where(path, text, section, None) + f"'{dotted}' is missing required key "
                          f"'{missing[0]}'")
    return cls(**kwargs)


def _coerce(hint, value, dotted, meta, path, text, section, key):
    def bad(expected: str) -> ConfigError:
        return ConfigError(_where(path, text, section, key) +
                           f"'{dotted}' must be {expected}, not {type(value).__name__} {value!r}")

    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(inner, value, dotted, meta, path, text, section, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif hint is float:
        # TOML allows nan and inf: nan passes every bound (a nan lockout_delay disables lockout).
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise bad("a finite number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise bad("a string")
    elif origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        (item,) = args
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            out = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise bad("a list of tables")
                out.append(_build(item, entry, f"{dotted}[{i}]", path, text))
            return out
        if item is str and not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    elif origin is dict:
        if not isinstance(value, dict):
            raise bad("a table")
        return dict(value)
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be one of {', '.join(meta['choices'])}, not {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be at least {meta['min']}, not {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be at most {meta['max']}, not {value!r}")
    return value
