"""`mfa-radius sms ...`: enable, disable, send, list. Attached with `main.add_command(sms)`.

Thin, like mfa_radius/cli.py: parse, call SmsService, print text or --json. Refusals raise
MfaError, which the main group prints as one line.
"""

from __future__ import annotations

import json
import os

import click

from .. import terminal
from ..errors import MfaError


def _service(obj):
    # Every `mfa-radius` command loads this group: the service (the verifier, asyncio) only for
    # the `sms` commands that use it.
    from .service import SmsService

    return SmsService.open(obj.config)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group()
def sms() -> None:
    """SMS codes: users' phones, sending a code, listing.

    Enable or disable a user's phone, send a code now, list the users with a phone.
    """


@sms.command()
@click.argument("user")
@click.argument("phone")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def enable(obj, user, phone, as_json) -> None:
    """Send USER's codes by SMS to PHONE.

    PHONE is written in E.164 form (+15550001111).
    """
    user = obj.user_name(user)
    info = _service(obj).enable(user, phone)
    if as_json:
        _print_json(info)
        return
    click.echo(f"SMS codes for {terminal.show(user)} go to {info['phone']}"
               + ("" if info["changed"] else " (unchanged)"))


@sms.command()
@click.argument("user")
@click.pass_obj
def disable(obj, user) -> None:
    """Stop sending USER codes by SMS (their devices keep working)."""
    user = obj.user_name(user)
    if _service(obj).disable(user):
        click.echo(f"SMS disabled for {terminal.show(user)}")
    else:
        click.echo(f"user {terminal.show(user)} had no SMS phone")


@sms.command()
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def send(obj, user, as_json) -> None:
    """Send USER a code now (counts towards the send limits). Exit 0 sent, 1 not."""
    user = obj.user_name(user)
    outcome = _service(obj).request_code(user, source=f"cli uid={os.getuid()}")
    if as_json:
        _print_json({"user": user, "sent": outcome.sent, "reason": outcome.reason,
                     "hint": outcome.ticket.hint, "gateway": outcome.result.gateway
                     if outcome.result else None,
                     "error": outcome.result.error if outcome.result else None,
                     "retry_after": round(outcome.ticket.retry_after)})
        if not outcome.sent:
            raise SystemExit(1)
        return
    if outcome.sent:
        click.echo(f"code sent to {terminal.show(user)}'s phone {outcome.ticket.hint} via "
                   f"{outcome.result.gateway}")
        return
    detail = f" ({outcome.result.error})" if outcome.result and outcome.result.error else ""
    raise MfaError(f"no code sent to {user}: {outcome.explain()}{detail}")


@sms.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def list_users(obj, as_json) -> None:
    """Users with a phone for SMS codes.

    Privileged users are listed but never sent codes.
    """
    rows = _service(obj).users()
    if as_json:
        _print_json(rows)
        return
    widths = ("USER", "PHONE", "NOTE")
    table = [[r["user"], r["phone"], "privileged: never sent" if r["privileged"] else ""]
             for r in rows]
    for line in terminal.table(widths, table):
        click.echo(line)

