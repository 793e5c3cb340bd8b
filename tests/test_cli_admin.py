"""What an admin reads from the CLI is true, and one line when something fails: through the real
`mfa-radius` command, with codes from `oathtool`."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import run_cli, write_config
from test_cli import assert_one_line_error, create, enable, needs_oathtool, oath_totp


def enrolled(cfg_path, user="alice", serial="phone-1"):
    """A device enabled for `user` now; returns (secret, the time of the enable)."""
    info = create(cfg_path, serial)
    now = time.time()
    result = enable(cfg_path, user, serial, info["secret"], now)
    assert result.returncode == 0, result.stderr
    return info["secret"], now


def listed(cfg_path, *args):
    result = run_cli(cfg_path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_oathtool
@pytest.mark.parametrize("fold_first", [False, True], ids=["unfolded", "after-housekeeping"])
def test_resync_keeps_the_devices_last_used_time(cfg_path, fold_first):
    secret, now = enrolled(cfg_path)
    assert run_cli(cfg_path, "verify", "alice", oath_totp(secret, now + 30)).returncode == 0
    used = listed(cfg_path, "device", "list")[0]["last_used_at"]
    assert used is not None
    if fold_first:  # the used step moves from the log into the device's row
        assert run_cli(cfg_path, "housekeeping").returncode == 0
    result = run_cli(cfg_path, "device", "resync", "alice", "phone-1",
                     oath_totp(secret, now + 600), oath_totp(secret, now + 630))
    assert result.returncode == 0, result.stderr
    assert listed(cfg_path, "device", "list")[0]["last_used_at"] == used
    assert "never" not in run_cli(cfg_path, "device", "list").stdout
    assert listed(cfg_path, "user", "show", "alice")["last_success"] == used
    assert f"last_success:        {used}" in run_cli(cfg_path, "user", "show", "alice").stdout
    assert listed(cfg_path, "report")[0]["last_success"] == used
    assert used in run_cli(cfg_path, "report").stdout


SMS = """
[policy]
privileged_users = ["root"{extra}]
[[sms.gateways]]
type = "file"
path = "{dir}/sms.log"
"""


def test_report_does_not_count_a_privileged_users_sms_as_protection(tmp_path):
    cfg = write_config(tmp_path, SMS.format(extra="", dir=tmp_path))
    assert run_cli(cfg, "init").returncode == 0
    for user, phone in (("alice", "+15550001111"), ("boss", "+15550002222")):
        result = run_cli(cfg, "sms", "enable", user, phone)
        assert result.returncode == 0, result.stderr
    assert {r["user"]: r["mfa_active"] for r in listed(cfg, "report")} == {
        "alice": True, "boss": True}
    # boss becomes privileged: SMS is never used for them, so they cannot sign in with it.
    cfg = write_config(tmp_path, SMS.format(extra=', "boss"', dir=tmp_path))
    rows = {r["user"]: r for r in listed(cfg, "report")}
    assert rows["boss"]["mfa_active"] is False and rows["boss"]["sms"] is True
    assert rows["alice"]["mfa_active"] is True
    table = {line.split()[0]: line.split()[1] for line in
             run_cli(cfg, "report").stdout.splitlines()[1:]}
    assert table == {"alice": "yes", "boss": "no"}
    assert {r["user"]: r["mfa_active"] for r in listed(cfg, "user", "list")} == {
        "alice": True, "boss": False}
    # Without a gateway no code can reach anyone by SMS.
    no_gateway = write_config(tmp_path)
    assert [r["mfa_active"] for r in listed(no_gateway, "report")] == [False, False]


def test_user_show_of_an_unknown_user_fails(cfg_path):
    result = run_cli(cfg_path, "user", "show", "nobody")
    assert_one_line_error(result, 1)
    assert result.stderr == "mfa-radius: no such user: nobody\n" and result.stdout == ""
    assert run_cli(cfg_path, "user", "show", "nobody", "--json").returncode == 1


@needs_oathtool
def test_user_show_prints_yes_no_and_dashes_like_the_other_commands(cfg_path):
    enrolled(cfg_path)
    lines = dict(line.split(":", 1) for line in
                 run_cli(cfg_path, "user", "show", "alice").stdout.splitlines())
    shown = {k: v.strip() for k, v in lines.items()}
    assert shown["mfa_active"] == "yes" and shown["locked"] == "no" and shown["sms"] == "no"
    assert shown["locked_until"] == "-" and shown["last_success"] == "never"
    assert not {"True", "False", "None"} & set(shown.values())


@needs_oathtool
def test_verify_with_a_wrong_key_file_says_so_in_one_line(cfg_path, tmp_path):
    enrolled(cfg_path)
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli(write_config(other), "init").returncode == 0
    shutil.copy(other / "secret.key", tmp_path / "secret.key")
    result = run_cli(cfg_path, "verify", "alice", "123456")
    assert_one_line_error(result, 2)
    assert "key file" in result.stderr and "see log" not in result.stderr


def test_sms_send_that_fails_prints_one_line(tmp_path):
    (tmp_path / "sms.log").mkdir()  # the file gateway cannot write: a directory
    cfg = write_config(tmp_path, SMS.format(extra="", dir=tmp_path))
    assert run_cli(cfg, "init").returncode == 0
    assert run_cli(cfg, "sms", "enable", "alice", "+15550001111").returncode == 0
    result = run_cli(cfg, "sms", "send", "alice")
    assert_one_line_error(result, 1)
    assert result.stderr.startswith("mfa-radius: no code sent to alice: ")
    assert "file-1" in result.stderr


def test_audit_says_on_stderr_when_older_events_were_left_out(cfg_path):
    for _ in range(3):
        assert run_cli(cfg_path, "verify", "bob", "123456").returncode == 1
    cut = run_cli(cfg_path, "audit", "--limit", "2", "--json")
    assert cut.returncode == 0 and len(json.loads(cut.stdout)) == 2
    assert cut.stderr == ("mfa-radius: showing the newest 2 events only; older ones were left "
                          "out (use --limit N, or --since)\n")
    whole = run_cli(cfg_path, "audit", "--limit", "3")
    assert whole.returncode == 0 and whole.stderr == ""
    assert len(whole.stdout.splitlines()) == 4  # the header and three events


@needs_oathtool
def test_verify_refused_by_a_database_error_says_why_in_one_line(tmp_path):
    import sqlite3

    cfg = write_config(tmp_path, "busy_timeout = 0.2\n")
    assert run_cli(cfg, "init").returncode == 0
    secret, now = enrolled(cfg)
    holder = sqlite3.connect(tmp_path / "mfa.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past busy_timeout
    try:
        result = run_cli(cfg, "verify", "alice", oath_totp(secret, now + 30))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_line_error(result, 2)
    assert result.stderr.startswith("mfa-radius: refused: ") and "see log" not in result.stderr
    assert "locked" in result.stderr or "busy" in result.stderr, result.stderr
