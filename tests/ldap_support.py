"""The tests' throw-away OpenLDAP directory: bench/ldapdir.py's slapd, with the tests' users,
groups and a nested group.

    directory = Slapd.start(base)   # or the session fixture `slapd` (conftest.py)
    directory.ldap_url, directory.ldaps_url, directory.ca_file, directory.search_dn ...

Groups are groupOfNames with `member` DNs, added once slapd runs so that the memberof overlay
gives the members their memberOf (one level: the overlay does not follow nesting). The backend
reads them either way: memberOf (the default) or a group search (`group_filter`), nested ones
by walking up (`nested_groups`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))

import ldapdir  # noqa: E402
from ldapdir import (ROOT_DN, SEARCH_PW, free_port, group_dn, missing_reason,  # noqa: E402, F401
                     user_dn)

GROUP_FILTER = "(&(objectClass=groupOfNames)(member={dn}))"

# uid -> (password, groups it is a direct member of)
USERS = {
    "alice": ("Alice-pw-1", ["vpn-users"]),
    "bob": ("Bob-pw-2", ["vpn-admins"]),  # vpn-admins is inside vpn-users (nested)
    "carol": ("Carol-pw-3", []),  # in no group
    "dave": ("Dave-pw-4", ["vpn-users", "vpn-wifi"]),
}
# group -> groups it is a member of
GROUPS = {"vpn-users": [], "vpn-admins": ["vpn-users"], "vpn-wifi": []}


def group_ldif() -> str:
    entries = []
    # The inner groups first: the memberof overlay fills memberOf of members that exist.
    for group in sorted(GROUPS, key=lambda g: not GROUPS[g]):
        members = [user_dn(u) for u, (_, gs) in USERS.items() if group in gs]
        members += [group_dn(g) for g, above in GROUPS.items() if group in above]
        members = members or [ROOT_DN]  # groupOfNames needs one member
        entries.append(f"dn: {group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n"
                       + "".join(f"member: {m}\n" for m in members))
    return "\n".join(entries)


class Slapd(ldapdir.Slapd):
    @classmethod
    def start(cls, base: Path, users: dict[str, str] | None = None,
              cert_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
              online_ldif: str = "") -> ldapdir.Slapd:
        """The tests' users and groups; `cert_names`: what the server certificate names."""
        users = users or {uid: password for uid, (password, _) in USERS.items()}
        return super().start(base, users, cert_names, online_ldif or group_ldif())
