"""The checks of `[ldap]`: what the loader runs on every load (`problem`) and what only `serve`
and `check-config` read (`serving_problem`: the password and CA files).

Each returns (key, message) or None, for the loader to name file:line. Plain ldap:// without
StartTLS sends the search account's and every user's password in clear: refused unless
`allow_plaintext = true`, which is warned about (`plaintext_servers`).
"""

from __future__ import annotations

import os
from typing import Any

from ..secret_files import private_file_problem

Problem = tuple[str, str] | None


def plaintext_servers(ldap: Any) -> list[str]:
    """The servers a password would cross in clear."""
    if ldap.starttls:
        return []
    return [s for s in ldap.servers if s.lower().startswith("ldap://")]


def problem(ldap: Any, backend: str) -> Problem:
    """What is wrong with `[ldap]` as `password_backend` uses it (None: nothing). The key may
    name another section ("radius.password_backend")."""
    if backend != "ldap":
        return ("servers", "'[ldap]' is only used with [radius] password_backend = \"ldap\"") \
            if ldap.servers else None
    if not ldap.servers:
        return ("radius.password_backend", "password_backend = \"ldap\" needs 'ldap.servers' "
                "(\"ldaps://dc1.example.com\", ...)")
    for url in ldap.servers:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("ldap", "ldaps") or not rest.strip("/"):
            return ("servers", f"'ldap.servers': {url!r} is not ldap://HOST[:PORT] or "
                    "ldaps://HOST[:PORT]")
    plain = plaintext_servers(ldap)
    if plain and not ldap.allow_plaintext:
        return ("servers", f"'ldap.servers': {plain[0]} without TLS would send passwords in "
                "clear: use ldaps://, set starttls = true, or allow_plaintext = true")
    if bool(ldap.bind_dn) == bool(ldap.bind_format):
        return ("bind_dn", "'[ldap]' needs exactly one of 'bind_dn' (a search account) or "
                "'bind_format' (\"{user}@example.com\")")
    if ldap.bind_dn:
        if not ldap.bind_password_file:
            return ("bind_password_file", "'ldap.bind_dn' needs 'ldap.bind_password_file' "
                    "(0600)")
        if not ldap.base_dn:
            return ("base_dn", "'ldap.bind_dn' needs 'ldap.base_dn', where users are searched")
    elif ldap.bind_password_file:
        return ("bind_password_file", "'ldap.bind_password_file' is only used with 'bind_dn'")
    if ldap.bind_format and "{user}" not in ldap.bind_format:
        return ("bind_format", "'ldap.bind_format' must contain {user}")
    if "{user}" not in ldap.user_filter or not _balanced(ldap.user_filter):
        return ("user_filter", "'ldap.user_filter' must be one parenthesised LDAP filter "
                "holding {user}")
    if ldap.group_filter and ("{dn}" not in ldap.group_filter
                              or not _balanced(ldap.group_filter)):
        return ("group_filter", "'ldap.group_filter' must be one parenthesised LDAP filter "
                "holding {dn}")
    if not ldap.base_dn and (ldap.required_groups or ldap.group_filter or ldap.user_attribute
                             or ldap.nested_groups):
        return ("base_dn", "groups and user_attribute are read from the directory: set "
                "'ldap.base_dn'")
    return None


def serving_problem(ldap: Any) -> Problem:
    """The files `serve` reads: a private password file, a readable CA file."""
    if ldap.bind_password_file:
        found = private_file_problem(ldap.bind_password_file)
        if found:
            return ("bind_password_file", f"'ldap.bind_password_file' {found}")
    if ldap.ca_file:
        if not os.path.isabs(ldap.ca_file):
            return ("ca_file", f"'ldap.ca_file' must be an absolute path, not {ldap.ca_file!r}")
        try:
            with open(ldap.ca_file, "rb") as fh:
                head = fh.read(65536)
        except OSError as exc:
            return ("ca_file", f"'ldap.ca_file' {ldap.ca_file}: cannot be read: {exc.strerror}")
        if b"-----BEGIN CERTIFICATE-----" not in head:
            return ("ca_file", f"'ldap.ca_file' {ldap.ca_file}: no PEM certificate in it")
    return None


def _balanced(text: str) -> bool:
    """One parenthesised filter: starts with (, ends with the ) that closes it."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(text) - 1):
                return False
    return text.startswith("(") and depth == 0
