"""`mfa-radius`: the admin CLI. Thin: parse, call the library, print text or --json.

The verbs mirror the device lifecycle (mfa_radius.devices.Devices); every error is one line on
stderr.
Exit codes: 0 success, 1 refused or failed, 2 usage, configuration, key file or database error.

One module per command group: `devices` (device ...), `users` (user ...), `admin` (the commands
that run or look after the installation), and the SMS commands from mfa_radius.sms.commands;
`common` holds what they share (the error-handling group, the context, --json and the
printers). Commands import the library parts they use when they run, so that `--help` and a
mistyped command answer without loading the verifier, the store or the RADIUS server.
"""

from __future__ import annotations

import logging

import click

from .. import config as config_mod
from ..sms.commands import sms
from . import admin
from .common import CliGroup, Context
from .devices import device
from .stores import store
from .users import user

__all__ = ["main"]


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE",
              help=f"Config file (default: ${config_mod.ENV_VAR} or {config_mod.DEFAULT_PATH}).")
@click.version_option(package_name="mfa-radius")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Second-factor (TOTP/HOTP tokens) administration for the mfa-radius server."""
    ctx.obj = Context(config_mod.resolve_path(config_path))
    if ctx.invoked_subcommand != "serve":
        # A command has no log: what it did or why not is its own one line (and the audit
        # table), not also the library's log lines on stderr.
        logging.getLogger("mfa_radius").addHandler(logging.NullHandler())


for _command in (admin.init, admin.check_config, admin.serve, device, user, admin.verify,
                 admin.report, admin.audit, admin.backup, admin.housekeeping, store, sms):
    main.add_command(_command)
