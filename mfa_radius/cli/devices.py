"""`mfa-radius device ...`: the device lifecycle (mfa_radius.devices.Devices): create a virtual
device, import hardware tokens, enable, resync, deactivate, delete, list."""

from __future__ import annotations

import os
import tempfile
import time

import click

from ..errors import MfaError
from ..terminal import show
from .common import (Context, iso, json_option, pass_ctx, print_json, print_table, read_secret,
                     two_codes)


@click.group()
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
@json_option
@pass_ctx
def create_virtual(ctx: Context, serial, kind, digits, algorithm, period, issuer, qr, qr_png,
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
        print_json(info)
    else:
        click.echo(f"serial:      {info['serial']}")
        click.echo(f"secret:      {info['secret']}")
        click.echo(f"otpauth URI: {info['otpauth_uri']}")
        if qr_png:
            click.echo(f"QR code:     {qr_png}")
        click.echo(f"Next: mfa-radius device enable USER {show(serial)} - "
                   "(then type two consecutive codes)")
    if qr:
        from ..qrterm import render

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
@json_option
@pass_ctx
def import_devices(ctx: Context, file, fmt, pskc_key, pskc_password, pskc_password_file,
                   as_json) -> None:
    """Import hardware tokens from a vendor seed file.

    All or nothing: one bad line imports no token, and every bad line is listed. Give secrets
    as `-` (standard input) or in a file: an argument is visible to every local user in /proc
    while the import runs.
    """
    from .. import importers

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
            pskc_key = read_secret("PSKC key (hex)")
        if pskc_key:
            try:
                key = bytes.fromhex(pskc_key)
            except ValueError:
                raise click.UsageError("--pskc-key must be hexadecimal") from None
        if pskc_password == "-":
            pskc_password = read_secret("PSKC password", strip=False)
        # Vendors fill PSKC UserId with directory names: tokens import unassigned, and are then
        # enabled per user (the CSV sixth column is the way to assign on import).
        specs = importers.without_users(importers.parse_pskc(file, key=key, password=pskc_password))
    count = ctx.devices().add(specs)
    assigned = sum(1 for s in specs if s.user)
    result = {"imported": count, "assigned": assigned,
              "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        print_json(result)
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
def enable(ctx: Context, user, serial, code1, code2) -> None:
    """Assign SERIAL to USER, proven by two codes in a row.

    CODE1 and CODE2 are consecutive codes of the device. CODE1 `-` (and no CODE2) reads both
    codes from standard input (one line each, or both on one line), out of reach of other
    users' `ps`.
    """
    code1, code2 = two_codes(code1, code2)
    info = ctx.devices().enable(user, serial, code1, code2)
    click.echo(f"device {show(serial)} enabled for {show(info['user'])}")


@device.command()
@click.argument("user")
@click.argument("serial")
@click.argument("code1")
@click.argument("code2", required=False)
@pass_ctx
def resync(ctx: Context, user, serial, code1, code2) -> None:
    """Resynchronise a drifted device from two consecutive codes.

    CODE1 `-` reads both from standard input, as for enable.
    """
    code1, code2 = two_codes(code1, code2)
    result = ctx.devices().resync(user, serial, code1, code2)
    user = result["user"]
    detail = (f"clock offset now {result['drift_steps']} step(s)" if "drift_steps" in result
              else f"counter now {result['counter']}")
    click.echo(f"device {show(serial)} resynchronised for {show(user)}: {detail}")


@device.command()
@click.argument("user")
@click.argument("serial")
@pass_ctx
def deactivate(ctx: Context, user, serial) -> None:
    """Unassign a (lost) device: its codes stop working at once."""
    user = ctx.devices().deactivate(user, serial)["user"]
    click.echo(f"device {show(serial)} deactivated for {show(user)} (now unassigned)")


@device.command()
@click.argument("serial")
@pass_ctx
def delete(ctx: Context, serial) -> None:
    """Delete an unassigned device and its seed."""
    ctx.devices().delete(serial)
    click.echo(f"device {show(serial)} deleted")


@device.command("list")
@click.option("--user", metavar="USER", help="Only the devices of USER.")
@click.option("--status", type=click.Choice(["assigned", "unassigned", "any"]), default="any",
              show_default=True, help="Only assigned or unassigned devices.")
@json_option
@pass_ctx
def list_devices(ctx: Context, user, status, as_json) -> None:
    """List devices."""
    rows = ctx.devices().list(user=user, status=status)
    if as_json:
        print_json([{**r, "created_at": iso(r["created_at"]), "enabled_at": iso(r["enabled_at"]),
                     "last_used_at": iso(r["last_used_at"])} for r in rows])
        return
    print_table(["SERIAL", "TYPE", "STATUS", "USER", "LAST USED"],
                [[r["serial"], r["type"] + (" (virtual)" if r["virtual"] else ""),
                  r["status"] + ("" if r["seed_opens"] else " (seed does not open: replace it)"),
                  r["user"] or "-", iso(r["last_used_at"]) or "never"] for r in rows])


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

