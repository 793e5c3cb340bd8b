"""Reading small secret files (the sealing key, RADIUS shared secrets, SMS gateway tokens).

One rule for all of them: a regular file, not a symlink, owned by this process's user or by root,
that only its owner may read or write; anything else is refused with the command that fixes it.
(A file of another user is theirs to rewrite or to read, whatever its mode says today.)
"""

from __future__ import annotations

import os
import stat

from .errors import MfaError


def read_private_file(path: str, what: str, error: type[MfaError], prefix: str = "",
                      limit: int = 4096) -> bytes:
    """The first `limit` bytes of `path`; `what` names the file in messages ("key file", ...),
    `prefix` says where it is configured ("RADIUS client 'vpn1': ").

    Raises `error` when the file is missing, unreadable, not a regular file, owned by another
    user than this process's or root, or open to group or others. FileNotFoundError is re-raised
    as is, so callers can say how to create the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except PermissionError:
        raise error(f"{prefix}cannot read {what} {path}: permission denied: run this as root (or "
                    f"as a user who may read {path})") from None
    except OSError as exc:
        raise error(f"{prefix}cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{prefix}{what} {path} is not a regular file")
        euid = os.geteuid()
        if info.st_uid not in (euid, 0):
            raise error(f"{prefix}{what} {path} is owned by uid {info.st_uid}, not by this "
                        f"process's user (uid {euid}) or root; fix it with: chown "
                        f"{user_name(euid)} {path}")
        if info.st_mode & 0o077:
            raise error(f"{prefix}{what} {path} is readable or writable by group or others (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}); fix it with: chmod 600 {path}")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def make_dirs(path: str, mode: int = 0o700, parent_mode: int = 0o700) -> None:
    """Create `path` with `mode` and its missing parents with `parent_mode`, whatever the umask
    (os.makedirs gives the parents the umask's mode: 0777 under umask 000, and anyone could then
    swap what is inside). What exists already is left as it is: the caller checks it."""
    path = os.path.abspath(path)
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to change
        # mkdir's mode is narrowed by the umask, never widened: chmod sets it exactly.
        os.chmod(directory, mode if directory == path else parent_mode)


def make_private_dirs(path: str) -> None:
    """`path` and its missing parents, 0700 (make_dirs); an existing non-directory is an error."""
    make_dirs(path)
    if not os.path.isdir(path):
        raise NotADirectoryError(20, "Not a directory", path)


def user_name(uid: int) -> str:
    """The account name of `uid` for a fix command (`chown NAME ...`), or the uid itself."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
