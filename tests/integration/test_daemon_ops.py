"""The real `mfa-radius serve` as systemd sees it: sd_notify READY/RELOADING/STOPPING on a test
notify socket, SIGHUP with a good and a bad config, and /metrics scraped while it serves."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from radius_helpers import Daemon, access_request

DAEMON_SOURCE = (Path(__file__).resolve().parents[2] / "mfa_radius" / "daemon.py").read_text()


class NotifySocket:
    """What systemd listens on for a Type=notify service."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout: float = 15.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def until(self, key: str, timeout: float = 15.0) -> list[dict[str, str]]:
        """Messages up to and including the first carrying `key`."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(msg)
            if key in msg:
                return seen

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    ns = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    yield ns
    ns.close()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.skipif("notify." not in DAEMON_SOURCE,
                    reason="mfa_radius/daemon.py does not call mfa_radius.notify yet")
def test_notify_ready_reload_good_and_bad_stopping(tmp_path, notify_socket):
    daemon = Daemon(tmp_path, radius='password_backend = "none"\n')
    daemon.start()
    try:
        assert any(m.get("READY") == "1" for m in notify_socket.until("READY"))

        # A good reload: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
        daemon.path.write_text(daemon.path.read_text().replace(
            'synchronous = "normal"', 'synchronous = "normal"\naudit_retention_days = 30'))
        daemon.proc.send_signal(signal.SIGHUP)
        msgs = notify_socket.until("READY")
        reloading = [m for m in msgs if m.get("RELOADING") == "1"]
        assert reloading and int(reloading[0]["MONOTONIC_USEC"]) > 0
        daemon.wait_log("reloaded ")

        # A bad reload: still RELOADING=1 then READY=1 (the old config keeps serving).
        good = daemon.path.read_text()
        daemon.path.write_text(good + "\n[radius]\nno_such_key = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        msgs = notify_socket.until("READY")
        assert any(m.get("RELOADING") == "1" for m in msgs)
        daemon.wait_log("reload refused")
        packet, _ = access_request("nobody", b"123456")
        assert daemon.raw(packet) is not None  # still answering

        daemon.proc.send_signal(signal.SIGTERM)
        assert any(m.get("STOPPING") == "1" for m in notify_socket.until("STOPPING"))
        # A second SIGTERM while it shuts down must not turn a clean stop into a kill.
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
    finally:
        assert daemon.stop() == 0


def test_metrics_served_by_the_daemon(tmp_path):
    port = free_port_tcp()
    daemon = Daemon(tmp_path, radius='password_backend = "none"\n',
                    extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    daemon.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        daemon.wait_log("metrics on ")
        before = scrape(url)
        packet, _ = access_request("nobody", b"123456")
        assert daemon.raw(packet) is not None
        daemon.decisions(1)
        after = scrape(url)
        key = ("mfa_radius_requests_total",
               (("client", "local"), ("front", "radius"), ("result", "reject")))
        assert after[key] - before.get(key, 0.0) == 1
        assert after[("mfa_radius_locked_users", ())] == 0
        assert ("mfa_radius_request_duration_seconds_count", (("front", "radius"),)) in after
        # the PAM socket front is counted too: a decision, and a malformed request dropped
        assert pam_ask(tmp_path / "pam.sock", b"verify\tuser=nobody\tcode=123456\tservice=sshd\n")
        assert pam_ask(tmp_path / "pam.sock", b"bogus\n").startswith(b"error")
        after = scrape(url)
        key = ("mfa_radius_requests_total",
               (("client", "sshd"), ("front", "pam"), ("result", "reject")))
        assert after.get(key) == 1
        assert after.get(("mfa_radius_dropped_total",
                          (("cause", "malformed"), ("front", "pam")))) == 1
    finally:
        assert daemon.stop() == 0


def pam_ask(path: Path, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(line)
        return s.makefile("rb").readline()


def free_port_tcp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


