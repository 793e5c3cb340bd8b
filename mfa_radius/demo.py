"""`make run [PORT=N]`: a demo server on 127.0.0.1:1812 with one user, ready for an app.

Creates ./var (key file, database) on the first run and keeps it afterwards; the config
var/mfa-radius.toml is written on each run (for the port). The user `demo` holds a virtual TOTP
device whose QR code is printed, and the RADIUS client 127.0.0.1 has the secret `testing123`, so
`radtest demo CODE 127.0.0.1 0 testing123` logs in with the app's code. The port is checked
before anything is printed: a busy one is named with the program holding it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import sys
import time

from . import config as config_mod
from .errors import MfaError
from .otp import OtpKey, time_step

VAR = "var"
PORT = 1812
USER = "demo"
SERIAL = "DEMO-TOTP-1"

CONFIG = """\
# Demo configuration written by `make run` (mfa_radius/demo.py). Not for production.
[storage]
database = "{var}/mfa.db"
key_file = "{var}/secret.key"

[pam]
socket = "{var}/pam.sock"

[radius]
listen = ["127.0.0.1:{port}"]
# The code alone in User-Password, so that plain radtest works.
password_backend = "none"

[[radius.clients]]
name = "localhost"
address = "127.0.0.1"
secret = "testing123"
"""


def setup(var: str = VAR, port: int = PORT) -> tuple[str, dict]:
    """Create (or reuse) the demo state under `var`; return (config path, device info)."""
    var = os.path.abspath(var)
    os.makedirs(var, mode=0o700, exist_ok=True)
    path = os.path.join(var, "mfa-radius.toml")
    with open(path, "w") as fh:
        fh.write(CONFIG.format(var=var, port=port))
    cfg = config_mod.load(path)
    from .state import init, open_devices

    init(cfg)
    info_path = os.path.join(var, "demo-device.json")
    if os.path.exists(info_path):
        with open(info_path) as fh:
            return path, json.load(fh)
    devices = open_devices(cfg)
    try:
        info = devices.create_virtual(SERIAL, issuer="mfa-radius demo")
        seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
        key = OtpKey(seed)
        # Enable with the two codes before the current step, so the app's current code still works.
        step = time_step(time.time(), 30)
        devices.enable(USER, SERIAL, key.code(step - 2), key.code(step - 1))
    finally:
        devices.store.close()
    fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    return path, info


def cli_command() -> str:
    """The venv's `mfa-radius`, relative to the working directory when inside it."""
    path = os.path.join(os.path.dirname(sys.executable), "mfa-radius")
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def show(info: dict, config_path: str, port: int = PORT) -> None:
    from .qrterm import render

    print(f"\nDemo user '{USER}', TOTP device {info['serial']}. "
          "Scan this with an authenticator app:\n")
    print(render(info["otpauth_uri"]), end="")
    print(f"\nor type the secret: {info['secret']}")
    print("\nThen, in another terminal, log in with the 6-digit code the app shows:\n")
    server = "127.0.0.1" if port == 1812 else f"127.0.0.1:{port}"
    print(f"    radtest demo <code> {server} 0 testing123\n")
    print("Each code works once (replay protection): wait for the next one to try again.")
    cli, config = shlex.quote(cli_command()), shlex.quote(config_path)
    print("\nManage the demo (README's commands) with its config:\n")
    print(f"    {cli} --config {config} user list\n")
    print("or, for this shell:\n")
    bin_dir = shlex.quote(os.path.dirname(os.path.abspath(cli_command())))
    print(f"    export MFA_RADIUS_CONFIG={config} PATH={bin_dir}:\"$PATH\"")
    print("    mfa-radius user list\n")
    print("Stop the server with Ctrl-C.\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description="The mfa-radius demo server.")
    parser.add_argument("--port", type=int, default=PORT, help="UDP port (make run PORT=N)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: a port is 1-65535")
    from .portowner import udp_port_problem

    problem = udp_port_problem("127.0.0.1", args.port)
    if problem:
        other = 18120 if args.port != 18120 else 18121
        stop = "stop it (systemctl stop freeradius) or " if "freeradius" in problem else ""
        print(f"mfa-radius demo: {problem}: {stop}pick another port: make run PORT={other}",
              file=sys.stderr)
        return 1
    try:
        path, info = setup(port=args.port)
    except MfaError as exc:
        print(f"mfa-radius demo: {exc}", file=sys.stderr)
        return exc.exit_code
    show(info, path, args.port)
    from .daemon import run

    return run(path)


if __name__ == "__main__":
    sys.exit(main())
