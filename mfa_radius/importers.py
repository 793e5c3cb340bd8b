"""Hardware token seed files, read into DeviceSpecs: OATH CSV and PSKC (RFC 6030).

Both parsers check the whole file before returning, and `Devices.add()` writes everything in one
transaction, so an import is all or nothing. Every problem is one ImportFormatError line naming the
file (and, for CSV, the line) and what is wrong; no message ever contains a seed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import defusedxml
import defusedxml.ElementTree as SafeET
import pskc
from pskc.exceptions import PSKCError

from .devices import DeviceSpec, check_spec, check_serial, check_user
from .errors import DeviceError, ImportFormatError
from .otp import ALGORITHMS, DIGITS, KINDS

MIN_SEED_BYTES = 10  # 80 bits, the floor RFC 4226 sets (check_spec enforces the same)
MAX_SEED_BYTES = 128
MAX_PSKC_BYTES = 256 * 1024 * 1024
MAX_XML_DEPTH = 64
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UINT = re.compile(r"^[0-9]+$")
_CSV_COLUMNS = "serial, hex seed, hotp|totp[, digits[, period-or-start-counter[, user]]]"


# ---- OATH CSV ---------------------------------------------------------------------------------

def parse_csv(text: str, source: str = "<csv>") -> list[DeviceSpec]:
    """Read an OATH CSV seed file.

    Each line is `serial, hex seed, hotp|totp[, digits[, period-or-start-counter[, user]]]`;
    digits default to 6, the TOTP period to 30 s and the HOTP start counter to 0. The optional
    user column assigns the token at once (bulk roll-out). `#` comment lines and blank lines are
    skipped, fields may be quoted, and whitespace around fields is ignored.
    `source` names the file in error messages.
    """
    specs: list[DeviceSpec] = []
    serial_lines: dict[str, int] = {}
    seed_lines: dict[bytes, int] = {}
    problems: list[str] = []  # every bad line, so that one run shows them all
    records = _csv_records(text.removeprefix("\ufeff"), source)
    first = True
    while True:
        try:
            lineno, fields = next(records)
        except StopIteration:
            break
        except ImportFormatError as exc:  # the CSV itself is broken: nothing after it is read
            problems.append(str(exc))
            break
        where = f"{source}:{lineno}"
        try:
            spec = _csv_spec(fields, where)
        except ImportFormatError as exc:
            if first and len(fields) > 1 and not _HEX.match(fields[1].strip()):
                problems.append(f"{exc} (a header line must start with #)")
            else:
                problems.append(str(exc))
            continue
        finally:
            first = False
        if spec.serial in serial_lines:
            problems.append(f"{where}: serial {spec.serial} already appears on line "
                            f"{serial_lines[spec.serial]}")
            continue
        if spec.seed in seed_lines:
            problems.append(f"{where}: device {spec.serial} has the same seed as line "
                            f"{seed_lines[spec.seed]} (one seed, one device)")
            continue
        serial_lines[spec.serial] = lineno
        seed_lines[spec.seed] = lineno
        specs.append(spec)
    if problems:
        lines = _all_problems(source, problems)
        raise ImportFormatError("\n  ".join(lines), lines if len(lines) > 1 else None)
    if not specs:
        raise ImportFormatError(f"{source}: no tokens found (expected lines of {_CSV_COLUMNS})")
    return specs


MAX_PROBLEMS = 20  # bad lines listed by one import; the rest are counted


def _all_problems(source: str, problems: list[str]) -> list[str]:
    """One problem as is; several after a summary, at most MAX_PROBLEMS, then how many more."""
    if len(problems) == 1:
        return problems
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return ([f"{source}: {len(problems)} bad lines, nothing imported:", *shown]
            + ([f"... and {more} more"] if more else []))


def parse_csv_file(path: str | os.PathLike) -> list[DeviceSpec]:
    """parse_csv() on a file: UTF-8 (a byte-order mark, as spreadsheets write, is fine)."""
    source = os.fsdecode(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise ImportFormatError(f"{source}: cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    return parse_csv(text, source)


def _csv_records(text: str, source: str):
    """(line number, fields) for each record, skipping blank and `#` lines.

    A record must sit on one line: a quote left open would otherwise swallow the lines after it
    and turn a typo into a silently wrong import.
    """
    consumed: list[int] = []

    def lines():
        for lineno, line in enumerate(io.StringIO(text, newline=""), 1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                consumed.append(lineno)
                yield line

    reader = csv.reader(lines(), skipinitialspace=True)
    while True:
        mark = len(consumed)
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lineno = consumed[-1] if consumed else 1
            raise ImportFormatError(f"{source}:{lineno}: not valid CSV ({exc})") from None
        if len(consumed) - mark > 1:
            raise ImportFormatError(f"{source}:{consumed[mark]}: a quoted field is not closed "
                                    "on this line")
        yield consumed[mark], fields


def _csv_spec(fields: list[str], where: str) -> DeviceSpec:
    fields = [f.strip() for f in fields]
    if len(fields) > 6:
        raise ImportFormatError(f"{where}: too many columns ({len(fields)}; expected at most 6: "
                                f"{_CSV_COLUMNS})")
    if len(fields) < 3:
        raise ImportFormatError(f"{where}: too few columns ({len(fields)}; expected "
                                f"{_CSV_COLUMNS})")
    fields += [""] * (6 - len(fields))
    serial, seed_hex, kind, digits, fifth, user = fields
    if not serial:
        raise ImportFormatError(f"{where}: empty serial")
    _wrap(where, check_serial, serial)
    seed = _hex_seed(seed_hex, where)
    kind = kind.lower()
    token = KINDS.get(kind)
    if token is None:
        raise ImportFormatError(f"{where}: unknown type {kind[:20]!r} (expected "
                                f"{' or '.join(sorted(KINDS))})")
    digits_n = _uint(digits, "digits", where, default=6)
    if digits_n not in DIGITS:
        raise ImportFormatError(f"{where}: digits must be 6 or 8, not {digits_n}")
    # The fifth column is the kind's own number: a TOTP period, an HOTP start counter.
    position = {"period": 30, "counter": 0,
                **token.position(_uint(fifth, token.position_name, where,
                                       default=token.position_default))}
    problem = token.spec_problem(position["period"], position["counter"],
                                 counter_name="start counter")
    if problem:
        raise ImportFormatError(f"{where}: {problem}")
    if user:
        _wrap(where, check_user, user)
    # Every rule of devices.check_spec is checked above, with the line number; Devices.add
    # checks again before writing.
    return DeviceSpec(serial, seed, kind, digits_n, "SHA1", position["period"],
                      position["counter"], user=user or None, virtual=False)


def _hex_seed(text: str, where: str) -> bytes:
    if not text:
        raise ImportFormatError(f"{where}: empty seed")
    if not _HEX.match(text):
        raise ImportFormatError(f"{where}: seed is not hexadecimal (expected only 0-9 and a-f)")
    if len(text) % 2:
        raise ImportFormatError(f"{where}: seed has an odd number of hex digits ({len(text)})")
    return _seed_size(bytes.fromhex(text), where)


def _seed_size(seed: bytes, where: str) -> bytes:
    if len(seed) < MIN_SEED_BYTES:
        raise ImportFormatError(f"{where}: seed is too short ({len(seed) * 8} bits; at least "
                                f"{MIN_SEED_BYTES * 8} are needed, 160 recommended)")
    if len(seed) > MAX_SEED_BYTES:
        raise ImportFormatError(f"{where}: seed is too long ({len(seed) * 8} bits; at most "
                                f"{MAX_SEED_BYTES * 8})")
    return seed


def _uint(text: str, what: str, where: str, default: int) -> int:
    if not text:
        return default
    # int() would also take "1_000", "+5" and non-ASCII digits: a seed file has none of those.
    if not _UINT.match(text):
        raise ImportFormatError(f"{where}: {what} must be a whole number, not {text[:20]!r}")
    if len(text) > 19:
        raise ImportFormatError(f"{where}: {what} is out of range")
    return int(text)


def _wrap(where: str, check, value) -> None:
    """Run a devices.py check, moving its DeviceError to the file and line it came from."""
    try:
        check(value)
    except DeviceError as exc:
        raise ImportFormatError(f"{where}: {exc}") from None


# ---- PSKC (RFC 6030) --------------------------------------------------------------------------

def parse_pskc(path_or_bytes: str | os.PathLike | bytes, *, key: bytes | None = None,
               password: str | None = None) -> list[DeviceSpec]:
    """Read a PSKC (RFC 6030) seed file: plain, pre-shared key (`key`) or password (PBKDF2).

    HOTP and TOTP keys become devices: serial from the device's SerialNo (else the key Id),
    digits from ResponseFormat Length, period from TimeInterval, counter from Counter, the hash
    from AlgorithmSuite, and user from the key's or device's UserId when present (the caller
    decides whether to keep it). PIN keys (RFC 6030 figure 5) are skipped; other algorithms
    (OCRA, vendor-specific ones) are refused.
    """
    if key is not None and password is not None:
        raise ImportFormatError("give either a pre-shared key or a password, not both")
    data, source = _read_pskc(path_or_bytes)
    _check_xml(data, source)
    try:
        container = pskc.PSKC(io.BytesIO(data))
    except PSKCError as exc:
        raise ImportFormatError(f"{source}: not a PSKC file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - third-party parser: any failure means a bad file
        raise ImportFormatError(f"{source}: not a PSKC file ({type(exc).__name__})") from None
    try:
        _unlock(container, source, key, password)
        specs = [spec for k in container.keys if (spec := _pskc_spec(k, source)) is not None]
    except ImportFormatError:
        raise
    except PSKCError as exc:
        raise ImportFormatError(f"{source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a value python-pskc accepted but cannot use
        raise ImportFormatError(f"{source}: malformed PSKC file ({type(exc).__name__})") from None
    if not specs:
        raise ImportFormatError(f"{source}: no HOTP or TOTP keys found")
    serials: set[str] = set()
    seeds: dict[bytes, str] = {}
    for spec in specs:
        if spec.serial in serials:
            raise ImportFormatError(f"{source}: serial {spec.serial} appears twice in the file")
        if spec.seed in seeds:
            raise ImportFormatError(f"{source}: devices {seeds[spec.seed]} and {spec.serial} "
                                    "have the same seed (one seed, one device)")
        serials.add(spec.serial)
        seeds[spec.seed] = spec.serial
    return specs


def _read_pskc(path_or_bytes) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<pskc>"
    source = os.fsdecode(path_or_bytes)
    try:
        with open(path_or_bytes, "rb") as fh:
            data = fh.read(MAX_PSKC_BYTES + 1)
    except OSError as exc:
        raise ImportFormatError(f"{source}: cannot read file: {exc.strerror}") from None
    if len(data) > MAX_PSKC_BYTES:
        raise ImportFormatError(f"{source}: file is larger than {MAX_PSKC_BYTES >> 20} MiB")
    return data, source


def _check_xml(data: bytes, source: str) -> None:
    """Refuse entity tricks, absurd nesting and malformed XML before python-pskc sees the file.

    python-pskc parses with lxml when it is installed and with the standard library otherwise;
    checking with defusedxml here keeps billion-laughs and external-entity files out whichever
    parser it picks, and gives the admin the line and column of a syntax error.
    """
    if not data.strip():
        raise ImportFormatError(f"{source}: empty file")
    try:
        depth = 0
        for event, _ in SafeET.iterparse(io.BytesIO(data), events=("start", "end")):
            depth += 1 if event == "start" else -1
            if depth > MAX_XML_DEPTH:
                # python-pskc deep-copies the tree, which crashes the interpreter on very deep
                # nesting; a PSKC file is about 8 levels deep.
                raise ImportFormatError(f"{source}: XML nested more than {MAX_XML_DEPTH} levels "
                                        "deep; not a PSKC file")
    except ImportFormatError:
        raise
    except defusedxml.DefusedXmlException:
        raise ImportFormatError(f"{source}: the file declares XML entities or external "
                                "references, which a PSKC file never needs; refusing it") from None
    except ET.ParseError as exc:
        raise ImportFormatError(f"{source}: not well-formed XML ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an unknown encoding declaration
        raise ImportFormatError(f"{source}: not well-formed XML ({type(exc).__name__})") from None


def _unlock(container, source: str, key: bytes | None, password: str | None) -> None:
    encryption = container.encryption
    if key is not None:
        encryption.key = key
    elif password is not None:
        try:
            encryption.derive_key(password)
        except Exception as exc:  # noqa: BLE001 - KeyDerivationError or a malformed salt/count
            raise ImportFormatError(f"{source}: cannot derive the key from the password "
                                    f"({_pskc_message(exc)})") from None
    elif encryption.is_encrypted:
        how = ("a password (--pskc-password)" if encryption.derivation.algorithm
               else "the pre-shared key (--pskc-key HEX)")
        name = f" named {encryption.key_name!r}" if encryption.key_name else ""
        raise ImportFormatError(f"{source}: the file is encrypted with a key{name}; give {how}")
    if encryption.key is not None:
        # python-pskc decrypts the (encrypted) MAC key again for every value it checks, twice:
        # decrypting it once here halves the time a 10,000-token file takes.
        try:
            container.mac.key = container.mac.key
        except Exception as exc:  # noqa: BLE001 - DecryptionError or a malformed MAC key
            raise ImportFormatError(f"{source}: cannot decrypt the MAC key "
                                    f"({_pskc_message(exc)}); wrong pre-shared key or password, "
                                    "or the file was altered") from None


def _pskc_spec(key, source: str) -> DeviceSpec | None:
    """One key package as a DeviceSpec; None for a PIN key (it protects another key)."""
    ident = key.id or "(no Id)"
    where = f"{source}: key {ident}"
    kind = re.split(r"[:#/]", (key.algorithm or "").strip())[-1].lower()
    if kind == "pin":
        return None
    token = KINDS.get(kind)
    if token is None:
        raise ImportFormatError(f"{where}: unsupported algorithm {(key.algorithm or 'none')!r} "
                                "(only HOTP and TOTP keys can be imported)")
    try:
        seed = key.secret
        counter = key.counter
        interval = key.time_interval
    except PSKCError as exc:
        raise ImportFormatError(f"{where}: cannot decrypt ({_pskc_message(exc)}); wrong "
                                "pre-shared key or password, or the file was altered") from None
    except Exception as exc:  # noqa: BLE001 - malformed encrypted value
        raise ImportFormatError(f"{where}: cannot decrypt ({type(exc).__name__})") from None
    if not seed:
        raise ImportFormatError(f"{where}: no secret in the key package")
    _seed_size(seed, where)
    if key.response_encoding and key.response_encoding.upper() != "DECIMAL":
        raise ImportFormatError(f"{where}: response encoding {key.response_encoding!r} is not "
                                "supported (only DECIMAL codes)")
    if key.response_check:
        raise ImportFormatError(f"{where}: codes with a check digit are not supported")
    digits = 6 if key.response_length is None else key.response_length
    if digits not in DIGITS:
        raise ImportFormatError(f"{where}: response length must be 6 or 8, not {digits}")
    algorithm = _suite(key.algorithm_suite, where)
    period = 30 if interval is None else interval
    counter = 0 if counter is None else counter
    # A PSKC file carries both; each kind checks (and keeps) its own.
    problem = token.spec_problem(period, counter, period_name="time interval")
    if problem:
        raise ImportFormatError(f"{where}: {problem}")
    period, counter = token.kept(period, counter)
    serial = (key.serial or key.id or "").strip()
    if not serial:
        raise ImportFormatError(f"{source}: a key package has neither a serial number nor an Id")
    _wrap(where, check_serial, serial)
    user = (key.key_userid or key.device_userid or "").strip() or None
    spec = DeviceSpec(serial, bytes(seed), kind, digits, algorithm, period, counter, user=user,
                      virtual=False)
    if user is not None:
        _wrap(where, check_user, user)
    _wrap(where, check_spec, spec)
    return spec


def _suite(suite: str | None, where: str) -> str:
    """AlgorithmSuite ("HMAC-SHA256", "SHA256", "hmac-sha1"...) as an otp.ALGORITHMS name."""
    if not suite:
        return "SHA1"
    name = suite.strip().upper().replace("-", "").replace("_", "")
    name = name.removeprefix("HMAC")
    if name not in ALGORITHMS:
        raise ImportFormatError(f"{where}: algorithm suite {suite[:40]!r} is not supported "
                                "(HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512)")
    return name


def _pskc_message(exc: Exception) -> str:
    """python-pskc's own messages never carry key material; anything else is named only."""
    return str(exc) if isinstance(exc, PSKCError) else type(exc).__name__


def without_users(specs: list[DeviceSpec]) -> list[DeviceSpec]:
    """The same devices left unassigned (for an import that should not assign anyone)."""
    return [replace(s, user=None) for s in specs]
