"""Who is asked for a second factor: exemption, privilege and nullok, from [policy].

Names are canonical (rules.names); a user's groups are given as data (the verifier looks them up
in NSS through mfa_radius.accounts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from . import names


class AccessPolicy(Protocol):
    @property
    def username_case(self) -> str: ...

    @property
    def exempt_users(self) -> list[str]: ...

    @property
    def privileged_users(self) -> list[str]: ...

    @property
    def privileged_groups(self) -> list[str]: ...

    @property
    def nullok(self) -> bool: ...

    @property
    def nullok_groups(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Access:
    """[policy]'s exemption, privilege and nullok settings, ready for per-attempt checks."""

    exempt_users: frozenset[str]
    # Fold keys (rules.names.fold_key): any case variant of a privileged name is privileged,
    # whatever username_case says; root always is.
    privileged_users: frozenset[str]
    privileged_groups: frozenset[str]
    nullok: bool
    nullok_groups: frozenset[str]
    fold: bool  # username_case = "fold": canonical names are their own fold keys

    @classmethod
    def of(cls, policy: AccessPolicy) -> Access:
        return cls(exempt_users=frozenset(policy.exempt_users),
                   privileged_users=frozenset(names.fold_key(u) for u in policy.privileged_users)
                   | {"root"},
                   privileged_groups=frozenset(policy.privileged_groups),
                   nullok=policy.nullok, nullok_groups=frozenset(policy.nullok_groups),
                   fold=policy.username_case == names.FOLD)

    def is_exempt(self, user: str) -> bool:
        """Listed in exempt_users: no second factor is asked."""
        return user in self.exempt_users

    def privileged_by_name(self, user: str) -> bool:
        return (user if self.fold else names.fold_key(user)) in self.privileged_users

    def is_privileged(self, user: str, groups: Iterable[str]) -> bool:
        """root, a privileged_users name (any case) or a member of privileged_groups."""
        return self.privileged_by_name(user) or not self.privileged_groups.isdisjoint(groups)

    def allowed_without_device(self, user: str, groups: Iterable[str]) -> bool:
        """nullok (or a nullok_groups member) lets this user through without any second factor.
        Never a privileged user, nor a name with a realm left in it (strip_realm = false): that
        is not a local account."""
        groups = frozenset(groups)
        if names.realm_qualified(user) or self.is_privileged(user, groups):
            return False
        return self.nullok or not self.nullok_groups.isdisjoint(groups)


def sms_usable(phone: str | None, privileged: bool) -> bool:
    """Whether a user's phone counts as a method: a privileged user's phone (left from an older
    policy) is never used, not even to check a code."""
    return bool(phone) and not privileged
