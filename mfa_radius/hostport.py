"""HOST:PORT addresses to listen on (`[radius] listen`, `[metrics] listen`): one parser for all.

The host is an IP address literal, IPv6 in brackets ("[::1]:1812"): a name ("localhost") could
resolve to another address than the admin meant, or to several, so it is refused with the
literal to write instead.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # the IP address, without brackets
    port: int
    family: int  # socket.AF_INET or socket.AF_INET6

    @property
    def sockaddr(self) -> tuple:
        """The address as `socket.bind` takes it for `family`."""
        if self.family == socket.AF_INET6:
            return (self.host, self.port, 0, 0)
        return (self.host, self.port)


def parse(text: str, *, any_host: str | None = None, any_port: bool = False
          ) -> HostPort:
    """'127.0.0.1:1812' or '[::1]:1812' -> HostPort; ValueError saying what is wrong.

    With `any_host` (an address), an empty host (":9812") means that address; with `any_port`,
    port 0 asks the kernel for a free one.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:1812 or [::1]:1812)")
    if not (0 if any_port else 1) <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be {0 if any_port else 1}-65535")
    bracketed = host.startswith("[") and host.endswith("]")
    written = bool(host)
    if bracketed:
        host = host[1:-1]
    elif not written and any_host is not None:
        host = any_host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses as [ADDR]:PORT") from None
        hint = " (write 127.0.0.1 or [::1])" if host == "localhost" else ""
        raise ValueError(f"{text!r}: {host!r} is not an IP address{hint}") from None
    if ip.version == 6 and not bracketed and written:
        raise ValueError(f"{text!r}: write IPv6 addresses as [ADDR]:PORT")
    if ip.version == 4 and bracketed:
        raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return HostPort(str(ip), int(port), family)
