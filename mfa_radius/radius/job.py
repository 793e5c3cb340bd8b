"""One Access-Request on its way through the server: what every step of it needs to answer."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from . import codec
from .clients import Client


@dataclass(slots=True)
class Job:
    """One Access-Request being decided."""

    sock: socket.socket
    addr: tuple
    client: Client
    request: codec.Request
    key: tuple
    started: float
    user: str = ""  # canonical (mfa_radius/names.py) once accepted as a name
    sent: str = ""  # the User-Name as sent, when it differs from `user`
    extra: bytes = b""  # reply attributes of an upstream's Access-Accept, for ours
    checked: bool = False  # looked up among the replies of the other nodes (shared store)
    digest: bytes = b""  # what its reply is recorded under (shared store), once computed
