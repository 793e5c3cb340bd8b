"""A QR code drawn in a terminal that scans on light and dark themes alike.

Each character cell holds two modules, one above the other: an upper half block whose foreground
is the top module and whose background is the bottom one. Both colours are set explicitly (black
and bright white), quiet zone included, so the code never takes the theme's colours: drawn with
the terminal's own foreground, as segno's compact output is, it comes out inverted on a light
theme, and many phone scanners do not read inverted codes.
"""

from __future__ import annotations

import segno

UPPER_HALF = "\u2580"
# SGR colours: (foreground, background) for a dark module and for a light one.
_FG = {True: "30", False: "97"}
_BG = {True: "40", False: "107"}
RESET = "\033[0m"


def render(data: str, border: int = 4) -> str:
    """The QR code of `data` as lines of ANSI-coloured half blocks, each line ending in a reset."""
    qr = segno.make(data, error="m")
    rows = [[bool(bit) for bit in row] for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))  # the last cell row's lower half: quiet zone
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2]):
        out, last = [], None
        for pair in zip(top, bottom):
            if pair != last:
                out.append(f"\033[{_FG[pair[0]]};{_BG[pair[1]]}m")
                last = pair
            out.append(UPPER_HALF)
        lines.append("".join(out) + RESET)
    return "\n".join(lines) + "\n"
