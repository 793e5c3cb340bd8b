"""Text for an admin's terminal: every value shown by the CLI goes through `show`.

User names, sources and serials in the database came from RADIUS, PAM or an import file: a name
holding ESC[2J, a newline or U+202E must print as its escapes (logsetup.escape), never clear the
screen, forge a row or reorder one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .logsetup import escape


def show(value: object) -> str:
    """`value` as one line of printable text."""
    return escape(str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a table of `rows` under `headers`, columns padded to their widest cell."""
    cells = [[show(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(x) for x in col) for col in zip(*cells)]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
