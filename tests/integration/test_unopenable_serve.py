"""The real `mfa-radius serve` with a device whose seed does not open: it starts, serves everyone
else over RADIUS, refuses that user, names the device in its log and counts it in /metrics."""

from __future__ import annotations

import socket
import urllib.request

from mfa_helpers import assign, foreign_device
from radius_helpers import Daemon, access_request, free_port, now_code

from mfa_radius.radius import codec
from mfa_radius.state import open_devices


def test_serve_starts_with_a_foreign_seed_and_serves_the_others(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, radius='password_backend = "none"\n',
               extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    devices = open_devices(d.cfg)
    bob = assign(devices, "bob", "BOB-1")
    devices.store.close()
    alice = foreign_device(tmp_path, d.cfg, "alice", "ALICE-FOREIGN")
    d.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # Alice first: her user is read (again) while Bob's request waits behind it.
            for user, key, want in (("alice", alice, codec.ACCESS_REJECT),
                                    ("bob", bob, codec.ACCESS_ACCEPT)):
                packet, _ = access_request(user, now_code(key).encode())
                reply = d.raw(packet, sock=sock)
                assert reply is not None and reply[0] == want, (user, d.log())
        d.wait_log(r"user alice: device ALICE-FOREIGN: seed does not open with this key file")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        assert d.stop() == 0
    assert "mfa_radius_unopenable_devices 1.0" in text.decode()
    assert d.log().count("ALICE-FOREIGN: seed does not open") == 1
    assert "user=alice result=reject reason=error" in d.log()
