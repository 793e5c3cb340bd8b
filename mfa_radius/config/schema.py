"""The configuration's typed sections: one frozen dataclass per table, defaults and bounds.

Every setting has a default except where noted; `[storage] database` and `[storage] key_file` are
enough to run. A field's metadata carries its bounds ("min", "max") and allowed values
("choices"), which the loader enforces. The [[sms.gateways]] entries are sms/gateways.py's: each
gateway type owns its keys and their checks.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ..sms.gateways import SmsGateway, gateway_keys, gateway_name

DEFAULT_PATH = "/etc/mfa-radius/mfa-radius.toml"
ENV_VAR = "MFA_RADIUS_CONFIG"


def _choice(*allowed: str) -> dict:
    return {"choices": allowed}


def _min(low: float, high: float | None = None) -> dict:
    return {"min": low} if high is None else {"min": low, "max": high}


@dataclass(frozen=True)
class StorageConfig:
    database: str = "/var/lib/mfa-radius/mfa.db"
    key_file: str = "/etc/mfa-radius/secret.key"
    # "normal": a used code stays used across any crash of the process (kill -9, OOM); "full"
    # also across a power loss or kernel crash, for an fsync per commit (docs/SECURITY.md).
    synchronous: str = field(default="normal", metadata=_choice("full", "normal"))
    busy_timeout: float = field(default=10.0, metadata=_min(0.1))
    # Audit rows older than this are pruned by the daemon's housekeeping; 0 keeps them forever.
    audit_retention_days: int = field(default=365, metadata=_min(0))
    # Users the server keeps in memory, seeds unsealed and HMACs prepared; loaded at start-up
    # (docs/benchmarks.md gives the memory a cached user takes).
    cache_users: int = field(default=50000, metadata=_min(100, 10_000_000))
    # "sqlite": the `database` file; "postgresql": the database `dsn` names, shared by several
    # nodes (`database` then unused; `key_file` still is: every node holds the same one).
    backend: str = field(default="sqlite", metadata=_choice("sqlite", "postgresql"))
    # postgresql://USER@HOST:PORT/DB, without a password (that goes in password_file, 0600).
    dsn: str = ""
    password_file: str = ""
    # Passed through to libpq; "" leaves libpq's default.
    sslmode: str = field(default="", metadata=_choice("", "disable", "allow", "prefer",
                                                      "require", "verify-ca", "verify-full"))
    sslrootcert: str = ""
    pool_size: int = field(default=4, metadata=_min(1, 64))
    connect_timeout: float = field(default=5.0, metadata=_min(1, 600))
    statement_timeout: float = field(default=5.0, metadata=_min(0.1, 3600))

    @property
    def shared(self) -> bool:
        """The database is a server other nodes may use too (not a file of this host)."""
        return self.backend == "postgresql"

    @property
    def location(self) -> str:
        """What errors name: the database file, or the DSN (which never holds a password)."""
        return self.dsn if self.shared else self.database


@dataclass(frozen=True)
class OtpConfig:
    totp_window: int = field(default=1, metadata=_min(0, 10))
    hotp_window: int = field(default=10, metadata=_min(1, 100))
    resync_window: int = field(default=1000, metadata=_min(1, 100000))
    issuer: str = "mfa-radius"


@dataclass(frozen=True)
class PolicyConfig:
    lockout_failures: int = field(default=5, metadata=_min(1))
    lockout_delay: float = field(default=30.0, metadata=_min(1))
    lockout_max_delay: float = field(default=3600.0, metadata=_min(1))
    nullok: bool = False
    # User names as sent are reduced to what policy sees (mfa_radius/rules/names.py):
    # DOMAIN\user and user@realm to user; "fold": case-insensitive (ALICE is alice), "exact":
    # case kept.
    strip_realm: bool = True
    username_case: str = field(default="fold", metadata=_choice("fold", "exact"))
    nullok_groups: list[str] = field(default_factory=list)
    exempt_users: list[str] = field(default_factory=list)
    privileged_users: list[str] = field(default_factory=lambda: ["root"])
    privileged_groups: list[str] = field(default_factory=lambda: ["sudo", "wheel"])
    max_devices: int = field(default=8, metadata=_min(1))
    recovery_codes: int = field(default=10, metadata=_min(1, 100))


@dataclass(frozen=True)
class RadiusClient:
    name: str
    address: str
    secret: str = ""
    secret_file: str = ""
    # None: inherit [radius] require_message_authenticator.
    require_message_authenticator: bool | None = None
    # Policy for this client alone (docs/vpn.md, "Policy per client"): "" inherits [radius]'s
    # password_backend; `groups` (when set) are the only groups let through; `nullok` (None:
    # inherit [policy] nullok) lets users without a device through here; `code_required =
    # false` accepts on the primary password alone.
    password_backend: str = field(default="", metadata=_choice("", "pam", "none", "radius", "ldap"))
    groups: list[str] = field(default_factory=list)
    nullok: bool | None = None
    code_required: bool = True


@dataclass(frozen=True)
class RadiusUpstream:
    """An upstream RADIUS server checking the primary password (password_backend = "radius"),
    tried in config order."""

    address: str  # HOST:PORT, an IP address literal
    secret: str = ""
    secret_file: str = ""
    timeout: float = field(default=3.0, metadata=_min(0.1, 60))  # seconds per try
    retries: int = field(default=1, metadata=_min(0, 10))  # tries again before the next server


@dataclass(frozen=True)
class RadiusReply:
    """Reply attributes added to an Access-Accept for a user or the members of a group."""

    attributes: dict[str, Any]
    user: str = ""
    group: str = ""


@dataclass(frozen=True)
class RadiusConfig:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:1812"])
    password_backend: str = field(default="pam", metadata=_choice("pam", "none", "radius", "ldap"))
    pam_service: str = "mfa-radius"
    pam_workers: int = field(default=4, metadata=_min(1))
    require_message_authenticator: bool = True
    challenge_timeout: float = field(default=120.0, metadata=_min(1))
    password_split: str = field(default="suffix", metadata=_choice("suffix", "delimiter"))
    delimiter: str = ","
    # Code length at the end of password+code (suffix mode) for users without a device.
    code_digits: int = field(default=6, metadata=_min(4))
    challenge_message: str = "Enter the verification code from your device: "
    duplicate_ttl: float = field(default=30.0, metadata=_min(5))
    clients: list[RadiusClient] = field(default_factory=list)
    replies: list[RadiusReply] = field(default_factory=list)
    upstream: list[RadiusUpstream] = field(default_factory=list)
    # Class, Filter-Id and vendor attributes of the upstream's Access-Accept go into ours.
    pass_reply_attributes: bool = False


@dataclass(frozen=True)
class PamConfig:
    # Callers other than root (screen lockers); its directory is 0755, the socket 0666.
    socket: str = "/run/mfa-radius/pam.sock"
    # Root's callers (sshd, login, su, sudo) alone, in a 0700 directory, so that nothing another
    # user does to the first socket reaches root's logins. "": root/ beside `socket`.
    root_socket: str = ""
    # Non-root callers (screen lockers): "self" may ask about their own user only, "none" not at
    # all.
    unprivileged_callers: str = field(default="self", metadata=_choice("self", "none"))

    @property
    def root_path(self) -> str:
        """`root_socket`, or its default: root/ beside `socket` (/run/mfa-radius/root/pam.sock)."""
        if self.root_socket:
            return self.root_socket
        return os.path.join(os.path.dirname(self.socket), "root", os.path.basename(self.socket))



@dataclass(frozen=True)
class SmsConfig:
    code_ttl: int = field(default=300, metadata=_min(30))
    # At most send_limit codes per user within send_window seconds, and a cap for everyone.
    send_limit: int = field(default=3, metadata=_min(1))
    send_window: int = field(default=600, metadata=_min(1))
    global_limit_per_minute: int = field(default=30, metadata=_min(1))
    # Fields: {code} (required), {user}, {host}; at most one SMS (160 GSM characters).
    message: str = "Your login code is {code}"
    host: str = ""  # what {host} says; default: this machine's host name
    gateways: list[SmsGateway] = field(default_factory=list)

    def host_name(self) -> str:
        if self.host:
            return self.host
        return socket.gethostname()


DEFAULT_USER_FILTER = ("(&(objectClass=person)(|(uid={user})(sAMAccountName={user})"
                       "(userPrincipalName={user})))")


@dataclass(frozen=True)
class LdapConfig:
    """`password_backend = "ldap"`: the directory the passwords are bound against
    (directory/ldap.py; checks in directory/settings.py)."""

    servers: list[str] = field(default_factory=list)  # ldaps:// or ldap://, tried in order
    starttls: bool = False  # StartTLS on ldap:// servers
    ca_file: str = ""  # "": the system's CAs; certificates are always verified
    allow_plaintext: bool = False  # ldap:// without starttls (warned about)
    bind_dn: str = ""  # the search account; or bind_format without one
    bind_password_file: str = ""
    base_dn: str = ""
    user_filter: str = DEFAULT_USER_FILTER
    # The attribute whose value is the user's name ("uid", "sAMAccountName"); "" keeps the name
    # as sent.
    user_attribute: str = ""
    bind_format: str = ""  # "{user}@example.com", "EXAMPLE\\{user}"
    # "": the user entry's memberOf; else a search under group_base_dn (default base_dn), e.g.
    # "(&(objectClass=groupOfNames)(member={dn}))".
    group_filter: str = ""
    group_base_dn: str = ""
    nested_groups: bool = False
    required_groups: list[str] = field(default_factory=list)
    connect_timeout: float = field(default=5.0, metadata=_min(0.1, 120))
    timeout: float = field(default=10.0, metadata=_min(0.1, 600))
    pool_size: int = field(default=4, metadata=_min(1, 64))


@dataclass(frozen=True)
class MetricsConfig:
    # "HOST:PORT" ("[::1]:9812" for IPv6) serving Prometheus text at /metrics; "" = disabled.
    listen: str = ""


@dataclass(frozen=True)
class Config:
    path: str = ""
    storage: StorageConfig = field(default_factory=StorageConfig)
    otp: OtpConfig = field(default_factory=OtpConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    pam: PamConfig = field(default_factory=PamConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ldap: LdapConfig = field(default_factory=LdapConfig)


SECTIONS = {"storage": StorageConfig, "otp": OtpConfig, "policy": PolicyConfig,
             "radius": RadiusConfig, "pam": PamConfig, "sms": SmsConfig,
             "metrics": MetricsConfig, "ldap": LdapConfig}


def resolve_path(explicit: str | None) -> str:
    """The config path: --config, else $MFA_RADIUS_CONFIG, else the default."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def describe(cfg: Config) -> dict:
    """The effective settings as plain data (secrets masked), for check-config."""
    data = dataclasses.asdict(cfg)
    for client in data["radius"]["clients"] + data["radius"]["upstream"]:
        if client["secret"]:
            client["secret"] = "********"
    # A gateway shows the keys of its own type, and the name the logs use.
    data["sms"]["gateways"] = [
        {"type": gw.type, "name": gateway_name(gw, i),
         **{k: v for k, v in raw.items() if k in gateway_keys(gw.type)}}
        for i, (gw, raw) in enumerate(zip(cfg.sms.gateways, data["sms"]["gateways"]))]
    return data


