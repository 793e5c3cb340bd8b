"""sd_notify(3) without libsystemd: tell systemd (Type=notify) when the daemon is ready or
reloading.

Every function is a no-op when $NOTIFY_SOCKET is unset (run by hand, in tests, under another
supervisor) and never raises: a failed notification must not take the authentication server down.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("mfa_radius.notify")


def notify(*fields: str) -> bool:
    """Send "KEY=value" lines in one datagram to $NOTIFY_SOCKET; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        # Abstract namespace: systemd writes "@name", the kernel wants a leading NUL byte.
        address = "\0" + address[1:]
    elif address[0] != "/":
        # systemd 254+ may also hand out "vsock:..." addresses (VMs); not used for a host service.
        log.debug("NOTIFY_SOCKET %r is not a Unix socket path; not notifying", address)
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """The sockets are bound: systemd may start units ordered after this one."""
    return notify("READY=1", *(_status(status)))


def reloading(status: str | None = None) -> bool:
    """A reload started; call ready() when it is done (whether the new config was taken or not).

    systemd >= 253 (Type=notify-reload) wants MONOTONIC_USEC with RELOADING=1 to tell this reload
    from an older one; 252 ignores the unknown field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *(_status(status)))


def stopping(status: str | None = None) -> bool:
    """The daemon is shutting down (so systemctl does not report a crash while it drains)."""
    return notify("STOPPING=1", *(_status(status)))


def status(text: str) -> bool:
    """A one-line status shown by `systemctl status mfa-radius`."""
    return notify(*_status(text))


def _status(text: str | None) -> list[str]:
    # The protocol is line-based: a newline would end the field and start a bogus one.
    return [f"STATUS={' '.join(text.split())}"] if text else []
