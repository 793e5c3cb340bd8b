"""User-name canonicalisation: the one rule that turns a name as sent into the name policy sees.

A pure function of a string and two settings (`[policy] strip_realm`, `[policy] username_case`);
no I/O. The RADIUS server, the PAM socket front, the PAM in-process fallback, the verifier, the
CLI, enrolment and import all pass every user name through it before anything else, and the
config's lists of user names are canonicalised at load time, so that `ALICE`, `Alice`,
`EXAMPLE\\alice` and `alice@EXAMPLE` are alice everywhere (an appliance that checks passwords
against a case-insensitive directory accepts them all as alice's).

The rule follows RFC 8265 (PRECIS usernames), profile UsernameCaseMapped ("fold") or
UsernameCasePreserved ("exact"), with what a RADIUS server must add:

1. Refused (`reason=malformed`): empty; longer than MAX_LEN characters; leading or trailing
   whitespace; any control character (C0, DEL, C1), format character (zero-width characters,
   bidi overrides and isolates, the byte-order mark), line or paragraph separator, surrogate,
   or whitespace other than an inner U+0020 SPACE.
2. Full- and half-width forms are mapped to their ordinary forms (RFC 8265 width mapping):
   `ａｌｉｃｅ` is alice, as directories that ignore width see it.
3. NFC normalisation: a composed and a decomposed `é` are one name.
4. With strip_realm: `DOMAIN\\user` and `user@realm` become `user`; an empty part on either side,
   or a second separator, is refused. Without it the name is kept whole, and
   `realm_qualified(name)` says it is not a local account (no nullok, no exemption).
5. "fold": lower case (str.lower, then NFC again). Not str.casefold: case folding maps `ß` to
   `ss` and would make two distinct directory accounts one; RFC 8265 moved from case folding to
   toLowerCase for that reason, and sssd (case_sensitive = false) lower-cases too.

`fold_key(name)` is the fold-mode form of any name, for the checks that must not depend on the
case setting: `ROOT` is root even on a host that keeps case.
"""

from __future__ import annotations

import shlex
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import MfaError

MAX_LEN = 256
FOLD, EXACT = "fold", "exact"
# Bumped whenever the rule itself changes, so that stored names are canonicalised again
# (Store.canonicalise_names compares it with the rule the database was last brought to).
RULE_VERSION = 1
# Categories never allowed anywhere in a name: controls (C0, DEL, C1), format characters
# (U+200B-U+200F, U+202A-U+202E, U+2060-U+2069, U+FEFF, soft hyphen), surrogates, line and
# paragraph separators. Spaces other than U+0020 (Zs) are refused separately.
_REFUSED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_WIDTH_TAGS = ("<wide>", "<narrow>")


class UserNameError(MfaError):
    """A user name the rule refuses; `reason` is what a decision line says (`malformed`)."""

    def __init__(self, message: str, reason: str = "malformed"):
        super().__init__(message)
        self.reason = reason


class NamePolicy(Protocol):
    """What the rule reads of a config's [policy] (config.PolicyConfig)."""

    @property
    def strip_realm(self) -> bool: ...

    @property
    def username_case(self) -> str: ...


def canonical_user(raw: str, policy: NamePolicy) -> str:
    """The canonical form of user name `raw` under `policy`; UserNameError if it is refused."""
    return canonicaliser(policy.strip_realm, policy.username_case)(raw)


def canonicaliser(strip_realm: bool = True, case: str = FOLD) -> Callable[[str], str]:
    """The rule with its two settings bound: a function name -> canonical name (or raises).

    Built once per config; it runs on the RADIUS hot path, so the plain ASCII lower-case name
    (the common case) returns after three string checks.
    """
    if case not in (FOLD, EXACT):
        raise ValueError(f"username_case must be {FOLD!r} or {EXACT!r}, not {case!r}")
    fold = case == FOLD

    def canonical(raw: str) -> str:
        # Fast paths: letters and digits only cannot hold a separator, a space or a control;
        # then printable ASCII already in lower case ("john.doe") without a realm.
        if raw.isascii() and 0 < len(raw) <= MAX_LEN:
            if raw.isalnum():
                if not fold or raw.islower() or raw.isdigit():
                    return raw
            elif ((not fold or raw.islower()) and raw.isprintable() and raw[0] != " "
                    and raw[-1] != " " and (not strip_realm or ("@" not in raw
                                                                 and "\\" not in raw))):
                return raw
        return _slow(raw, strip_realm, fold)

    return canonical


def rule_id(strip_realm: bool, case: str) -> str:
    """A string naming the rule and its settings, recorded with stored names."""
    return f"v{RULE_VERSION} case={case} realm={'strip' if strip_realm else 'keep'}"


def policy_rule(policy: NamePolicy) -> tuple[Callable[[str], str], str]:
    """(canonicaliser, rule_id) of a config's [policy]."""
    return (canonicaliser(policy.strip_realm, policy.username_case),
            rule_id(policy.strip_realm, policy.username_case))


def realm_qualified(name: str) -> bool:
    """True for a name that still carries a domain or realm (`[policy] strip_realm = false`):
    not a local account, so never let through by nullok or exemption."""
    return "@" in name or "\\" in name


def fold_key(name: str) -> str:
    """The fold-mode form of `name` (realm kept), or "" when the rule refuses it."""
    try:
        return _FOLD_KEEP(name)
    except UserNameError:
        return ""


def describe(name: str) -> str:
    """`name` escaped for one line of a message: controls, bidi and non-ASCII as escapes."""
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")[:MAX_LEN + 16]


@dataclass(frozen=True)
class NamePlan:
    """What bringing stored names to a rule means (`plan`)."""

    renames: dict[str, str]  # stored name -> its canonical form, where nothing else folds to it
    clashes: dict[str, list[str]]  # canonical name -> the distinct stored names folding to it
    refused: list[str]  # stored names the rule refuses: nobody can sign in as them any more


def plan(stored: Iterable[str], canonical: Callable[[str], str]) -> NamePlan:
    """Group stored user names by canonical form. A name alone in its group is renamed to that
    form (when it is not already in it); two or more are a clash, never merged: which account's
    devices, codes and lockout would win is the admin's call (`mfa-radius user rename`)."""
    groups: dict[str, set[str]] = {}
    refused = []
    for name in stored:
        try:
            groups.setdefault(canonical(name), set()).add(name)
        except UserNameError:
            refused.append(name)
    renames, clashes = {}, {}
    for canon, members in groups.items():
        if len(members) > 1:
            clashes[canon] = sorted(members)
        elif (only := next(iter(members))) != canon:
            renames[only] = canon
    return NamePlan(renames, dict(sorted(clashes.items())), sorted(refused))


def follower_renames(others: Iterable[str], canonical: Callable[[str], str],
                     result: NamePlan) -> dict[str, str]:
    """Renames for names that hold nothing (only in the SMS send log): each follows its user's
    canonical name, unless that name is a clash of `result` or the name is refused."""
    out = {}
    for old in others:
        try:
            new = canonical(old)
        except UserNameError:
            continue
        if new != old and new not in result.clashes:
            out[old] = new
    return out


def plan_lines(result: NamePlan) -> list[str]:
    """One line for the admin per clash and per refused stored name: what it is, what to do."""
    lines = []
    for canon, members in result.clashes.items():
        shown = " and ".join(_q(m) for m in members)
        lines.append(f"stored user names {shown} are one user ({_q(canon)}) under "
                     f"[policy] username_case/strip_realm: not merged, and {_q(canon)} "
                     "is refused (reason=ambiguous_user) until one is renamed: mfa-radius user "
                     f"rename {shell_word(members[0])} NEW-NAME")
    for name in result.refused:
        lines.append(f"stored user name {_q(name)} is not a valid user name any more "
                     "(control, format or surrounding space characters): nobody can sign in "
                     f"as it; mfa-radius user rename {shell_word(name)} NEW-NAME")
    return lines


def shell_word(name: str) -> str:
    """`name` quoted for a shell command line shown to the admin (escaped when not printable)."""
    if name.isprintable():
        return shlex.quote(name)
    return "$'" + describe(name).replace("'", "\\'") + "'"


def _q(name: str) -> str:
    return f"'{describe(name)}'"


def _slow(raw: str, strip_realm: bool, fold: bool) -> str:
    if not isinstance(raw, str) or not raw:
        raise UserNameError("empty user name")
    if len(raw) > MAX_LEN:
        raise UserNameError(f"user name longer than {MAX_LEN} characters")
    if raw[0].isspace() or raw[-1].isspace():
        raise UserNameError(f"user name {_q(raw)} has surrounding whitespace")
    if not raw.isascii():
        for ch in raw:
            cat = unicodedata.category(ch)
            if cat in _REFUSED or (cat == "Zs" and ch != " "):
                raise UserNameError(f"user name {_q(raw)} holds a control, format or "
                                    "space character")
        raw = unicodedata.normalize("NFC", _width_mapped(raw))
    elif not raw.isprintable():  # ASCII: C0 controls and DEL
        raise UserNameError(f"user name {_q(raw)} holds a control character")
    name = _strip_realm(raw) if strip_realm else raw
    if fold:
        name = name.lower()
        if not name.isascii():
            name = unicodedata.normalize("NFC", name)
    if len(name) > MAX_LEN:  # lower() may lengthen a name (U+0130 -> i + combining dot)
        raise UserNameError(f"user name longer than {MAX_LEN} characters")
    return name


def _width_mapped(text: str) -> str:
    out = []
    for ch in text:
        if "\uff00" <= ch <= "\uffef" or "\u3000" <= ch <= "\u303f":
            decomposition = unicodedata.decomposition(ch)
            if decomposition.startswith(_WIDTH_TAGS):
                ch = "".join(chr(int(h, 16)) for h in decomposition.split()[1:])
        out.append(ch)
    return "".join(out)


def _strip_realm(name: str) -> str:
    domain, backslash, rest = name.partition("\\")
    if backslash and (not domain or "\\" in rest):
        raise UserNameError(f"user name {_q(name)}: not DOMAIN\\user")
    user, at, realm = (rest if backslash else name).partition("@")
    if at and (not realm or "@" in realm):
        raise UserNameError(f"user name {_q(name)}: not user@realm")
    if not user:
        raise UserNameError(f"user name {_q(name)} has no user part")
    if user[0].isspace() or user[-1].isspace():
        raise UserNameError(f"user name {_q(name)} has whitespace around its user part")
    return user


_FOLD_KEEP = canonicaliser(strip_realm=False, case=FOLD)
