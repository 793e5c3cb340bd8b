"""User names through the real `mfa-radius` command: every USER argument, the CSV import and the
config's name lists are canonical (ALICE is alice); a refused name is one line, exit 1."""

from __future__ import annotations

import json
import time

import pytest
from conftest import run_cli, write_config
from test_cli import assert_one_line_error, create, enable, needs_oathtool, oath_totp

from mfa_radius import config as config_mod
from mfa_radius.state import init


@needs_oathtool
def test_device_enable_with_a_variant_stores_the_canonical_name(cfg_path):
    info = create(cfg_path, "phone-1")
    result = enable(cfg_path, "ALICE", "phone-1", info["secret"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device phone-1 enabled for alice"
    listed = json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)
    assert [d["user"] for d in listed] == ["alice"]
    assert json.loads(run_cli(cfg_path, "user", "list", "--json").stdout)[0]["user"] == "alice"
    shown = json.loads(run_cli(cfg_path, "user", "show", "EXAMPLE\\Alice", "--json").stdout)
    assert shown["user"] == "alice" and shown["devices"] == ["phone-1"]
    assert json.loads(run_cli(cfg_path, "device", "list", "--user", "Alice", "--json").stdout)
    code = oath_totp(info["secret"], time.time() + 30)
    verified = run_cli(cfg_path, "verify", "alice@EXAMPLE", code)
    assert verified.returncode == 0 and "accepted (totp, device phone-1)" in verified.stdout
    audit = json.loads(run_cli(cfg_path, "audit", "--user", "ALICE", "--json").stdout)
    assert [r["user"] for r in audit] == ["alice"]
    result = run_cli(cfg_path, "device", "deactivate", "Alice", "phone-1")
    assert result.returncode == 0 and "deactivated for alice" in result.stdout, result.stderr


@pytest.mark.parametrize("args", [
    ("device", "enable", "alice ", "phone-1", "123456", "654321"),
    ("device", "deactivate", "ali\u202ece", "phone-1"),
    ("user", "show", "ali\u200bce"),
    ("user", "unlock", " alice"),
    ("user", "recovery-codes", "alice\t"),
    ("verify", "alice\u2028", "123456"),
    ("sms", "enable", "bob ", "+15550001111"),
])
def test_a_refused_user_name_is_one_line_exit_1(cfg_path, args):
    result = run_cli(cfg_path, *args)
    assert_one_line_error(result, 1)
    assert "user name" in result.stderr
    assert "\u202e" not in result.stderr and "\u200b" not in result.stderr  # escaped


def test_csv_import_stores_the_canonical_name(cfg_path, tmp_path):
    csv_file = tmp_path / "tokens.csv"
    csv_file.write_text("HW-1, 3132333435363738393031323334353637383930, hotp, 6, 0, Alice\n"
                        "HW-2, 00112233445566778899aabbccddeeff00112233, totp, 6, 30, "
                        "EXAMPLE\\BOB\n")
    result = run_cli(cfg_path, "device", "import", str(csv_file), "--format", "csv")
    assert result.returncode == 0, result.stderr
    listed = json.loads(run_cli(cfg_path, "device", "list", "--json").stdout)
    assert sorted(d["user"] for d in listed) == ["alice", "bob"]
    # RFC 4226 Appendix D: counter 0 of this seed is 755224.
    assert run_cli(cfg_path, "verify", "ALICE", "755224").returncode == 0


def test_csv_import_refuses_a_malformed_name_and_imports_nothing(cfg_path, tmp_path):
    csv_file = tmp_path / "tokens.csv"
    csv_file.write_text("HW-1, 3132333435363738393031323334353637383930, hotp, 6, 0, alice\n"
                        "HW-2, 00112233445566778899aabbccddeeff00112233, totp, 6, 30, "
                        "bo\u200bb\n")
    assert_one_line_error(run_cli(cfg_path, "device", "import", str(csv_file), "--format",
                                  "csv"), 1)
    assert json.loads(run_cli(cfg_path, "device", "list", "--json").stdout) == []


def test_config_name_lists_are_canonical(tmp_path):
    path = write_config(tmp_path, '[policy]\nexempt_users = ["Alice", "EXAMPLE\\\\ALICE"]\n'
                                  'privileged_users = ["root", "Boss"]\n')
    init(config_mod.load(str(path)))
    settings = json.loads(run_cli(path, "check-config", "--json").stdout)
    assert settings["policy"]["exempt_users"] == ["alice"]
    assert settings["policy"]["privileged_users"] == ["root", "boss"]
    result = run_cli(path, "verify", "ALICE", "-", input="000000\n")
    assert result.returncode == 0 and "accepted (exempt)" in result.stdout


def test_a_refused_name_in_the_config_names_file_line_and_key(tmp_path):
    path = write_config(tmp_path, '[policy]\nnullok = true\nexempt_users = ["alice "]\n')
    result = run_cli(path, "check-config")
    assert_one_line_error(result, 2)
    assert f"{path}:7: 'policy.exempt_users'" in result.stderr


def test_without_strip_realm_a_realm_name_cannot_be_exempt(tmp_path):
    path = write_config(tmp_path, '[policy]\nstrip_realm = false\n'
                                  'exempt_users = ["alice@EXAMPLE"]\n')
    result = run_cli(path, "check-config")
    assert_one_line_error(result, 2)
    assert "not a local account name" in result.stderr


def test_username_case_must_be_fold_or_exact(tmp_path):
    path = write_config(tmp_path, '[policy]\nusername_case = "lower"\n')
    result = run_cli(path, "check-config")
    assert_one_line_error(result, 2)
    assert "'policy.username_case' must be one of fold, exact" in result.stderr
