"""`make run`: a demo server on 127.0.0.1:1812 with one user, ready for an authenticator app.

Creates ./var (config, key file, database) on the first run and keeps it afterwards: the user
`demo` holds a virtual TOTP device whose QR code is printed, and the RADIUS client 127.0.0.1 has the
secret `testing123`, so `radtest demo CODE 127.0.0.1 0 testing123` logs in with the app's code.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

from . import config as config_mod
from .errors import MfaError
from .otp import OtpKey, time_step

VAR = "var"
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
listen = ["127.0.0.1:1812"]
# The code alone in User-Password, so that plain radtest works.
password_backend = "none"

[[radius.clients]]
name = "localhost"
address = "127.0.0.1"
secret = "testing123"
"""


def setup(var: str = VAR) -> tuple[str, dict]:
    """Create (or reuse) the demo state under `var`; return (config path, device info)."""
    var = os.path.abspath(var)
    os.makedirs(var, mode=0o700, exist_ok=True)
    path = os.path.join(var, "mfa-radius.toml")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(CONFIG.format(var=var))
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


def show(info: dict) -> None:
    import segno

    print(f"\nDemo user '{USER}', TOTP device {info['serial']}. "
          "Scan this with an authenticator app:\n")
    segno.make(info["otpauth_uri"]).terminal(compact=True)
    print(f"\nor type the secret: {info['secret']}")
    print("\nThen, in another terminal, log in with the 6-digit code the app shows:\n")
    print("    radtest demo <code> 127.0.0.1 0 testing123\n")
    print("Each code works once (replay protection): wait for the next one to try again.")
    print("Stop the server with Ctrl-C.\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        path, info = setup()
    except MfaError as exc:
        print(f"mfa-radius demo: {exc}", file=sys.stderr)
        return exc.exit_code
    show(info)
    from .daemon import run

    return run(path)


if __name__ == "__main__":
    sys.exit(main())
