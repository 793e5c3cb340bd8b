"""The checks of meaning, run once the types are right: what no single field can say (duplicate
names, exactly-one-of pairs, bounds between settings), the names in canonical form, and the
checks each part owns for its own settings (the RADIUS clients and replies, the SMS gateways).

So `check-config` accepts exactly what `serve` accepts.
"""

from __future__ import annotations

import dataclasses
import os

from .. import hostport
from ..directory import settings as ldap_settings
from ..errors import ConfigError, SettingError
from ..radius.clients import client_entry, parse_network
from ..radius.replies import encode_entry
from ..radius.upstream import upstream_entry
from ..rules import names
from ..rules.sms import template_problem
from ..secret_files import dsn_problem, private_file_problem
from ..sms.gateways import check_gateways
from .lines import where as _where
from .schema import Config


def semantics(cfg: Config, path: str, text: str) -> None:
    """What no single field can say: duplicates, exactly-one-of pairs, addresses, lengths."""
    seen = set()
    for i, client in enumerate(cfg.radius.clients):
        if client.name in seen:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", "name") +
                              f"duplicate RADIUS client name '{client.name}'")
        seen.add(client.name)
        if bool(client.secret) == bool(client.secret_file):
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", None) +
                              f"RADIUS client '{client.name}' needs exactly one of "
                              "'secret' or 'secret_file'")
    for i, reply in enumerate(cfg.radius.replies):
        if bool(reply.user) == bool(reply.group):
            raise ConfigError(_where(path, text, f"radius.replies[{i}]", None) +
                              "each [[radius.replies]] needs exactly one of 'user' or 'group'")
    if cfg.policy.lockout_max_delay < cfg.policy.lockout_delay:
        raise ConfigError(_where(path, text, "policy", "lockout_max_delay") +
                          "'policy.lockout_max_delay' must not be below 'policy.lockout_delay'")
    if os.path.dirname(cfg.pam.root_path) == os.path.dirname(cfg.pam.socket):
        raise ConfigError(_where(path, text, "pam", "root_socket") +
                          "'pam.root_socket' must be in a directory of its own (root-only), not "
                          "beside 'pam.socket'")
    for address in cfg.radius.listen:
        try:
            hostport.parse(address)
        except ValueError as exc:
            raise ConfigError(_where(path, text, "radius", "listen") +
                              f"'radius.listen': {exc}") from None
    if cfg.metrics.listen:
        try:
            hostport.parse(cfg.metrics.listen, any_host="0.0.0.0", any_port=True)  # noqa: S104
        except ValueError as exc:
            raise ConfigError(_where(path, text, "metrics", "listen") +
                              f"'metrics.listen' must be HOST:PORT (IPv6: [ADDR]:PORT): {exc}") \
                from None
    if not 0 < len(cfg.radius.challenge_message.encode("utf-8")) <= 253:
        raise ConfigError(_where(path, text, "radius", "challenge_message") +
                          "'radius.challenge_message' must be 1-253 octets (one Reply-Message)")
    _storage(cfg, path, text)
    _upstream(cfg, path, text)
    found = ldap_settings.problem(cfg.ldap, cfg.radius.password_backend)
    if found:
        section, _, key = found[0].rpartition(".")
        raise ConfigError(_where(path, text, section or "ldap", key) + found[1])
    for i, client in enumerate(cfg.radius.clients):
        try:
            parse_network(client.address)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", exc.key) +
                              f"RADIUS client '{client.name}': {exc}") from None


def _upstream(cfg: Config, path: str, text: str) -> None:
    """`[[radius.upstream]]` servers: each well written, and some whenever a backend uses them;
    `code_required = false` only where a password is checked."""
    r = cfg.radius
    for i, up in enumerate(r.upstream):
        if bool(up.secret) == bool(up.secret_file):
            raise ConfigError(_where(path, text, f"radius.upstream[{i}]", None) +
                              f"upstream RADIUS server '{up.address}' needs exactly one of "
                              "'secret' or 'secret_file'")
        try:
            hostport.parse(up.address)
        except ValueError as exc:
            raise ConfigError(_where(path, text, f"radius.upstream[{i}]", "address") +
                              f"'radius.upstream[{i}].address': {exc}") from None
    if r.password_backend == "radius" and not r.upstream:
        raise ConfigError(_where(path, text, "radius", "password_backend") +
                          'password_backend = "radius" needs [[radius.upstream]] servers')
    for i, client in enumerate(r.clients):
        name = client.password_backend or r.password_backend
        if name == "radius" and not r.upstream:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", "password_backend") +
                              f"RADIUS client '{client.name}': password_backend = \"radius\" "
                              "needs [[radius.upstream]] servers")
        if not client.code_required and name == "none":
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", "code_required") +
                              f"RADIUS client '{client.name}': code_required = false needs a "
                              "password backend (its password_backend is \"none\")")


def _storage(cfg: Config, path: str, text: str) -> None:
    """The PostgreSQL keys: a DSN when (and only when) the backend needs one, never holding a
    password (a config file is read by more than the server), and a private password file."""
    storage = cfg.storage
    if storage.backend != "postgresql":
        for key in ("dsn", "password_file"):
            if getattr(storage, key):
                raise ConfigError(_where(path, text, "storage", key) +
                                  f"'storage.{key}' is only used with backend = \"postgresql\"")
        return
    if not storage.dsn:
        raise ConfigError(_where(path, text, "storage", "backend") +
                          "backend = \"postgresql\" needs 'storage.dsn' "
                          "(postgresql://USER@HOST:PORT/DB)")
    problem = dsn_problem(storage.dsn)
    if problem:
        raise ConfigError(_where(path, text, "storage", "dsn") + f"'storage.dsn' {problem}")
    if storage.password_file:
        problem = private_file_problem(storage.password_file)
        if problem:
            raise ConfigError(_where(path, text, "storage", "password_file") +
                              f"'storage.password_file' {problem}")


def serving(cfg: Config, path: str, text: str) -> None:
    """The checks of what only `serve` uses, by the parts that own them (load(serving=True)):
    the clients' secret files, the reply attributes against the RADIUS dictionary."""
    for i, client in enumerate(cfg.radius.clients):
        try:
            client_entry(client, cfg)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", exc.key) +
                              f"RADIUS client '{client.name}': {exc}") from None
    for i, up in enumerate(cfg.radius.upstream):
        try:
            upstream_entry(up)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.upstream[{i}]", exc.key) +
                              f"upstream RADIUS server '{up.address}': {exc}") from None
    if cfg.radius.password_backend == "ldap":
        found = ldap_settings.serving_problem(cfg.ldap)
        if found:
            raise ConfigError(_where(path, text, "ldap", found[0]) + found[1])
    for i, reply in enumerate(cfg.radius.replies):
        try:
            encode_entry(reply)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.replies[{i}]", exc.key) +
                              f"[[radius.replies]] #{i + 1} ({reply.user or reply.group}): "
                              f"{exc}") from None


def canonical_names(cfg: Config, path: str, text: str) -> Config:
    """The config's user names in canonical form, as every name that arrives is compared in it:
    `exempt_users = ["Alice"]` means alice. A name the rule refuses is an error."""
    canonical, _ = names.policy_rule(cfg.policy)
    policy = cfg.policy

    def each(key: str, values: list[str], section: str = "policy") -> list[str]:
        out: list[str] = []
        for value in values:
            try:
                name = canonical(value)
            except names.UserNameError as exc:
                raise ConfigError(_where(path, text, section, key) + f"'{section}.{key}': {exc}") \
                    from None
            if key == "exempt_users" and names.realm_qualified(name):
                raise ConfigError(_where(path, text, section, key) +
                                  f"'policy.exempt_users': '{names.describe(name)}' is not a "
                                  "local account name (strip_realm = false): exemption never "
                                  "applies to it")
            if name not in out:
                out.append(name)
        return out

    policy = dataclasses.replace(policy, exempt_users=each("exempt_users", policy.exempt_users),
                                 privileged_users=each("privileged_users",
                                                       policy.privileged_users))
    replies = [dataclasses.replace(r, user=each("user", [r.user], f"radius.replies[{i}]")[0])
               if r.user else r for i, r in enumerate(cfg.radius.replies)]
    return dataclasses.replace(cfg, policy=policy,
                               radius=dataclasses.replace(cfg.radius, replies=replies))


def sms(cfg: Config, raw_gateways: list, path: str, text: str) -> None:
    """The message template, and the gateways by their own checks (sms/gateways.py)."""
    sms = cfg.sms
    problem = template_problem(sms.message, sms.host_name())
    if problem:
        raise ConfigError(_where(path, text, "sms", "message") + f"'sms.message' {problem}")
    found = check_gateways(sms.gateways, raw_gateways)
    if found is not None:
        gw = sms.gateways[found.index]
        raise ConfigError(_where(path, text, "sms", found.key) +
                          f"sms.gateways[{found.index}] ({gw.type}): {found.message}")
