"""Every test a document names (`tests/FILE.py::test_name`) exists: a claim in docs/SECURITY.md
is only as good as the test it points at, and a renamed or deleted test must not leave it
pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::\s*(\w+))?")


def references(doc: str) -> list[tuple[str, str | None]]:
    # A reference may be wrapped after its "::".
    text = (ROOT / doc).read_text().replace("::\n", "::")
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def test_security_md_names_tests():
    assert len([r for r in references("docs/SECURITY.md") if r[1]]) >= 40


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_test_exists(doc):
    missing = []
    for path, name in references(doc):
        source = ROOT / path
        if not source.exists():
            missing.append(path)
        elif name and not re.search(rf"^\s*(async\s+)?def {name}\b", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"{doc} names tests that do not exist: {missing}"
