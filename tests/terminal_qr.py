"""Reading a QR code back from terminal output: the ANSI colours and block characters become an
image as a terminal with a light or a dark theme would show it, and zbarimg decodes that."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

BLACK, WHITE = 0, 255
THEMES = {"light": (BLACK, WHITE), "dark": (WHITE, BLACK)}  # (default foreground, background)
_SGR = re.compile(r"\033\[([0-9;]*)m")
_FG = {"30": BLACK, "90": BLACK, "37": WHITE, "97": WHITE}
_BG = {"40": BLACK, "100": BLACK, "47": WHITE, "107": WHITE}


def pixels(text: str, theme: str, margin: int = 4) -> list[list[int]]:
    """The modules a terminal in `theme` shows for `text` (two per character cell, one above
    the other), surrounded by `margin` cells of the theme's background."""
    default_fg, default_bg = THEMES[theme]
    rows: list[list[int]] = []
    for line in text.splitlines():
        fg, bg, reverse = default_fg, default_bg, False
        top: list[int] = []
        bottom: list[int] = []
        pos = 0
        for match in list(_SGR.finditer(line)) + [None]:
            chunk = line[pos:match.start() if match else len(line)]
            for ch in chunk:
                f, b = (bg, fg) if reverse else (fg, bg)
                upper, lower = {"\u2580": (f, b), "\u2584": (b, f), "\u2588": (f, f),
                                " ": (b, b)}[ch]
                top.append(upper)
                bottom.append(lower)
            if match is None:
                break
            pos = match.end()
            for code in (match.group(1) or "0").split(";"):
                if code in ("", "0"):
                    fg, bg, reverse = default_fg, default_bg, False
                elif code == "7":
                    reverse = True
                elif code == "39":
                    fg = default_fg
                elif code == "49":
                    bg = default_bg
                elif code in _FG:
                    fg = _FG[code]
                elif code in _BG:
                    bg = _BG[code]
        rows += [top, bottom]
    width = max(len(r) for r in rows) + 2 * margin
    pad = [default_bg] * width
    body = [[default_bg] * margin + r + [default_bg] * (width - margin - len(r)) for r in rows]
    return [pad] * (2 * margin) + body + [pad] * (2 * margin)


def decode(text: str, theme: str, tmp: Path, scale: int = 6) -> str | None:
    """What zbarimg reads from `text` shown in `theme`, or None."""
    grid = pixels(text, theme)
    data = bytearray()
    for row in grid:
        line = bytes(v for v in row for _ in range(scale))
        data += line * scale
    image = tmp / f"qr-{theme}.pgm"
    image.write_bytes(f"P5 {len(grid[0]) * scale} {len(grid) * scale} 255\n".encode() + data)
    out = subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip() if out.returncode == 0 else None
