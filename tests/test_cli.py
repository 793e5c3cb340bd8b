"""The admin CLI contract, through the real `mfa-radius` command, with codes from `oathtool`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

from conftest import run_cli, write_config

needs_oathtool = pytest.mark.skipif(shutil.which("oathtool") is None,
                                    reason="oathtool (Debian package oathtool) not installed")


def oath_totp(secret: str, at: float) -> str:
    """A TOTP code computed by an independent implementation."""
    out = subprocess.run(["oathtool", "--totp", "-b", secret, "-N", f"@{int(at)}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def create(cfg_path, serial="phone-1", *extra) -> dict:
    result = run_cli(cfg_path, "device", "create-virtual", serial, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def enable(cfg_path, user, serial, secret, now=None):
    now = time.time() if now is None else now
    return run_cli(cfg_path, "device", "enable", user, serial,
                   oath_totp(secret, now - 30), oath_totp(secret, now))


def assert_one_line_error(result, code=None):
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)


def test_init_creates_private_key_and_database(tmp_path):
    cfg = write_config(tmp_path)
    result = run_cli(cfg, "init")
    assert result.returncode == 0, result.stderr
    assert os.stat(tmp_path / "secret.key").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "mfa.db").st_mode & 0o777 == 0o600
    # a second init keeps the key (every sealed seed depends on it)
    key = (tmp_path / "secret.key").read_bytes()
    assert run_cli(cfg, "init").returncode == 0
    assert (tmp_path / "secret.key").read_bytes() == key


def test_create_virtual_json_has_secret_and_otpauth_uri(cfg_path):
    info = create(cfg_path, "phone-1")
    assert info["serial"] == "phone-1"
    assert len(info["secret"]) >= 32  # 160 bits in base32
    assert info["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={info['secret']}" in info["otpauth_uri"]


def test_create_virtual_writes_qr_png(cfg_path, tmp_path):
    png = tmp_path / "qr.png"
    result = run_cli(cfg_path, "device", "create-virtual", "p2", "--qr-png", str(png), "--qr")
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.stat(png).st_mode & 0o777 == 0o600
    assert "█" in result.stdout or "▀" in result.stdout


@needs_oathtool
def test_enable_then_verify_accepts_next_code_and_refuses_replay(cfg_path):
    info = create(cfg_path)
    now = time.time()
    result = enable(cfg_path, "alice", "phone-1", info["secret"], now)
    assert result.returncode == 0, result.stderr
    # the enable codes are consumed: the current code is a replay
    replay = run_cli(cfg_path, "verify", "alice", oath_totp(info["secret"], now))
    assert replay.returncode == 1 and "replay" in replay.stderr
    nxt = oath_totp(info["secret"], now + 30)  # one step ahead is inside the default window
    assert run_cli(cfg_path, "verify", "alice", nxt).returncode == 0
    again = run_cli(cfg_path, "verify", "alice", nxt)
    assert again.returncode == 1 and "replay" in again.stderr


@needs_oathtool
def test_enable_refuses_codes_that_are_not_consecutive(cfg_path):
    info = create(cfg_path)
    now = time.time()
    result = run_cli(cfg_path, "device", "enable", "alice", "phone-1",
                     oath_totp(info["secret"], now - 90), oath_totp(info["secret"], now))
    assert_one_line_error(result, 1)
    assert "consecutive" in result.stderr
    listed = json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)
    assert listed[0]["status"] == "unassigned" and listed[0]["user"] is None


@needs_oathtool
def test_code_of_another_users_device_is_refused(cfg_path):
    a = create(cfg_path, "a-phone")
    b = create(cfg_path, "b-phone")
    now = time.time()
    assert enable(cfg_path, "alice", "a-phone", a["secret"], now).returncode == 0
    assert enable(cfg_path, "bob", "b-phone", b["secret"], now).returncode == 0
    result = run_cli(cfg_path, "verify", "alice", oath_totp(b["secret"], now + 30))
    assert result.returncode == 1 and "bad_code" in result.stderr


@needs_oathtool
def test_device_list_json_shape_and_filters(cfg_path):
    info = create(cfg_path, "p1")
    create(cfg_path, "p2")
    assert enable(cfg_path, "alice", "p1", info["secret"]).returncode == 0
    rows = json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)
    by_serial = {r["serial"]: r for r in rows}
    assert by_serial["p1"]["user"] == "alice" and by_serial["p1"]["status"] == "assigned"
    assert by_serial["p2"]["user"] is None and by_serial["p2"]["status"] == "unassigned"
    assert all(r["type"] == "totp" for r in rows)
    assert "secret" not in by_serial["p1"] and "seed" not in by_serial["p1"]
    only = json.loads(run_cli(cfg_path, "device", "list", "--status", "unassigned",
                              "--json").stdout)
    assert [r["serial"] for r in only] == ["p2"]
    mine = json.loads(run_cli(cfg_path, "device", "list", "--user", "alice", "--json").stdout)
    assert [r["serial"] for r in mine] == ["p1"]


@needs_oathtool
def test_lost_device_deactivate_then_delete(cfg_path):
    info = create(cfg_path)
    now = time.time()
    assert enable(cfg_path, "alice", "phone-1", info["secret"], now).returncode == 0
    refused = run_cli(cfg_path, "device", "delete", "phone-1")
    assert_one_line_error(refused, 1)
    assert "deactivate" in refused.stderr
    assert run_cli(cfg_path, "device", "deactivate", "alice", "phone-1").returncode == 0
    result = run_cli(cfg_path, "verify", "alice", oath_totp(info["secret"], now + 30))
    assert result.returncode == 1 and "no_device" in result.stderr
    assert run_cli(cfg_path, "device", "delete", "phone-1").returncode == 0
    assert json.loads(run_cli(cfg_path, "device", "list", "--json").stdout) == []


@needs_oathtool
def test_resync_recovers_a_drifted_clock(cfg_path):
    info = create(cfg_path)
    now = time.time()
    assert enable(cfg_path, "alice", "phone-1", info["secret"], now).returncode == 0
    skew = 3600  # the token's clock runs an hour fast
    far = oath_totp(info["secret"], now + skew + 30)
    assert run_cli(cfg_path, "verify", "alice", far).returncode == 1
    result = run_cli(cfg_path, "device", "resync", "alice", "phone-1",
                     oath_totp(info["secret"], now + skew + 60),
                     oath_totp(info["secret"], now + skew + 90))
    assert result.returncode == 0, result.stderr
    assert run_cli(cfg_path, "verify", "alice",
                   oath_totp(info["secret"], now + skew + 120)).returncode == 0


@needs_oathtool
def test_report_audit_and_unlock(cfg_path):
    info = create(cfg_path)
    now = time.time()
    assert enable(cfg_path, "alice", "phone-1", info["secret"], now).returncode == 0
    good = oath_totp(info["secret"], now + 30)
    wrong = "000000" if good != "000000" else "111111"
    for _ in range(5):
        assert run_cli(cfg_path, "verify", "alice", wrong).returncode == 1
    locked = run_cli(cfg_path, "verify", "alice", good)
    assert locked.returncode == 1 and "locked" in locked.stderr
    report = json.loads(run_cli(cfg_path, "report", "--json").stdout)
    (alice,) = [r for r in report if r["user"] == "alice"]
    assert alice["mfa_active"] is True and alice["locked"] is True
    assert alice["devices"] == ["phone-1"] and alice["sms"] is False
    assert run_cli(cfg_path, "sms", "enable", "bob", "+15550001111").returncode == 0
    (bob,) = [r for r in json.loads(run_cli(cfg_path, "report", "--json").stdout)
              if r["user"] == "bob"]
    # No [[sms.gateways]] here: no code can reach bob, so the phone is no second factor.
    assert bob["sms"] is True and bob["mfa_active"] is False and bob["devices"] == []
    assert "last_success" in alice
    assert run_cli(cfg_path, "user", "unlock", "alice").returncode == 0
    assert run_cli(cfg_path, "verify", "alice", good).returncode == 0
    events = json.loads(run_cli(cfg_path, "audit", "--user", "alice", "--json").stdout)
    assert [e["reason"] for e in events][-3:] == ["bad_code", "locked", "ok"]
    assert {"time", "user", "result", "reason", "source", "method"} <= set(events[-1])
    assert events[-1]["result"] == "accept" and events[-1]["method"] == "totp"
    dump = b"".join(p.read_bytes() for p in cfg_path.parent.glob("mfa.db*"))
    assert good.encode() not in dump and wrong.encode() not in dump
    recent = json.loads(run_cli(cfg_path, "audit", "--since", "1h", "--json").stdout)
    assert len(recent) == len(events)
    assert json.loads(run_cli(cfg_path, "audit", "--since", "2000-01-01", "--json").stdout)
    bad = run_cli(cfg_path, "audit", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_recovery_codes_are_shown_once_and_work_once(cfg_path):
    result = run_cli(cfg_path, "user", "recovery-codes", "carol", "--count", "3", "--json")
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout)["codes"]
    assert len(codes) == 3 and all(len(c.replace("-", "")) >= 8 for c in codes)
    assert run_cli(cfg_path, "verify", "carol", codes[1]).returncode == 0
    assert run_cli(cfg_path, "verify", "carol", codes[1]).returncode == 1
    (carol,) = json.loads(run_cli(cfg_path, "report", "--json").stdout)
    assert carol["last_success"] is not None and carol["recovery_codes_left"] == 2
    # new codes replace the old ones
    fresh = json.loads(run_cli(cfg_path, "user", "recovery-codes", "carol", "--json").stdout)
    assert len(fresh["codes"]) == 10
    assert run_cli(cfg_path, "verify", "carol", codes[0]).returncode == 1
    assert run_cli(cfg_path, "verify", "carol", fresh["codes"][0]).returncode == 0


def test_unknown_user_and_user_without_device_are_refused_alike(cfg_path):
    create(cfg_path, "spare")
    a = run_cli(cfg_path, "verify", "nobody-here", "123456")
    run_cli(cfg_path, "user", "recovery-codes", "dave", "--count", "1")
    b = run_cli(cfg_path, "verify", "erin", "123456")
    assert a.returncode == b.returncode == 1
    assert a.stderr == b.stderr == "refused: no_device\n"


def test_user_show_and_list(cfg_path):
    run_cli(cfg_path, "user", "recovery-codes", "carol", "--count", "2")
    shown = json.loads(run_cli(cfg_path, "user", "show", "carol", "--json").stdout)
    assert shown["user"] == "carol" and shown["recovery_codes_left"] == 2
    listed = json.loads(run_cli(cfg_path, "user", "list", "--json").stdout)
    assert [u["user"] for u in listed] == ["carol"]


def test_broken_config_stops_with_exit_2_naming_file_line_and_key(tmp_path):
    cfg = write_config(tmp_path, "\n[policy]\nlockout_failurs = 3\n")
    result = run_cli(cfg, "check-config")
    assert_one_line_error(result, 2)
    assert f"{cfg}:7:" in result.stderr and "lockout_failurs" in result.stderr
    cfg.write_text("[storage\n")
    result = run_cli(cfg, "check-config")
    assert_one_line_error(result, 2)
    assert "line 1" in result.stderr
    cfg.write_text('[storage]\nbusy_timeout = "soon"\n')
    result = run_cli(cfg, "check-config")
    assert_one_line_error(result, 2)
    assert "storage.busy_timeout" in result.stderr and ":2:" in result.stderr


def test_check_config_prints_effective_settings(cfg_path):
    result = run_cli(cfg_path, "check-config", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["otp"]["totp_window"] == 1 and data["policy"]["lockout_failures"] == 5
    assert data["policy"]["privileged_groups"] == ["sudo", "wheel"]


def test_config_from_environment_variable(cfg_path):
    result = subprocess.run([os.path.join(os.path.dirname(__import__("sys").executable),
                                          "mfa-radius"), "check-config"],
                            capture_output=True, text=True,
                            env=dict(os.environ, MFA_RADIUS_CONFIG=str(cfg_path)))
    assert result.returncode == 0 and str(cfg_path) in result.stdout


def test_world_readable_key_file_is_refused_with_the_fix(cfg_path, tmp_path):
    os.chmod(tmp_path / "secret.key", 0o644)
    result = run_cli(cfg_path, "device", "create-virtual", "x")
    assert_one_line_error(result, 2)
    assert f"chmod 600 {tmp_path / 'secret.key'}" in result.stderr


def test_missing_key_file_and_missing_database_fail_closed(cfg_path, tmp_path):
    create(cfg_path, "x")
    os.rename(tmp_path / "mfa.db", tmp_path / "moved.db")
    result = run_cli(cfg_path, "verify", "alice", "123456")
    assert_one_line_error(result, 2)
    assert "mfa-radius init" in result.stderr
    os.rename(tmp_path / "moved.db", tmp_path / "mfa.db")
    os.remove(tmp_path / "secret.key")
    result = run_cli(cfg_path, "verify", "alice", "123456")
    assert_one_line_error(result, 2)
    assert "key file not found" in result.stderr
    # init must not create a fresh key next to a database sealed with the lost one
    result = run_cli(cfg_path, "init")
    assert_one_line_error(result, 2)
    assert not (tmp_path / "secret.key").exists()


def test_corrupt_database_fails_closed_without_traceback(cfg_path, tmp_path):
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"mfa.db{suffix}").exists():
            os.remove(tmp_path / f"mfa.db{suffix}")
    (tmp_path / "mfa.db").write_bytes(os.urandom(8192))
    for args in (["verify", "alice", "123456"], ["report"], ["device", "list"]):
        result = run_cli(cfg_path, *args)
        assert_one_line_error(result, 2)
        assert "corrupt" in result.stderr or "not a database" in result.stderr


def test_invalid_serial_and_usage_errors(cfg_path):
    result = run_cli(cfg_path, "device", "create-virtual", "bad serial!")
    assert_one_line_error(result, 1)
    assert "invalid serial" in result.stderr
    usage = run_cli(cfg_path, "verify", "alice")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


@needs_oathtool
def test_csv_import_through_the_cli_assigns_and_verifies(cfg_path, tmp_path):
    seed_hex = "3132333435363738393031323334353637383930"
    csv_file = tmp_path / "tokens.csv"
    csv_file.write_text("# vendor seed file\n"
                        f"HW-0001, {seed_hex}, hotp, 6, 0, alice\n"
                        "HW-0002, 00112233445566778899aabbccddeeff00112233, totp\n")
    result = run_cli(cfg_path, "device", "import", str(csv_file), "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "imported 2" in result.stdout
    # RFC 4226 Appendix D: counter 0 of this seed is 755224
    assert run_cli(cfg_path, "verify", "alice", "755224").returncode == 0
    assert run_cli(cfg_path, "verify", "alice", "755224").returncode == 1
    code2 = subprocess.run(["oathtool", "--hotp", "-c", "2", seed_hex], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert run_cli(cfg_path, "verify", "alice", code2).returncode == 0
    # a second import of the same seeds changes nothing: all or nothing
    again = run_cli(cfg_path, "device", "import", str(csv_file), "--format", "csv")
    assert_one_line_error(again, 1)
    assert len(json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)) == 2


def test_database_file_holds_no_clear_seed(cfg_path, tmp_path):
    info = create(cfg_path)
    import base64

    seed = base64.b32decode(info["secret"] + "=" * (-len(info["secret"]) % 8))
    dump = b"".join(p.read_bytes() for p in tmp_path.glob("mfa.db*"))
    assert seed not in dump and info["secret"].encode() not in dump
    with sqlite3.connect(tmp_path / "mfa.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_backup_is_a_consistent_private_copy(cfg_path, tmp_path):
    create(cfg_path, "p1")
    dest = tmp_path / "backup.db"
    result = run_cli(cfg_path, "backup", str(dest))
    assert result.returncode == 0, result.stderr
    assert os.stat(dest).st_mode & 0o777 == 0o600
    with sqlite3.connect(dest) as db:
        assert db.execute("SELECT serial FROM devices").fetchall() == [("p1",)]
    again = run_cli(cfg_path, "backup", str(dest))
    assert_one_line_error(again, 2)
    assert "already exists" in again.stderr


def test_pskc_import_through_the_cli_with_preshared_key_and_password(cfg_path):
    data = os.path.join(os.path.dirname(__file__), "data", "pskc")
    result = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure6.pskcxml"),
                     "--format", "pskc", "--pskc-key", "12345678901234567890123456789012")
    assert result.returncode == 0, result.stderr
    rows = json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)
    assert [(r["serial"], r["status"], r["virtual"]) for r in rows] == [
        ("987654321", "unassigned", False)]
    # figure 7 holds the same token, password-protected
    assert run_cli(cfg_path, "device", "delete", "987654321").returncode == 0
    wrong = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure7.pskcxml"),
                    "--format", "pskc", "--pskc-password", "-", input="not-qwerty\n")
    assert_one_line_error(wrong, 1)
    result = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure7.pskcxml"),
                     "--format", "pskc", "--pskc-password", "-", input="qwerty\n")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)) == 1
    bad = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure6.pskcxml"),
                  "--format", "pskc", "--pskc-key", "zz")
    assert bad.returncode == 2 and "hexadecimal" in bad.stderr


def test_housekeeping_command_prunes_and_reports(cfg_path):
    result = run_cli(cfg_path, "housekeeping")
    assert result.returncode == 0, result.stderr
    assert "deleted 0 audit rows" in result.stdout


def test_a_failed_backup_leaves_no_partial_file_or_journal(cfg_path, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tiny tmpfs to fill")
    from mfa_radius import config as config_mod
    from mfa_radius.state import open_store

    store = open_store(config_mod.load(str(cfg_path)))
    with store.transaction():
        # Several backup steps (1024 pages each): the later ones journal the earlier ones.
        store.add_audit([(time.time(), f"user{i}", None, None, "cli " + "x" * 400, "reject",
                          "bad_code", None, None, None) for i in range(25000)])
    store.close()
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)]
                      ).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        dest = small / "backup.db"
        result = run_cli(cfg_path, "backup", str(dest))
        assert_one_line_error(result, 2)
        assert "disk is full" in result.stderr
        assert sorted(os.listdir(small)) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


@needs_oathtool
def test_codes_can_come_from_stdin_instead_of_argv(cfg_path):
    """`-` keeps codes out of /proc/PID/cmdline: verify, device enable and device resync."""
    info = create(cfg_path)
    now = time.time()
    code1, code2 = oath_totp(info["secret"], now - 30), oath_totp(info["secret"], now)
    result = run_cli(cfg_path, "device", "enable", "alice", "phone-1", "-",
                     input=f"{code1}\n{code2}\n")
    assert result.returncode == 0, result.stderr
    result = run_cli(cfg_path, "verify", "alice", "-", input=oath_totp(info["secret"], now + 30)
                     + "\n")
    assert result.returncode == 0 and "accepted" in result.stdout, result.stderr
    skew = 3600
    both = " ".join(oath_totp(info["secret"], now + skew + d) for d in (60, 90))
    result = run_cli(cfg_path, "device", "resync", "alice", "phone-1", "-", input=both + "\n")
    assert result.returncode == 0, result.stderr
    assert "clock offset now" in result.stdout
    # One code where two are needed, or a CODE2 next to '-': usage errors, nothing changed.
    short = run_cli(cfg_path, "device", "resync", "alice", "phone-1", "-", input="123456\n")
    assert short.returncode == 2 and "expected two codes" in short.stderr
    mixed = run_cli(cfg_path, "device", "enable", "bob", "phone-1", "-", "123456")
    assert mixed.returncode == 2
    missing = run_cli(cfg_path, "device", "enable", "bob", "phone-1", "123456")
    assert missing.returncode == 2 and "CODE2" in missing.stderr


def test_pskc_key_from_stdin_and_password_from_a_file(cfg_path, tmp_path):
    data = os.path.join(os.path.dirname(__file__), "data", "pskc")
    result = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure6.pskcxml"),
                     "--format", "pskc", "--pskc-key", "-",
                     input="12345678901234567890123456789012\n")
    assert result.returncode == 0, result.stderr
    assert run_cli(cfg_path, "device", "delete", "987654321").returncode == 0
    secret = tmp_path / "pskc.pw"
    secret.write_text("qwerty\n")
    result = run_cli(cfg_path, "device", "import", os.path.join(data, "rfc6030-figure7.pskcxml"),
                     "--format", "pskc", "--pskc-password-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)) == 1
