"""The commands that run or look after the whole installation: init, check-config, serve,
verify, report, audit, backup, housekeeping."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time

import click

from .. import config as config_mod
from ..errors import MfaError
from .common import Context, iso, json_option, pass_ctx, print_json, print_table, read_secret
from .reports import report_rows


@click.command()
@pass_ctx
def init(ctx: Context) -> None:
    """Create the key file and the database (mode 0600).

    Both as named in the config; what exists already is kept.
    """
    from ..state import init as do_init

    for line in do_init(ctx.config):
        click.echo(line)


@click.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings as JSON.")
@click.option("--probe", is_flag=True,
              help="Also bind to the LDAP directory with the search account ([ldap]).")
@pass_ctx
def check_config(ctx: Context, as_json: bool, probe: bool) -> None:
    """Validate the config as `serve` does; print the settings.

    Exit 0 with the effective settings (secrets masked), or 2 with the first problem, naming
    file, line and key. Settings that are accepted but weaken security are warned about on
    stderr.
    """
    cfg = config_mod.load(ctx.path, serving=True)
    if probe:
        from ..radius.ldap_passwords import probe as ldap_probe

        click.echo(ldap_probe(cfg), err=as_json)
    settings = config_mod.describe(cfg)
    warnings = config_mod.warnings(cfg)
    if as_json:
        print_json({**settings, "warnings": warnings})
        return
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{ctx.path}: OK")
    from ..state import name_report

    for line in name_report(ctx.config):  # two stored names that are one user, and the like
        click.echo(f"warning: {line}", err=True)
    for section, values in settings.items():
        if section == "path":
            continue
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"  {key} = {json.dumps(value)}")


@click.command()
@click.option("--debug", is_flag=True, help="Log why each request was decided (never secrets).")
@pass_ctx
def serve(ctx: Context, debug: bool) -> None:
    """Run the RADIUS server and the PAM socket (foreground)."""
    from ..daemon import run

    sys.exit(run(ctx.path, debug=debug))

@click.command()
@click.argument("name")
@click.argument("code")
@pass_ctx
def verify(ctx: Context, name, code) -> None:
    """Check CODE for user NAME (consumes it). Exit 0 accepted, 1 refused.

    CODE `-` reads the code from standard input (one line), out of reach of other users' `ps`.
    """
    from ..verifier import Attempt, Verifier

    if code == "-":
        code = read_secret("Code")
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


@click.command()
@json_option
@pass_ctx
def report(ctx: Context, as_json) -> None:
    """The credential report: every user's MFA state.

    One row per known user: second factor usable, devices, SMS, recovery codes left, last
    success, lockout.
    """
    rows = report_rows(ctx)
    if as_json:
        print_json(rows)
        return
    print_table(["USER", "MFA", "DEVICES", "SMS", "RECOVERY", "LAST SUCCESS", "LOCKED"],
                [[r["user"], "yes" if r["mfa_active"] else "no", str(len(r["devices"])),
                  "yes" if r["sms"] else "no", str(r["recovery_codes_left"]),
                  r["last_success"] or "never", "yes" if r["locked"] else "no"] for r in rows])


@click.command()
@click.option("--user", "name", metavar="USER", help="Only the events of USER.")
@click.option("--since", metavar="TIME",
              help="ISO date/time (UTC unless an offset is given) or an age: 30m, 12h, 7d.")
@click.option("--limit", type=click.IntRange(1, 1000000), default=1000, show_default=True,
              help="At most this many events, the newest.")
@json_option
@pass_ctx
def audit(ctx: Context, name, since, limit, as_json) -> None:
    """Authentication events (never the codes)."""
    from ..state import open_store

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
        r["time"] = iso(r["time"])
    if as_json:
        print_json(rows)
        return
    print_table(["TIME", "USER", "RESULT", "REASON", "METHOD", "SOURCE"],
                [[r["time"], r["user"] or "-", r["result"], r["reason"], r["method"] or "-",
                  r["source"] or "-"] for r in rows])


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def backup(ctx: Context, file) -> None:
    """Copy the live database to FILE (safe while serving).

    The copy is consistent and mode 0600.

    The key file is not included: back it up separately (the copy is useless without it).
    """
    from ..state import open_store

    open_store(ctx.config).backup(file)
    click.echo(f"database backed up to {file} (the key file {ctx.config.storage.key_file} "
               "is not in it: keep a copy of it elsewhere)")


@click.command()
@pass_ctx
def housekeeping(ctx: Context) -> None:
    """Prune old audit rows and expired state now.

    Audit rows past [storage] audit_retention_days go; the daemon does this hourly by itself.
    """
    from .. import housekeeping as hk

    click.echo(hk.describe(hk.run_once(ctx.config), ctx.config))


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
