"""`mfa-radius store ...`: moving the database to another backend."""

from __future__ import annotations

import click

from .common import Context, pass_ctx, print_table


@click.group()
def store() -> None:
    """The database: copy it to PostgreSQL."""


@store.command("copy")
@click.option("--to", "dsn", required=True, metavar="DSN",
              help="The PostgreSQL database: postgresql://USER@HOST:PORT/DB (no password).")
@click.option("--password-file", default="", metavar="FILE",
              help="File holding its password (0600, owned by you or root).")
@pass_ctx
def store_copy(ctx: Context, dsn: str, password_file: str) -> None:
    """Copy the SQLite database into an empty PostgreSQL database.

    Devices, users, used steps and counters, recovery and SMS codes, the audit log and the key
    check, in one transaction, verified by the count of every table. Stop `serve` first (a code
    used during the copy would not be in it); then point [storage] at the DSN.
    """
    from ..state import copy_store

    counts = copy_store(ctx.config, dsn, password_file)
    print_table(["TABLE", "ROWS"], [[table, str(n)] for table, n in counts.items()])
    click.echo(f"copied to {dsn}: set [storage] backend = \"postgresql\" and dsn in the config "
               "of every node (each with the same key file)")
