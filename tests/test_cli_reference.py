"""README's CLI reference and `--help` stay in step with the commands click knows (as
tests/test_example_config.py does for the settings)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import click
import pytest

from conftest import MFA
from mfa_radius.cli import main

ROOT = Path(__file__).resolve().parent.parent


def commands(group: click.Group = main, path: tuple[str, ...] = ()):
    """(path, command) of every group and command, the main group first."""
    yield path, group
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def options(cmd: click.Command) -> set[str]:
    return {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts
            if opt.startswith("--") and opt != "--help"}


def readme_reference() -> dict[tuple[str, ...], set[str]]:
    """{command path: the options its line names} from README's CLI reference block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## CLI reference\n\n```\n(.*?)```", text, re.S).group(1)
    known = {path for path, _ in commands()}
    out = {}
    for line in block.splitlines():
        words = line.split()
        assert words[0] == "mfa-radius", line
        path: tuple[str, ...] = ()
        for word in words[1:]:
            if (*path, word) not in known:
                break
            path = (*path, word)
        assert path not in out, f"README names {' '.join(path) or 'mfa-radius'} twice"
        out[path] = set(re.findall(r"--[a-z][a-z-]*", line))
    return out


def test_readme_cli_reference_names_every_command_and_option_and_nothing_else():
    reference = readme_reference()
    leaves = {path: cmd for path, cmd in commands()
              if not isinstance(cmd, click.Group) or path == ()}
    missing = sorted(" ".join(p) for p in leaves if p not in reference)
    extra = sorted(" ".join(p) for p in reference if p not in leaves)
    assert not missing and not extra, f"README lacks {missing}, names unknown {extra}"
    for path, cmd in leaves.items():
        assert reference[path] == options(cmd), (
            f"{' '.join(path) or 'mfa-radius'}: README names {sorted(reference[path])}, "
            f"click knows {sorted(options(cmd))}")


def test_every_option_and_command_has_help():
    for path, cmd in commands():
        assert cmd.help, f"{' '.join(path)} has no help text"
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path) or 'mfa-radius'} {param.opts[0]} has no help"


@pytest.mark.parametrize("group", [path for path, cmd in commands()
                                   if isinstance(cmd, click.Group)],
                         ids=lambda p: " ".join(p) or "mfa-radius")
def test_command_lists_in_help_are_not_cut_mid_sentence(group):
    out = subprocess.run([MFA, *group, "--help"], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, COLUMNS="80"))
    assert out.returncode == 0, out.stderr
    listing = out.stdout.split("\nCommands:\n", 1)[1].splitlines()
    assert listing
    for line in listing:
        summary = line.split(None, 1)[1]
        assert not summary.endswith("...") and summary.endswith("."), line
        assert summary.count("(") == summary.count(")"), line
