"""User-name variants through the real pam_python.so and pamtester, under `[policy] nullok`:
the socket served alone, by `mfa-radius serve`, and the in-process fallback."""

from __future__ import annotations

import pytest
from pam_support import AUTH_ERR, IGNORED, SUCCESS, PamEnv, pamtester, require_root


@pytest.fixture
def env():
    require_root()
    e = PamEnv("[policy]\nnullok = true\n")
    yield e
    e.close()


@pytest.fixture(params=["socket", "daemon", "local"])
def mode(request, env):
    if request.param != "local":
        env.start_server(daemon=request.param == "daemon")
    return request.param


def test_upper_case_alice_is_asked_for_alices_code(env, mode):
    totp = env.enroll("alice")
    svc = env.service()
    # Without the code (an empty answer) ALICE is refused: nullok is not hers, she is enrolled.
    assert AUTH_ERR in pamtester(svc, "ALICE", "")
    assert SUCCESS in pamtester(svc, "ALICE", env.next_code(totp))
    assert SUCCESS in pamtester(svc, "EXAMPLE\\alice", env.next_code(totp))
    if mode != "local":
        out = env.stop_server()
        assert "user=alice" in out and "user=ALICE" not in out


@pytest.mark.parametrize("sent", ["alice ", "ali\u200bce", "ROOT"])
def test_malformed_names_and_root_in_capitals_never_pass_by_nullok(env, mode, sent):
    env.enroll("alice")
    out = pamtester(env.service(), sent, "000000")
    assert SUCCESS not in out and IGNORED not in out, out
    assert AUTH_ERR in out, out


def test_an_unenrolled_variant_is_ignored_as_its_canonical_user(env, mode):
    # bob has no device: nullok answers PAM_IGNORE for BOB too (never success).
    assert IGNORED in pamtester(env.service(), "BOB")
