"""sd_notify: a real AF_UNIX datagram socket stands in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import time

import pytest

from mfa_radius import notify


@pytest.fixture
def listener(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def fields(sock) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_stopping_status(listener):
    assert notify.ready("serving")
    assert fields(listener) == {"READY": "1", "STATUS": "serving"}
    assert notify.stopping()
    assert fields(listener) == {"STOPPING": "1"}
    assert notify.status("3 clients\nREADY=1")
    assert fields(listener) == {"STATUS": "3 clients READY=1"}


def test_reloading_carries_monotonic_usec(listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading()
    got = fields(listener)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after
    notify.ready()
    assert fields(listener) == {"READY": "1"}


def test_abstract_namespace(monkeypatch):
    name = f"mfa-radius-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.ready()
        assert fields(sock) == {"READY": "1"}


def test_no_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.stopping() is False


def test_a_dead_socket_never_raises(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify.ready() is False
    assert "sd_notify" in caplog.text
