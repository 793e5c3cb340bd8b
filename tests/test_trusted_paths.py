"""trusted_paths: which paths root may trust, and the PAM module's copy of the same rule."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from mfa_radius import trusted_paths
from mfa_radius.errors import ConfigError
from mfa_radius.trusted_paths import check_trusted, untrusted

REPO = Path(__file__).resolve().parents[1]
IMPL = REPO / "pam_module" / "pam_mfa_impl.py"


def _function_source(path: Path, name: str) -> str:
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(path.read_text(), node)


def test_pam_module_carries_the_same_untrusted_function():
    assert _function_source(IMPL, "untrusted") == \
        _function_source(Path(trusted_paths.__file__), "untrusted")


def test_pam_module_clean_escapes_controls_c1_bidi_and_quotes_fields():
    # White-box: the module's escaping, called directly. Through pamtester the same lines reach
    # syslog, whose own escaping of control characters would hide what the module did.
    sys.path.insert(0, str(IMPL.parent))
    try:
        import pam_mfa_impl as impl
    finally:
        sys.path.remove(str(IMPL.parent))
    hostile = "a\x1b[8m\x85\x9b\u2028\u2029\u200e\u200f\u202e\u2066\u2069\\x"
    cleaned = impl._clean(hostile)
    assert cleaned == ("a\\x1b[8m\\x85\\x9b\\u2028\\u2029\\u200e\\u200f\\u202e\\u2066\\u2069"
                       "\\\\x")
    assert cleaned.isprintable()
    assert impl._field("user", "bob uid=0") == 'user="bob uid=0"'
    assert impl._field("rhost", 'x"y') == 'rhost="x\\"y"'
    assert impl._field("user", "") == 'user=""'
    assert impl._field("user", "alice") == "user=alice"
    assert "é" in impl._clean("é")  # printable non-ASCII stays readable


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="root-owned files need root")


@needs_root
def test_root_owned_chain_is_trusted_and_links_are_followed(tmp_path):
    assert untrusted("/usr/bin/python3") is None  # a link to python3.X, all root's
    base = tmp_path  # under pytest's basetemp: root's, 0700, up to / (tests/conftest.py)
    (base / "f").write_text("x")
    os.chmod(base / "f", 0o644)
    os.symlink("f", base / "rel")
    os.symlink(str(base / "f"), base / "abs")
    (base / "d").mkdir(mode=0o755)
    assert untrusted(str(base / "rel")) is None
    assert untrusted(str(base / "abs")) is None
    assert untrusted(str(base / "d" / ".." / "f")) is None
    check_trusted(str(base / "f"), "config file")
    check_trusted(str(base / "missing"), "config file")  # missing in a trusted dir: open says so


@needs_root
def test_group_writable_or_foreign_path_anywhere_up_the_chain_is_refused(tmp_path):
    base = tmp_path
    sub = base / "sub"
    sub.mkdir(mode=0o755)
    (sub / "f").write_text("x")
    os.chmod(sub / "f", 0o644)
    os.chmod(sub, 0o775)
    assert untrusted(str(sub / "f")) == (str(sub), "is writable by group or others (mode 0775)")
    os.chmod(sub, 0o755)
    os.chown(sub / "f", 65534, -1)
    assert untrusted(str(sub / "f")) == (str(sub / "f"), "is owned by uid 65534, not root")
    with pytest.raises(ConfigError, match=rf"untrusted key file {sub}/f: it is owned by uid "
                                          rf"65534, not root; fix it with: chown root:root"):
        check_trusted(str(sub / "f"), "key file")


@needs_root
def test_sticky_tmp_is_refused_and_a_link_into_it_too(tmp_path):
    assert untrusted("/tmp/anything") == ("/tmp", "is writable by group or others (mode 1777)")
    with pytest.raises(ConfigError, match="move it to a directory only root can write to"):
        check_trusted("/tmp/anything", "config file")
    base = tmp_path
    os.symlink("/tmp/evil.toml", base / "link.toml")  # the link's own directory is fine
    assert untrusted(str(base / "link.toml"))[0] == "/tmp"


def test_relative_paths_are_refused():
    assert untrusted("etc/mfa.toml") == ("etc/mfa.toml", "is not an absolute path")
