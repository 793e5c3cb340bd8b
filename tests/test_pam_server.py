"""The daemon's PAM socket front, served in-process on a real Unix socket."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pyotp
import pytest

from mfa_radius import config as config_mod
from mfa_radius import pam_protocol as proto
from mfa_radius.pam_server import PamSocketServer
from mfa_radius.verifier import Verifier
from conftest import write_config


@pytest.fixture
def setup(tmp_path, cfg_path):
    sock = tmp_path / "run" / "pam.sock"
    path = write_config(tmp_path, f'[pam]\nsocket = "{sock}"\n[policy]\n'
                                  'privileged_users = ["root", "boss"]\nexempt_users = ["svc"]\n')
    cfg = config_mod.load(str(path))
    return cfg, sock


async def ask(sock, line: bytes) -> tuple[str, dict]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(line)
    await writer.drain()
    data = await reader.read(proto.MAX_RESPONSE)
    writer.close()
    return proto.decode(data)


def run(coro):
    return asyncio.run(coro)


def enroll(cfg, user):
    from mfa_radius.state import open_devices

    devices = open_devices(cfg)
    info = devices.create_virtual(f"S-{user}")
    totp = pyotp.TOTP(info["secret"])
    now = time.time()
    devices.enable(user, f"S-{user}", totp.at(now - 30), totp.at(now))
    devices.store.close()
    return totp


def test_status_verify_and_socket_modes(setup):
    cfg, sock = setup
    totp = enroll(cfg, "alice")

    async def main():
        server = PamSocketServer(cfg, Verifier.open(cfg))
        await server.start()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o755
        results = {u: await ask(sock, proto.encode("status", {"user": u}))
                   for u in ("alice", "svc", "boss", "carol")}
        code = totp.at(time.time() + 30)
        ok = await ask(sock, proto.encode("verify", {"user": "alice", "code": code,
                                                     "service": "sshd", "rhost": "10.0.0.9"}))
        again = await ask(sock, proto.encode("verify", {"user": "alice", "code": code}))
        sms = await ask(sock, proto.encode("sms", {"user": "alice"}))
        server.close()
        assert not sock.exists()
        return results, ok, again, sms

    results, ok, again, sms = run(main())
    assert results["alice"] == ("ok", {"status": "enrolled", "retry_after": "0", "digits": "6",
                                       "sms": "", "sms_only": "", "phone_hint": "", "recovery": ""})
    assert results["svc"][1]["status"] == "exempt"
    assert results["boss"][1]["status"] == "required"
    assert results["carol"][1]["status"] == "no_device"
    assert ok[1]["result"] == "accept" and ok[1]["reason"] == "ok"
    assert again[1]["result"] == "reject" and again[1]["reason"] == "replay"
    # No phone, no gateway: an answer saying why no code was sent, not an error.
    assert sms[0] == "ok" and sms[1]["sent"] == "" and sms[1]["message"]


def test_malformed_and_oversized_requests(setup):
    cfg, sock = setup

    async def main():
        server = PamSocketServer(cfg, Verifier.open(cfg))
        await server.start()
        out = [await ask(sock, b"status\tuser=a\tcolour=red\n"),
               await ask(sock, b"launch\tuser=a\n"),
               await ask(sock, b"status\tcode=1\n"),
               await ask(sock, b"\xff\xfe\n"),
               await ask(sock, b"status\tuser=" + b"a" * (proto.MAX_REQUEST + 10) + b"\n")]
        server.close()
        return out

    for head, fields in run(main()):
        assert (head, fields["reason"]) == ("error", "malformed")


def test_silent_clients_do_not_stall_others_and_busy_cap(setup):
    cfg, sock = setup

    async def main():
        server = PamSocketServer(cfg, Verifier.open(cfg), max_connections=3, read_timeout=0.5)
        await server.start()
        silent = [await asyncio.open_unix_connection(str(sock)) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        answered = await ask(sock, b"status\tuser=a\n")  # third slot: served at once
        elapsed = time.monotonic() - started
        more = [await asyncio.open_unix_connection(str(sock)) for _ in range(1)]
        await asyncio.sleep(0.05)
        busy = await ask(sock, b"status\tuser=a\n")  # fourth concurrent: refused, not queued
        # The silent ones are cut off after the read timeout.
        dropped = await asyncio.wait_for(silent[0][0].read(100), 2)
        for _, w in silent + more:
            w.close()
        server.close()
        return answered, elapsed, busy, dropped

    answered, elapsed, busy, dropped = run(main())
    assert answered[0] == "ok" and elapsed < 0.3
    assert busy[1]["reason"] == "busy"
    assert dropped == b""


def test_throttle_per_uid(setup):
    cfg, sock = setup

    async def main():
        server = PamSocketServer(cfg, Verifier.open(cfg))
        server.ROOT_RATE, server.ROOT_BURST = 0.01, 3
        server.USER_RATE, server.USER_BURST = 0.01, 3
        await server.start()
        out = [await ask(sock, b"status\tuser=a\n") for _ in range(5)]
        server.close()
        return out

    out = run(main())
    assert [h for h, _ in out[:3]] == ["ok"] * 3
    assert all(f["reason"] == "throttled" for _, f in out[3:])


def test_stale_socket_replaced_and_reconfigure(setup):
    cfg, sock = setup
    sock.parent.mkdir(mode=0o755)
    sock.write_text("stale")

    async def main():
        server = PamSocketServer(cfg, Verifier.open(cfg))
        await server.start()
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        server.reconfigure(cfg)
        head, _ = await ask(sock, b"status\tuser=a\n")
        server.close()
        return head

    assert run(main()) == "ok"
