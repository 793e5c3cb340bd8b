"""The TOML configuration: typed sections, validated once, errors that name file, line and key.

Every setting has a default except where noted; `[storage] database` and `[storage] key_file` are
enough to run. Unknown keys are errors (a misspelt key silently ignored is a security bug in an
authentication server).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from . import names
from .errors import ConfigError

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
    # Users the server keeps in memory, seeds unsealed (~1.1 KiB each); loaded at start-up.
    cache_users: int = field(default=50000, metadata=_min(100, 10_000_000))


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
    # User names as sent are reduced to what policy sees (mfa_radius/names.py): DOMAIN\user and
    # user@realm to user; "fold": case-insensitive (ALICE is alice), "exact": case kept.
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


@dataclass(frozen=True)
class RadiusReply:
    """Reply attributes added to an Access-Accept for a user or the members of a group."""

    attributes: dict[str, Any]
    user: str = ""
    group: str = ""


@dataclass(frozen=True)
class RadiusConfig:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:1812"])
    password_backend: str = field(default="pam", metadata=_choice("pam", "none"))
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
class SmsGateway:
    """One way out for SMS codes; the [[sms.gateways]] are tried in order until one succeeds.

    Which keys apply depends on `type` (see _GATEWAY_KEYS); a key of another type is an error.
    """

    type: str = field(metadata=_choice("file", "http", "twilio", "command"))
    name: str = ""  # for the logs; default: TYPE-N
    timeout: float = field(default=10.0, metadata=_min(0.1))
    # file
    path: str = ""
    # http
    url: str = ""
    method: str = field(default="POST", metadata=_choice("GET", "POST", "PUT"))
    headers: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)
    auth: str = field(default="none", metadata=_choice("none", "basic", "bearer"))
    username: str = ""
    secret_file: str = ""
    success_codes: list[int] = field(default_factory=lambda: [200, 201, 202, 204])
    # twilio
    account_sid: str = ""
    auth_token_file: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    api_url: str = "https://api.twilio.com"
    # command
    command: list[str] = field(default_factory=list)


_GATEWAY_KEYS = {
    "file": {"path"},
    "http": {"url", "method", "headers", "params", "json", "form", "auth", "username",
             "secret_file", "success_codes", "timeout"},
    "twilio": {"account_sid", "auth_token_file", "from_number", "messaging_service_sid",
               "api_url", "timeout"},
    "command": {"command", "timeout"},
}


def gateway_name(gw: SmsGateway, index: int) -> str:
    """The name the logs and metrics use for the index-th gateway (0-based): TYPE-N if unset."""
    return gw.name or f"{gw.type}-{index + 1}"


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
        import socket

        return socket.gethostname()


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


_SECTIONS = {"storage": StorageConfig, "otp": OtpConfig, "policy": PolicyConfig,
             "radius": RadiusConfig, "pam": PamConfig, "sms": SmsConfig,
             "metrics": MetricsConfig}


def resolve_path(explicit: str | None) -> str:
    """The config path: --config, else $MFA_RADIUS_CONFIG, else the default."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


class SettingError(ValueError):
    """A value refused by the validator of the part that owns it (a RADIUS client, a reply): `key`
    names the setting inside its entry; the message says what is wrong, without a place."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def load(path: str, *, serving: bool = False) -> Config:
    """Read and validate `path`; raise ConfigError naming the file, line and key.

    `serving=True` (`serve`, its reloads and `check-config`) also runs the checks that read other
    files: as root, that the config, key and secret files are root's alone (trusted_paths); each
    RADIUS client's secret_file, and the reply attributes against the RADIUS dictionary. So
    `check-config` accepts exactly what `serve` accepts, while the PAM fallback, which needs
    neither, loads without reading RADIUS secrets into a login process.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (use --config FILE or {ENV_VAR})") \
            from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    cfg = from_dict(data, path=path, text=text)
    if serving:
        from .trusted_paths import check_root_files

        # As root: the config, key and secret files must be root's alone, up to /, before any
        # secret file is read.
        check_root_files(cfg, database=False)
        _check_serving(cfg, path, text)
    return cfg


def from_dict(data: dict, path: str = "<config>", text: str = "") -> Config:
    """Build a Config from parsed TOML, refusing unknown keys and wrong types."""
    sections = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(_where(path, text, None, name) + f"unknown section [{name}]"
                              f" (known: {', '.join(sorted(_SECTIONS))})")
        if not isinstance(value, dict):
            raise ConfigError(_where(path, text, None, name) + f"[{name}] must be a table")
        sections[name] = _build(_SECTIONS[name], value, name, path, text)
    cfg = Config(path=path, **sections)
    _check_semantics(cfg, path, text)
    cfg = _canonical_names(cfg, path, text)
    _check_sms(cfg, data.get("sms", {}).get("gateways", []), path, text)
    return cfg


def _build(cls: type, values: dict, dotted: str, path: str, text: str):
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    section, _, _ = dotted.partition(".")
    if "[" in dotted:  # an entry of a [[table array]]: errors point into that entry
        section = dotted
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_where(path, text, section, key) + f"unknown key '{dotted}.{key}'"
                              f" (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(hints[key], value, f"{dotted}.{key}", fields[key].metadata,
                              path, text, section, key)
    missing = [f.name for f in fields.values()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in kwargs]
    if missing:
        raise ConfigError(_where(path, text, section, None) + f"'{dotted}' is missing required key "
                          f"'{missing[0]}'")
    return cls(**kwargs)


def _coerce(hint, value, dotted, meta, path, text, section, key):
    def bad(expected: str) -> ConfigError:
        return ConfigError(_where(path, text, section, key) +
                           f"'{dotted}' must be {expected}, not {type(value).__name__} {value!r}")

    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(inner, value, dotted, meta, path, text, section, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif hint is float:
        # TOML allows nan and inf: nan passes every bound (a nan lockout_delay disables lockout).
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise bad("a finite number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise bad("a string")
    elif origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        (item,) = args
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            out = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise bad("a list of tables")
                out.append(_build(item, entry, f"{dotted}[{i}]", path, text))
            return out
        if item is str and not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    elif origin is dict:
        if not isinstance(value, dict):
            raise bad("a table")
        return dict(value)
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be one of {', '.join(meta['choices'])}, not {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be at least {meta['min']}, not {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(_where(path, text, section, key) +
                          f"'{dotted}' must be at most {meta['max']}, not {value!r}")
    return value


def _check_semantics(cfg: Config, path: str, text: str) -> None:
    names = set()
    for i, client in enumerate(cfg.radius.clients):
        if client.name in names:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", "name") +
                              f"duplicate RADIUS client name '{client.name}'")
        names.add(client.name)
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
    from . import hostport
    from .radius.clients import parse_network

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
    for i, client in enumerate(cfg.radius.clients):
        try:
            parse_network(client.address)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", exc.key) +
                              f"RADIUS client '{client.name}': {exc}") from None


def _check_serving(cfg: Config, path: str, text: str) -> None:
    """The checks of what only `serve` uses, by the parts that own them (load(serving=True))."""
    from .radius.clients import client_entry
    from .radius.replies import encode_entry

    for i, client in enumerate(cfg.radius.clients):
        try:
            client_entry(client, cfg)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.clients[{i}]", exc.key) +
                              f"RADIUS client '{client.name}': {exc}") from None
    for i, reply in enumerate(cfg.radius.replies):
        try:
            encode_entry(reply)
        except SettingError as exc:
            raise ConfigError(_where(path, text, f"radius.replies[{i}]", exc.key) +
                              f"[[radius.replies]] #{i + 1} ({reply.user or reply.group}): "
                              f"{exc}") from None


def _canonical_names(cfg: Config, path: str, text: str) -> Config:
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


def _check_sms(cfg: Config, raw_gateways: list, path: str, text: str) -> None:
    from .sms.policy import phone_problem, template_problem

    sms = cfg.sms
    problem = template_problem(sms.message, sms.host_name())
    if problem:
        raise ConfigError(_where(path, text, "sms", "message") + f"'sms.message' {problem}")
    names = set()
    for i, (gw, raw) in enumerate(zip(sms.gateways, raw_gateways)):
        label = f"sms.gateways[{i}] ({gw.type})"

        def bad(message: str, key: str = "gateways", label: str = label) -> ConfigError:
            return ConfigError(_where(path, text, "sms", key) + f"{label}: {message}")

        stray = sorted(set(raw) - _GATEWAY_KEYS[gw.type] - {"type", "name"})
        if stray:
            raise bad(f"key '{stray[0]}' does not apply to a {gw.type} gateway (its keys: "
                      f"{', '.join(sorted(_GATEWAY_KEYS[gw.type] | {'name'}))})", stray[0])
        name = gateway_name(gw, i)
        if name in names:
            raise bad(f"duplicate gateway name '{name}'", "name")
        names.add(name)
        if gw.type == "file" and not os.path.isabs(gw.path):
            raise bad("'path' must be an absolute file path", "path")
        if gw.type == "command" and (not gw.command or not os.path.isabs(gw.command[0])):
            raise bad("'command' must be a list whose first item is an absolute path "
                      '(e.g. ["/usr/local/bin/send-sms", "{phone}", "{message}"]); it runs '
                      "without a shell", "command")
        if gw.type == "http":
            if not gw.url.startswith(("http://", "https://")):
                raise bad("'url' must start with http:// or https://", "url")
            if gw.json and gw.form:
                raise bad("use either 'json' or 'form' for the body, not both", "form")
            if gw.method == "GET" and (gw.json or gw.form):
                raise bad("a GET request has no body: put the fields in 'params'", "method")
            templates = repr([gw.params, gw.json, gw.form, gw.url])
            if "{phone}" not in templates or "{message}" not in templates:
                raise bad("the request must carry {phone} and {message} (in 'url', 'params', "
                          "'json' or 'form')")
            if not all(isinstance(v, str) for v in gw.headers.values()):
                raise bad("'headers' values must be strings", "headers")
            if gw.auth in ("basic", "bearer") and not gw.secret_file:
                raise bad(f"auth = \"{gw.auth}\" needs 'secret_file' (the password or token)",
                          "auth")
            if gw.auth == "basic" and not gw.username:
                raise bad('auth = "basic" needs \'username\'', "auth")
            if gw.auth == "none" and (gw.secret_file or gw.username):
                raise bad("'username' and 'secret_file' need auth = \"basic\" or \"bearer\"",
                          "auth")
            if not gw.success_codes or not all(
                    isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599
                    for c in gw.success_codes):
                raise bad("'success_codes' must be a list of HTTP status codes", "success_codes")
        if gw.type == "twilio":
            if not gw.account_sid or not gw.auth_token_file:
                raise bad("needs 'account_sid' and 'auth_token_file'")
            if bool(gw.from_number) == bool(gw.messaging_service_sid):
                raise bad("needs exactly one of 'from_number' or 'messaging_service_sid'")
            if gw.from_number and phone_problem(gw.from_number):
                raise bad(f"'from_number' {phone_problem(gw.from_number)}", "from_number")
            if not gw.api_url.startswith(("http://", "https://")):
                raise bad("'api_url' must start with http:// or https://", "api_url")


def _where(path: str, text: str, section: str | None, key: str | None) -> str:
    """'FILE:LINE: ' for the key inside its section (or the section header), best effort."""
    line = _find_line(text, section, key) if text else None
    return f"{path}:{line}: " if line else f"{path}: "


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?")


def _find_line(text: str, section: str | None, key: str | None) -> int | None:
    entry = re.fullmatch(r"(.+)\[(\d+)\]", section or "")
    if entry:
        return _find_in_entry(text, entry.group(1), int(entry.group(2)), key)
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            if key is None or section is None:
                if current == (section or key) or current.startswith(f"{section or key}."):
                    return number
            elif current == f"{section}.{key}":
                return number
            continue
        if section and key and current.split(".")[0] == section and re.match(
                rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _find_in_entry(text: str, name: str, index: int, key: str | None) -> int | None:
    """The line of `key` in the index-th [[name]] table (its header line when key is None)."""
    seen, inside, sub = -1, False, ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            if current == name and line.lstrip().startswith("[["):
                seen += 1
                inside, sub = seen == index, ""
                if inside and key is None:
                    return number
            elif inside and current.startswith(name + "."):
                sub = current
                if key and current == f"{name}.{key}":
                    return number
            else:
                inside = False
            continue
        if inside and not sub and key and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


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
        network = _network(client.address)
        if network is not None and network.prefixlen < WIDE_PREFIX and not require_ma:
            warn(where, "address",
                 f"RADIUS client '{client.name}': address {client.address} admits "
                 f"{'every host' if network.prefixlen == 0 else 'a huge range'} and "
                 "Message-Authenticator is not required (forged replies, BlastRADIUS): narrow "
                 "the address or set require_message_authenticator = true")
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
    if not os.path.isabs(cfg.pam.socket):
        warn("pam", "socket",
             f"'pam.socket' = {cfg.pam.socket!r} is a relative path: it depends on the working "
             "directory of every caller; use an absolute path")
    return out


def _secret_length(client: RadiusClient) -> int | None:
    if client.secret:
        return len(client.secret)
    from .private_files import read_private_file

    try:
        data = read_private_file(client.secret_file, "secret_file", ConfigError)
    except (OSError, ConfigError):
        return None  # `serve` refuses it with its own error
    return len(data.rstrip(b"\r\n").decode("utf-8", "replace"))


def _network(address: str):
    import ipaddress

    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _privileged_exempt(policy: PolicyConfig) -> list[str]:
    from .accounts import Accounts

    groups = set(policy.privileged_groups)
    accounts = Accounts()
    return [u for u in policy.exempt_users
            if u == "root" or u in policy.privileged_users or accounts.groups(u) & groups]


def _loopback_listen(listen: str) -> bool:
    import ipaddress

    from . import hostport

    # Valid by now (_check_semantics); ":PORT" is every address.
    where = hostport.parse(listen, any_host="0.0.0.0", any_port=True)  # noqa: S104
    return ipaddress.ip_address(where.host).is_loopback


def describe(cfg: Config) -> dict:
    """The effective settings as plain data (secrets masked), for check-config."""
    data = dataclasses.asdict(cfg)
    for client in data["radius"]["clients"]:
        if client["secret"]:
            client["secret"] = "********"
    # A gateway shows the keys of its own type, and the name the logs use.
    data["sms"]["gateways"] = [
        {"type": gw.type, "name": gateway_name(gw, i),
         **{k: v for k, v in raw.items() if k in _GATEWAY_KEYS[gw.type]}}
        for i, (gw, raw) in enumerate(zip(cfg.sms.gateways, data["sms"]["gateways"]))]
    return data
