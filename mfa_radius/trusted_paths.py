"""May root trust a path? Only if root alone can change what it names.

Code running as root (the PAM fallback inside sudo and su, `serve`) reads its config, key, database,
secret files and Python packages from paths; if any user but root can write the file, or rename
anything in a directory above it, that user decides what root reads. The rule, as OpenSSH's
safe_path applies it to authorized_keys: the file and every directory up to `/` are owned by root
and writable by neither group nor others. A symbolic link is followed and its target is checked the
same way, from `/` (the link itself sits in a directory already checked, so only root placed it).

A sticky world-writable directory such as /tmp is refused too: the rule has no exception, and a
config or key file has no business there.

`untrusted()` is stdlib-only and self-contained because pam_module/pam_mfa_impl.py carries the same
function (a test keeps the two identical): the module must check the virtualenv it is about to
import mfa_radius from before it can import anything from there.
"""

from __future__ import annotations

import os

from .errors import ConfigError, MfaError


def untrusted(path):
    """None if `path` and every directory above it are root's alone (links followed); otherwise
    (the path at fault, what is wrong with it)."""
    import os
    import stat

    if not path.startswith("/"):
        return path, "is not an absolute path"
    todo = [part for part in path.split("/") if part and part != "."]
    current, links = "/", 0
    while True:
        try:
            st = os.lstat(current)
        except OSError as exc:
            return current, "cannot be checked (%s)" % (exc.strerror or type(exc).__name__)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                return current, "has too many levels of symbolic links"
            target = os.readlink(current)
            todo = [part for part in target.split("/") if part and part != "."] + todo
            current = "/" if target.startswith("/") else os.path.dirname(current)
            continue
        if st.st_uid != 0:
            return current, "is owned by uid %d, not root" % st.st_uid
        if st.st_mode & 0o022:
            return current, "is writable by group or others (mode %04o)" % (st.st_mode & 0o7777)
        if not todo:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return current, "is not a directory"
        part = todo.pop(0)
        # `current` holds no link here, so its lexical parent is its real parent.
        current = os.path.dirname(current) if part == ".." else os.path.join(current, part)


def fix_for(culprit: str, problem: str) -> str:
    """The command that makes `culprit` trusted, for the refusal's message."""
    if "not root" in problem:
        return f"chown root:root {culprit} && chmod go-w {culprit}"
    if "writable" in problem:
        if "(mode 1" in problem:
            # /tmp and the like are shared on purpose: the file must move, not the directory.
            return "move it to a directory only root can write to (e.g. /etc/mfa-radius)"
        return f"chmod go-w {culprit}" + (" (or move the file out of it)"
                                          if os.path.isdir(culprit) else "")
    return "use an absolute path to a root-owned file"


def check_trusted(path: str, what: str, error: type[MfaError] = ConfigError) -> None:
    """Raise `error` naming `what` ("config file", ...), the path at fault and the fix, unless root
    alone can change `path` (see untrusted())."""
    fault = untrusted(path)
    if fault is None:
        return
    culprit, problem = fault
    if culprit == path and problem.startswith("cannot be checked") and not os.path.lexists(path):
        return  # missing, in a trusted directory: opening it says so, with how to create it
    where = "it" if culprit == path else culprit
    raise error(f"untrusted {what} {path}: {where} {problem}; fix it with: "
                f"{fix_for(culprit, problem)}")


def root_files(cfg, *, database: bool) -> list[tuple[str, str]]:
    """(path, what) of every file a root process reads because `cfg` names it: the config itself,
    the key file, RADIUS client, SMS gateway and [ldap] secret files (and its CA file), and with
    `database` the database and its directory (the PAM fallback opens it as root; `serve` may
    run as another user)."""
    files = [(cfg.path, "config file"), (cfg.storage.key_file, "key file")]
    if cfg.storage.password_file:
        files.append((cfg.storage.password_file, "password_file of [storage]"))
    if database and not cfg.storage.shared:
        db = cfg.storage.database
        files.append((os.path.dirname(db) or ".", "database directory"))
        if os.path.lexists(db):
            files.append((db, "database file"))
    if cfg.radius.password_backend == "ldap":
        # The CA too: whoever may write it chooses which directory the passwords are sent to.
        files += [(getattr(cfg.ldap, k), f"{k} of [ldap]")
                  for k in ("bind_password_file", "ca_file") if getattr(cfg.ldap, k)]
    files += [(c.secret_file, f"secret_file of RADIUS client '{c.name}'")
              for c in cfg.radius.clients if c.secret_file]
    files += [(u.secret_file, f"secret_file of upstream RADIUS server {u.address}")
              for u in cfg.radius.upstream if u.secret_file]
    for gw in cfg.sms.gateways:
        for name in ("secret_file", "auth_token_file"):
            if getattr(gw, name):
                files.append((getattr(gw, name), f"{name} of SMS gateway '{gw.name or gw.type}'"))
    return files


def check_root_files(cfg, *, database: bool) -> None:
    """check_trusted() for each of root_files(cfg); a no-op unless this process runs as root."""
    if os.geteuid() != 0:
        return
    for path, what in root_files(cfg, database=database):
        check_trusted(path, what)
