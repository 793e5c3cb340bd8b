"""What every command of the CLI shares: the error-handling group, the context (config and
store opened on first use), the --json option and the printers."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import click

from .. import config as config_mod
from ..errors import MfaError
from ..terminal import show, table

DEBUG_ENV = "MFA_RADIUS_DEBUG"
JSON_HELP = "Print JSON instead of text."

# The --json flag of the commands that print a listing or a record.
json_option = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)


class CliGroup(click.Group):
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
            if os.environ.get(DEBUG_ENV):
                raise
            click.echo(f"mfa-radius: internal error: {type(exc).__name__}: {show(exc)} "
                       f"(set {DEBUG_ENV}=1 for a traceback)", err=True)
            ctx.exit(1)


class Context:
    """The config named by --config, loaded when a command first needs it."""

    def __init__(self, path: str):
        self.path = path
        self._config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load(self.path)
        return self._config

    def devices(self):
        from ..state import open_devices

        return open_devices(self.config)

    def user_name(self, raw: str) -> str:
        """A USER argument in canonical form (ALICE is alice); one-line error, exit 1."""
        from ..names import canonical_user

        return canonical_user(raw, self.config.policy)


pass_ctx = click.make_pass_decorator(Context)


def read_secret(what: str, strip: bool = True) -> str:
    """One line from standard input (a hidden prompt on a terminal): for codes and passwords,
    which as arguments any local user could read in /proc."""
    if sys.stdin.isatty():
        return click.prompt(what, hide_input=True, prompt_suffix=": ")
    line = sys.stdin.readline(4096).rstrip("\r\n")
    return line.strip() if strip else line


def two_codes(code1: str, code2: str | None) -> tuple[str, str]:
    """(code1, code2) from the arguments, or from standard input when CODE1 is `-`."""
    if code1 != "-":
        if code2 is None:
            raise click.UsageError("Missing argument 'CODE2' (or give '-' to read both codes "
                                   "from standard input).")
        return code1, code2
    if code2 is not None:
        raise click.UsageError("with '-', both codes come from standard input: give no CODE2")
    if sys.stdin.isatty():
        return read_secret("Code 1"), read_secret("Code 2")
    codes = sys.stdin.read(4096).split()
    if len(codes) != 2:
        raise click.UsageError(f"expected two codes on standard input, got {len(codes)}")
    return codes[0], codes[1]


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (`2026-01-02T03:04:05Z`); None for never."""
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    for line in table(headers, rows):
        click.echo(line)

