"""Summarise py-spy's collapsed stacks (`--format raw`): where the server's samples went.

    .venv/bin/python bench/stacks.py PROFILE.txt [--top 25]

Prints, per function, the share of samples in which it was on the stack (inclusive) and at the
top (self). Idle samples (the event loop waiting in epoll/select, the WAL checkpoint thread
sleeping between passes) are shown apart.
"""

from __future__ import annotations

import argparse
import collections
import re

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# (function, file) at the top of a sample that waits rather than works.
IDLE = (("select", "selectors.py"), ("poll", "selectors.py"), ("wait", "threading.py"))


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("mfa_radius/", "site-packages/", "python3.11/"):
        if marker in path:
            path = path[path.index(marker) + (0 if marker == "mfa_radius/" else len(marker)):]
            break
    return f"{m.group('func')} ({path})"


def load(path: str):
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                yield [short(f) for f in stack.split(";") if not f.startswith("process ")
                       and not f.startswith("thread ")], int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    inclusive, own = collections.Counter(), collections.Counter()
    total = idle = 0
    for frames, count in load(args.profile):
        if not frames:
            continue
        total += count
        top = frames[-1]
        name, _, where = top.partition(" (")
        if any(name.rpartition(".")[2] == func and where.startswith(file) for func, file in IDLE):
            idle += count
            continue
        own[top] += count
        for frame in set(frames):
            inclusive[frame] += count
    busy = total - idle
    print(f"{total} samples, {idle} idle (waiting for packets or a timer), {busy} busy")
    print(f"\n{'incl%':>6} {'self%':>6}  function (share of busy samples)")
    for frame, count in inclusive.most_common(args.top):
        print(f"{100 * count / busy:6.1f} {100 * own[frame] / busy:6.1f}  {frame}")
    print(f"\n{'self%':>6}  top self time")
    for frame, count in own.most_common(args.top):
        print(f"{100 * count / busy:6.1f}  {frame}")


if __name__ == "__main__":
    main()
