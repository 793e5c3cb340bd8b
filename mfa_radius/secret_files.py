"""The PostgreSQL connection's secrets: a DSN that must not hold a password, and the private file
the password is read from instead (a config file is read by more than the server: check-config,
the PAM fallback, an admin's editor)."""

from __future__ import annotations

import os
import stat
import urllib.parse

from .errors import ConfigError


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with `dsn` ("must ..."), or None: a postgresql:// URL (or libpq's
    key=value form) without a password."""
    if dsn.startswith(("postgresql://", "postgres://")):
        try:
            parts = urllib.parse.urlsplit(dsn)
            query = urllib.parse.parse_qs(parts.query)
        except ValueError as exc:
            return f"is not a valid postgresql:// URL: {exc}"
        if parts.password is not None or "password" in query:
            return "must not contain a password: put it in 'storage.password_file' (0600)"
        return None
    if "=" in dsn:
        keys = {item.split("=", 1)[0].strip() for item in dsn.split() if "=" in item}
        if "password" in keys:
            return "must not contain a password: put it in 'storage.password_file' (0600)"
        return None
    return "must be a postgresql://USER@HOST:PORT/DB URL"


def private_file_problem(path: str) -> str | None:
    """Why `path` may not hold a password, or None: it must be a regular file, mode 0600 or
    0400, owned by this user or root."""
    if not os.path.isabs(path):
        return f"must be an absolute path, not {path!r}"
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path}: cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: is not a regular file"
    if st.st_mode & 0o177:
        return (f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it: "
                f"chmod 600 {path}")
    if st.st_uid not in (0, os.geteuid()):
        return f"{path}: owned by uid {st.st_uid}, not by this user or root"
    return None


def read_password(path: str) -> str:
    """The password in `path` (its first line), once the file is known to be private."""
    problem = private_file_problem(path)
    if problem:
        raise ConfigError(f"[storage] password_file {problem}")
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[storage] password_file {path}: cannot be read: {exc}") from None
    return first.rstrip("\r\n")
