"""Logging for `mfa-radius serve`: one line per record on stderr, readable by journald and syslog.

Under systemd (stderr connected to the journal, as $JOURNAL_STREAM says) each line starts with a
`<N>` syslog priority, which journald turns into the entry's PRIORITY, and carries no timestamp
(journald adds its own). Anywhere else a line starts with an ISO-8601 UTC timestamp and the level.

User names, RADIUS attributes and PAM items come from the network: every character that is not
printable (C0 and C1 controls, line and paragraph separators, bidi overrides and other format
characters) is escaped, so that nobody can forge a log line (or a `<0>` emergency) with a newline,
rewrite an admin's terminal with an escape sequence, or reorder what a line says with U+202E.
`escape` is the one function for that: the daemon's log lines and the CLI's tables both use it
(`safe` for a value from outside, cut to length first). `fields` and `decision_line` own the
logfmt of decision lines; the two formatters and `BulkLines` share one line layout.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
import weakref
from dataclasses import dataclass

# sd-daemon(3) / syslog(3) priorities.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Libraries that are chatty at INFO about things an admin does not act on.
_QUIET = ("pyrad", "httpx", "httpcore", "asyncio", "prometheus_client")
MAX_TEXT = 256  # characters of a user-supplied value (a user name, a source) a log line shows


def escape(text: str) -> str:
    """`text` with every non-printable character shown as an escape (\\n, \\x1b, \\x9b,
    \\u2028, \\u202e, ...): always one line, and nothing a terminal acts on.

    "Printable" is str.isprintable(): it refuses every control (Cc: C0, DEL, C1), format
    character (Cf: bidi embeddings, overrides, isolates and marks, zero-width characters),
    line and paragraph separator (Zl, Zp), space other than " ", surrogate and unassigned code
    point. Printable text (nearly every line) is returned as it is.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def safe(text: str, limit: int = MAX_TEXT) -> str:
    """A user-supplied string made safe for one log line or a terminal: cut to `limit`
    characters, then escaped."""
    return escape(text[:limit])


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    point = ord(ch)
    if point < 0x100:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


def stderr_is_journal(stream=None, environ=None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd set up
    ($JOURNAL_STREAM=DEV:INO)."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    stream = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    # A child of the service may have stderr redirected elsewhere yet inherit the variable.
    return (st.st_dev, st.st_ino) == (dev, ino)


# ---- the layout of a line: JournalFormatter, PlainFormatter and BulkLines -------------------

def journal_prefix(levelno: int, name: str) -> str:
    """What starts a line for the journal: `<N>name: ` (journald adds the time)."""
    return f"<{priority(levelno)}>{name}: "


def plain_prefix(levelname: str, name: str) -> str:
    """What follows the timestamp of a plain line: `LEVEL name: `."""
    return f"{levelname} {name}: "


def plain_second(second: int) -> str:
    """The whole-second part of a plain line's UTC timestamp: `2026-11-28T01:30:00`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_MILLIS = tuple(f".{ms:03d}Z " for ms in range(1000))  # the rest of a plain line's timestamp


def plain_millis(ms: int) -> str:
    """The rest of the timestamp, and the space before the prefix: `.123Z `."""
    return _MILLIS[ms]


class JournalFormatter(logging.Formatter):
    """`<N>name: message`; a traceback's lines each get the same priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        line = journal_prefix(record.levelno, record.name) + escape(record.getMessage())
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join([line] + [prefix + "  " + extra for extra in _extra_lines(self, record)])


class PlainFormatter(logging.Formatter):
    """`2026-11-28T01:30:00.123Z WARNING mfa_radius.radius: message`."""

    def format(self, record: logging.LogRecord) -> str:
        line = (plain_second(int(record.created)) + plain_millis(int(record.msecs))
                + plain_prefix(record.levelname, record.name) + escape(record.getMessage()))
        return "\n".join([line] + ["    " + extra for extra in _extra_lines(self, record)])


def _extra_lines(formatter: logging.Formatter, record: logging.LogRecord) -> list[str]:
    text = ""
    if record.exc_info:
        text = formatter.formatException(record.exc_info)
    if record.stack_info:
        text += ("\n" if text else "") + formatter.formatStack(record.stack_info)
    return [escape(part) for part in text.splitlines()]


class _Handler(logging.StreamHandler):
    """Marks the handler this module installed, so setup() can be called again (tests, reload).

    The BulkLines writing through it are flushed before each record it writes, so that the
    output keeps the order in which lines were logged.
    """

    journal = False

    def __init__(self, stream=None):
        super().__init__(stream)
        self.bulk: weakref.WeakSet[BulkLines] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (an RLock: BulkLines.flush takes it again).
        for lines in self.bulk:
            lines.flush()
        super().emit(record)


BULK_LINES_MAX = 512  # lines held before BulkLines writes without waiting for its flush()


class BulkLines:
    """INFO lines of one logger (the per-decision lines), written in bulk once per loop tick.

    Through the logging module a line costs a LogRecord, the handler lock, the formatter, a
    write and a flush, a large part of a RADIUS request. While setup()'s handler is the only
    one, lines are laid out here with the formatters' own pieces (journal_prefix, plain_prefix,
    plain_second, plain_millis) and written with one write and one flush per `flush()`; with any
    other handler in the way (tests' caplog, an embedding program) each line goes through the
    logging module as usual. Any other record written by
    setup()'s handler first flushes the lines held here (from whichever thread), so the output
    stays in time order.
    """

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)
        self._chain = [self.logger]
        parent = self.logger.parent
        while parent is not None and parent is not logging.getLogger():
            self._chain.append(parent)
            parent = parent.parent
        self._root = logging.getLogger()
        self._pending: list[str] = []
        self._handler: _Handler | None = None
        self._journal = False
        self._prefix = ""
        self._second = -1
        self._stamp = ""

    def add(self, message: str) -> bool:
        """Queue one INFO line; True when it is the first since the last flush (schedule one)."""
        pending = self._pending
        if not pending and not self._check():
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.info("%s", message)
            return False
        # escape() changes only characters that str.isprintable() refuses.
        text = message if message.isprintable() else escape(message)
        if self._journal:
            pending.append(f"{self._prefix}{text}\n")
        else:
            now = time.time()
            second = int(now)
            if second != self._second:
                self._second = second
                self._stamp = plain_second(second)
            pending.append(f"{self._stamp}{_MILLIS[int((now - second) * 1000)]}{self._prefix}"
                           f"{text}\n")
        if len(pending) >= BULK_LINES_MAX:
            self.flush()
            return False
        return len(pending) == 1

    def _check(self) -> bool:
        """Whether lines can bypass the logging module until the next flush (checked once per
        tick): INFO enabled, and setup()'s handler the only one on the way."""
        if not self.logger.isEnabledFor(logging.INFO):
            return False
        handlers = self._root.handlers
        handler = handlers[0] if len(handlers) == 1 else None
        if (not isinstance(handler, _Handler) or any(lg.handlers for lg in self._chain)
                or not all(lg.propagate for lg in self._chain)):
            return False
        if handler is not self._handler:
            handler.bulk.add(self)
            self._handler = handler
        self._journal = handler.journal
        self._prefix = journal_prefix(logging.INFO, self.logger.name) if handler.journal \
            else plain_prefix(logging.getLevelName(logging.INFO), self.logger.name)
        return True

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        handler = self._handler
        if handler is None:
            pending.clear()
            return
        handler.acquire()
        try:
            # Under the handler's lock, and in place: another thread's record may flush while
            # the loop thread appends; the lines appended meanwhile stay for the next flush.
            count = len(pending)
            text = "".join(pending[:count])
            del pending[:count]
            handler.stream.write(text)
            handler.stream.flush()
        except (OSError, ValueError):  # full disk, closed stream: like logging, never fatal
            pass
        finally:
            handler.release()


def setup(debug: bool = False, stream=None, journal: bool | None = None) -> logging.Handler:
    """Send every record to `stream` (stderr) in the journal or plain form; DEBUG with `debug`.

    `journal` None: decided by $JOURNAL_STREAM. Returns the installed handler.
    """
    stream = sys.stderr if stream is None else stream
    if journal is None:
        journal = stderr_is_journal(stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream)
    handler.journal = journal
    handler.setFormatter(JournalFormatter() if journal else PlainFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return handler


def fields(**values) -> str:
    """`key=value ...` (logfmt) for decision lines; values with spaces, quotes, backslashes or
    characters to escape are quoted, with a backslash before their quotes and backslashes and
    then escaped (so an escaped ESC, `"\\x1b"`, never reads like a typed backslash, `"\\\\x1b"`).

    >>> fields(client="vpn1", user="alice smith", result="reject", reason="bad_code")
    'client=vpn1 user="alice smith" result=reject reason=bad_code'
    """
    out = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
        else:
            text = str(value)
        if not text or not text.isprintable() or any(c in text for c in ' "=\\'):
            text = '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


# A value that fields() writes as it is: no quoting, no escaping.
_PLAIN = re.compile(r"[A-Za-z0-9._@+\-]+\Z").match


@functools.lru_cache(maxsize=1024)
def _plain_client(name: str) -> bool:
    """Client names come from the config: checked once each."""
    return _PLAIN(name) is not None


def decision_line(client: str, user: str, result: str, reason: str, ms: float,
                  sent: str = "", policy: str = "") -> str:
    """The RADIUS front's decision line, `fields(client=, user=, result=, reason=, ms=[,
    name_sent=][, policy=])`: one per request, so plain values (the usual case) skip fields()'
    per-value checks and go straight into the line. `sent`: the User-Name as sent when it is not
    the canonical `user` (then a trailing name_sent= field); `policy`: what the client sets of
    its own (clients.policy_tag), when anything."""
    ms_text = f"{ms:.1f}".rstrip("0").rstrip(".") or "0"
    # isascii() and isalnum(): the commonest plain names, cheaper than the regex.
    if not sent and not policy and _plain_client(client) and (
            (user.isascii() and user.isalnum()) or _PLAIN(user)):
        return f"client={client} user={user} result={result} reason={reason} ms={ms_text}"
    extra = {"name_sent": sent} if sent else {}
    if policy:
        extra["policy"] = policy
    return fields(client=client, user=user, result=result, reason=reason, ms=round(ms, 1),
                  **extra)


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """At most `burst` messages per key every `per_seconds`; the rest are counted, then reported.

    For the fronts' drop logs ("unknown client 192.0.2.7", "bad Message-Authenticator from vpn1"):
    a flood of spoofed packets must not flood the journal, and must not go unnoticed either. When
    a key's window ends, the next message (or `flush()`) first logs "N similar messages
    suppressed". With the logger at DEBUG (`--debug`) nothing is suppressed.
    """

    def __init__(self, logger: logging.Logger, per_seconds: float = 60.0, burst: int = 5,
                 max_keys: int = 1024, clock=time.monotonic):
        self.logger = logger
        self.per_seconds = per_seconds
        self.burst = burst
        # Keys often hold a source address; spoofed sources must not grow this without bound.
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def log(self, level: int, key: str, msg: str, *args) -> bool:
        """Log `msg % args` at `level` unless `key` is over its rate; True if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(level, msg, *args)
            return True
        now = self.clock()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.max_keys:
                self.flush()
            if len(self._windows) >= self.max_keys:
                key = "(too many keys)"  # one shared budget for the overflow
                window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now)
        if now - window.start >= self.per_seconds:
            self._report(level, key, window, now)
            window.start, window.count, window.suppressed = now, 0, 0
        if window.count < self.burst:
            window.count += 1
            self.logger.log(level, msg, *args)
            return True
        window.suppressed += 1
        return False

    def debug(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def info(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def flush(self, level: int = logging.WARNING) -> None:
        """Report the suppressed counts of ended windows and forget idle keys (call it now and
        then, e.g. from housekeeping, so the count of a flood that stopped is not lost)."""
        now = self.clock()
        for key, window in list(self._windows.items()):
            if now - window.start >= self.per_seconds:
                self._report(level, key, window, now)
                del self._windows[key]

    def _report(self, level: int, key: str, window: _Window, now: float) -> None:
        if window.suppressed:
            self.logger.log(level, "%d similar messages suppressed (%s) in the last %.0f s",
                            window.suppressed, key, now - window.start)
