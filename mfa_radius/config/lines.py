"""Where a key is written in the config file, for errors and warnings that name FILE:LINE.

Best effort over the TOML text (tomllib keeps no positions): the key's line inside its table, the
table's header line, or inside the index-th entry of a [[table array]].
"""

from __future__ import annotations

import re


def where(path: str, text: str, section: str | None, key: str | None) -> str:
    """'FILE:LINE: ' for the key inside its section (or the section header), best effort."""
    line = find_line(text, section, key) if text else None
    return f"{path}:{line}: " if line else f"{path}: "


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?")


def find_line(text: str, section: str | None, key: str | None) -> int | None:
    entry = re.fullmatch(r"(.+)\[(\d+)\]", section or "")
    if entry:
        return _find_in_entry(text, entry.group(1), int(entry.group(2)), key)
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            if key is None or section is None:
                if current == (section or key) or current.startswith(f"{section or key}."):
                    return number
            elif current == f"{section}.{key}":
                return number
            continue
        if section and key and current.split(".")[0] == section and re.match(
                rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _find_in_entry(text: str, name: str, index: int, key: str | None) -> int | None:
    """The line of `key` in the index-th [[name]] table (its header line when key is None)."""
    seen, inside, sub = -1, False, ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            if current == name and line.lstrip().startswith("[["):
                seen += 1
                inside, sub = seen == index, ""
                if inside and key is None:
                    return number
            elif inside and current.startswith(name + "."):
                sub = current
                if key and current == f"{name}.{key}":
                    return number
            else:
                inside = False
            continue
        if inside and not sub and key and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


