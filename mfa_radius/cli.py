"""`mfa-radius`: the admin CLI. Thin: parse, call the library, print text or --json.

The verbs mirror the device lifecycle (mfa_radius.devices.Devices); every error is one line on
stderr.
Exit codes: 0 success, 1 refused or failed, 2 usage, configuration, key file or database error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import click

from . import config as config_mod
from .errors import MfaError
from .terminal import show, table

if TYPE_CHECKING:
    from .verifier import Verifier

_DEBUG_ENV = "MFA_RADIUS_DEBUG"
JSON_HELP = "Print JSON instead of text."


class _Group(click.Group):
    """Turns every MfaError (and any bug) into one line on stderr instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MfaError as exc:
            # One line; a few errors list their items (every bad line of an import) on lines
            # of their own, each escaped.
            first, *more = getattr(exc, "lines", None) or [str(exc)]
            click.echo(f"mfa-radius: {show(first)}", err=True)
            for line in more:
                click.echo(f"  {show(line)}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("mfa-radius: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader (head, less) went away: stop quietly, as other Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - never a traceback for an admin
            if os.environ.get(_DEBUG_ENV):
                raise
            click.echo(f"mfa-radius: internal error: {type(exc).__name__}: {show(exc)} "
                       f"(set {_DEBUG_ENV}=1 for a traceback)", err=True)
            ctx.exit(1)


class _Context:
    def __init__(self, path: str):
        self.path = path
        self._config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load(self.path)
        return self._config

    def devices(self):
        from .state import open_devices

        return open_devices(self.config)

    def user_name(self, raw: str) -> str:
        """A USER argument in canonical form (ALICE is alice); one-line error, exit 1."""
        from .names import canonical_user

        return canonical_user(raw, self.config.policy)


pass_ctx = click.make_pass_decorator(_Context)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE",
              help=f"Config file (default: ${config_mod.ENV_VAR} or {config_mod.DEFAULT_PATH}).")
@click.version_option(package_name="mfa-radius")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Second-factor (TOTP/HOTP tokens) administration for the mfa-radius server."""
    ctx.obj = _Context(config_mod.resolve_path(config_path))
    if ctx.invoked_subcommand != "serve":
        # A command has no log: what it did or why not is its own one line (and the audit
        # table), not also the library's log lines on stderr.
        import logging

        logging.getLogger("mfa_radius").addHandler(logging.NullHandler())


# ---- set-up -------------------------------------------------------------------------------------

@main.command()
@pass_ctx
def init(ctx: _Context) -> None:
    """Create the key file and the database (mode 0600).

    Both as named in the config; what exists already is kept.
    """
    from .state import init as do_init

    for line in do_init(ctx.config):
        click.echo(line)


@main.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings as JSON.")
@pass_ctx
def check_config(ctx: _Context, as_json: bool) -> None:
    """Validate the config as `serve` does; print the settings.

    Exit 0 with the effective settings (secrets masked), or 2 with the first problem, naming
    file, line and key. Settings that are accepted but weaken security are warned about on
    stderr.
    """
    cfg = config_mod.load(ctx.path, serving=True)
    settings = config_mod.describe(cfg)
    warnings = config_mod.warnings(cfg)
    if as_json:
        _print_json({**settings, "warnings": warnings})
        return
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{ctx.path}: OK")
    from .state import name_report

    for line in name_report(ctx.config):  # two stored names that are one user, and the like
        click.echo(f"warning: {line}", err=True)
    for section, values in settings.items():
        if section == "path":
            continue
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"  {key} = {json.dumps(value)}")


@main.command()
@click.option("--debug", is_flag=True, help="Log why each request was decided (never secrets).")
@pass_ctx
def serve(ctx: _Context, debug: bool) -> None:
    """Run the RADIUS server and the PAM socket (foreground)."""
    from .daemon import run

    sys.exit(run(ctx.path, debug=debug))


# ---- devices ------------------------------------------------------------------------------------

@main.group()
def device() -> None:
    """Token devices: create, enable, resync, deactivate, list.

    A device belongs to one user; virtual devices (authenticator apps) are created here,
    hardware tokens imported from the vendor's seed file.
    """


@device.command("create-virtual")
@click.argument("serial")
@click.option("--type", "kind", type=click.Choice(["totp", "hotp"]), default="totp",
              show_default=True, help="Time-based (TOTP) or counter-based (HOTP) codes.")
@click.option("--digits", type=click.Choice(["6", "8"]), default="6", show_default=True,
              help="Code length.")
@click.option("--algorithm", type=click.Choice(["SHA1", "SHA256", "SHA512"], case_sensitive=False),
              default="SHA1", show_default=True,
              help="HMAC hash (most authenticator apps only do SHA1).")
@click.option("--period", type=click.IntRange(1, 3600), default=30, show_default=True,
              help="TOTP time step in seconds.")
@click.option("--issuer", help="Issuer shown by the authenticator app (default: [otp] issuer).")
@click.option("--qr", is_flag=True, help="Print a QR code of the otpauth:// URI in the terminal.")
@click.option("--qr-png", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the QR code as a new PNG file (mode 0600), before the device is "
                   "stored: if it cannot be written, no device is created.")
@click.option("--force", is_flag=True, help="With --qr-png: replace an existing FILE.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def create_virtual(ctx: _Context, serial, kind, digits, algorithm, period, issuer, qr, qr_png,
                   force, as_json) -> None:
    """Create an authenticator-app device; show its seed once.

    The device is unassigned until `device enable` with two codes from the app.
    """
    if force and not qr_png:
        raise click.UsageError("--force only applies to --qr-png")
    written: list[str] = []

    def deliver(info: dict) -> None:
        _write_qr_png(info["otpauth_uri"], qr_png, force)
        written.append(qr_png)

    try:
        info = ctx.devices().create_virtual(serial, kind=kind, digits=int(digits),
                                            algorithm=algorithm.upper(), period=period,
                                            issuer=issuer, deliver=deliver if qr_png else None)
    except BaseException:
        for path in written:  # the commit failed after the file was written: no such device
            _remove_quietly(path)
        raise
    if as_json:
        _print_json(info)
    else:
        click.echo(f"serial:      {info['serial']}")
        click.echo(f"secret:      {info['secret']}")
        click.echo(f"otpauth URI: {info['otpauth_uri']}")
        if qr_png:
            click.echo(f"QR code:     {qr_png}")
        click.echo(f"Next: mfa-radius device enable USER {show(serial)} - "
                   "(then type two consecutive codes)")
    if qr:
        from .qrterm import render

        # Colours even into a pipe or file: without them the blocks are no QR code.
        click.echo(render(info["otpauth_uri"]), nl=False, color=True)


@device.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "pskc"]), required=True,
              help="The file's format: OATH CSV or PSKC (RFC 6030) XML.")
@click.option("--pskc-key", metavar="HEX",
              help="Pre-shared key of an encrypted PSKC file ('-' reads it from stdin).")
@click.option("--pskc-password", metavar="PW",
              help="Password of a PBKDF2-protected PSKC file ('-' reads it from stdin).")
@click.option("--pskc-password-file", type=click.File("r"), metavar="FILE",
              help="Read the PSKC password from the first line of FILE.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def import_devices(ctx: _Context, file, fmt, pskc_key, pskc_password, pskc_password_file,
                   as_json) -> None:
    """Import hardware tokens from a vendor seed file.

    All or nothing: one bad line imports no token, and every bad line is listed. Give secrets
    as `-` (standard input) or in a file: an argument is visible to every local user in /proc
    while the import runs.
    """
    from . import importers

    started = time.monotonic()
    if pskc_password_file is not None:
        if pskc_password:
            raise click.UsageError("give --pskc-password or --pskc-password-file, not both")
        pskc_password = pskc_password_file.readline().rstrip("\r\n")
    if fmt == "csv":
        if pskc_key or pskc_password:
            raise click.UsageError("--pskc-key/--pskc-password only apply to --format pskc")
        specs = importers.parse_csv_file(file)
    else:
        if pskc_key and pskc_password:
            raise click.UsageError("give --pskc-key or --pskc-password, not both")
        key = None
        if pskc_key == "-":
            pskc_key = _read_secret("PSKC key (hex)")
        if pskc_key:
            try:
                key = bytes.fromhex(pskc_key)
            except ValueError:
                raise click.UsageError("--pskc-key must be hexadecimal") from None
        if pskc_password == "-":
            pskc_password = _read_secret("PSKC password", strip=False)
        # Vendors fill PSKC UserId with directory names: tokens import unassigned, and are then
        # enabled per user (the CSV sixth column is the way to assign on import).
        specs = importers.without_users(importers.parse_pskc(file, key=key, password=pskc_password))
    count = ctx.devices().add(specs)
    assigned = sum(1 for s in specs if s.user)
    result = {"imported": count, "assigned": assigned,
              "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        _print_json(result)
    else:
        click.echo(f"imported {count} device(s) from {file}"
                   + (f", {assigned} assigned to users" if assigned else "")
                   + f" in {result['seconds']} s")


@device.command()
@click.argument("user")
@click.argument("serial")
@click.argument("code1")
@click.argument("code2", required=False)
@pass_ctx
def enable(ctx: _Context, user, serial, code1, code2) -> None:
    """Assign SERIAL to USER, proven by two codes in a row.

    CODE1 and CODE2 are consecutive codes of the device. CODE1 `-` (and no CODE2) reads both
    codes from standard input (one line each, or both on one line), out of reach of other
    users' `ps`.
    """
    code1, code2 = _two_codes(code1, code2)
    info = ctx.devices().enable(user, serial, code1, code2)
    click.echo(f"device {show(serial)} enabled for {show(info['user'])}")


@device.command()
@click.argument("user")
@click.argument("serial")
@click.argument("code1")
@click.argument("code2", required=False)
@pass_ctx
def resync(ctx: _Context, user, serial, code1, code2) -> None:
    """Resynchronise a drifted device from two consecutive codes.

    CODE1 `-` reads both from standard input, as for enable.
    """
    code1, code2 = _two_codes(code1, code2)
    result = ctx.devices().resync(user, serial, code1, code2)
    user = result["user"]
    detail = (f"clock offset now {result['drift_steps']} step(s)" if "drift_steps" in result
              else f"counter now {result['counter']}")
    click.echo(f"device {show(serial)} resynchronised for {show(user)}: {detail}")


@device.command()
@click.argument("user")
@click.argument("serial")
@pass_ctx
def deactivate(ctx: _Context, user, serial) -> None:
    """Unassign a (lost) device: its codes stop working at once."""
    user = ctx.devices().deactivate(user, serial)["user"]
    click.echo(f"device {show(serial)} deactivated for {show(user)} (now unassigned)")


@device.command()
@click.argument("serial")
@pass_ctx
def delete(ctx: _Context, serial) -> None:
    """Delete an unassigned device and its seed."""
    ctx.devices().delete(serial)
    click.echo(f"device {show(serial)} deleted")


@device.command("list")
@click.option("--user", metavar="USER", help="Only the devices of USER.")
@click.option("--status", type=click.Choice(["assigned", "unassigned", "any"]), default="any",
              show_default=True, help="Only assigned or unassigned devices.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def list_devices(ctx: _Context, user, status, as_json) -> None:
    """List devices."""
    rows = ctx.devices().list(user=user, status=status)
    if as_json:
        _print_json([{**r, "created_at": _iso(r["created_at"]), "enabled_at": _iso(r["enabled_at"]),
                      "last_used_at": _iso(r["last_used_at"])} for r in rows])
        return
    _table(["SERIAL", "TYPE", "STATUS", "USER", "LAST USED"],
           [[r["serial"], r["type"] + (" (virtual)" if r["virtual"] else ""),
             r["status"] + ("" if r["seed_opens"] else " (seed does not open: replace it)"),
             r["user"] or "-", _iso(r["last_used_at"]) or "never"] for r in rows])


# ---- users --------------------------------------------------------------------------------------

@main.group()
def user() -> None:
    """Users: list, show, unlock, recovery codes."""


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def user_list(ctx: _Context, as_json) -> None:
    """List the users the database knows."""
    rows = _report(ctx)
    if as_json:
        _print_json(rows)
        return
    _table(["USER", "MFA", "DEVICES", "LOCKED"],
           [[r["user"], "yes" if r["mfa_active"] else "no", ",".join(r["devices"]) or "-",
             "yes" if r["locked"] else "no"] for r in rows])


@user.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def user_show(ctx: _Context, name, as_json) -> None:
    """Show one user's devices, lockout and recovery codes."""
    name = ctx.user_name(name)
    devices = ctx.devices()
    info = _user_report(devices.store, name, time.time(), _Privilege(ctx.config))
    if info is None:
        raise MfaError(f"no such user: {name}")
    info["device_details"] = devices.list(user=name)
    for d in info["device_details"]:
        for k in ("created_at", "enabled_at", "last_used_at"):
            d[k] = _iso(d[k])
    if as_json:
        _print_json(info)
        return
    for key in ("user", "mfa_active", "devices", "sms", "recovery_codes_left", "failures",
                "locked", "locked_until", "last_success"):
        value = info[key]
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        elif value is None:
            value = "never" if key == "last_success" else "-"
        click.echo(f"{key + ':':<21}{show(value)}")


@user.command("unlock")
@click.argument("name")
@pass_ctx
def user_unlock(ctx: _Context, name) -> None:
    """Clear USER's failure count and lockout."""
    name = ctx.user_name(name)
    devices = ctx.devices()
    with devices.store.errors("unlocking user"), devices.store.transaction():
        known = devices.store.unlock_user(name)
    click.echo(f"user {show(name)} unlocked" if known else f"user {show(name)} was not locked")


@user.command("recovery-codes")
@click.argument("name")
@click.option("--count", type=click.IntRange(1, 100), default=None,
              help="How many codes (default: [policy] recovery_codes).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def user_recovery_codes(ctx: _Context, name, count, as_json) -> None:
    """Issue new one-time recovery codes for NAME.

    They replace older ones and are shown only once.
    """
    name = ctx.user_name(name)
    codes = ctx.devices().issue_recovery_codes(name, count)
    if as_json:
        _print_json({"user": name, "codes": codes})
        return
    click.echo(f"Recovery codes for {show(name)} (each works once; older codes no longer work):")
    for code in codes:
        click.echo(f"  {code}")


@user.command("rename")
@click.argument("old")
@click.argument("new")
@pass_ctx
def user_rename(ctx: _Context, old, new) -> None:
    """Move everything stored under OLD to NEW (never merges).

    OLD is written exactly as stored. This is how a clash of two stored names that are one user
    under [policy] username_case/strip_realm is resolved; NEW must hold nothing yet.
    """
    from .names import describe

    info = ctx.devices().rename_user(old, new)
    click.echo(f"user '{describe(old)}' renamed to {info['user']}")


# ---- verify, report, audit ---------------------------------------------------------------------

@main.command()
@click.argument("name")
@click.argument("code")
@pass_ctx
def verify(ctx: _Context, name, code) -> None:
    """Check CODE for user NAME (consumes it). Exit 0 accepted, 1 refused.

    CODE `-` reads the code from standard input (one line), out of reach of other users' `ps`.
    """
    from .verifier import Attempt, Verifier

    if code == "-":
        code = _read_secret("Code")
    verifier = Verifier.open(ctx.config)
    name = ctx.user_name(name)
    decision = verifier.verify(Attempt(name, code, source=f"cli uid={os.getuid()}"))
    if decision.accepted:
        how = f" ({decision.method}, device {decision.serial})" if decision.serial else (
            f" ({decision.method})" if decision.method else f" ({decision.reason})")
        click.echo(f"accepted{how}")
        return
    if decision.reason == "error":
        error = verifier.last_error or MfaError("the database or key file failed")
        failure = type(error)(f"refused: {error}")
        failure.exit_code = error.exit_code
        raise failure
    extra = f", retry in {decision.retry_after:.0f} s" if decision.reason == "locked" else ""
    click.echo(f"refused: {decision.reason}{extra}", err=True)
    sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def report(ctx: _Context, as_json) -> None:
    """The credential report: every user's MFA state.

    One row per known user: second factor usable, devices, SMS, recovery codes left, last
    success, lockout.
    """
    rows = _report(ctx)
    if as_json:
        _print_json(rows)
        return
    _table(["USER", "MFA", "DEVICES", "SMS", "RECOVERY", "LAST SUCCESS", "LOCKED"],
           [[r["user"], "yes" if r["mfa_active"] else "no", str(len(r["devices"])),
             "yes" if r["sms"] else "no", str(r["recovery_codes_left"]),
             r["last_success"] or "never", "yes" if r["locked"] else "no"] for r in rows])


@main.command()
@click.option("--user", "name", metavar="USER", help="Only the events of USER.")
@click.option("--since", metavar="TIME",
              help="ISO date/time (UTC unless an offset is given) or an age: 30m, 12h, 7d.")
@click.option("--limit", type=click.IntRange(1, 1000000), default=1000, show_default=True,
              help="At most this many events, the newest.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_ctx
def audit(ctx: _Context, name, since, limit, as_json) -> None:
    """Authentication events (never the codes)."""
    from .state import open_store

    store = open_store(ctx.config)
    if name is not None:
        name = ctx.user_name(name)
    with store.errors("reading audit"):
        rows = store.audit_events(name, _parse_since(since), limit + 1)
    if len(rows) > limit:  # one more than asked for: older events were left out
        rows = rows[1:]
        click.echo(f"mfa-radius: showing the newest {limit} events only; older ones were left "
                   "out (use --limit N, or --since)", err=True)
    for r in rows:
        r["time"] = _iso(r["time"])
    if as_json:
        _print_json(rows)
        return
    _table(["TIME", "USER", "RESULT", "REASON", "METHOD", "SOURCE"],
           [[r["time"], r["user"] or "-", r["result"], r["reason"], r["method"] or "-",
             r["source"] or "-"] for r in rows])


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def backup(ctx: _Context, file) -> None:
    """Copy the live database to FILE (safe while serving).

    The copy is consistent and mode 0600.

    The key file is not included: back it up separately (the copy is useless without it).
    """
    from .state import open_store

    open_store(ctx.config).backup(file)
    click.echo(f"database backed up to {file} (the key file {ctx.config.storage.key_file} "
               "is not in it: keep a copy of it elsewhere)")


@main.command()
@pass_ctx
def housekeeping(ctx: _Context) -> None:
    """Prune old audit rows and expired state now.

    Audit rows past [storage] audit_retention_days go; the daemon does this hourly by itself.
    """
    from . import housekeeping as hk

    click.echo(hk.describe(hk.run_once(ctx.config), ctx.config))


def _attach_subcommands() -> None:
    from .sms.commands import sms

    main.add_command(sms)


_attach_subcommands()


# ---- helpers ------------------------------------------------------------------------------------

def _report(ctx: _Context) -> list[dict]:
    from .state import open_store

    store = open_store(ctx.config)
    now = time.time()
    privileged = _Privilege(ctx.config)
    with store.errors("reading users"):
        rows = (_user_report(store, name, now, privileged) for name in store.user_names())
        return [r for r in rows if r is not None]


class _Privilege:
    """Who may use which second factor under the config's policy: the verifier's own rule."""

    def __init__(self, cfg: config_mod.Config):
        self.cfg = cfg
        # Opened when first needed (only for users with a phone).
        self._verifier: Verifier | None = None

    def sms_usable(self, name: str, phone: str | None) -> bool:
        """A code can reach `name` by SMS: a phone, a gateway, and not privileged."""
        if not phone or not self.cfg.sms.gateways:
            return False
        if self._verifier is None:
            from .verifier import Verifier

            self._verifier = Verifier.open(self.cfg)
        return not self._verifier.is_privileged(name)


def _user_report(store, name: str, now: float, privilege: _Privilege) -> dict | None:
    """The report row of `name`; None when the database knows nothing of that user."""
    with store.errors("reading user"):
        row = store.user_row(name)
        s = store.user_summary(name)
        last_used = [d["last_used_at"] for d in store.user_devices(name) if d["last_used_at"]]
    if row is None and not s["devices"] and not s["recovery_codes_left"]:
        return None
    last = max([t for t in [s["last_success"], *last_used] if t], default=None)
    # mfa_active: the user can sign in with a second factor under the current policy: a device,
    # or SMS where the policy lets a code reach them (never for privileged users).
    return {"user": name,
            "mfa_active": bool(s["devices"]) or privilege.sms_usable(name, s.get("phone")),
            "devices": s["devices"],
            "sms": bool(s.get("phone")), "recovery_codes_left": s["recovery_codes_left"],
            "last_success": _iso(last), "failures": s["failures"],
            "locked": s["locked_until"] > now,
            "locked_until": _iso(s["locked_until"]) if s["locked_until"] > now else None}


def _read_secret(what: str, strip: bool = True) -> str:
    """One line from standard input (a hidden prompt on a terminal): for codes and passwords,
    which as arguments any local user could read in /proc."""
    if sys.stdin.isatty():
        return click.prompt(what, hide_input=True, prompt_suffix=": ")
    line = sys.stdin.readline(4096).rstrip("\r\n")
    return line.strip() if strip else line


def _two_codes(code1: str, code2: str | None) -> tuple[str, str]:
    """(code1, code2) from the arguments, or from standard input when CODE1 is `-`."""
    if code1 != "-":
        if code2 is None:
            raise click.UsageError("Missing argument 'CODE2' (or give '-' to read both codes "
                                   "from standard input).")
        return code1, code2
    if code2 is not None:
        raise click.UsageError("with '-', both codes come from standard input: give no CODE2")
    if sys.stdin.isatty():
        return _read_secret("Code 1"), _read_secret("Code 2")
    codes = sys.stdin.read(4096).split()
    if len(codes) != 2:
        raise click.UsageError(f"expected two codes on standard input, got {len(codes)}")
    return codes[0], codes[1]


_AGE = re.compile(r"^(\d+)\s*([smhdw])$")


def _parse_since(text: str | None) -> float | None:
    if not text:
        return None
    age = _AGE.match(text.strip())
    if age:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[age.group(2)]
        return time.time() - int(age.group(1)) * unit
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: use an ISO date/time or an age like 30m, 12h, 7d",
                                 param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    for line in table(headers, rows):
        click.echo(line)


def _write_qr_png(uri: str, path: str, force: bool = False) -> None:
    """A new file, mode 0600 (the QR code holds the seed); with `force`, replacing `path` by
    a new file (renamed over it), never writing into an existing one and keeping its mode."""
    import segno

    try:
        if force:
            fd, made = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                        prefix=".mfa-radius-qr-", suffix=".png")
        else:
            made = path
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise MfaError(f"{path}: already exists; refusing to write the QR code into it "
                       "(--force replaces it); no device was created") from None
    except OSError as exc:
        raise MfaError(f"{path}: cannot write the QR code: {exc.strerror}; no device was "
                       "created") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            segno.make(uri, error="m").save(fh, kind="png", scale=8, border=4)
            fh.flush()
            os.fsync(fh.fileno())
        if made != path:
            os.replace(made, path)
    except BaseException as exc:
        _remove_quietly(made)
        if isinstance(exc, OSError):
            raise MfaError(f"{path}: cannot write the QR code: {exc.strerror}; no device was "
                           "created") from None
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


if __name__ == "__main__":
    main()
