"""The RADIUS client table: who may ask, with which shared secret (like FreeRADIUS clients.conf).

A client is an IP address or a CIDR network. The most specific entry wins, so a single appliance
can get its own secret inside a network that shares another one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..config import Config, RadiusClient
from ..errors import ConfigError
from ..private_files import read_private_file
from .codec import Secret

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    network: IPNetwork
    secret: Secret
    require_ma: bool


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
        return cls([_client(c, cfg) for c in cfg.radius.clients])

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


def _client(entry: RadiusClient, cfg: Config) -> Client:
    where = f"{cfg.path}: RADIUS client '{entry.name}'"
    try:
        network = ipaddress.ip_network(entry.address, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: address {entry.address!r} is not an IP address or "
                          "network (e.g. 192.0.2.10, 192.0.2.0/24, 2001:db8::/64)") from None
    if entry.secret_file:
        secret = read_secret_file(entry.secret_file, where)
    else:
        secret = entry.secret.encode("utf-8")
    if not secret:
        raise ConfigError(f"{where}: the shared secret is empty")
    if len(secret) > 128:
        raise ConfigError(f"{where}: the shared secret is longer than 128 octets")
    require_ma = entry.require_message_authenticator
    if require_ma is None:
        require_ma = cfg.radius.require_message_authenticator
    return Client(entry.name, network, Secret(secret), require_ma)


def read_secret_file(path: str, where: str) -> bytes:
    """The secret in `path` (one line); refused when group or others may read or write it."""
    try:
        data = read_private_file(path, "secret_file", ConfigError, f"{where}: ")
    except FileNotFoundError:
        raise ConfigError(f"{where}: cannot read secret_file {path}: no such file") from None
    return data.rstrip(b"\r\n")
