"""A real FreeRADIUS 3.2 (Debian `freeradius`) run by the tests in the foreground, with a raddb of
its own in a temp dir: as a proxy in front of mfa-radius (test_freeradius_proxy.py) or as the
upstream password server behind it (test_radius_upstream.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from radius_helpers import free_port

HERE = Path(__file__).resolve().parent


def freeradius_binary() -> str:
    path = shutil.which("freeradius") or shutil.which("radiusd")
    if path is None:
        pytest.skip("FreeRADIUS not installed (Debian package freeradius; `make test` installs it)")
    return path


class FreeRadius:
    """`freeradius -f -l stdout -d DIR` with radiusd.conf made from `template` (a file of
    tests/integration/freeradius/): @DIR@ and @PORT@ filled in, and `values`."""

    def __init__(self, tmp: Path, template: str, values: dict[str, str] | None = None,
                 name: str = "freeradius"):
        self.binary = freeradius_binary()
        self.dir = tmp / f"raddb-{name}"
        for sub in ("log", "run"):
            (self.dir / sub).mkdir(parents=True)
        self.port = free_port()
        conf = (HERE / "freeradius" / template).read_text()
        for key, value in {"@DIR@": str(self.dir), "@PORT@": str(self.port),
                           **(values or {})}.items():
            conf = conf.replace(key, value)
        (self.dir / "radiusd.conf").write_text(conf)
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:  # for radius_helpers.radclient
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-f", "-l", "stdout", "-d", str(self.dir)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_log("Ready to process requests", timeout=15)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the FreeRADIUS log:\n{self.log()}")
