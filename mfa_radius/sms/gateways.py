"""The ways out for an SMS: a file, a generic HTTP API, Twilio, an admin's command; and the chain
that tries them in order.

Each gateway type is one class here that owns everything of that type: the keys of its
[[sms.gateways]] entry (`KEYS`), the check of their values (`problem`), how it is built from them
(`from_settings`) and how it sends. `SmsGateway` is the entry as the config loader reads it; the
loader calls `check_gateways`. This module imports nothing of the config (the config imports it).

Longer than most modules on purpose: each gateway type keeps its settings, checks and sending
together, so that adding one is one class here (and its keys in SmsGateway) and nothing else.

Every gateway is bounded in time and raises GatewayError with a reason that is safe to log: it
never holds the message (which holds the code). The chain never raises and never logs the code,
the message text or the full phone number.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from ..private_files import read_private_file
from ..rules.sms import SmsTicket, mask_phone, phone_problem

if TYPE_CHECKING:  # annotations only: the config imports this module
    from ..config import Config

log = logging.getLogger("mfa_radius.sms")

# The HTTP client logs every request URL at INFO, and a GET gateway carries the message in it.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_MAX_RESPONSE = 64 * 1024
_TWILIO_PATH = "/2010-04-01/Accounts/{sid}/Messages.json"


class GatewayError(Exception):
    """A gateway could not send; the text says why and is safe to log."""


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    gateway: str = ""  # the one that sent it
    error: str = ""  # why none could (safe to log and to show an admin)

    def explain(self) -> str:
        """One line for the user."""
        return "code sent" if self.ok else "could not send code"


# ---- the gateways -----------------------------------------------------------------------------

class Gateway:
    """One gateway type: its [[sms.gateways]] keys, their checks, and how it sends."""

    TYPE: ClassVar[str] = ""  # the entry's `type`
    KEYS: ClassVar[frozenset[str]] = frozenset()  # the entry's keys besides type and name
    name: str

    @staticmethod
    def problem(gw: SmsGateway) -> tuple[str, str] | None:
        """(what is wrong, the key) with this type's settings of `gw`, or None."""
        return None

    @classmethod
    def from_settings(cls, gw: SmsGateway, name: str, where: str) -> Gateway:
        """The gateway of entry `gw`, its secret files read (ConfigError naming `where`)."""
        raise NotImplementedError

    def send(self, phone: str, message: str) -> None:
        """Hand the message over, within the gateway's time bound; GatewayError if not."""
        raise NotImplementedError


class FileGateway(Gateway):
    """Appends `time phone message` lines to a file (mode 0600): for demos and tests."""

    TYPE: ClassVar[str] = "file"
    KEYS: ClassVar[frozenset[str]] = frozenset({"path"})

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path

    @staticmethod
    def problem(gw: SmsGateway) -> tuple[str, str] | None:
        if not os.path.isabs(gw.path):
            return "'path' must be an absolute file path", "path"
        return None

    @classmethod
    def from_settings(cls, gw: SmsGateway, name: str, where: str) -> FileGateway:
        return cls(name, gw.path)

    def send(self, phone: str, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        line = f"{stamp} {phone} {message.replace(chr(10), ' ')}\n".encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise GatewayError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            # One write() of a short line: concurrent writers never interleave inside it.
            os.write(fd, line)
        except OSError as exc:
            raise GatewayError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)


class HttpGateway(Gateway):
    """A generic HTTP SMS API: the request is built from templates with {phone} and {message}."""

    TYPE: ClassVar[str] = "http"
    KEYS: ClassVar[frozenset[str]] = frozenset({
        "url", "method", "headers", "params", "json", "form", "auth", "username", "secret_file",
        "success_codes", "timeout"})

    def __init__(self, name: str, *, url: str, method: str = "POST",
                 headers: dict | None = None, params: dict | None = None,
                 json: dict | None = None, form: dict | None = None,
                 auth: tuple[str, str] | str | None = None, timeout: float = 10.0,
                 success_codes: list[int] | tuple[int, ...] = (200, 201, 202, 204)):
        """`auth`: (user, password) for basic auth, a token string for bearer, or None."""
        self.name = name
        self.url = url
        self.method = method
        self.headers = dict(headers or {})
        self.params = params or {}
        self.json = json or {}
        self.form = form or {}
        self.auth = auth
        self.timeout = timeout
        self.success_codes = set(success_codes)

    @staticmethod
    def problem(gw: SmsGateway) -> tuple[str, str] | None:
        if not gw.url.startswith(("http://", "https://")):
            return "'url' must start with http:// or https://", "url"
        if gw.json and gw.form:
            return "use either 'json' or 'form' for the body, not both", "form"
        if gw.method == "GET" and (gw.json or gw.form):
            return "a GET request has no body: put the fields in 'params'", "method"
        templates = repr([gw.params, gw.json, gw.form, gw.url])
        if "{phone}" not in templates or "{message}" not in templates:
            return ("the request must carry {phone} and {message} (in 'url', 'params', 'json' "
                    "or 'form')", "gateways")
        if not all(isinstance(v, str) for v in gw.headers.values()):
            return "'headers' values must be strings", "headers"
        if gw.auth in ("basic", "bearer") and not gw.secret_file:
            return f"auth = \"{gw.auth}\" needs 'secret_file' (the password or token)", "auth"
        if gw.auth == "basic" and not gw.username:
            return 'auth = "basic" needs \'username\'', "auth"
        if gw.auth == "none" and (gw.secret_file or gw.username):
            return "'username' and 'secret_file' need auth = \"basic\" or \"bearer\"", "auth"
        if not gw.success_codes or not all(
                isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599
                for c in gw.success_codes):
            return "'success_codes' must be a list of HTTP status codes", "success_codes"
        return None

    @classmethod
    def from_settings(cls, gw: SmsGateway, name: str, where: str) -> HttpGateway:
        auth: tuple[str, str] | str | None = None
        if gw.auth == "basic":
            auth = (gw.username, read_secret_file(gw.secret_file, where))
        elif gw.auth == "bearer":
            auth = read_secret_file(gw.secret_file, where)
        return cls(name, url=gw.url, method=gw.method, headers=gw.headers, params=gw.params,
                   json=gw.json, form=gw.form, auth=auth, timeout=gw.timeout,
                   success_codes=gw.success_codes)

    def send(self, phone: str, message: str) -> None:
        # httpx only when a message goes out: the PAM fallback loads this module with the
        # config on every login.
        import httpx

        values = {"{phone}": phone, "{message}": message}
        headers = {k: _fill(v, values) for k, v in self.headers.items()}
        kwargs: dict[str, Any] = {}
        if self.params:
            kwargs["params"] = _fill(self.params, values)
        if self.json:
            kwargs["json"] = _fill(self.json, values)
        if self.form:
            kwargs["data"] = _fill(self.form, values)
        if isinstance(self.auth, tuple):
            kwargs["auth"] = httpx.BasicAuth(*self.auth)
        elif self.auth:
            headers["Authorization"] = f"Bearer {self.auth}"
        deadline = time.monotonic() + self.timeout
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client, \
                    client.stream(self.method, _fill(self.url, values), headers=headers,
                                  **kwargs) as response:
                body = _read_bounded(response, deadline)
        except httpx.TimeoutException:
            raise GatewayError(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            # The exception text may quote the URL, and a GET carries the message in it.
            raise GatewayError(f"request failed ({type(exc).__name__})") from None
        if response.status_code not in self.success_codes:
            raise GatewayError(f"HTTP status {response.status_code}{self._detail(body)}")

    def _detail(self, body: bytes) -> str:
        return ""


class TwilioGateway(HttpGateway):
    """Twilio's Messages API: POST To/From/Body as a form, basic auth with SID and auth token."""

    TYPE: ClassVar[str] = "twilio"
    KEYS: ClassVar[frozenset[str]] = frozenset({
        "account_sid", "auth_token_file", "from_number", "messaging_service_sid", "api_url",
        "timeout"})

    def __init__(self, name: str, *, account_sid: str, auth_token: str, from_number: str = "",
                 messaging_service_sid: str = "", api_url: str = "https://api.twilio.com",
                 timeout: float = 10.0):
        form = {"To": "{phone}", "Body": "{message}"}
        if messaging_service_sid:
            form["MessagingServiceSid"] = messaging_service_sid
        else:
            form["From"] = from_number
        super().__init__(name, url=api_url.rstrip("/") + _TWILIO_PATH.format(sid=account_sid),
                         method="POST", form=form, auth=(account_sid, auth_token),
                         timeout=timeout, success_codes=(200, 201))

    @staticmethod
    def problem(gw: SmsGateway) -> tuple[str, str] | None:
        if not gw.account_sid or not gw.auth_token_file:
            return "needs 'account_sid' and 'auth_token_file'", "gateways"
        if bool(gw.from_number) == bool(gw.messaging_service_sid):
            return "needs exactly one of 'from_number' or 'messaging_service_sid'", "gateways"
        if gw.from_number and phone_problem(gw.from_number):
            return f"'from_number' {phone_problem(gw.from_number)}", "from_number"
        if not gw.api_url.startswith(("http://", "https://")):
            return "'api_url' must start with http:// or https://", "api_url"
        return None

    @classmethod
    def from_settings(cls, gw: SmsGateway, name: str, where: str) -> TwilioGateway:
        return cls(name, account_sid=gw.account_sid,
                   auth_token=read_secret_file(gw.auth_token_file, where),
                   from_number=gw.from_number, messaging_service_sid=gw.messaging_service_sid,
                   api_url=gw.api_url, timeout=gw.timeout)

    def _detail(self, body: bytes) -> str:
        # Twilio's error document has a numeric code (e.g. 21211 invalid To number): enough to
        # look up, and it never quotes the message.
        try:
            code = jsonlib.loads(body).get("code")
        except (ValueError, AttributeError):
            return ""
        return f", Twilio error {code}" if isinstance(code, int) else ""


# The whole environment of a gateway program: in the PAM fallback the caller of su or sudo
# set ours, and PYTHONPATH, LD_PRELOAD or a PATH of theirs must not reach a program run as root.
COMMAND_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}


class CommandGateway(Gateway):
    """Runs an admin's program (never through a shell) with the phone and the message as
    arguments: "{phone}" and "{message}" in the argv are replaced, else both are appended. It
    gets COMMAND_ENV as its environment and / as its working directory, never the caller's."""

    TYPE: ClassVar[str] = "command"
    KEYS: ClassVar[frozenset[str]] = frozenset({"command", "timeout"})

    def __init__(self, name: str, argv: list[str], timeout: float = 10.0):
        self.name = name
        self.argv = list(argv)
        self.timeout = timeout

    @staticmethod
    def problem(gw: SmsGateway) -> tuple[str, str] | None:
        if not gw.command or not os.path.isabs(gw.command[0]):
            return ("'command' must be a list whose first item is an absolute path "
                    '(e.g. ["/usr/local/bin/send-sms", "{phone}", "{message}"]); it runs '
                    "without a shell", "command")
        return None

    @classmethod
    def from_settings(cls, gw: SmsGateway, name: str, where: str) -> CommandGateway:
        return cls(name, gw.command, gw.timeout)

    def send(self, phone: str, message: str) -> None:
        # Only when a message goes out: the PAM fallback loads this module on every login.
        import signal
        import subprocess

        values = {"{phone}": phone, "{message}": message}
        if any(k in arg for arg in self.argv for k in values):
            argv = [_fill(arg, values) for arg in self.argv]
        else:
            argv = [*self.argv, phone, message]
        try:
            # The admin's argv (absolute path, checked by config), never a shell.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,  # noqa: S603
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, close_fds=True,
                                    start_new_session=True, env=COMMAND_ENV, cwd="/")
        except OSError as exc:
            raise GatewayError(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        try:
            _, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # Kill the whole process group: a script's children must not outlive it either.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.communicate()
            raise GatewayError(f"{self.argv[0]} did not finish within {self.timeout:g} s "
                               "(killed)") from None
        if proc.returncode != 0:
            first = (err or b"").decode("utf-8", "replace").strip().splitlines()[:1]
            detail = f": {_scrub(first[0], phone, message, digits=True)}" if first else ""
            raise GatewayError(f"{self.argv[0]} exited with status {proc.returncode}{detail}")


# ---- the settings ------------------------------------------------------------------------------

# The gateway types, by the `type` of their [[sms.gateways]] entries.
GATEWAYS: dict[str, type[Gateway]] = {cls.TYPE: cls for cls in
                             (FileGateway, HttpGateway, TwilioGateway, CommandGateway)}


@dataclass(frozen=True)
class SmsGateway:
    """One [[sms.gateways]] entry: one way out for SMS codes, tried in order until one succeeds.

    Which keys apply depends on `type` (its class's KEYS); a key of another type is an error.
    """

    type: str = field(metadata={"choices": tuple(GATEWAYS)})
    name: str = ""  # for the logs; default: TYPE-N
    timeout: float = field(default=10.0, metadata={"min": 0.1})
    # file
    path: str = ""
    # http
    url: str = ""
    method: str = field(default="POST", metadata={"choices": ("GET", "POST", "PUT")})
    headers: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)
    auth: str = field(default="none", metadata={"choices": ("none", "basic", "bearer")})
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


def gateway_name(gw: SmsGateway, index: int) -> str:
    """The name the logs and metrics use for the index-th gateway (0-based): TYPE-N if unset."""
    return gw.name or f"{gw.type}-{index + 1}"


def gateway_keys(kind: str) -> frozenset[str]:
    """The keys of a gateway entry of type `kind`, besides `type` and `name`."""
    return GATEWAYS[kind].KEYS


@dataclass(frozen=True, slots=True)
class GatewayProblem:
    """What is wrong with the index-th [[sms.gateways]] entry, and the key to point at."""

    index: int
    message: str
    key: str = "gateways"


def check_gateways(gateways: list[SmsGateway], raw: list[dict]) -> GatewayProblem | None:
    """The first problem of the [[sms.gateways]] entries (as read, and as written in `raw`):
    a key of another type, a duplicate name, a value the type's own check refuses."""
    seen: set[str] = set()
    for i, (gw, entry) in enumerate(zip(gateways, raw)):
        keys = gateway_keys(gw.type)
        stray = sorted(set(entry) - keys - {"type", "name"})
        if stray:
            return GatewayProblem(i, f"key '{stray[0]}' does not apply to a {gw.type} gateway "
                                     f"(its keys: {', '.join(sorted(keys | {'name'}))})",
                                  stray[0])
        name = gateway_name(gw, i)
        if name in seen:
            return GatewayProblem(i, f"duplicate gateway name '{name}'", "name")
        seen.add(name)
        problem = GATEWAYS[gw.type].problem(gw)
        if problem is not None:
            return GatewayProblem(i, *problem)
    return None


# ---- the chain --------------------------------------------------------------------------------

class SmsSender:
    """The configured gateways, tried in order. Thread-safe: the daemon calls `send_code` from a
    worker thread, never from its event loop."""

    def __init__(self, gateways: list, on_event=None):
        """`on_event(event, gateway)`, if given, is called (on the sending thread) for each
        "sent", "gateway_error" and "failed" (gateway "" then): a hook for metrics counters."""
        self.gateways = list(gateways)
        self.on_event = on_event
        self._lock = threading.Lock()
        self.stats: Counter = Counter()  # sent, failed, gateway_errors

    @classmethod
    def from_config(cls, cfg: Config, on_event=None) -> SmsSender:
        """Build the chain from [[sms.gateways]], reading secret files (ConfigError if bad).

        Call it at start and on reload, before swapping a new config in.
        """
        return cls([_gateway(gw, i, cfg.path) for i, gw in enumerate(cfg.sms.gateways)],
                   on_event)

    def send_code(self, ticket: SmsTicket) -> SendResult:
        """Send an issued code (sms.issuer.issue_code); never raises, bounded by the timeouts."""
        if not ticket.ok:
            return SendResult(False, error=f"no code was issued ({ticket.reason})")
        return self.send(ticket.phone, ticket.message, ticket.user)

    def send(self, phone: str, message: str, user: str = "") -> SendResult:
        who = f"user {_user_text(user)} at {mask_phone(phone)}" if user else mask_phone(phone)
        errors = []
        for gw in self.gateways:
            try:
                gw.send(phone, message)
            except GatewayError as exc:
                reason = _scrub(str(exc), phone, message)
            except Exception as exc:  # noqa: BLE001 - a gateway bug must not kill the worker
                reason = f"internal error ({type(exc).__name__})"
            else:
                self._count("sent", gw.name)
                log.info("SMS for %s sent via %s", who, gw.name)
                return SendResult(True, gw.name)
            errors.append(f"{gw.name}: {reason}")
            self._count("gateway_error", gw.name)
            log.warning("SMS gateway %s failed for %s: %s", gw.name, who, reason)
        error = "; ".join(errors) if errors else "no gateway configured"
        self._count("failed")
        log.error("could not send code to %s: %s", who, error)
        return SendResult(False, error=error)

    def _count(self, event: str, gateway: str = "") -> None:
        with self._lock:
            self.stats["gateway_errors" if event == "gateway_error" else event] += 1
        if self.on_event is not None:
            try:
                self.on_event(event, gateway)
            except Exception:  # noqa: BLE001 - a metrics bug must not stop a send
                log.exception("SMS metrics hook failed")


def _gateway(gw: SmsGateway, index: int, config_path: str):
    name = gateway_name(gw, index)
    return GATEWAYS[gw.type].from_settings(gw, name, f"{config_path}: SMS gateway '{name}'")


def read_secret_file(path: str, where: str) -> str:
    """The secret in `path` (its first line); refused unless only its owner can read it."""
    try:
        data = read_private_file(path, "secret file", ConfigError, f"{where}: ")
    except FileNotFoundError:
        raise ConfigError(f"{where}: cannot read secret file {path}: no such file") from None
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: secret file {path} is not UTF-8 text") from None
    if not secret or "\n" in secret:
        raise ConfigError(f"{where}: secret file {path} must hold the secret on one line")
    return secret


def _fill(template, values: dict[str, str]):
    """Replace {phone} and {message} in strings, nested lists and tables (not str.format: a
    provider's template may hold other braces)."""
    if isinstance(template, str):
        for key, value in values.items():
            template = template.replace(key, value)
        return template
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


def _read_bounded(response, deadline: float) -> bytes:
    """The start of the body, giving up at the deadline (a server trickling bytes)."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= _MAX_RESPONSE or time.monotonic() > deadline:
            break
    return body[:_MAX_RESPONSE]


_DIGITS = re.compile(r"\d{4,}")


def _scrub(text: str, phone: str, message: str, digits: bool = False) -> str:
    """A reason safe to log: without the message or the phone; with `digits` (text from a
    program's stderr), without any run of digits either (it might be the code)."""
    if message:
        text = text.replace(message, "[message]")
    if phone:
        text = text.replace(phone, "[phone]")
    if digits:
        text = _DIGITS.sub("[digits]", text)
    return text[:300]


def _user_text(text: str) -> str:
    # Every non-ASCII character escaped too, as these lines always showed user names.
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:256]
