"""`mfa-radius user ...`: list, show, unlock, recovery codes, rename."""

from __future__ import annotations

import time

import click

from ..errors import MfaError
from ..terminal import show
from .common import Context, iso, json_option, pass_ctx, print_json, print_table
from .reports import Privilege, report_rows, user_report


@click.group()
def user() -> None:
    """Users: list, show, unlock, recovery codes."""


@user.command("list")
@json_option
@pass_ctx
def user_list(ctx: Context, as_json) -> None:
    """List the users the database knows."""
    rows = report_rows(ctx)
    if as_json:
        print_json(rows)
        return
    print_table(["USER", "MFA", "DEVICES", "LOCKED"],
                [[r["user"], "yes" if r["mfa_active"] else "no", ",".join(r["devices"]) or "-",
                  "yes" if r["locked"] else "no"] for r in rows])


@user.command("show")
@click.argument("name")
@json_option
@pass_ctx
def user_show(ctx: Context, name, as_json) -> None:
    """Show one user's devices, lockout and recovery codes."""
    name = ctx.user_name(name)
    devices = ctx.devices()
    info = user_report(devices.store, name, time.time(), Privilege(ctx.config))
    if info is None:
        raise MfaError(f"no such user: {name}")
    info["device_details"] = devices.list(user=name)
    for d in info["device_details"]:
        for k in ("created_at", "enabled_at", "last_used_at"):
            d[k] = iso(d[k])
    if as_json:
        print_json(info)
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
def user_unlock(ctx: Context, name) -> None:
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
@json_option
@pass_ctx
def user_recovery_codes(ctx: Context, name, count, as_json) -> None:
    """Issue new one-time recovery codes for NAME.

    They replace older ones and are shown only once.
    """
    name = ctx.user_name(name)
    codes = ctx.devices().issue_recovery_codes(name, count)
    if as_json:
        print_json({"user": name, "codes": codes})
        return
    click.echo(f"Recovery codes for {show(name)} (each works once; older codes no longer work):")
    for code in codes:
        click.echo(f"  {code}")


@user.command("rename")
@click.argument("old")
@click.argument("new")
@pass_ctx
def user_rename(ctx: Context, old, new) -> None:
    """Move everything stored under OLD to NEW (never merges).

    OLD is written exactly as stored. This is how a clash of two stored names that are one user
    under [policy] username_case/strip_realm is resolved; NEW must hold nothing yet.
    """
    from ..names import describe

    info = ctx.devices().rename_user(old, new)
    click.echo(f"user '{describe(old)}' renamed to {info['user']}")
