"""An LDAP / Active Directory client for password checks: find the user, bind as them, read
their groups. Blocking (ldap3, synchronous): the RADIUS front calls it on its password threads
(radius/ldap_passwords.py), never on the packet loop.

- Servers are tried in order; a connect error or timeout moves on to the next, a refused bind
  does not (the directory answered). One that failed is tried last for DOWN_FOR seconds.
- TLS always verifies the certificate and the host name (ldaps://, or StartTLS on ldap://);
  plain ldap:// only with `allow_plaintext` (directory/settings.py refuses it otherwise).
- A user's name goes into the filter escaped per RFC 4515, so `*)(uid=*` matches nobody; into
  a bind DN (`bind_format` holding "=") escaped per RFC 4514.
- An empty password is refused before any bind: RFC 4513's unauthenticated bind succeeds
  without checking anything.
- Search connections (the search account, bound once) are kept in a small pool; each user
  bind gets a connection of its own, closed at once.
"""

from __future__ import annotations

import math
import queue
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import ldap3
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from ..errors import MfaError

# Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: member of a member of ... in one search.
IN_CHAIN = "1.2.840.113556.1.4.1941"
MAX_NESTING = 10  # group levels followed by the group_filter walk
DOWN_FOR = 30.0  # seconds a server that failed to connect is tried after the others


class DirectoryError(MfaError):
    """The directory could not be asked (every server down, TLS refused, search account refused):
    a refusal, and one line for the log."""


@dataclass(frozen=True)
class Found:
    """A user whose password the directory accepted."""

    dn: str
    name: str  # user_attribute's value, or the name as given
    groups: frozenset[str]


def user_filter(template: str, user: str) -> str:
    """`template` with {user} replaced by `user` escaped per RFC 4515."""
    return template.replace("{user}", escape_filter_chars(user))


def bind_name(template: str, user: str) -> str:
    """`bind_format` with {user}: escaped as a DN value when the format is a DN."""
    return template.replace("{user}", escape_rdn(user) if "=" in template else user)


def group_name(dn: str) -> str:
    """A group's name: the value of its DN's first RDN (cn=vpn-users,ou=groups,... ->
    vpn-users)."""
    try:
        return parse_dn(dn)[0][1]
    except (ldap_errors.LDAPInvalidDnError, IndexError):
        return dn


class Directory:
    """The `[ldap]` section, as a client. Thread-safe: every call may run on any thread."""

    def __init__(self, ldap, bind_password: str = ""):
        self.settings = ldap
        self._bind_password = bind_password
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ldap.ca_file or None,
                        version=ssl.PROTOCOL_TLS_CLIENT)
        self._servers = [ldap3.Server(url, use_ssl=url.lower().startswith("ldaps://"), tls=tls,
                                      connect_timeout=ldap.connect_timeout,
                                      get_info=ldap3.NONE)
                         for url in ldap.servers]
        # Whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer.
        self._receive_timeout = max(1, math.ceil(ldap.timeout))
        self._idle: queue.LifoQueue = queue.LifoQueue(maxsize=ldap.pool_size)
        self._closed = threading.Event()
        self._down_until: dict[str, float] = {}  # server URL -> until when it is tried last

    # ---- connections -----------------------------------------------------------------------

    def _connect(self, dn: str | None, password: str | None) -> ldap3.Connection:
        """A connection bound as `dn` on the first server that answers; a refused bind is
        DirectoryError only for the search account (a user's is the caller's False)."""
        problems = []
        now = time.monotonic()
        # Those that failed lately last: a dead first server costs connect_timeout once per
        # DOWN_FOR seconds, not on every bind; tried again after, so service moves back.
        order = sorted(self._servers, key=lambda srv: self._down_until.get(srv.name, 0) > now)
        for server in order:
            conn = ldap3.Connection(server, user=dn, password=password,
                                    authentication=ldap3.SIMPLE if dn else ldap3.ANONYMOUS,
                                    receive_timeout=self._receive_timeout, read_only=True,
                                    auto_referrals=False, raise_exceptions=False)
            try:
                conn.open()
                # ldap3 writes a request in pieces: without this, TLS binds wait for the
                # peer's delayed ACK on every request.
                conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.settings.starttls and not server.ssl and not conn.start_tls():
                    raise ldap_errors.LDAPStartTLSError(
                            f"StartTLS refused: {conn.result.get('description')}")
                conn.bind()
                self._down_until.pop(server.name, None)
                return conn
            except ldap_errors.LDAPException as exc:
                _close(conn)
                self._down_until[server.name] = time.monotonic() + DOWN_FOR
                problems.append(f"{server.name}: {_one_line(exc)}")
        raise DirectoryError("no LDAP server answered: " + "; ".join(problems))

    def _search_connection(self, reuse: bool = True) -> tuple[ldap3.Connection, bool]:
        """(a connection bound as the search account, whether it was idle in the pool)."""
        while reuse:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if not conn.closed:
                return conn, True
        conn = self._connect(self.settings.bind_dn, self._bind_password)
        if not conn.bound:
            result = conn.result or {}
            _close(conn)
            raise DirectoryError(f"the search account {self.settings.bind_dn} was refused: "
                                 f"{result.get('description', 'bind failed')}")
        return conn, False

    def _as_search_account(self, fn):
        """`fn(connection)` on a pooled search connection. A directory closes idle connections
        (Active Directory's MaxConnIdleTime): one that fails is replaced once by a new one."""
        conn, reused = self._search_connection()
        try:
            result = fn(conn)
        except DirectoryError:
            _close(conn)
            if not reused:
                raise
            conn, _ = self._search_connection(reuse=False)
            try:
                result = fn(conn)
            except Exception:
                _close(conn)
                raise
        except Exception:
            _close(conn)
            raise
        self._give_back(conn)
        return result

    def _give_back(self, conn: ldap3.Connection) -> None:
        if self._closed.is_set():
            return _close(conn)
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            _close(conn)

    def _search(self, conn, base: str, flt: str, attributes: list[str], limit: int = 0):
        try:
            conn.search(base, flt, search_scope=ldap3.SUBTREE, attributes=attributes,
                        size_limit=limit, time_limit=self._receive_timeout)
        except ldap_errors.LDAPException as exc:
            raise DirectoryError(f"LDAP search under {base} failed: {_one_line(exc)}") from None
        if conn.result and conn.result.get("result") not in (0, 4):  # 4: size limit exceeded
            raise DirectoryError(f"LDAP search under {base} failed: "
                                 f"{conn.result.get('description')}")
        return [e for e in conn.response or () if e.get("type") == "searchResEntry"]

    # ---- what the password backend asks --------------------------------------------------

    def authenticate(self, user: str, password: str) -> Found | None:
        """The user, when `password` is theirs; None for an unknown user or a wrong password.
        DirectoryError when no server could be asked."""
        if not password or "\x00" in password or "\x00" in user:
            return None  # never an unauthenticated bind
        s = self.settings
        if s.bind_dn:
            entry = self._as_search_account(lambda conn: self._find(conn, user))
            if entry is None:
                return None
            dn = entry["dn"]
            user_conn = self._connect(dn, password)
            try:
                if not user_conn.bound:
                    return None
            finally:
                _close(user_conn)
            return Found(dn, self._name(entry, user), self._groups(entry, None))
        user_conn = self._connect(bind_name(s.bind_format, user), password)
        try:
            if not user_conn.bound:
                return None
            entry = self._find(user_conn, user) if s.base_dn else None
            if s.base_dn and entry is None:
                return None  # bound, but not a user the filter admits
            dn = entry["dn"] if entry else bind_name(s.bind_format, user)
            groups = self._groups(entry, user_conn) if entry else frozenset()
            return Found(dn, self._name(entry, user) if entry else user, groups)
        finally:
            _close(user_conn)

    def _find(self, conn, user: str):
        s = self.settings
        attributes = ["memberOf"] + ([s.user_attribute] if s.user_attribute else [])
        entries = self._search(conn, s.base_dn, user_filter(s.user_filter, user), attributes,
                               limit=2)
        return entries[0] if len(entries) == 1 else None  # two: ambiguous, nobody

    def _name(self, entry, user: str) -> str:
        attr = self.settings.user_attribute
        if not attr or entry is None:
            return user
        value = entry.get("attributes", {}).get(attr)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        return value if isinstance(value, str) and value else user

    def _groups(self, entry, conn) -> frozenset[str]:
        """The names of the user's groups, read on `conn` (the user's own, with bind_format)
        or as the search account."""
        if conn is not None:
            dns = self._group_dns(conn, entry)
        else:
            dns = self._as_search_account(lambda c: self._group_dns(c, entry))
        return frozenset(group_name(dn) for dn in dns)

    def _group_dns(self, conn, entry) -> set[str]:
        s = self.settings
        base = s.group_base_dn or s.base_dn
        dn = entry["dn"]
        if not s.group_filter:
            if s.nested_groups:  # Active Directory: every group above, in one search
                found = self._search(conn, base, f"(member:{IN_CHAIN}:={escape_filter_chars(dn)})",
                                     ["cn"])
                return {e["dn"] for e in found}
            values = entry.get("attributes", {}).get("memberOf") or []
            return set(values if isinstance(values, list) else [values])
        seen: set[str] = set()
        level = {dn}
        for _ in range(MAX_NESTING if s.nested_groups else 1):
            above: set[str] = set()
            for member in level:
                flt = s.group_filter.replace("{dn}", escape_filter_chars(member))
                above |= {e["dn"] for e in self._search(conn, base, flt, ["cn"])}
            level = above - seen
            seen |= above
            if not level:
                break
        return seen

    def probe(self) -> str:
        """Bind as the search account (or connect, without one): what worked, one line;
        DirectoryError otherwise."""
        if self.settings.bind_dn:
            conn, _ = self._search_connection(reuse=False)
            where = conn.server.name
            _close(conn)
            return f"bound as {self.settings.bind_dn} on {where}"
        conn = self._connect(None, None)
        where = conn.server.name
        _close(conn)
        return f"connected to {where} (no search account: bind_format)"

    def close(self) -> None:
        self._closed.set()
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return


def _close(conn) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection
        pass


def _one_line(exc: Exception) -> str:
    # ldap3 wraps socket errors in the repr of a tuple of a tuple: ("('socket ssl ...',)",)
    text = str(exc)
    wrapped = re.fullmatch(r"""\("\('(.*)',\)",\)""", text, re.DOTALL)
    text = (wrapped.group(1) if wrapped else text) or type(exc).__name__
    # ldap3 puts the whole certificate into a name mismatch: the names asked for say enough.
    text = re.sub(r"certificate \{.*\} doesn't match any name in \[(.*?)\]",
                  r"the certificate is not for \1 (doesn't match any name)", text,
                  flags=re.DOTALL)
    return " ".join(text.split())[:300]
