"""Log format (journal and plain), escaping of hostile input, and the rate-limited drop log."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa_radius import logsetup


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_journal_form_has_priority_prefixes_and_no_timestamp(restore_logging):
    out = io.StringIO()
    logsetup.setup(debug=False, stream=out, journal=True)
    log = logging.getLogger("mfa_radius.radius")
    log.info("accept user=%s", "alice")
    log.warning("dropped")
    log.error("bad")
    log.debug("not shown without --debug")
    assert out.getvalue().splitlines() == [
        "<6>mfa_radius.radius: accept user=alice",
        "<4>mfa_radius.radius: dropped",
        "<3>mfa_radius.radius: bad",
    ]


def test_plain_form_is_timestamped_and_debug_enables_debug(restore_logging):
    out = io.StringIO()
    logsetup.setup(debug=True, stream=out, journal=False)
    logging.getLogger("mfa_radius").debug("why: %s", "bad_code")
    (line,) = out.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG mfa_radius: why: bad_code",
                        line)


def test_setup_twice_keeps_one_handler(restore_logging):
    out = io.StringIO()
    logsetup.setup(stream=out, journal=True)
    logsetup.setup(stream=out, journal=True)
    logging.getLogger("x").info("once")
    assert out.getvalue() == "<6>x: once\n"


def test_hostile_input_cannot_forge_a_line(restore_logging):
    out = io.StringIO()
    logsetup.setup(stream=out, journal=True)
    logging.getLogger("mfa_radius").info("reject user=%s", "bob\n<0>root accepted\x1b[2J")
    assert out.getvalue() == "<6>mfa_radius: reject user=bob\\n<0>root accepted\\x1b[2J\n"


def test_traceback_lines_keep_the_priority(restore_logging):
    out = io.StringIO()
    logsetup.setup(stream=out, journal=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("mfa_radius").exception("handler failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>mfa_radius: handler failed"
    assert len(lines) > 2 and all(line.startswith("<3>  ") for line in lines[1:])
    assert lines[-1] == "<3>  ValueError: boom"


def test_journal_stream_detection(tmp_path):
    with open(tmp_path / "err", "w") as fh:
        st = os.fstat(fh.fileno())
        assert logsetup.stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logsetup.stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:1"})
        assert not logsetup.stderr_is_journal(fh, {"JOURNAL_STREAM": "garbage"})
        assert not logsetup.stderr_is_journal(fh, {})


def test_a_real_process_under_journal_stream_writes_prefixes(tmp_path):
    """As under systemd: the variable names the very file stderr is."""
    err = tmp_path / "stderr"
    code = ("import os, logging; from mfa_radius import logsetup; logsetup.setup(); "
            "logging.getLogger('mfa_radius').warning('hello')")
    with open(err, "w") as fh:
        st = os.fstat(fh.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        subprocess.run([sys.executable, "-c", code], stderr=fh, env=env, check=True, timeout=30)
    assert err.read_text() == "<4>mfa_radius: hello\n"


def test_fields_quotes_what_needs_quoting():
    assert logsetup.fields(front="radius", client="vpn1", user='a "b"', result="reject",
                           reason="bad_code", latency=0.0123, serial=None) == (
        'front=radius client=vpn1 user="a \\"b\\"" result=reject reason=bad_code latency=0.012')
    assert logsetup.fields(user="", x="a=b") == 'user="" x="a=b"'


def rate_limited(level=logging.INFO, **kw):
    logger = logging.getLogger(f"test.ratelimit.{id(kw)}.{level}")
    logger.propagate = False
    logger.setLevel(level)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    clock = Clock()
    return logsetup.RateLimitedLog(logger, clock=clock, **kw), clock, out


def test_a_flood_is_collapsed_and_counted():
    rl, clock, out = rate_limited(per_seconds=60, burst=3)
    results = [rl.warning("unknown_client", "unknown client %s", "192.0.2.7") for _ in range(100)]
    assert results == [True] * 3 + [False] * 97
    # Other keys have their own budget.
    assert rl.warning("bad_ma vpn1", "bad Message-Authenticator from vpn1")
    clock.now += 61
    assert rl.warning("unknown_client", "unknown client %s", "192.0.2.7")
    assert out.getvalue().splitlines() == (
        ["unknown client 192.0.2.7"] * 3 + ["bad Message-Authenticator from vpn1",
         "97 similar messages suppressed (unknown_client) in the last 61 s",
         "unknown client 192.0.2.7"])


def test_flush_reports_a_flood_that_stopped_and_forgets_idle_keys():
    rl, clock, out = rate_limited(per_seconds=10, burst=1)
    for _ in range(5):
        rl.warning("k", "dropped")
    rl.flush()
    assert out.getvalue().splitlines() == ["dropped"]  # window not over yet
    clock.now += 10
    rl.flush()
    assert out.getvalue().splitlines() == ["dropped",
                                           "4 similar messages suppressed (k) in the last 10 s"]
    assert rl._windows == {}


def test_too_many_keys_share_one_budget():
    rl, clock, out = rate_limited(per_seconds=60, burst=2, max_keys=3)
    logged = sum(rl.warning(f"unknown client 198.51.100.{i}", "x") for i in range(200))
    assert logged == 3 + 2  # one each for the first three sources, then the shared budget
    assert len(rl._windows) == 4


def test_debug_logs_everything():
    rl, clock, out = rate_limited(level=logging.DEBUG, per_seconds=60, burst=1)
    assert all(rl.info("k", "m") for _ in range(10))
    assert len(out.getvalue().splitlines()) == 10


@pytest.mark.parametrize("journal", [True, False])
def test_bulk_lines_look_exactly_like_logged_lines(restore_logging, journal):
    out = io.StringIO()
    handler = logsetup.setup(debug=False, stream=out, journal=journal)
    root = logging.getLogger()
    for other in [h for h in root.handlers if h is not handler]:  # pytest's capture handlers
        root.removeHandler(other)
    lines = logsetup.BulkLines("mfa_radius.radius")
    assert lines.add("client=vpn1 user=alice result=accept reason=ok ms=0.4")
    assert not lines.add("client=vpn1 user=evil\n<0>forged result=reject")  # second: no flush
    assert out.getvalue() == ""  # nothing written before the flush
    lines.flush()
    logging.getLogger("mfa_radius.radius").info("%s", "client=vpn1 user=alice result=accept "
                                                      "reason=ok ms=0.4")
    written = out.getvalue().splitlines()
    assert len(written) == 3
    strip = (lambda s: s) if journal else (lambda s: s.split(" ", 1)[1])  # timestamps differ
    assert strip(written[0]) == strip(written[2])
    assert "\\n<0>forged" in written[1]


def test_bulk_lines_go_through_logging_when_another_handler_listens(restore_logging, caplog):
    logsetup.setup(debug=False, stream=io.StringIO(), journal=True)
    lines = logsetup.BulkLines("mfa_radius.radius")
    with caplog.at_level(logging.INFO, logger="mfa_radius.radius"):
        assert not lines.add("client=vpn1 user=bob result=reject reason=bad_code ms=1")
    assert "user=bob result=reject" in caplog.text


def test_bulk_lines_respect_the_level(restore_logging):
    out = io.StringIO()
    logsetup.setup(debug=False, stream=out, journal=True)
    logging.getLogger("mfa_radius.radius").setLevel(logging.WARNING)
    try:
        assert not logsetup.BulkLines("mfa_radius.radius").add("x")
    finally:
        logging.getLogger("mfa_radius.radius").setLevel(logging.NOTSET)
    assert out.getvalue() == ""


def test_a_record_from_another_thread_flushes_the_bulk_lines_first(restore_logging):
    out = io.StringIO()
    handler = logsetup.setup(debug=False, stream=out, journal=True)
    root = logging.getLogger()
    for other in [h for h in root.handlers if h is not handler]:  # pytest's capture handlers
        root.removeHandler(other)
    lines = logsetup.BulkLines("mfa_radius.radius")
    assert lines.add("client=vpn1 user=alice result=accept reason=ok ms=0.4")
    worker = threading.Thread(target=logging.getLogger("mfa_radius.pam").warning,
                              args=("PAM socket: uid 1000 throttled",))
    worker.start()
    worker.join()
    assert lines.add("client=vpn1 user=bob result=reject reason=bad_code ms=1")  # flush again
    lines.flush()
    lines.flush()  # nothing left: nothing written twice
    assert out.getvalue().splitlines() == [
        "<6>mfa_radius.radius: client=vpn1 user=alice result=accept reason=ok ms=0.4",
        "<4>mfa_radius.pam: PAM socket: uid 1000 throttled",
        "<6>mfa_radius.radius: client=vpn1 user=bob result=reject reason=bad_code ms=1"]


# ---- escape(): every control, C1, separator and bidi character ---------------------------------

# Bidi_Control (UAX #9): embeddings, overrides, isolates, marks.
BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
DANGEROUS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *BIDI]


def dangerous(ch: str) -> bool:
    return (ord(ch) in DANGEROUS
            or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"))


def test_escape_covers_every_c0_c1_separator_and_bidi_character():
    for point in DANGEROUS:
        out = logsetup.escape(f"a{chr(point)}b")
        assert not any(dangerous(c) for c in out), hex(point)
        assert out.startswith("a\\") and out.endswith("b") and out.isascii(), hex(point)
    assert (logsetup.escape("\x9b\x85\u2028\u202e\U000e0041")
            == "\\x9b\\x85\\u2028\\u202e\\U000e0041")


@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from([chr(c) for c in DANGEROUS]))))
def test_escape_never_leaves_a_control_or_bidi_character(text):
    out = logsetup.escape(text)
    assert not any(dangerous(c) for c in out)
    assert out.isprintable()
    assert logsetup.escape(out) == out  # twice (a _safe message in a log line) is harmless
    if text.isprintable():
        assert out == text


@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from([chr(c) for c in DANGEROUS]))))
def test_fields_is_one_printable_line_for_any_value(text):
    line = logsetup.fields(client="vpn1", user=text, result="reject")
    assert line.isprintable()
    assert line.startswith("client=vpn1 user=") and line.endswith(" result=reject")


def test_fields_tells_an_escaped_control_from_a_typed_backslash():
    assert logsetup.fields(user="a\x1b") == 'user="a\\x1b"'
    assert logsetup.fields(user="a\\x1b") == 'user="a\\\\x1b"'


def test_safe_is_escape_of_the_value_cut_to_length():
    assert (logsetup.safe("bob\u202e\x9b\n") == logsetup.escape("bob\u202e\x9b\n")
            == "bob\\u202e\\x9b\\n")
    assert logsetup.safe("é") == "é"
    assert logsetup.safe("a" * 300) == "a" * logsetup.MAX_TEXT
