"""The import graph of mfa_radius/: no cycles, and the layers point one way.

    fronts (radius/, pam_server, pam_local, cli, daemon, demo, sms/commands)
      -> services (verifier, usercache, explain, devices, importers, state, sms/ ...)
        -> store (mfa_radius.store and mfa_radius.store.*)
    and below all of them: rules/ (pure) and the base modules (errors, otp, sealing, logsetup...).

Every import counts, at the top of a module or inside a function, except those under
`if TYPE_CHECKING:` (annotations only, never run). The graph is read from the source with ast,
so a lazy import cannot hide a cycle. A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mfa_radius"

# First match wins: a name is a module or a package prefix.
LAYERS = [
    # The parts that own a settings schema, which the config loader calls to check their entries.
    ("settings", ("mfa_radius.sms.gateways", "mfa_radius.radius.clients",
                  "mfa_radius.radius.replies", "mfa_radius.radius.upstream",
                  "mfa_radius.directory.settings")),
    # The RADIUS wire format: bytes in, bytes out; the client table and the reply encoder use it.
    ("base", ("mfa_radius.radius.codec",)),
    ("front", ("mfa_radius.radius", "mfa_radius.pam_server", "mfa_radius.pam_local",
               "mfa_radius.cli", "mfa_radius.daemon", "mfa_radius.demo",
               "mfa_radius.sms.commands")),
    ("store", ("mfa_radius.store",)),
    ("rules", ("mfa_radius.rules",)),
    ("config", ("mfa_radius.config",)),
    ("service", ("mfa_radius.verifier", "mfa_radius.usercache", "mfa_radius.explain",
                 "mfa_radius.devices", "mfa_radius.importers", "mfa_radius.state",
                 "mfa_radius.keycheck", "mfa_radius.checkpoints", "mfa_radius.housekeeping",
                 "mfa_radius.metrics", "mfa_radius.sms", "mfa_radius.directory")),
    ("base", ("mfa_radius.errors", "mfa_radius.logsetup", "mfa_radius.otp",
              "mfa_radius.hmacprep", "mfa_radius.sealing", "mfa_radius.recovery",
              "mfa_radius.accounts", "mfa_radius.private_files", "mfa_radius.trusted_paths",
              "mfa_radius.hostport", "mfa_radius.names", "mfa_radius.terminal",
              "mfa_radius.notify", "mfa_radius.portowner", "mfa_radius.qrterm",
              "mfa_radius.pam_protocol", "mfa_radius.secret_files")),
]
# What each layer may import (besides itself).
ALLOWED = {
    "front": {"front", "settings", "service", "store", "rules", "config", "base"},
    "service": {"settings", "store", "rules", "config", "base"},
    "settings": {"service", "store", "rules", "base"},  # never config: the loader imports them
    "config": {"settings", "rules", "base"},
    "store": {"rules", "config", "base"},
    "base": {"rules", "base"},
    "rules": {"rules"},  # and mfa_radius.errors (below)
}


def layer(module: str) -> str:
    if module == "mfa_radius":
        return "base"
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} has no layer in tests/test_import_graph.py: give it one")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = PKG.parent / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                getattr(node.test, "id", None) == "TYPE_CHECKING"
                or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """The mfa_radius modules `path` imports, at any depth, TYPE_CHECKING blocks aside."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "mfa_radius")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mfa_radius":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if _is_module(sub) else target)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def test_the_graph_reader_sees_every_kind_of_import():
    # The reader itself: relative, absolute, from-package, function-level; TYPE_CHECKING aside.
    g = graph()
    assert "mfa_radius.rules.names" in g["mfa_radius.rules.access"]  # from . import names
    assert "mfa_radius.config" in g["mfa_radius.sms.service"]  # from ..config import Config
    assert "mfa_radius.pam_local" in g["mfa_radius.pam_server"]
    assert "mfa_radius.config" not in g["mfa_radius.sms.gateways"]  # under TYPE_CHECKING
    assert "mfa_radius.sms.service" in g["mfa_radius.pam_local"]  # inside a function


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)


def test_layers_point_one_way():
    wrong = []
    for module, targets in graph().items():
        mine = layer(module)
        for target in sorted(targets):
            theirs = layer(target)
            if theirs == mine:
                continue
            if mine == "rules" and target == "mfa_radius.errors":
                continue
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert wrong == []


def test_rules_import_nothing_of_the_project_but_rules_and_errors():
    for path in sorted((PKG / "rules").glob("*.py")):
        for target in imports_of(path):
            assert target.startswith("mfa_radius.rules") or target == "mfa_radius.errors", \
                f"{path.name} imports {target}"


def test_rules_do_no_io():
    # No sockets, files, processes, clocks or databases in a rule: plain data in, data out.
    banned = {"os", "socket", "sqlite3", "subprocess", "time", "logging", "pathlib", "io",
              "asyncio", "httpx", "pwd", "grp"}
    for path in sorted((PKG / "rules").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
