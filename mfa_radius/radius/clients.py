"""The RADIUS client table: who may ask, with which shared secret (like FreeRADIUS clients.conf).

A client is an IP address or a CIDR network. The most specific entry wins, so a single appliance
can get its own secret inside a network that shares another one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, SettingError
from ..private_files import read_private_file
from .codec import Secret

if TYPE_CHECKING:  # annotations only: the config loader imports this module
    from ..config import Config, RadiusClient

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    network: IPNetwork
    secret: Secret
    require_ma: bool
    # Policy of this client (docs/vpn.md, "Policy per client"), [radius]'s where not set.
    password_backend: str = "pam"
    groups: frozenset[str] = frozenset()  # empty: every group
    nullok: bool | None = None  # None: [policy] decides
    code_required: bool = True
    # What this client sets of its own, for its decision lines: e.g. "password=ldap,groups,nullok"
    # ("" when it takes [radius]'s and [policy]'s settings as they are).
    policy: str = ""


class ClientTable:
    def __init__(self, clients: list[Client]):
        self._exact: dict[str, Client] = {}
        self._networks: list[Client] = []
        for client in clients:
            if client.network.num_addresses == 1:
                self._exact[str(client.network.network_address)] = client
            else:
                self._networks.append(client)
        self._networks.sort(key=lambda c: c.network.prefixlen, reverse=True)
        self._cache: dict[str, Client | None] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> ClientTable:
        """Build the table; raise ConfigError for a bad address, secret or secret file."""
        clients = []
        for entry in cfg.radius.clients:
            try:
                clients.append(client_entry(entry, cfg))
            except SettingError as exc:
                raise ConfigError(f"{cfg.path}: RADIUS client '{entry.name}': {exc}") from None
        return cls(clients)

    def lookup(self, address: str) -> Client | None:
        """The client for a source address (as recvfrom gives it), or None if unknown."""
        client = self._exact.get(address)
        if client is not None:
            return client
        if not self._networks:
            return None
        try:
            return self._cache[address]
        except KeyError:
            pass
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return None
        found = next((c for c in self._networks
                      if c.network.version == ip.version and ip in c.network), None)
        if len(self._cache) >= 4096:  # spoofed sources must not grow it without bound
            self._cache.clear()
        self._cache[address] = found
        return found

    def __len__(self) -> int:
        return len(self._exact) + len(self._networks)


def parse_network(address: str) -> IPNetwork:
    """A client's `address` (an IP address or a CIDR network); SettingError when it is not."""
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        raise SettingError("address", f"address {address!r} is not an IP address or network "
                           "(e.g. 192.0.2.10, 192.0.2.0/24, 2001:db8::/64)") from None


def client_entry(entry: RadiusClient, cfg: Config) -> Client:
    """The client of one `[[radius.clients]]` entry, its secret_file read; SettingError if bad."""
    network = parse_network(entry.address)
    secret = entry_secret(entry.secret, entry.secret_file)
    require_ma = entry.require_message_authenticator
    if require_ma is None:
        require_ma = cfg.radius.require_message_authenticator
    return Client(entry.name, network, Secret(secret), require_ma,
                  entry.password_backend or cfg.radius.password_backend, frozenset(entry.groups),
                  entry.nullok, entry.code_required, policy_tag(entry))


def policy_tag(entry: RadiusClient) -> str:
    """The client's own policy settings in a word list, for the decision line."""
    parts = [f"password={entry.password_backend}"] if entry.password_backend else []
    if entry.groups:
        parts.append("groups")
    if entry.nullok is not None:
        parts.append("nullok" if entry.nullok else "no_nullok")
    if not entry.code_required:
        parts.append("password_only")
    return ",".join(parts)


def entry_secret(secret: str, secret_file: str) -> bytes:
    """The shared secret of a client or upstream entry (`secret`, or `secret_file` read);
    SettingError naming the key when it is unusable."""
    key = "secret_file" if secret_file else "secret"
    if secret_file:
        try:
            value = read_secret_file(secret_file, "")
        except ConfigError as exc:
            raise SettingError(key, str(exc)) from None
    else:
        value = secret.encode("utf-8")
    if not value:
        raise SettingError(key, "the shared secret is empty")
    if len(value) > 128:
        raise SettingError(key, "the shared secret is longer than 128 octets")
    return value


def read_secret_file(path: str, where: str) -> bytes:
    """The secret in `path` (one line); refused when group or others may read or write it.

    `where` prefixes the messages ("FILE: RADIUS client 'vpn1'", or "" for none)."""
    prefix = f"{where}: " if where else ""
    try:
        data = read_private_file(path, "secret_file", ConfigError, prefix)
    except FileNotFoundError:
        raise ConfigError(f"{prefix}cannot read secret_file {path}: no such file") from None
    return data.rstrip(b"\r\n")
