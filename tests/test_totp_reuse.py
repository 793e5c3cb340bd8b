"""RFC 6238 5.2 through the verifier: the same OTP is never accepted twice, and only an OTP that
was accepted counts; codes come from oathtool, an independent implementation."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from mfa_helpers import make_config, verify
from mfa_radius.devices import DeviceSpec
from mfa_radius.state import open_devices
from mfa_radius.verifier import Verifier

SEED = b"12345678901234567890"  # RFC 4226 appendix D
# Steps SKIPPED and SKIPPED + 2 of SEED give the same six digits (found by a search over steps).
SKIPPED = 56295193

pytestmark = pytest.mark.skipif(shutil.which("oathtool") is None,
                                reason="oathtool (Debian package oathtool) not installed")


def oathtool(step: int) -> str:
    secret = base64.b32encode(SEED).decode()
    out = subprocess.run(["oathtool", "--totp", "-b", secret, "-N", f"@{step * 30}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def enrolled(tmp_path, backend):
    """alice's device, enabled with the codes of the two steps before SKIPPED (each backend)."""
    cfg = make_config(tmp_path, backend=backend)
    devices = open_devices(cfg)
    devices.add([DeviceSpec("T1", SEED)])
    devices.enable("alice", "T1", oathtool(SKIPPED - 2), oathtool(SKIPPED - 1),
                   now=(SKIPPED - 1) * 30 + 1)
    verifier = Verifier.open(cfg)
    yield verifier
    verifier.store.close()
    devices.store.close()


def test_a_fresh_code_equal_to_a_skipped_steps_code_is_accepted(enrolled):
    collision = oathtool(SKIPPED)
    assert oathtool(SKIPPED + 2) == collision != oathtool(SKIPPED + 1)
    # SKIPPED is never used: the user signs in with the next step's code.
    first = verify(enrolled, "alice", oathtool(SKIPPED + 1), now=(SKIPPED + 1) * 30 + 1)
    assert first.accepted
    # Still in that step, the device (a little ahead) shows SKIPPED+2's code: the window holds
    # SKIPPED (skipped, never accepted) with the same digits, which is no reason to refuse.
    second = verify(enrolled, "alice", collision, now=(SKIPPED + 1) * 30 + 2)
    assert (second.accepted, second.reason, second.serial) == (True, "ok", "T1")
    # SKIPPED+2 is used now: the same code again is a replay.
    third = verify(enrolled, "alice", collision, now=(SKIPPED + 1) * 30 + 3)
    assert (third.accepted, third.reason) == (False, "replay")


def test_the_accepted_code_is_refused_as_reused_code_when_a_fresh_step_repeats_it(enrolled):
    collision = oathtool(SKIPPED)
    first = verify(enrolled, "alice", collision, now=SKIPPED * 30 + 1)
    assert first.accepted
    # SKIPPED+2 gives the accepted digits too, while SKIPPED is in the window: refused, named
    # apart from a replay, and not counted as a failure.
    again = verify(enrolled, "alice", collision, now=(SKIPPED + 1) * 30 + 25)
    assert (again.accepted, again.reason, again.serial) == (False, "reused_code", "T1")
    assert (enrolled.store.user_row("alice") or {"failures": 0})["failures"] == 0
    # Once SKIPPED has left the window, SKIPPED+2's code is a fresh code.
    assert verify(enrolled, "alice", collision, now=(SKIPPED + 2) * 30 + 1).accepted
