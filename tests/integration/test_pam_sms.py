"""The SMS step at the PAM prompt, with the file gateway and pamtester driven on a pty."""

from __future__ import annotations

import re
import time

import pytest

from mfa_radius import config as config_mod
from mfa_radius.sms.service import SmsService
from pam_support import AUTH_ERR, SUCCESS, PamEnv, require_root

pexpect = pytest.importorskip("pexpect", reason="needs pexpect (pip install pexpect)")
PHONE = "+15550001234"


@pytest.fixture(params=["socket", "daemon", "local"])
def env(request):
    require_root()
    e = PamEnv(extra_toml="")
    outbox = e.dir / "sms-outbox.log"
    e.config.write_text(e.config.read_text()
                        + f'[[sms.gateways]]\ntype = "file"\npath = "{outbox}"\n')
    e.outbox = outbox
    sms = SmsService.open(config_mod.load(str(e.config)))
    e.sms = sms
    if request.param != "local":
        e.start_server(daemon=request.param == "daemon")
    yield e
    sms.verifier.store.close()
    e.close()


def last_code(env) -> str:
    deadline = time.time() + 10
    while time.time() < deadline:
        if env.outbox.exists():
            codes = re.findall(r"code is (\d{6})", env.outbox.read_text())
            if codes:
                return codes[-1]
        time.sleep(0.05)
    raise AssertionError("no SMS in the outbox")


def pamtester(service: str, user: str):
    return pexpect.spawn("pamtester", [service, user, "authenticate"], timeout=20,
                         encoding="utf-8")


def test_sms_only_user_gets_a_code_before_the_prompt(env):
    env.sms.enable("sam", PHONE)
    svc = env.service()
    child = pamtester(svc, "sam")
    child.expect("A code was sent to your phone ending 1234")
    child.expect("Verification code: ")
    used = last_code(env)
    child.sendline(used)
    child.expect(SUCCESS)
    child.expect(pexpect.EOF)
    assert PHONE not in child.before
    # The code worked once: the next login is sent a new one, and the used one is refused.
    child = pamtester(svc, "sam")
    child.expect("A code was sent")
    child.expect("Verification code: ")
    child.sendline(used)
    child.expect(AUTH_ERR)


def test_device_user_asks_for_sms_with_enter(env):
    env.enroll("tina")
    env.sms.enable("tina", PHONE)
    svc = env.service()
    child = pamtester(svc, "tina")
    child.expect("Verification code: ")
    assert not env.outbox.exists()  # a device user is not sent a code unasked
    child.sendline("")
    child.expect("A code was sent to your phone ending 1234")
    child.expect("Verification code: ")
    child.sendline(last_code(env))
    child.expect(SUCCESS)
