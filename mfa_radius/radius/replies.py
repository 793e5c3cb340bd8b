"""Reply attributes per user or group (`[[radius.replies]]`), encoded once at (re)load.

    [[radius.replies]]
    group = "vpn-admins"
    attributes = { Class = "admins", Filter-Id = "full-access", Session-Timeout = 28800 }

Names and types come from the shipped dictionary (pyrad format; it has a few vendor attributes,
e.g. Fortinet-Group-Name, Cisco-AVPair, PaloAlto-User-Group, and admins can add more there). A
value may be a list for an attribute sent more than once. An Access-Accept
carries the user's own entries, then those of each matching group, in config order.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from ..errors import ConfigError, SettingError
from . import codec

if TYPE_CHECKING:  # annotations only: the config loader imports this module
    from ..config import Config, RadiusReply

DICTIONARY = os.path.join(os.path.dirname(__file__), "dictionary")
# Attributes the server itself owns: an admin setting them would break the protocol.
_RESERVED = {"User-Name", "User-Password", "CHAP-Password", "State", "Proxy-State",
             "Message-Authenticator", "EAP-Message"}


@lru_cache(maxsize=1)
def dictionary():
    from pyrad.dictionary import Dictionary

    return Dictionary(DICTIONARY)


class ReplyTable:
    def __init__(self, by_user: dict[str, bytes], by_group: list[tuple[str, bytes]]):
        self.by_user = by_user
        self.by_group = by_group

    @classmethod
    def from_config(cls, cfg: Config) -> ReplyTable:
        by_user: dict[str, bytes] = {}
        by_group: list[tuple[str, bytes]] = []
        for i, entry in enumerate(cfg.radius.replies):
            try:
                encoded = encode_entry(entry)
            except SettingError as exc:
                raise ConfigError(f"{cfg.path}: [[radius.replies]] #{i + 1} "
                                  f"({entry.user or entry.group}): {exc}") from None
            if entry.user:
                by_user[entry.user] = by_user.get(entry.user, b"") + encoded
            else:
                by_group.append((entry.group, encoded))
        return cls(by_user, by_group)

    def for_user(self, user: str, accounts) -> bytes:
        attrs = self.by_user.get(user, b"")
        if self.by_group:
            groups = accounts.groups(user)
            attrs += b"".join(a for group, a in self.by_group if group in groups)
        return attrs


def encode_entry(entry: RadiusReply) -> bytes:
    """The wire form of one `[[radius.replies]]` entry's attributes; SettingError if bad."""
    return b"".join(encode(name, value) for name, value in entry.attributes.items())


def encode(name: str, value) -> bytes:
    """The wire form of `name = value` (one attribute, or several for a list); SettingError."""
    from pyrad import tools

    if isinstance(value, list):
        return b"".join(encode(name, v) for v in value)
    d = dictionary()
    if name not in d.attributes:
        raise SettingError("attributes", f"unknown RADIUS attribute {name!r} "
                           f"(add it to {DICTIONARY})")
    if name in _RESERVED:
        raise SettingError("attributes", f"attribute {name!r} is set by the server, "
                           "not in replies")
    attr = d.attributes[name]
    try:
        if isinstance(value, str) and attr.values.HasForward(value):
            raw = attr.values.GetForward(value)
        elif isinstance(value, str) and (attr.type == "string" or (
                attr.type == "octets" and not value.startswith("0x"))):
            raw = value.encode("utf-8")
        elif attr.type in ("integer", "date") and (isinstance(value, bool)
                                                    or not isinstance(value, int)):
            raise ValueError(f"needs an integer{' or a value name' if attr.values else ''}")
        else:
            raw = tools.EncodeAttr(attr.type, value)
        if attr.vendor:
            # RFC 2865 5.26 Vendor-Specific: vendor id, then the vendor's own type-length-value.
            vendor_id = d.vendors.GetForward(attr.vendor)
            if len(raw) > 247:
                raise ValueError("longer than 247 octets (vendor attribute)")
            raw = vendor_id.to_bytes(4, "big") + bytes((attr.code, len(raw) + 2)) + raw
            return codec.encode_attr(26, raw)
        return codec.encode_attr(attr.code, raw)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise SettingError("attributes", f"bad value {value!r} for {name} ({attr.type}): "
                           f"{exc}") from None
