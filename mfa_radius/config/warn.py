"""Accepted settings that weaken security: `check-config` and `serve` print them, one line each,
naming file:line like errors.
"""

from __future__ import annotations

import ipaddress
import os

from .. import hostport
from ..accounts import Accounts
from ..directory.settings import plaintext_servers
from ..errors import ConfigError
from ..private_files import read_private_file
from .lines import where as _where
from .schema import Config, PolicyConfig, RadiusClient, RadiusUpstream


# Below these, a setting is accepted but weakens the server: check-config and serve warn.
MIN_SECRET_CHARS = 16
MAX_QUIET_LOCKOUT_FAILURES = 10
WIDE_PREFIX = 8  # a client range wider than a /8 (0.0.0.0/0, ::/0, 10.0.0.0/7 ...)


def warnings(cfg: Config, text: str | None = None) -> list[str]:
    """Accepted settings that weaken security, one line each, naming file:line like errors.

    `text` is the config file's text, for line numbers (None: read from cfg.path, best effort).
    The secret files the clients name are read to measure the secrets; one that cannot be read
    is left to the error `serve` gives. Group membership (privileged_groups) is looked up in NSS.
    """
    if text is None:
        try:
            with open(cfg.path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            text = ""
    path = cfg.path or "<config>"
    out: list[str] = []

    def warn(section: str, key: str, message: str) -> None:
        out.append(_where(path, text, section, key) + message)

    radius = cfg.radius
    for i, client in enumerate(radius.clients):
        where = f"radius.clients[{i}]"
        length = _secret_length(client)
        if length is not None and length < MIN_SECRET_CHARS:
            warn(where, "secret_file" if client.secret_file else "secret",
                 f"RADIUS client '{client.name}': the shared secret is {length} characters; use "
                 f"at least {MIN_SECRET_CHARS} random ones (a short secret can be guessed "
                 "offline from one captured packet)")
        require_ma = client.require_message_authenticator
        if require_ma is None:
            require_ma = radius.require_message_authenticator
        if not client.code_required:
            warn(where, "code_required",
                 f"RADIUS client '{client.name}': code_required = false: its users sign in "
                 "with a password alone")
        network = _network(client.address)
        if network is not None and network.prefixlen < WIDE_PREFIX and not require_ma:
            warn(where, "address",
                 f"RADIUS client '{client.name}': address {client.address} admits "
                 f"{'every host' if network.prefixlen == 0 else 'a huge range'} and "
                 "Message-Authenticator is not required (forged replies, BlastRADIUS): narrow "
                 "the address or set require_message_authenticator = true")
    for i, upstream in enumerate(radius.upstream):
        length = _secret_length(upstream)
        if length is not None and length < MIN_SECRET_CHARS:
            warn(f"radius.upstream[{i}]", "secret_file" if upstream.secret_file else "secret",
                 f"upstream RADIUS server {upstream.address}: the shared secret is {length} "
                 f"characters; use at least {MIN_SECRET_CHARS} random ones")
    policy = cfg.policy
    privileged = _privileged_exempt(policy)
    if privileged:
        warn("policy", "exempt_users",
             f"'policy.exempt_users' lists privileged user(s) {', '.join(privileged)}: they "
             "sign in with a password alone")
    if policy.lockout_failures > MAX_QUIET_LOCKOUT_FAILURES:
        warn("policy", "lockout_failures",
             f"'policy.lockout_failures' = {policy.lockout_failures}: more than "
             f"{MAX_QUIET_LOCKOUT_FAILURES} wrong codes before a lockout helps guessing")
    listen = cfg.metrics.listen
    if listen and not _loopback_listen(listen):
        warn("metrics", "listen",
             f"'metrics.listen' = {listen!r} is reachable from other hosts: /metrics tells "
             "anyone who asks how many users are locked out and which clients are used; "
             "listen on 127.0.0.1 or [::1] behind a proxy")
    plain = plaintext_servers(cfg.ldap) if radius.password_backend == "ldap" else []
    if plain:
        warn("ldap", "allow_plaintext",
             f"'ldap.allow_plaintext': {', '.join(plain)} without TLS: the search account's "
             "and every user's password cross the network in clear; use ldaps:// or "
             "starttls = true")
    if not os.path.isabs(cfg.pam.socket):
        warn("pam", "socket",
             f"'pam.socket' = {cfg.pam.socket!r} is a relative path: it depends on the working "
             "directory of every caller; use an absolute path")
    return out


def _secret_length(client: RadiusClient | RadiusUpstream) -> int | None:
    if client.secret:
        return len(client.secret)
    try:
        data = read_private_file(client.secret_file, "secret_file", ConfigError)
    except (OSError, ConfigError):
        return None  # `serve` refuses it with its own error
    return len(data.rstrip(b"\r\n").decode("utf-8", "replace"))


def _network(address: str):
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _privileged_exempt(policy: PolicyConfig) -> list[str]:
    groups = set(policy.privileged_groups)
    accounts = Accounts()
    return [u for u in policy.exempt_users
            if u == "root" or u in policy.privileged_users or accounts.groups(u) & groups]


def _loopback_listen(listen: str) -> bool:
    # Valid by now (_check_semantics); ":PORT" is every address.
    where = hostport.parse(listen, any_host="0.0.0.0", any_port=True)  # noqa: S104
    return ipaddress.ip_address(where.host).is_loopback

